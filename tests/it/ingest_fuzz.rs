//! The parsers of what arrives over MQTT are fuzzed: sample requests and the data checks,
//! model commands, topics. No input makes them panic, and every refusal is one the step can
//! give. `LSSKD_FUZZ_CASES` sets the cases per property (400 by default; `scripts/chaos.py
//! fuzz` runs a million each). The coverage-guided fuzzing of every parser is
//! `scripts/fuzz.sh` (`fuzz/`, FUZZ-REPORT.md); its decompression bombs are checked here.

use base64::Engine;
use lsskd_edge::features::{AudioSpec, ImageSpec, Preprocess};
use lsskd_edge::samples::ingest::{DEFAULT_MAX_PAYLOAD, Reject, SampleSource, check_data, parse};
use proptest::prelude::*;

fn models() -> [Preprocess; 2] {
    [
        Preprocess::Image(ImageSpec {
            channels: 1,
            height: 28,
            width: 28,
            mean: vec![0.3],
            std: vec![0.35],
        }),
        Preprocess::Audio(AudioSpec::default_kws()),
    ]
}

/// Parse and check `payload`: nothing panics, and every refusal is one the step can give
/// (the parser refuses the request, the data check the file), never a model, capture or
/// storage error, which only the daemon can produce.
fn check_all(payload: &[u8]) {
    match parse(payload, DEFAULT_MAX_PAYLOAD) {
        Ok(p) => {
            if let SampleSource::Data { bytes, .. } = p.source {
                for pre in models() {
                    if let Err(e) = check_data(&bytes, "m", &pre) {
                        assert!(
                            matches!(
                                e,
                                Reject::Decode(_)
                                    | Reject::Modality { .. }
                                    | Reject::ImageSize { .. }
                                    | Reject::Duration { .. }
                            ),
                            "data check gave {e:?}"
                        );
                    }
                }
            }
        }
        Err(e) => assert!(
            matches!(
                e,
                Reject::TooLarge { .. }
                    | Reject::Json(_)
                    | Reject::Name { .. }
                    | Reject::Source
                    | Reject::Base64(_)
            ),
            "parser gave {e:?}"
        ),
    }
}

/// The decompression bombs of the fuzz corpus (`fuzz/corpus/bombs`, written by the fuzz
/// crate's `seeds`: PNGs and a JPEG whose headers claim 4096×4096 to 100000×100000 pixels in
/// a few hundred bytes, WAVs that claim 37 hours or a rate of 1 Hz or 4 MHz), sent as sample
/// requests: each is refused from its header, with a reason that names the claim, by the
/// model of its modality and by the other one.
#[test]
fn decompression_bombs_are_refused_from_their_headers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bombs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/bombs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let [image_model, audio_model] = models();
    for path in files {
        let file = std::fs::read(&path).expect("bomb");
        assert!(
            file.len() < 4096,
            "{}: {} bytes",
            path.display(),
            file.len()
        );
        let mut req = serde_json::Map::new();
        req.insert("id".into(), "bomb".into());
        req.insert("label".into(), "boom".into());
        req.insert(
            "data".into(),
            base64::engine::general_purpose::STANDARD
                .encode(&file)
                .into(),
        );
        let payload = serde_json::Value::Object(req).to_string();
        let parsed = parse(payload.as_bytes(), DEFAULT_MAX_PAYLOAD).expect("a well-formed request");
        let SampleSource::Data { bytes, .. } = parsed.source else {
            panic!("data");
        };
        let is_wav = path.extension().is_some_and(|e| e == "wav");
        let (own, other) = if is_wav {
            (&audio_model, &image_model)
        } else {
            (&image_model, &audio_model)
        };
        let why = check_data(&bytes, "m", own)
            .expect_err("bomb accepted")
            .to_string();
        assert!(
            ["claims", "larger than 4096", "sample rate"]
                .iter()
                .any(|w| why.contains(w)),
            "{}: {why}",
            path.display()
        );
        check_data(&bytes, "m", other).expect_err("bomb accepted by the other model");
    }
}

/// Valid magic bytes followed by arbitrary bytes: the decoders see hostile files.
fn hostile_file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(b"\x89PNG\r\n\x1a\n".to_vec()),
            Just(vec![0xFF, 0xD8, 0xFF, 0xE0]),
            Just(b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec()),
        ],
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(mut head, tail)| {
            head.extend(tail);
            head
        })
}

fn cases() -> u32 {
    std::env::var("LSSKD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_model_commands_never_panic(text in prop_oneof![
        3 => "(adapt|rollback|promote|forget)( [ -~]{0,12}){0,3}",
        1 => "\\PC{0,80}",
    ]) {
        match lsskd_edge::adapt::schedule::parse_command("vision", &text) {
            Ok(job) => {
                let described = format!("{job:?}");
                prop_assert!(described.contains("vision"), "{}", described);
            }
            Err(e) => prop_assert!(
                e.contains("unknown command") || e.contains("not a version number") || e.contains("not a label"),
                "{e}"
            ),
        }
    }

    #[test]
    fn arbitrary_topics_never_panic(topic in "[a-z/+#]{0,40}|\\PC{0,60}") {
        if let Some((device, _)) = lsskd_edge::mqtt::topics::parse(&topic) {
            prop_assert!(!device.contains('/'));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_all(&payload);
    }

    #[test]
    fn arbitrary_requests_never_panic(
        id in prop_oneof![3 => "[A-Za-z0-9_.-]{1,64}", 1 => "[ -~]{0,70}"],
        label in prop_oneof![3 => "[A-Za-z0-9_.-]{1,64}", 1 => "[ -~]{0,70}"],
        file in hostile_file(),
        capture in proptest::option::of(any::<u64>()),
        with_data in any::<bool>(),
    ) {
        let mut req = serde_json::Map::new();
        req.insert("id".into(), id.into());
        req.insert("label".into(), label.into());
        if with_data {
            req.insert("data".into(), base64::engine::general_purpose::STANDARD.encode(&file).into());
        }
        if let Some(c) = capture {
            req.insert("capture_id".into(), c.into());
        }
        check_all(serde_json::Value::Object(req).to_string().as_bytes());
    }
}
