//! Feature extraction shared by training, evaluation, prediction and the daemon.
//!
//! This module owns the [`Preprocess`] recipe stored in model manifests (how a raw input
//! becomes a model input tensor), the [`Raw`] input type, and [`decode`], which turns the
//! bytes of a PNG, JPEG or WAV file into a [`Raw`]. The image recipe lives in [`image`], the
//! log-mel audio recipe in [`audio`]. Everything here is a pure function of its inputs.

pub mod audio;
pub mod change;
pub mod image;

pub use audio::AudioSpec;
pub use change::ChangeLocator;
pub use image::{ImageSpec, Region};

use std::fmt;
use std::io::Cursor;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// How raw input becomes a model input tensor; stored in model manifests (serde JSON).
///
/// Serialised internally tagged, e.g. `{"modality":"image","channels":1,...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "modality", rename_all = "lowercase", deny_unknown_fields)]
pub enum Preprocess {
    /// Images: colour conversion, resize, per-channel normalisation.
    Image(ImageSpec),
    /// Audio: resample, pad/truncate, log-mel spectrogram, normalisation.
    Audio(AudioSpec),
}

impl Preprocess {
    /// `[C, H, W]` of the model input: `[channels, height, width]` for images and
    /// `[1, frames, n_mels]` for audio.
    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Preprocess::Image(spec) => [spec.channels, spec.height, spec.width],
            Preprocess::Audio(spec) => [1, spec.frames(), spec.n_mels],
        }
    }

    /// Raw → normalised CHW tensor (length `C*H*W`).
    ///
    /// Errors if the modality mismatches (an image given to an audio spec or vice versa),
    /// if the spec is invalid (see [`Preprocess::validate`]) or if resampling fails.
    pub fn tensor(&self, raw: &Raw) -> Result<Vec<f32>, FeatureError> {
        match (self, raw) {
            (Preprocess::Image(spec), Raw::Image(img)) => {
                spec.validate()?;
                Ok(spec.tensor(img))
            }
            (Preprocess::Audio(spec), Raw::Audio(clip)) => spec.tensor(clip),
            _ => Err(FeatureError::WrongModality {
                expected: self.modality(),
                got: raw.modality(),
            }),
        }
    }

    /// The kind of raw input this recipe accepts.
    pub fn modality(&self) -> Modality {
        match self {
            Preprocess::Image(_) => Modality::Image,
            Preprocess::Audio(_) => Modality::Audio,
        }
    }

    /// Check internal consistency (positive sizes, mean/std lengths equal channels,
    /// std > 0, fmax <= sample rate / 2, ...). The error lists every problem found.
    pub fn validate(&self) -> Result<(), FeatureError> {
        match self {
            Preprocess::Image(spec) => spec.validate(),
            Preprocess::Audio(spec) => spec.validate(),
        }
    }
}

/// The kind of a raw input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Still images (camera frames, PNG/JPEG files).
    Image,
    /// Mono PCM audio (microphone windows, WAV files).
    Audio,
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Modality::Image => f.write_str("image"),
            Modality::Audio => f.write_str("audio"),
        }
    }
}

/// A raw input before preprocessing.
#[derive(Debug, Clone)]
pub enum Raw {
    /// A decoded image of any pixel format.
    Image(::image::DynamicImage),
    /// A mono PCM clip.
    Audio(Clip),
}

impl Raw {
    /// Bytes its pixels or samples take in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Raw::Image(img) => img.as_bytes().len(),
            Raw::Audio(c) => std::mem::size_of_val(c.samples.as_slice()),
        }
    }

    /// The modality of this input.
    pub fn modality(&self) -> Modality {
        match self {
            Raw::Image(_) => Modality::Image,
            Raw::Audio(_) => Modality::Audio,
        }
    }
}

/// Mono PCM in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// Samples, one per frame, nominally in [-1, 1].
    pub samples: Vec<f32>,
    /// Sample rate of `samples` in Hz.
    pub sample_rate_hz: u32,
}

