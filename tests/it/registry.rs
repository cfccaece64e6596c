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
