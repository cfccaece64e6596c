//! The one error type of the inference module.
//!
//! Owns [`InferenceError`]; receives failures from file I/O, protobuf decoding and tract;
//! produces messages that name the model file (or `<in-memory ONNX>`) and the cause, so a
//! daemon log line is enough to tell a missing file from a corrupt one from a bad input.

use std::path::PathBuf;

/// Everything that can go wrong while writing, inspecting, loading or running an ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The model file could not be read.
    #[error("reading ONNX model {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The model file could not be written.
    #[error("writing ONNX model {}: {source}", path.display())]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a usable ONNX model (bad or truncated protobuf, missing graph,
    /// dangling tensor names, or a graph tract refuses).
    #[error("parsing ONNX model {}: {message}", path.display())]
    Parse {
        /// The file the bytes came from, or `<in-memory ONNX>`.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The input slice does not hold `C*H*W` values.
    #[error("model input has {got} values, expected {expected} (C*H*W)")]
    InputLength {
        /// `C*H*W` of the loaded model.
        expected: usize,
        /// Length of the slice passed in.
        got: usize,
    },
    /// tract failed while running the model.
    #[error("running ONNX model: {0}")]
    Run(String),
    /// A network or model has shapes that do not fit together.
    #[error("model shape: {0}")]
    Shape(String),
}

/// Label used in place of a file path when a model is given as bytes.
pub(crate) const IN_MEMORY: &str = "<in-memory ONNX>";