/// Errors from decoding inputs or turning them into tensors.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A raw input of one modality was given to a recipe for another.
    #[error("wrong input modality: the preprocessing expects {expected} but got {got}")]
    WrongModality {
        /// Modality of the recipe.
        expected: Modality,
        /// Modality of the input.
        got: Modality,
    },
    /// The preprocessing spec is inconsistent; the message lists the problems.
    /// A region of interest that does not fit the frame.
    #[error("{0}")]
    Region(String),
    /// A frame that cannot be compared with its view's reference.
    #[error("change: {0}")]
    Change(String),
    #[error("invalid preprocessing spec: {0}")]
    InvalidSpec(String),
    /// Resampling failed.
    #[error("resampling failed: {0}")]
    Resample(String),
    /// The bytes are not a recognised file format.
    #[error("not a PNG, JPEG or WAV file (first bytes: {first_bytes})")]
    UnknownFormat {
        /// Hex dump of the first few bytes.
        first_bytes: String,
    },
    /// The PNG/JPEG decoder rejected the bytes.
    #[error("cannot decode {format} image: {source}")]
    Image {
        /// "PNG" or "JPEG".
        format: &'static str,
        /// The decoder's error.
        #[source]
        source: ::image::ImageError,
    },
    /// The WAV decoder rejected the bytes.
    #[error("cannot decode WAV: {0}")]
    Wav(#[from] hound::Error),
    /// The WAV is well formed but uses a format this crate does not read.
    #[error("unsupported WAV: {0}")]
    UnsupportedWav(String),
    /// The WAV holds no samples.
    #[error("WAV has 0 samples")]
    EmptyWav,
    /// The image's header names a side over [`MAX_IMAGE_SIDE`]; refused before decoding.
    #[error("{format} of {width}x{height} is larger than {MAX_IMAGE_SIDE} pixels a side")]
    ImageTooLarge {
        format: &'static str,
        width: u32,
        height: u32,
    },
    /// The image's header claims more pixels than a file of its size can hold (a
    /// decompression bomb, or a cut file); refused before any pixel is decoded.
    #[error(
        "{format} header claims {width}x{height} pixels, which need at least {min_bytes} bytes \
         of {format}, but the file has {file_bytes}"
    )]
    ImageClaim {
        format: &'static str,
        width: u32,
        height: u32,
        min_bytes: u64,
        file_bytes: usize,
    },
    /// The WAV's header claims more samples than the file holds (a header claiming hours
    /// in front of a short file); refused before any sample is read.
    #[error(
        "WAV header claims {claimed_samples} samples ({claimed_secs:.1} s) but the file has \
         {file_bytes} bytes"
    )]
    WavClaim {
        claimed_samples: u64,
        claimed_secs: f64,
        file_bytes: usize,
    },
}

/// Largest image side [`decode`] reads (and a sample request's, `samples::ingest`): a larger
/// header is refused before a pixel is decoded, so one image holds at most 4096² pixels
/// (128 MiB as 16-bit RGBA, the widest pixel PNG has).
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// Sample rates [`decode`] reads from a WAV header: what recorders write (8 kHz telephony to
/// 384 kHz), with room below. Outside it a clip of a second is millions of samples at
/// 16 kHz after resampling, or an FFT resampler the size of the rate.
pub const WAV_RATES_HZ: RangeInclusive<u32> = 1_000..=384_000;

/// Deflate codes at most 258 bytes in 2 bits: a PNG's pixels never take more than 1032
/// times its file's bytes.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Huffman-coded JPEG spends at least one bit on every 8×8 block of its full-resolution
/// component (the DC coefficient's code): 512 pixels a byte at most.
const JPEG_MAX_PIXELS_PER_BYTE: u64 = 512;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];

