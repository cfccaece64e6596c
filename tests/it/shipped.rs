//! The shipped model packages: they verify, stay small, and reproduce through tract the
//! validation accuracy their manifests record.

use lsskd_edge::commands::eval::evaluate;
use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::registry::ModelPackage;

use crate::common::{data_root, repo};

fn check(name: &str, data: &str) {
    let pkg =
        ModelPackage::load(&repo().join("models").join(name)).expect("shipped package verifies");
    let m = &pkg.manifest;
    assert!(!m.deployed.auxiliary_heads_exported);
    assert!(m.deployed.training_param_count > 2 * m.deployed.param_count);
    let bytes: u64 = m
        .files
        .keys()
        .map(|f| std::fs::metadata(pkg.dir.join(f)).expect("file").len())
        .sum();
    assert!(bytes < 8 << 20, "{name} package is {bytes} bytes");
    let recorded = m.metrics.first().expect("validation metrics recorded");
    let ds =
        dataset::load(&data_root().join(data), "val", &LoadOptions::default()).expect("val split");
    let report = evaluate(&pkg, &ds).expect("eval");
    assert_eq!(report.n, recorded.n);
    assert!(
        (report.accuracy - recorded.accuracy).abs() < 1e-9,
        "{name}: eval gives {} but the manifest records {}",
        report.accuracy,
        recorded.accuracy
    );
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
