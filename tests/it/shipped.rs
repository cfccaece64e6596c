//! The shipped model packages: they verify, stay small, and reproduce through tract the
//! validation accuracy their manifests record.

use lsskd_edge::commands::eval::evaluate;
use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::registry::ModelPackage;

use crate::common::{data_root, repo};

fn check(name: &str, data: &str) {
    let ds =
        dataset::load(&data_root().join(data), "val", &LoadOptions::default()).expect("val split");
    let pkg = check_on(name, &ds);
    // Trained with LSSKD: its auxiliary heads were most of the training network.
    let d = &pkg.manifest.deployed;
    assert!(d.training_param_count > 2 * d.param_count);
}

fn check_on(name: &str, ds: &dataset::Dataset) -> ModelPackage {
    let pkg =
        ModelPackage::load(&repo().join("models").join(name)).expect("shipped package verifies");
    let m = &pkg.manifest;
    assert!(!m.deployed.auxiliary_heads_exported);
    assert!(m.deployed.training_param_count > m.deployed.param_count);
    let bytes: u64 = m
        .files
        .keys()
        .map(|f| std::fs::metadata(pkg.dir.join(f)).expect("file").len())
        .sum();
    assert!(bytes < 8 << 20, "{name} package is {bytes} bytes");
    let recorded = m.metrics.first().expect("validation metrics recorded");
    let report = evaluate(&pkg, ds).expect("eval");
    assert_eq!(report.n, recorded.n);
    assert!(
        (report.accuracy - recorded.accuracy).abs() < 1e-9,
        "{name}: eval gives {} but the manifest records {}",
        report.accuracy,
        recorded.accuracy
    );
    pkg
}

#[test]
fn shipped_audio_model_reproduces_its_validation_accuracy() {
    let _cpu = crate::common::cpu_shared();
    check("audio", "espeak-kws");
}

#[test]
fn shipped_vision_model_reproduces_its_validation_accuracy() {
    let _cpu = crate::common::cpu_shared();
    check("vision", "fashion-mnist");
}

/// `models/scenes` was validated on the train views held out of its training (tr31..tr34,
/// `scripts/bench-scenes.sh`), each frame cut to its view's region and then to its change
/// from the view's first five empty frames, as `train` saw them.
#[test]
fn shipped_scenes_model_reproduces_its_validation_accuracy() {
    let _cpu = crate::common::cpu_shared();
    let scenes = data_root().join("scene-states");
    let dir = tempfile::tempdir().expect("tempdir");
    let hold = dir.path().join("hold");
    std::fs::create_dir(&hold).expect("mkdir");
    std::os::unix::fs::symlink(scenes.join("classes.txt"), dir.path().join("classes.txt"))
        .expect("link");
    for e in std::fs::read_dir(scenes.join("train")).expect("train views") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if ["tr31_", "tr32_", "tr33_", "tr34_"]
            .iter()
            .any(|v| name.starts_with(v))
        {
            std::os::unix::fs::symlink(e.path(), hold.join(e.file_name())).expect("link");
        }
    }
    let regions = std::process::Command::new("python3")
        .arg(repo().join("scripts/scene-regions.py"))
        .arg(&scenes)
        .arg("train")
        .output()
        .expect("scene-regions.py");
    assert!(regions.status.success(), "{regions:?}");
    let csv = dir.path().join("regions.csv");
    std::fs::write(&csv, &regions.stdout).expect("write");
    let mut ds = dataset::load(dir.path(), "hold", &LoadOptions::default()).expect("hold views");
    ds.crop_to_regions(&dataset::regions::load(&csv).expect("regions"))
        .expect("regions fit");
    ds.crop_to_changes("empty", lsskd_edge::features::change::REFERENCE_FRAMES)
        .expect("references");
    ds.resize_images(64, 64);
    check_on("scenes", &ds);
}

/// `models/sounds` was validated on the core classes of sound-events' `val` split (the
/// novel classes, which it was not trained on, are skipped), and its package records the
/// background class the pipeline reports as nothing.
#[test]
fn shipped_sounds_model_reproduces_its_validation_accuracy() {
    let _cpu = crate::common::cpu_shared();
    let ds = dataset::load(
        &data_root().join("sound-events"),
        "val",
        &LoadOptions::default(),
    )
    .expect("val split");
    let pkg = check_on("sounds", &ds);
    assert_eq!(pkg.manifest.background.as_deref(), Some("background"));
}
