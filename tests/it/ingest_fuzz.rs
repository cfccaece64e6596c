//! The parsers of what arrives over MQTT are fuzzed: sample requests and the data checks,
//! model commands, topics. No input makes them panic, and every refusal is one the step can
//! give. `LSSKD_FUZZ_CASES` sets the cases per property (400 by default; `scripts/chaos.py
//! fuzz` runs a million each).

use base64::Engine;
use lsskd_edge::features::{AudioSpec, ImageSpec, Preprocess};
use lsskd_edge::samples::ingest::{Reject, SampleSource, check_data, parse};
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
    match parse(payload, 1 << 16) {
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
