//! The version store under the crash-point explorer (`durable::crash`): every crash state
//! of the first version on a new device (stage + promote), a stage, a promote, a promote
//! that prunes, and a rollback, reopened with the real registry. Invariants, in every
//! state: `open_current` gives a verified package without a fallback warning, the old or
//! the new current one (the new one once the call returned); every `vNNNN` folder on disk
//! verifies (a version is visible whole or not at all); a staged version, once returned,
//! is on disk; the current version is never pruned.
//!
//! `LSSKD_CRASH_STATES=all cargo test --lib registry::crash -- --nocapture` checks every
//! state (the figures in RELIABILITY.md); CI checks a few per crash point.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::package::{FORMAT, Manifest, ModelPackage};
use super::versions::Versions;
use crate::durable::Fs;
use crate::durable::crash::{Budget, Explored, Recorder, explore};
use crate::features::{ImageSpec, Preprocess};
use crate::inference::test_nets::cosine_net;
use crate::inference::write_onnx;

const MODEL: &str = "vision";

/// The package's files: a 5-class ONNX model of a few hundred parameters, a stand-in
/// training state (loading verifies its hash, not its contents) and exemplars in nested
/// folders, as real packages have.
fn files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("model.onnx".into(), write_onnx(&cosine_net(3))),
        ("train-state.bpk".into(), b"training state".to_vec()),
        ("replay/a/0.png".into(), b"replay exemplar".to_vec()),
        ("gate/b/0.png".into(), b"gate exemplar".to_vec()),
    ]
}

/// The shipped vision manifest, made to describe [`files`].
fn manifest() -> Manifest {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vision");
    let mut m = Manifest::read(&shipped).expect("the shipped vision manifest");
    let net = cosine_net(3);
    m.format = FORMAT;
    m.classes = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    m.background = None;
    m.change_reference = None;
    m.preprocess = Preprocess::Image(ImageSpec {
        channels: 3,
        height: 10,
        width: 12,
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
    });
    m.train_state.logit_offset.clear();
    m.training_data = None;
    m.metrics.clear();
    m.adaptation = None;
    m.deployed.param_count = net.param_count();
    m.deployed.embedding_dim = net.embedding_dim();
    m
}

/// The shipped package (version 0), written once per test process.
fn shipped() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shipped");
        ModelPackage::write(&path, manifest(), files()).expect("shipped package");
        (dir, path)
    });
    path
}

fn stage(versions: &Versions, parent: u32) -> u32 {
    versions
        .stage(manifest(), parent, files())
        .expect("stage")
        .manifest
        .version
}

/// What a crash state must show after a number of acknowledgements.
#[derive(Debug, Clone)]
struct Expect {
    /// The versions `open_current` may serve.
    current: Vec<u32>,
    /// Versions that must be on disk.
    on_disk: Vec<u32>,
}

fn expect(current: &[u32], on_disk: &[u32]) -> Expect {
    Expect {
        current: current.to_vec(),
        on_disk: on_disk.to_vec(),
    }
}

/// The invariants of one crash state in `state_dir`.
fn check(state_dir: &Path, want: &Expect) -> Result<(), String> {
    let versions = Versions::new(state_dir, MODEL, shipped(), 10).map_err(|e| e.to_string())?;
    let current = versions
        .open_current()
        .map_err(|e| format!("no current version: {e}"))?;
    if let Some(w) = &current.warning {
        return Err(format!("fell back: {w}"));
    }
    if !want.current.contains(&current.version) {
        return Err(format!(
            "current is version {}, expected one of {:?}",
            current.version, want.current
        ));
    }
    let on_disk = versions.on_disk().map_err(|e| e.to_string())?;
    for v in &on_disk {
        ModelPackage::load(&versions.path_of(*v))
            .map_err(|e| format!("version {v} is half-visible: {e}"))?;
    }
    match want.on_disk.iter().find(|v| !on_disk.contains(v)) {
        Some(v) => Err(format!("version {v} is gone (on disk: {on_disk:?})")),
        None => Ok(()),
    }
}

