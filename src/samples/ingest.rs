//! Validation of labelled samples arriving on `<p>/<dev>/samples/<model>/add`: JSON
//! `{id, label, data}` (base64 PNG/JPEG or WAV) or `{id, label, capture_id}`. Everything is
//! checked before anything is stored; every rejection has a reason for the ack.
//! Pure functions (no I/O), fuzzed by the tests.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::features::{self, Modality, Preprocess, Raw};

use super::valid_name;

/// Default payload size limit (2 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 2 << 20;
/// Largest image side accepted (before decoding: no decompression bombs).
pub const MAX_IMAGE_SIDE: u32 = features::MAX_IMAGE_SIDE;
/// Audio clips may be at most this many times the model's clip length.
pub const MAX_CLIP_FACTOR: usize = 4;

/// The add request as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    pub id: String,
    pub label: String,
    /// Base64 of a PNG, JPEG or WAV file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A recent capture of a pipeline that runs this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_id: Option<u64>,
}

/// The answer on `<p>/<dev>/samples/<model>/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The request's id (empty when it could not be read).
    pub id: String,
    pub accepted: bool,
    /// Why it was rejected, or `stored` / `duplicate`.
    pub reason: String,
}

/// What a valid request carries.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleSource {
    /// Encoded file bytes (validated: decodable, right modality and size).
    Data {
        bytes: Vec<u8>,
        ext: &'static str,
    },
    Capture(u64),
}

/// A request that passed every check that needs no model or capture.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedAdd {
    pub id: String,
    pub label: String,
    pub source: SampleSource,
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("payload of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("not a sample request: {0}")]
    Json(String),
    #[error("invalid {what} `{value}`: must match [A-Za-z0-9_.-]{{1,64}}")]
    Name { what: &'static str, value: String },
    #[error("give exactly one of `data` and `capture_id`")]
    Source,
    #[error("`data` is not base64: {0}")]
    Base64(String),
    #[error("`data` cannot be decoded: {0}")]
    Decode(String),
    #[error("`data` is {got} but model `{model}` takes {want}")]
    Modality {
        model: String,
        got: &'static str,
        want: &'static str,
    },
    #[error("image of {width}x{height} is larger than {MAX_IMAGE_SIDE} pixels a side")]
    ImageSize { width: u32, height: u32 },
    #[error("clip of {got_ms} ms is outside {min_ms}..={max_ms} ms")]
    Duration {
        got_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },
    #[error("image does not fit the pipeline's region: {0}")]
    Region(String),
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error("capture {0} is not held by any pipeline of this model (too old or never seen)")]
    UnknownCapture(u64),
    #[error("cannot store: {0}")]
    Store(String),
}

fn name(what: &'static str, value: &str) -> Result<(), Reject> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(Reject::Name {
            what,
            value: value.chars().take(80).collect(),
        })
    }
}

/// The id of a payload, if it can be read at all (for the ack of a rejected request).
pub fn peek_id(payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    serde_json::from_slice::<IdOnly>(payload)
        .ok()
        .and_then(|r| r.id)
        .filter(|id| valid_name(id))
        .unwrap_or_default()
}

/// Size, JSON shape, id and label, exactly one source, base64.
pub fn parse(payload: &[u8], max_bytes: usize) -> Result<ParsedAdd, Reject> {
    if payload.len() > max_bytes {
        return Err(Reject::TooLarge {
            size: payload.len(),
            limit: max_bytes,
        });
    }
    let req: AddRequest =
        serde_json::from_slice(payload).map_err(|e| Reject::Json(e.to_string()))?;
    name("id", &req.id)?;
    name("label", &req.label)?;
    let source = match (req.data, req.capture_id) {
        (Some(b64), None) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Reject::Base64(e.to_string()))?;
            let ext = sniff(&bytes)?;
            SampleSource::Data { bytes, ext }
        }
        (None, Some(id)) => SampleSource::Capture(id),
        _ => return Err(Reject::Source),
    };
    Ok(ParsedAdd {
        id: req.id,
        label: req.label,
        source,
    })
}

fn sniff(bytes: &[u8]) -> Result<&'static str, Reject> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => Ok("png"),
        Ok(image::ImageFormat::Jpeg) => Ok("jpg"),
        _ if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" => Ok("wav"),
        _ => Err(Reject::Decode("not a PNG, JPEG or WAV file".into())),
    }
}

fn modality_name(m: Modality) -> &'static str {
    match m {
        Modality::Image => "an image",
        Modality::Audio => "audio",
    }
}

/// A sent frame cut to the pipeline's region: a frame of the camera (larger than the
/// region) is cut; one already the region's size (a capture, a cut-out) is kept as it is.
/// `None` when it was kept.
pub fn cut_to_region(raw: &Raw, region: &features::Region) -> Result<Option<Raw>, Reject> {
    let Raw::Image(img) = raw else {
        return Ok(None);
    };
    if (img.width(), img.height()) == (region.width, region.height) {
        return Ok(None);
    }
    let cut = region
        .crop(img)
        .map_err(|e| Reject::Region(e.to_string()))?;
    Ok(Some(Raw::Image(cut)))
}

