//! The `train-state` file of a model package: the full training model (student and
//! auxiliary heads) as a burnpack record, so fine-tuning continues LSSKD.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;

use super::LsskdError;
use super::net::{ArchConfig, TrainNet};
use burn::prelude::Device;

/// Write the training model (validation copy: no autodiff graph).
pub fn save(net: &TrainNet, path: &Path) -> Result<(), LsskdError> {
    net.valid().save_file(path).map_err(|e| LsskdError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Rebuild a training model of the given shape and load its parameters from `path`.
pub fn load(
    arch: &ArchConfig,
    classes: usize,
    transforms: usize,
    aux_heads: bool,
    path: &Path,
    device: &Device,
) -> Result<TrainNet, LsskdError> {
    arch.validate().map_err(LsskdError::Arch)?;
    let err = |message: String| LsskdError::Record {
        path: path.to_path_buf(),
        message,
    };
    let record = ModuleRecord::load(path).map_err(|e| err(e.to_string()))?;
    TrainNet::new(arch, classes, transforms, aux_heads, device)
        .try_load_record(record)
        .map_err(|e| err(e.to_string()))
}