/// Decode an encoded file's bytes: PNG/JPEG → [`Raw::Image`], RIFF WAV (8/16/24/32-bit
/// integer or 32-bit float PCM, any channel count, downmixed to mono by averaging) →
/// [`Raw::Audio`]. The format is sniffed from magic bytes, not from a file extension.
///
/// Memory is bounded by the file, not by what its header claims: an image over
/// [`MAX_IMAGE_SIDE`] a side, or with more pixels than its bytes can code, and a WAV whose
/// header claims more samples than the file holds or a rate outside [`WAV_RATES_HZ`], are
/// refused from the header, before anything the size of the claim is allocated.
pub fn decode(bytes: &[u8]) -> Result<Raw, FeatureError> {
    if bytes.starts_with(PNG_MAGIC) {
        decode_image(bytes, ::image::ImageFormat::Png, "PNG")
    } else if bytes.starts_with(JPEG_MAGIC) {
        decode_image(bytes, ::image::ImageFormat::Jpeg, "JPEG")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
        decode_wav(bytes).map(Raw::Audio)
    } else {
        let first_bytes = bytes
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        Err(FeatureError::UnknownFormat {
            first_bytes: if first_bytes.is_empty() {
                "empty file".to_string()
            } else {
                first_bytes
            },
        })
    }
}