/// Decode the bytes and check them against the model's input: modality, image size,
/// clip duration.
pub fn check_data(bytes: &[u8], model: &str, pre: &Preprocess) -> Result<Raw, Reject> {
    let want = pre.modality();
    if let Ok(reader) = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()
        && reader.format().is_some()
    {
        let (width, height) = reader
            .into_dimensions()
            .map_err(|e| Reject::Decode(e.to_string()))?;
        if want != Modality::Image {
            return Err(Reject::Modality {
                model: model.into(),
                got: "an image",
                want: modality_name(want),
            });
        }
        if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
            return Err(Reject::ImageSize { width, height });
        }
    }
    let raw = features::decode(bytes).map_err(|e| Reject::Decode(e.to_string()))?;
    if raw.modality() != want {
        return Err(Reject::Modality {
            model: model.into(),
            got: modality_name(raw.modality()),
            want: modality_name(want),
        });
    }
    check_raw(&raw, pre)?;
    Ok(raw)
}

/// Duration of a clip against the model's clip length (half to [`MAX_CLIP_FACTOR`] times).
pub fn check_raw(raw: &Raw, pre: &Preprocess) -> Result<(), Reject> {
    if let (Raw::Audio(clip), Preprocess::Audio(spec)) = (raw, pre) {
        let clip_ms = spec.clip_samples as u64 * 1000 / spec.sample_rate_hz.max(1) as u64;
        let got_ms = clip.samples.len() as u64 * 1000 / clip.sample_rate_hz.max(1) as u64;
        let (min_ms, max_ms) = (clip_ms / 2, clip_ms * MAX_CLIP_FACTOR as u64);
        if got_ms < min_ms || got_ms > max_ms {
            return Err(Reject::Duration {
                got_ms,
                min_ms,
                max_ms,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{AudioSpec, Clip, ImageSpec};

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::new(w, h);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    }

    fn wav(seconds: f32) -> Vec<u8> {
        crate::registry::replay::encode_wav(&Clip {
            samples: vec![0.1; (16_000.0 * seconds) as usize],
            sample_rate_hz: 16_000,
        })
        .expect("wav")
    }

    fn image_model() -> Preprocess {
        Preprocess::Image(ImageSpec {
            channels: 1,
            height: 28,
            width: 28,
            mean: vec![0.5],
            std: vec![0.5],
        })
    }

    fn audio_model() -> Preprocess {
        Preprocess::Audio(AudioSpec::default_kws())
    }

    fn req(id: &str, label: &str, data: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&AddRequest {
            id: id.into(),
            label: label.into(),
            data: Some(b64(data)),
            capture_id: None,
        })
        .expect("json")
    }

    #[test]
    fn accepts_a_valid_image_and_a_capture_reference() {
        let p = parse(&req("s1", "parcel", &png(28, 28)), DEFAULT_MAX_PAYLOAD).expect("valid");
        assert_eq!(p.label, "parcel");
        let SampleSource::Data { bytes, ext } = p.source else {
            panic!("data")
        };
        assert_eq!(ext, "png");
        check_data(&bytes, "vision", &image_model()).expect("image model");
        let p = parse(
            br#"{"id":"s2","label":"parcel","capture_id":17}"#,
            DEFAULT_MAX_PAYLOAD,
        )
        .expect("capture");
        assert_eq!(p.source, SampleSource::Capture(17));
    }

    #[test]
    fn every_kind_of_bad_request_has_its_reason() {
        let limit = DEFAULT_MAX_PAYLOAD;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![b' '; limit + 1], "limit"),
            (b"not json".to_vec(), "not a sample request"),
            (
                br#"{"id":"a","label":"b","data":"x","extra":1}"#.to_vec(),
                "unknown field",
            ),
            (req("a/b", "x", &png(2, 2)), "invalid id"),
            (req("a", "bad label!", &png(2, 2)), "invalid label"),
            (req("a", &"x".repeat(65), &png(2, 2)), "invalid label"),
            (br#"{"id":"a","label":"b"}"#.to_vec(), "exactly one"),
            (
                br#"{"id":"a","label":"b","data":"AAAA","capture_id":1}"#.to_vec(),
                "exactly one",
            ),
            (br#"{"id":"a","label":"b","data":"@@@"}"#.to_vec(), "base64"),
            (req("a", "b", b"GIF89a....."), "PNG, JPEG or WAV"),
        ];
        for (payload, want) in cases {
            let e = parse(&payload, limit).unwrap_err().to_string();
            assert!(e.contains(want), "`{want}` not in `{e}`");
        }
    }

    #[test]
    fn data_is_checked_against_the_model() {
        let e = check_data(&wav(1.0), "vision", &image_model()).unwrap_err();
        assert!(e.to_string().contains("takes an image"), "{e}");
        let e = check_data(&png(28, 28), "audio", &audio_model()).unwrap_err();
        assert!(e.to_string().contains("takes audio"), "{e}");
        let e = check_data(&wav(0.2), "audio", &audio_model()).unwrap_err();
        assert!(e.to_string().contains("outside 500..=4000 ms"), "{e}");
        check_data(&wav(1.0), "audio", &audio_model()).expect("1 s clip");
        let e = check_data(&png(5000, 10), "vision", &image_model()).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let mut broken = png(28, 28);
        broken.truncate(40);
        assert!(matches!(
            check_data(&broken, "vision", &image_model()),
            Err(Reject::Decode(_))
        ));
    }

    #[test]
    fn the_id_of_a_rejected_request_is_still_acked() {
        assert_eq!(peek_id(br#"{"id":"s9","label":"no spaces"}"#), "s9");
        assert_eq!(peek_id(b"garbage"), "");
    }
}
