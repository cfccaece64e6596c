//! The fuzz targets of `lsskd-edge`: one function per parser that sees outside input, each
//! calling the daemon's own code the way the daemon calls it. The binaries under `src/bin/`
//! run them under AFL++ (`afl::fuzz_nohook!`, persistent mode); `replay` runs files through
//! them once each for the corpus checks and the memory figures (`scripts/fuzz.sh`).
//!
//! A target panics (a finding) when the daemon's code panics or when an answer breaks the
//! contract the daemon relies on (a sample refusal of a kind the step cannot give). A panic
//! that the daemon's code catches itself (tract's, under `catch_unwind` in
//! `inference::classifier`) is an error by design and is not one: hence `fuzz_nohook!`,
//! which aborts only on a panic that escapes the call.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use lsskd_edge::features::{self, Preprocess, Raw};
use lsskd_edge::inference::{BasicBlock, Classifier, ConvLayer, DeployedNet, Head};
use lsskd_edge::registry::{Manifest, ModelPackage};
use lsskd_edge::samples::ingest::{self, Reject, SampleSource};
use lsskd_edge::settings::{Settings, Sources};
use sha2::Digest;

/// The targets, by the name of their binary.
pub const TARGETS: [&str; 6] = ["sample", "image", "wav", "config", "manifest", "onnx"];

/// Runs `data` through the target `name`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "sample" => sample(data),
        "image" => image(data),
        "wav" => wav(data),
        "config" => config(data),
        "manifest" => manifest(data),
        "onnx" => onnx(data),
        _ => return false,
    }
    true
}

/// The shipped models' preprocessing (vision 1×28×28, scenes 3×64×64, audio 16 kHz log-mel),
/// read from their manifests at build time.
pub fn shipped_models() -> &'static [(&'static str, Preprocess)] {
    static MODELS: OnceLock<Vec<(&'static str, Preprocess)>> = OnceLock::new();
    MODELS.get_or_init(|| {
        [
            ("vision", include_str!("../../models/vision/manifest.json")),
            ("scenes", include_str!("../../models/scenes/manifest.json")),
            ("audio", include_str!("../../models/audio/manifest.json")),
        ]
        .into_iter()
        .map(|(name, json)| {
            let m: Manifest = serde_json::from_str(json).expect("a shipped manifest parses");
            (name, m.preprocess)
        })
        .collect()
    })
}

/// A sample arriving on `samples/<model>/add`, as the inbound thread handles it: the
/// payload checked against the daemon's real limit ([`ingest::DEFAULT_MAX_PAYLOAD`], 2 MiB),
/// its data decoded and checked for every shipped model, and an accepted sample turned into
/// the model's input tensor (what training does with it later).
///
/// An input that starts with `{` is the payload itself (JSON, base64 and all); any other
/// input is a file, sent in a well-formed request (`{"id","label","data"}`) so that the
/// fuzzer's mutations reach the decoders through the JSON and base64 layers.
pub fn sample(data: &[u8]) {
    let wrapped;
    let payload = if data.first() == Some(&b'{') {
        data
    } else {
        wrapped = serde_json::json!({
            "id": "fuzz-1",
            "label": "parcel",
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        })
        .to_string();
        wrapped.as_bytes()
    };
    let parsed = match ingest::parse(payload, ingest::DEFAULT_MAX_PAYLOAD) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Reject::TooLarge { .. }
                        | Reject::Json(_)
                        | Reject::Name { .. }
                        | Reject::Source
                        | Reject::Base64(_)
                        | Reject::Decode(_)
                ),
                "the parser gave {e:?}"
            );
            return;
        }
    };
    let _ = ingest::peek_id(payload);
    let SampleSource::Data { bytes, .. } = parsed.source else {
        return;
    };
    for (name, pre) in shipped_models() {
        match ingest::check_data(&bytes, name, pre) {
            Ok(raw) => {
                pre.tensor(&raw)
                    .expect("an accepted sample becomes a tensor");
            }
            Err(e) => assert!(
                matches!(
                    e,
                    Reject::Decode(_)
                        | Reject::Modality { .. }
                        | Reject::ImageSize { .. }
                        | Reject::Duration { .. }
                ),
                "the data check gave {e:?}"
            ),
        }
    }
}

/// An image file (PNG or JPEG, or anything else) through [`features::decode`], then the
/// shipped image models' preprocessing (resize, colour, normalisation).
pub fn image(data: &[u8]) {
    if let Ok(Raw::Image(img)) = features::decode(data) {
        assert!(
            img.width() <= features::MAX_IMAGE_SIDE && img.height() <= features::MAX_IMAGE_SIDE
        );
        let raw = Raw::Image(img);
        for (_, pre) in shipped_models() {
            if let Preprocess::Image(_) = pre {
                pre.tensor(&raw).expect("an image becomes a tensor");
            }
        }
    }
}

