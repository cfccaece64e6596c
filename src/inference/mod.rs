//! Inference: ONNX writing, inspection and running.
//!
//! This is the only module of the crate that imports tract (and tract's protobuf types).
//! It receives a [`DeployedNet`] from the trainer and produces an ONNX file
//! ([`write_onnx`], [`save_onnx`]); it summarises ONNX files without tract ([`inspect`]);
//! and it loads them into a thread-safe [`Classifier`] that turns one `[C, H, W]` input
//! into logits and an embedding. All failures are [`InferenceError`]s.

pub mod classifier;
pub mod direct;
pub mod error;
pub mod graph;
pub mod inspect;
pub mod onnx;
pub mod scores;
#[cfg(test)]
pub(crate) mod test_nets;

pub use classifier::{Classifier, KernelChoice, NodeTime, Output, fma_per_node};
pub use error::InferenceError;
pub use graph::*;
pub use inspect::{GraphSummary, ModelSource, inspect};
pub use onnx::{save_onnx, write_onnx};
pub use scores::{Scored, argmax, softmax, top_k, top_k_of};