/// A state folder with versions `1..=staged` staged (each the parent of the next) and
/// `current` promoted, and a recorder over it.
fn setup(staged: u32, current: u32) -> (tempfile::TempDir, Arc<Recorder>) {
    let dir = tempfile::tempdir().expect("tempdir");
    if staged > 0 {
        let versions = Versions::new(dir.path(), MODEL, shipped(), 10).expect("versions");
        for v in 1..=staged {
            assert_eq!(stage(&versions, v - 1), v);
        }
        if current > 0 {
            versions.promote(current).expect("promote");
        }
    }
    let rec = Arc::new(Recorder::new(dir.path()).expect("recorder"));
    (dir, rec)
}

fn versions(rec: &Arc<Recorder>, dir: &Path, keep: usize) -> Versions {
    let fs: Arc<dyn Fs> = rec.clone();
    Versions::new_with(fs, dir, MODEL, shipped(), keep).expect("versions")
}

fn run(name: &str, rec: &Recorder, expects: &[Expect]) -> Explored {
    let explored = explore(rec, Budget::from_env(), |marks, dir| {
        check(dir, &expects[marks])
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("crash states: registry {name}: {explored:?}");
    assert_eq!(explored.capped_points, 0);
    assert!(explored.states >= explored.crash_points, "{explored:?}");
    explored
}

#[test]
fn the_first_version_on_a_new_device_survives_every_crash() {
    let (dir, rec) = setup(0, 0);
    let versions = versions(&rec, dir.path(), 3);
    assert_eq!(stage(&versions, 0), 1);
    rec.mark();
    versions.promote(1).expect("promote");
    rec.mark();
    let expects = [expect(&[0], &[]), expect(&[0, 1], &[1]), expect(&[1], &[1])];
    run("first stage + promote", &rec, &expects);
}

#[test]
fn a_stage_is_whole_or_absent_after_every_crash() {
    let (dir, rec) = setup(1, 1);
    assert_eq!(stage(&versions(&rec, dir.path(), 3), 1), 2);
    rec.mark();
    run("stage", &rec, &[expect(&[1], &[1]), expect(&[1], &[1, 2])]);
}

#[test]
fn a_promote_switches_atomically_after_every_crash() {
    let (dir, rec) = setup(2, 1);
    versions(&rec, dir.path(), 3).promote(2).expect("promote");
    rec.mark();
    run(
        "promote",
        &rec,
        &[expect(&[1, 2], &[1, 2]), expect(&[2], &[1, 2])],
    );
}

#[test]
fn a_prune_never_leaves_half_a_version_after_any_crash() {
    let (dir, rec) = setup(2, 1);
    // Keeping 1: promoting 2 prunes 1.
    versions(&rec, dir.path(), 1).promote(2).expect("promote");
    rec.mark();
    assert_eq!(
        versions(&rec, dir.path(), 1).on_disk().expect("list"),
        vec![2]
    );
    run(
        "promote + prune",
        &rec,
        &[expect(&[1, 2], &[2]), expect(&[2], &[2])],
    );
}

#[test]
fn a_rollback_switches_atomically_after_every_crash() {
    let (dir, rec) = setup(2, 2);
    let back = versions(&rec, dir.path(), 3).rollback().expect("rollback");
    assert_eq!(back.manifest.version, 1);
    rec.mark();
    run(
        "rollback",
        &rec,
        &[expect(&[1, 2], &[1, 2]), expect(&[1], &[1, 2])],
    );
}

#[test]
fn what_a_crash_leaves_of_a_pruned_version_goes_with_the_next_prune() {
    let (dir, _rec) = setup(2, 1);
    let leftover = dir.path().join("models/vision/.pruned-v0009/replay");
    std::fs::create_dir_all(&leftover).expect("mkdir");
    std::fs::write(leftover.join("0.png"), b"half a version").expect("write");
    let versions = Versions::new(dir.path(), MODEL, shipped(), 1).expect("versions");
    versions.promote(2).expect("promote");
    let names: Vec<String> = std::fs::read_dir(versions.root())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with('.')).count(),
        0,
        "{names:?}"
    );
    assert_eq!(versions.on_disk().expect("list"), vec![2]);
}