/// A WAV file through [`features::decode`]; a clip the daemon would take (its duration
/// checked against the audio model, `ingest::check_raw`) through resampling and log-mel.
pub fn wav(data: &[u8]) {
    let Ok(raw @ Raw::Audio(_)) = features::decode(data) else {
        return;
    };
    assert!(
        raw.bytes() <= 4 * data.len(),
        "{} bytes of samples from {}",
        raw.bytes(),
        data.len()
    );
    for (_, pre) in shipped_models() {
        if let Preprocess::Audio(_) = pre
            && ingest::check_raw(&raw, pre).is_ok()
        {
            pre.tensor(&raw).expect("a clip becomes a tensor");
        }
    }
}

/// A scratch folder of this process, under `LSSKD_FUZZ_SCRATCH` (`scripts/fuzz.sh` sets it
/// and removes it at the end), else `/dev/shm` where there is one (the targets write a file
/// per input), else the temporary folder.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = match std::env::var_os("LSSKD_FUZZ_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None if shm.is_dir() => shm.to_path_buf(),
            None => std::env::temp_dir(),
        };
        let dir = base.join(format!("lsskd-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// A configuration file (TOML) through the daemon's settings loader: merged over the
/// embedded defaults, every section and path checked, the password file read; a loaded
/// configuration is dumped (`validate --print`) and the secret warnings computed.
pub fn config(data: &[u8]) {
    let path = scratch().join("config.toml");
    std::fs::write(&path, data).expect("write the config");
    let sources = Sources {
        file: Some(path),
        env: Vec::new(),
    };
    match Settings::load(&sources) {
        Ok(settings) => {
            let _ = settings.to_toml();
            let _ = lsskd_edge::settings::secret_warnings(&sources, &settings);
        }
        Err(e) => assert!(!e.problems.is_empty(), "an error without a problem"),
    }
}

/// The small package the `manifest` target's manifests describe: a 1×28×28 network with
/// one residual block, an embedding of 4 and 10 classes (the vision model's input and
/// classes), its `model.onnx` and a stand-in training checkpoint. Deterministic, so that
/// the committed seeds (`seeds`) carry these files' hashes.
pub fn fixture_files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "model.onnx".into(),
            lsskd_edge::inference::write_onnx(&fixture_net()),
        ),
        (
            "train-state.bpk".into(),
            b"lsskd-edge fuzz fixture: not a checkpoint".to_vec(),
        ),
    ]
}

/// The network of [`fixture_files`].
pub fn fixture_net() -> DeployedNet {
    let conv = |out: usize, inp: usize, k: usize| ConvLayer {
        weight: (0..out * inp * k * k)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.05)
            .collect(),
        shape: [out, inp, k, k],
        bias: vec![0.01; out],
        stride: 1,
        padding: k / 2,
    };
    let (classes, dim) = (10, 4);
    let mut weight: Vec<f32> = (0..classes * dim).map(|i| ((i % 5) as f32) - 2.0).collect();
    for row in weight.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().for_each(|v| *v *= 16.0 / norm);
    }
    DeployedNet {
        input_shape: [1, 28, 28],
        stem: conv(dim, 1, 3),
        blocks: vec![BasicBlock {
            conv1: conv(dim, dim, 3),
            conv2: conv(dim, dim, 3),
            shortcut: None,
        }],
        head: Head::Cosine {
            weight,
            classes,
            dim,
            eps: 1e-6,
            offset: Vec::new(),
        },
    }
}

/// The vision model's manifest rewritten for [`fixture_files`] (classes, parameter count,
/// embedding size, file hashes): a manifest that loads.
pub fn fixture_manifest() -> Manifest {
    let mut m: Manifest = serde_json::from_str(include_str!("../../models/vision/manifest.json"))
        .expect("the vision manifest parses");
    let net = fixture_net();
    m.classes.truncate(10);
    m.deployed.param_count = net.param_count();
    m.deployed.embedding_dim = 4;
    m.metrics.clear();
    m.files = fixture_files()
        .into_iter()
        .map(|(name, bytes)| (name, hex::encode(sha2::Sha256::digest(&bytes))))
        .collect();
    m
}

/// A model package's `manifest.json` through [`ModelPackage::load`], in a folder holding
/// [`fixture_files`]: the schema, every check of the manifest, each listed file's hash,
/// the ONNX graph against the manifest; then a loaded package's reference frame.
pub fn manifest(data: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = scratch().join("package");
        std::fs::create_dir_all(&dir).expect("package folder");
        for (name, bytes) in fixture_files() {
            std::fs::write(dir.join(name), bytes).expect("fixture file");
        }
        dir
    });
    std::fs::write(dir.join("manifest.json"), data).expect("write the manifest");
    if let Ok(package) = ModelPackage::load(dir) {
        let _ = package.change_locator();
        let _ = package.has_gate_set();
    }
}

/// An ONNX file as the daemon loads a model: the graph summary the package check uses
/// (`inference::inspect`), then tract's load and optimisation with our convolutions
/// (`Classifier::from_bytes`, the load of `Classifier::load`), and one classification of a
/// zero input when the model's input is small enough to be a model of ours.
pub fn onnx(data: &[u8]) {
    let _ = lsskd_edge::inference::inspect(data);
    if let Ok(classifier) = Classifier::from_bytes(data) {
        let [c, h, w] = classifier.input_shape();
        if c * h * w <= 3 * 128 * 128 {
            let _ = classifier.classify(&vec![0.0; c * h * w]);
        }
    }
}
