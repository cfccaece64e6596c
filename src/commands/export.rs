//! `lsskd-edge export`: re-export `model.onnx` from a package's training state, optionally
//! trimming the replay set.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::inference::write_onnx;
use crate::lsskd::{self, checkpoint, export};
use crate::registry::ModelPackage;
use crate::registry::package::{MANIFEST, MODEL_ONNX, REPLAY_DIR, sha256_file, write_synced};

/// Rebuild the student from `train-state`, write a new `model.onnx` and, with
/// `replay_per_class`, keep only the first that many exemplars of each class; then rewrite
/// the manifest's file hashes. Each file is replaced atomically (write, fsync, rename).
pub fn run(model: &Path, replay_per_class: Option<usize>) -> anyhow::Result<ModelPackage> {
    let pkg = ModelPackage::load(model)?;
    let m = &pkg.manifest;
    let device = lsskd::cpu_device();
    let net = checkpoint::load_package(&pkg, &device)?;
    let deployed = export::deployed(&net.student, m.preprocess.input_shape())?;
    replace(&pkg.dir.join(MODEL_ONNX), &write_onnx(&deployed))?;

    let mut manifest = m.clone();
    manifest.deployed.param_count = deployed.param_count();
    if let Some(keep) = replay_per_class {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let replay: Vec<String> = manifest
            .files
            .keys()
            .filter(|k| k.starts_with(&format!("{REPLAY_DIR}/")))
            .cloned()
            .collect();
        for rel in replay {
            let class = rel.split('/').nth(1).unwrap_or_default().to_string();
            let n = seen.entry(class).or_default();
            *n += 1;
            if *n > keep {
                let path = pkg.dir.join(&rel);
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                manifest.files.remove(&rel);
            }
        }
    }
    for (rel, hash) in manifest.files.iter_mut() {
        *hash = sha256_file(&pkg.dir.join(rel))?;
    }
    replace(
        &pkg.dir.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(ModelPackage::load(model)?)
}

fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
