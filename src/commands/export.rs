//! `lsskd-edge export`: re-export `model.onnx` from a package's training state.

use std::path::Path;

use anyhow::Context;

use crate::inference::write_onnx;
use crate::lsskd::{self, checkpoint, export};
use crate::registry::ModelPackage;
use crate::registry::package::{MODEL_ONNX, write_synced};

/// Rebuild the student from `train-state`, write a new `model.onnx`, update the manifest.
pub fn run(model: &Path) -> anyhow::Result<ModelPackage> {
    let pkg = ModelPackage::load(model)?;
    let m = &pkg.manifest;
    let device = lsskd::cpu_device();
    let net = checkpoint::load(
        &m.arch,
        m.classes.len(),
        m.train_state.transforms.len(),
        m.train_state.aux_heads,
        &pkg.train_state_path(),
        &device,
    )?;
    let deployed = export::deployed(&net.student, m.preprocess.input_shape())?;
    let onnx = write_onnx(&deployed);
    let path = pkg.dir.join(MODEL_ONNX);
    let tmp = pkg.dir.join(".model.onnx.tmp");
    write_synced(&tmp, &onnx)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    let mut manifest = m.clone();
    manifest.deployed.param_count = deployed.param_count();
    manifest.files.insert(
        MODEL_ONNX.into(),
        crate::registry::package::sha256_file(&path)?,
    );
    let mpath = pkg.dir.join(crate::registry::package::MANIFEST);
    let mtmp = pkg.dir.join(".manifest.json.tmp");
    write_synced(&mtmp, &serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::rename(&mtmp, &mpath).with_context(|| format!("replacing {}", mpath.display()))?;
    Ok(ModelPackage::load(model)?)
}
