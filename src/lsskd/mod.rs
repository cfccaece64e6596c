//! LSSKD: the student network with its auxiliary heads, the joint-label transforms, the
//! losses, the trainer and the export to a head-free [`DeployedNet`](crate::inference::DeployedNet).
//!
//! The only module that imports burn. Training runs on burn's `flex` CPU backend with
//! autodiff, on the caller's (dedicated) thread.

pub mod checkpoint;
pub mod export;
pub mod imprint;
pub mod infer;
pub mod kernels;
#[cfg(test)]
mod kernels_bench;
pub mod loss;
pub mod net;
pub mod train;
pub mod transforms;

pub use burn::prelude::Device;
pub use net::{ArchConfig, HeadKind, Student, TrainNet};
pub use train::{
    Anchor, EpochReport, Method, Progress, SoftStore, TrainConfig, TrainData, Trainer,
};
pub use transforms::{TransformMode, TransformSet};

/// Errors of training, checkpointing and export.
#[derive(Debug, thiserror::Error)]
pub enum LsskdError {
    #[error("training data set is empty")]
    EmptyData,
    #[error("training was cancelled")]
    Cancelled,
    #[error("training diverged (loss {0})")]
    Diverged(f32),
    #[error("tensor read-back failed: {0}")]
    Tensor(String),
    #[error("training state {path}: {message}")]
    Record {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("invalid architecture: {0}")]
    Arch(String),
    #[error(
        "the schedule's {steps} steps would take about {projected_secs:.0} s at this machine's {steps_per_sec:.1} steps a second, over the {cap_secs} s limit"
    )]
    TimeCap {
        steps: usize,
        steps_per_sec: f64,
        projected_secs: f64,
        cap_secs: u64,
    },
}

/// The device a module's parameters live on.
pub(crate) fn device_of<M: burn::module::Module>(module: &M) -> Device {
    module
        .devices()
        .first()
        .cloned()
        .expect("every network here holds parameters")
}

/// All values of a tensor, row-major.
pub(crate) fn values<const D: usize>(t: burn::prelude::Tensor<D>) -> Result<Vec<f32>, LsskdError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| LsskdError::Tensor(format!("{e:?}")))
}

/// The rows of a `[R, K]` tensor.
pub(crate) fn rows(t: burn::prelude::Tensor<2>) -> Result<Vec<Vec<f32>>, LsskdError> {
    let [_, k] = t.dims();
    Ok(values(t)?.chunks(k).map(<[f32]>::to_vec).collect())
}

/// The CPU inference device (burn flex).
pub fn cpu_device() -> Device {
    Device::default()
}

/// The CPU training device (burn flex with autodiff), seeded for deterministic init.
pub fn training_device(seed: u64) -> Device {
    let device = Device::default().autodiff();
    device.seed(seed);
    device
}
