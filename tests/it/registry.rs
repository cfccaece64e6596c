//! Version store on real packages: stage, promote, rollback, pruning and the fallbacks
//! after a corrupt pointer or a damaged version.

use std::fs;

use lsskd_edge::registry::ModelPackage;
use lsskd_edge::registry::versions::Versions;

use crate::core_cli::tiny_package;

/// Every file of a package as (relative path, bytes), for staging a copy as a new version.
fn files_of(pkg: &ModelPackage) -> Vec<(String, Vec<u8>)> {
    pkg.manifest
        .files
        .keys()
        .map(|rel| (rel.clone(), fs::read(pkg.dir.join(rel)).expect("read")))
        .collect()
}

#[test]
fn stage_promote_rollback_and_prune() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped =
        ModelPackage::load(&tiny_package(dir.path(), &["--method", "ce"])).expect("shipped");
    let state = dir.path().join("state");
    let versions = Versions::new(&state, "vision", &shipped.dir, 2).expect("open");
    let cur = versions.open_current().expect("current");
    assert_eq!(cur.version, 0, "fresh device serves the shipped package");
    assert!(cur.warning.is_none());

    let v1 = versions
        .stage(shipped.manifest.clone(), 0, files_of(&shipped))
        .expect("stage");
    assert_eq!((v1.manifest.version, v1.manifest.parent), (1, Some(0)));
    assert_eq!(
        versions.open_current().expect("current").version,
        0,
        "staging does not go live"
    );
    versions.promote(1).expect("promote");
    assert_eq!(versions.open_current().expect("current").version, 1);

    for _ in 0..3 {
        let cur = versions.open_current().expect("current");
        let next = versions
            .stage(
                cur.package.manifest.clone(),
                cur.version,
                files_of(&cur.package),
            )
            .expect("stage");
        versions.promote(next.manifest.version).expect("promote");
    }
    assert_eq!(versions.open_current().expect("current").version, 4);
    assert_eq!(
        versions.on_disk().expect("list"),
        vec![3, 4],
        "pruned to the last 2"
    );

    let back = versions.rollback().expect("rollback");
    assert_eq!(back.manifest.version, 3);
    assert_eq!(versions.open_current().expect("current").version, 3);
}

#[test]
fn corrupt_pointer_or_version_falls_back_to_the_newest_valid_one_loudly() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped =
        ModelPackage::load(&tiny_package(dir.path(), &["--method", "ce"])).expect("shipped");
    let state = dir.path().join("state");
    let versions = Versions::new(&state, "vision", &shipped.dir, 5).expect("open");
    for parent in 0..2 {
        let v = versions
            .stage(shipped.manifest.clone(), parent, files_of(&shipped))
            .expect("stage");
        versions.promote(v.manifest.version).expect("promote");
    }
    fs::write(versions.root().join("current"), "garbage").expect("write");
    let cur = versions.open_current().expect("fallback");
    assert_eq!(cur.version, 2);
    assert!(
        cur.warning
            .as_deref()
            .is_some_and(|w| w.contains("corrupt pointer")),
        "{:?}",
        cur.warning
    );

    // The pointer names v2 but v2 is damaged: v1 serves.
    versions.promote(2).expect("promote");
    fs::write(versions.path_of(2).join("model.onnx"), b"half a model").expect("damage");
    let cur = versions.open_current().expect("fallback");
    assert_eq!(cur.version, 1);
    assert!(
        cur.warning
            .as_deref()
            .is_some_and(|w| w.contains("unusable")),
        "{:?}",
        cur.warning
    );

    // A half-written staging folder left by a crash is ignored.
    fs::create_dir_all(versions.root().join(".tmp-v0003")).expect("mkdir");
    assert_eq!(versions.on_disk().expect("list"), vec![1, 2]);
}

#[test]
fn gate_set_is_written_by_train_added_by_export_and_optional() {
    let _cpu = crate::common::cpu_shared();
    use lsskd_edge::registry::replay;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = tiny_package(dir.path(), &["--method", "ce", "--gate-per-class", "3"]);
    let pkg = ModelPackage::load(&path).expect("package");
    assert!(pkg.has_gate_set());
    let gate = replay::load_gate(&pkg.dir, &pkg.manifest.classes).expect("gate set");
    assert_eq!(gate.len(), 3 * pkg.manifest.classes.len());
    assert!(pkg.manifest.files.contains_key("gate/t-shirt_top/002.png"));

    // A package without a gate set (as packages before it) still loads.
    let mut manifest = pkg.manifest.clone();
    manifest.files.retain(|k, _| !k.starts_with("gate/"));
    fs::remove_dir_all(path.join("gate")).expect("rm gate");
    fs::write(
        path.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("manifest");
    let bare = ModelPackage::load(&path).expect("package without gate set");
    assert!(!bare.has_gate_set());
    assert!(
        replay::load_gate(&bare.dir, &bare.manifest.classes)
            .expect("none")
            .is_empty()
    );

    // `export --gate-data` adds one and changes nothing else.
    let onnx = fs::read(bare.onnx_path()).expect("onnx");
    let fashion = crate::common::fashion();
    let o = crate::common::cli(&[
        "export",
        "--model",
        path.to_str().expect("utf-8"),
        "--gate-data",
        fashion.to_str().expect("utf-8"),
        "--gate-split",
        "val",
        "--gate-per-class",
        "4",
    ]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    let with = ModelPackage::load(&path).expect("package with gate set");
    assert_eq!(fs::read(with.onnx_path()).expect("onnx"), onnx);
    let mut rest = with.manifest.files.clone();
    rest.retain(|k, _| !k.starts_with("gate/"));
    assert_eq!(rest, manifest.files);
    assert_eq!(
        replay::load_gate(&with.dir, &with.manifest.classes)
            .expect("gate set")
            .len(),
        4 * with.manifest.classes.len()
    );
}

#[test]
fn logit_offsets_in_the_manifest_reach_the_training_net_and_wrong_ones_are_named() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = tiny_package(dir.path(), &["--method", "ce"]);
    let pkg = ModelPackage::load(&path).expect("package");
    let n = pkg.manifest.classes.len();
    let write = |offsets: Vec<f32>| {
        let mut manifest = pkg.manifest.clone();
        manifest.train_state.logit_offset = offsets;
        fs::write(
            path.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest).expect("json"),
        )
        .expect("write manifest");
    };
    let offsets: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
    write(offsets.clone());
    let device = lsskd_edge::lsskd::training_device(0);
    let net = ModelPackage::load(&path)
        .expect("package with offsets")
        .load_train_net(&device)
        .expect("train net");
    assert_eq!(net.student.classifier.offset, offsets);

    write(vec![0.5; n + 1]);
    let err = ModelPackage::load(&path)
        .expect_err("one offset too many")
        .to_string();
    assert!(err.contains("logit_offset"), "{err}");
}