fn decode_image(
    bytes: &[u8],
    format: ::image::ImageFormat,
    name: &'static str,
) -> Result<Raw, FeatureError> {
    let err = |source| FeatureError::Image {
        format: name,
        source,
    };
    let (width, height) = ::image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(err)?;
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(FeatureError::ImageTooLarge {
            format: name,
            width,
            height,
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    let min_bytes = match format {
        ::image::ImageFormat::Png => pixels * png_bits_per_pixel(bytes) / 8 / DEFLATE_MAX_RATIO,
        _ => pixels / JPEG_MAX_PIXELS_PER_BYTE,
    };
    if (bytes.len() as u64) < min_bytes {
        return Err(FeatureError::ImageClaim {
            format: name,
            width,
            height,
            min_bytes,
            file_bytes: bytes.len(),
        });
    }
    let mut reader = ::image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = ::image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    reader.decode().map(Raw::Image).map_err(err)
}

/// Bits per pixel of a PNG's stored samples (bit depth × samples per pixel), from its
/// header (`IHDR`, which the decoder has checked comes first); 1 when unreadable.
fn png_bits_per_pixel(bytes: &[u8]) -> u64 {
    let (Some(&depth), Some(&colour)) = (bytes.get(24), bytes.get(25)) else {
        return 1;
    };
    let samples = match colour {
        2 => 3,
        4 => 2,
        6 => 4,
        _ => 1,
    };
    (u64::from(depth) * samples).max(1)
}

fn decode_wav(bytes: &[u8]) -> Result<Clip, FeatureError> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if channels == 0 {
        return Err(FeatureError::UnsupportedWav("0 channels".to_string()));
    }
    if !WAV_RATES_HZ.contains(&spec.sample_rate) {
        return Err(FeatureError::UnsupportedWav(format!(
            "sample rate of {} Hz (supported: {}..={} Hz)",
            spec.sample_rate,
            WAV_RATES_HZ.start(),
            WAV_RATES_HZ.end()
        )));
    }
    let claimed_samples = u64::from(reader.len());
    if claimed_samples * u64::from(spec.bits_per_sample.div_ceil(8)) > bytes.len() as u64 {
        return Err(FeatureError::WavClaim {
            claimed_samples,
            claimed_secs: claimed_samples as f64 / channels as f64 / f64::from(spec.sample_rate),
            file_bytes: bytes.len(),
        });
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>()?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / f64::from(1u32 << (bits - 1));
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| (f64::from(v) * scale) as f32))
                .collect::<Result<_, _>>()?
        }
        (format, bits) => {
            return Err(FeatureError::UnsupportedWav(format!(
                "{bits}-bit {} samples (supported: 8/16/24/32-bit integer, 32-bit float)",
                match format {
                    hound::SampleFormat::Float => "float",
                    hound::SampleFormat::Int => "integer",
                }
            )));
        }
    };
    if interleaved.len() < channels {
        return Err(FeatureError::EmptyWav);
    }
    let samples = if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * inv)
            .collect()
    };
    Ok(Clip {
        samples,
        sample_rate_hz: spec.sample_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{DynamicImage, GrayImage, ImageFormat, Luma};

    fn wav_bytes<S: hound::Sample + Copy>(spec: hound::WavSpec, samples: &[S]) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        {
            let mut writer = hound::WavWriter::new(&mut cursor, spec).expect("writer");
            for &s in samples {
                writer.write_sample(s).expect("write");
            }
            writer.finalize().expect("finalize");
        }
        cursor.into_inner()
    }

    fn spec(channels: u16, bits: u16, format: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: 8000,
            bits_per_sample: bits,
            sample_format: format,
        }
    }

    fn image_spec() -> ImageSpec {
        ImageSpec {
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.5],
            std: vec![0.25],
        }
    }

    #[test]
    fn decodes_png_by_magic_bytes() {
        let img = GrayImage::from_pixel(3, 2, Luma([200]));
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("encode");
        match decode(&bytes).expect("decode") {
            Raw::Image(img) => {
                assert_eq!((img.width(), img.height()), (3, 2));
                assert_eq!(img.to_luma8().get_pixel(1, 1).0, [200]);
            }
            Raw::Audio(_) => panic!("PNG decoded as audio"),
        }
    }

    #[test]
    fn decodes_jpeg_by_magic_bytes() {
        let img = GrayImage::from_pixel(8, 8, Luma([100]));
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .expect("encode");
        let Raw::Image(img) = decode(&bytes).expect("decode") else {
            panic!("JPEG decoded as audio");
        };
        assert_eq!((img.width(), img.height()), (8, 8));
        let v = i32::from(img.to_luma8().get_pixel(4, 4).0[0]);
        assert!((v - 100).abs() <= 3, "pixel {v}");
    }

    #[test]
    fn decodes_16_bit_wav_to_unit_range() {
        let bytes = wav_bytes(
            spec(1, 16, hound::SampleFormat::Int),
            &[0i16, 16384, -32768, 32767],
        );
        let Raw::Audio(clip) = decode(&bytes).expect("decode") else {
            panic!("WAV decoded as image");
        };
        assert_eq!(clip.sample_rate_hz, 8000);
        assert_eq!(clip.samples.len(), 4);
        assert!((clip.samples[1] - 0.5).abs() < 1e-6);
        assert!((clip.samples[2] + 1.0).abs() < 1e-6);
        assert!(clip.samples[3] < 1.0 && clip.samples[3] > 0.999);
    }

    #[test]
    fn decodes_8_24_32_bit_int_and_float_wavs() {
        let b8 = wav_bytes(spec(1, 8, hound::SampleFormat::Int), &[64i8, -128]);
        let b24 = wav_bytes(
            spec(1, 24, hound::SampleFormat::Int),
            &[1i32 << 22, -(1 << 23)],
        );
        let b32 = wav_bytes(
            spec(1, 32, hound::SampleFormat::Int),
            &[1i32 << 30, i32::MIN],
        );
        let bf = wav_bytes(spec(1, 32, hound::SampleFormat::Float), &[0.5f32, -1.0]);
        for (name, bytes) in [("8", b8), ("24", b24), ("32", b32), ("float", bf)] {
            let Raw::Audio(clip) = decode(&bytes).expect(name) else {
                panic!("{name}: decoded as image");
            };
            assert_eq!(clip.samples.len(), 2, "{name}");
            assert!(
                (clip.samples[0] - 0.5).abs() < 1e-6,
                "{name}: {:?}",
                clip.samples
            );
            assert!(
                (clip.samples[1] + 1.0).abs() < 1e-6,
                "{name}: {:?}",
                clip.samples
            );
        }
    }

    #[test]
    fn downmixes_stereo_wav_to_mono_mean() {
        let bytes = wav_bytes(
            spec(2, 16, hound::SampleFormat::Int),
            &[16384i16, 0, -16384, -16384],
        );
        let Raw::Audio(clip) = decode(&bytes).expect("decode") else {
            panic!("WAV decoded as image");
        };
        assert_eq!(clip.samples.len(), 2);
        assert!((clip.samples[0] - 0.25).abs() < 1e-6);
        assert!((clip.samples[1] + 0.5).abs() < 1e-6);
    }

    #[test]
    fn rejects_wav_without_samples() {
        let bytes = wav_bytes::<i16>(spec(1, 16, hound::SampleFormat::Int), &[]);
        let err = decode(&bytes).expect_err("empty WAV accepted");
        assert!(matches!(err, FeatureError::EmptyWav), "{err}");
        assert!(err.to_string().contains("0 samples"));
    }

    #[test]
    fn rejects_unknown_bytes_naming_the_accepted_formats() {
        let err = decode(b"hello world, not media").expect_err("text accepted");
        let msg = err.to_string();
        assert!(msg.contains("not a PNG, JPEG or WAV"), "{msg}");
        assert!(msg.contains("68 65"), "{msg}");
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn rejects_corrupt_png_with_decoder_cause() {
        let mut bytes = PNG_MAGIC.to_vec();
        bytes.extend_from_slice(b"garbage that is not a chunk");
        let err = decode(&bytes).expect_err("corrupt PNG accepted");
        assert!(
            matches!(err, FeatureError::Image { format: "PNG", .. }),
            "{err}"
        );
    }

    /// A valid 28×28 PNG whose header then claims `width`×`height` (its pixel data stays
    /// that of 28×28).
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(GrayImage::new(28, 28))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("encode");
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        // The IHDR chunk's CRC-32 (type and data), which the decoder checks.
        let crc = crc32fast::hash(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// A valid 8×8 JPEG whose frame header then claims `width`×`height`.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(GrayImage::new(8, 8))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .expect("encode");
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline frame header");
        bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        bytes
    }

    #[test]
    fn refuses_a_png_that_claims_more_pixels_than_its_bytes_can_code() {
        let bomb = png_claiming(4096, 4096);
        assert!(bomb.len() < 400, "{} bytes", bomb.len());
        let err = decode(&bomb).expect_err("bomb decoded");
        assert!(
            matches!(
                err,
                FeatureError::ImageClaim {
                    format: "PNG",
                    width: 4096,
                    height: 4096,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("claims 4096x4096"), "{err}");
        let err = decode(&png_claiming(100_000, 100_000)).expect_err("bomb decoded");
        assert!(
            matches!(err, FeatureError::ImageTooLarge { format: "PNG", .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_jpeg_that_claims_huge_dimensions() {
        let err = decode(&jpeg_claiming(65_000, 65_000)).expect_err("bomb decoded");
        assert!(
            matches!(
                err,
                FeatureError::ImageTooLarge {
                    format: "JPEG",
                    width: 65_000,
                    height: 65_000
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("larger than 4096"), "{err}");
        let err = decode(&jpeg_claiming(4096, 4096)).expect_err("bomb decoded");
        assert!(
            matches!(err, FeatureError::ImageClaim { format: "JPEG", .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_wav_whose_header_claims_hours() {
        let mut bytes = wav_bytes(spec(1, 16, hound::SampleFormat::Int), &[0i16; 8000]);
        let data = bytes
            .windows(4)
            .position(|w| w == b"data")
            .expect("data chunk");
        bytes[data + 4..data + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        bytes[4..8].copy_from_slice(&0xFFFF_FFF8u32.to_le_bytes());
        let err = decode(&bytes).expect_err("bomb decoded");
        let FeatureError::WavClaim { claimed_secs, .. } = &err else {
            panic!("{err}");
        };
        assert!(*claimed_secs > 3600.0 * 24.0, "{claimed_secs} s");
        assert!(err.to_string().contains("WAV header claims"), "{err}");
    }

    #[test]
    fn refuses_a_wav_sample_rate_no_recorder_writes() {
        for rate in [1, 999, 384_001, 4_000_000] {
            let mut s = spec(1, 16, hound::SampleFormat::Int);
            s.sample_rate = rate;
            let err = decode(&wav_bytes(s, &[0i16; 16])).expect_err("odd rate decoded");
            assert!(
                matches!(err, FeatureError::UnsupportedWav(ref m) if m.contains("sample rate")),
                "{rate}: {err}"
            );
        }
        let mut s = spec(1, 16, hound::SampleFormat::Int);
        s.sample_rate = 384_000;
        decode(&wav_bytes(s, &[0i16; 16])).expect("384 kHz");
    }

    #[test]
    fn rejects_truncated_wav() {
        let mut bytes = wav_bytes(spec(1, 16, hound::SampleFormat::Int), &[1i16; 100]);
        bytes.truncate(60);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn preprocess_round_trips_through_tagged_json() {
        let p = Preprocess::Audio(AudioSpec::default_kws());
        let json = serde_json::to_string(&p).expect("serialise");
        assert!(json.contains("\"modality\":\"audio\""), "{json}");
        let back: Preprocess = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, p);
        let img = Preprocess::Image(image_spec());
        let json = serde_json::to_string(&img).expect("serialise");
        assert!(json.contains("\"modality\":\"image\""), "{json}");
        assert_eq!(serde_json::from_str::<Preprocess>(&json).expect("de"), img);
    }

    #[test]
    fn preprocess_json_rejects_unknown_fields() {
        let json = r#"{"modality":"image","channels":1,"height":2,"width":2,
            "mean":[0.0],"std":[1.0],"colour":"red"}"#;
        assert!(serde_json::from_str::<Preprocess>(json).is_err());
        let json = r#"{"modality":"video","channels":1}"#;
        assert!(serde_json::from_str::<Preprocess>(json).is_err());
    }

    #[test]
    fn input_shape_matches_tensor_length() {
        let img = Preprocess::Image(image_spec());
        assert_eq!(img.input_shape(), [1, 4, 4]);
        let raw = Raw::Image(DynamicImage::ImageLuma8(GrayImage::new(9, 7)));
        assert_eq!(img.tensor(&raw).expect("tensor").len(), 16);
        let audio = Preprocess::Audio(AudioSpec::default_kws());
        assert_eq!(audio.input_shape(), [1, 49, 40]);
        let clip = Raw::Audio(Clip {
            samples: vec![0.0; 8000],
            sample_rate_hz: 16_000,
        });
        assert_eq!(audio.tensor(&clip).expect("tensor").len(), 49 * 40);
    }

    #[test]
    fn tensor_rejects_wrong_modality() {
        let audio = Preprocess::Audio(AudioSpec::default_kws());
        let raw = Raw::Image(DynamicImage::ImageLuma8(GrayImage::new(2, 2)));
        let err = audio
            .tensor(&raw)
            .expect_err("image accepted by audio spec");
        assert!(matches!(
            err,
            FeatureError::WrongModality {
                expected: Modality::Audio,
                got: Modality::Image
            }
        ));
        assert!(err.to_string().contains("expects audio but got image"));
        let img = Preprocess::Image(image_spec());
        let clip = Raw::Audio(Clip {
            samples: vec![0.0; 10],
            sample_rate_hz: 16_000,
        });
        assert!(img.tensor(&clip).is_err());
        assert_eq!(img.modality(), Modality::Image);
        assert_eq!(audio.modality(), Modality::Audio);
    }

    #[test]
    fn validate_accepts_defaults_and_rejects_bad_specs() {
        assert!(
            Preprocess::Audio(AudioSpec::default_kws())
                .validate()
                .is_ok()
        );
        assert!(Preprocess::Image(image_spec()).validate().is_ok());
        let mut bad = image_spec();
        bad.std = vec![0.0];
        assert!(Preprocess::Image(bad).validate().is_err());
        let mut bad = AudioSpec::default_kws();
        bad.fmax_hz = 9000.0;
        let err = Preprocess::Audio(bad)
            .validate()
            .expect_err("fmax above Nyquist");
        assert!(err.to_string().contains("fmax"), "{err}");
    }
}
