//! Batched forward passes of a student through burn (monitoring, parity checks, imprinting).

use burn::module::Module;
use burn::prelude::*;

use super::net::Student;
use super::{LsskdError, device_of, rows};

/// Logits and pooled embeddings of a batch, row-major.
pub struct BatchOutput {
    /// `[rows, N]`.
    pub logits: Vec<Vec<f32>>,
    /// `[rows, D]`.
    pub embeddings: Vec<Vec<f32>>,
}

/// Run `student` in validation mode on `inputs` (each `[C, H, W]` = `shape`).
pub fn forward_batch(
    student: &Student,
    inputs: &[Vec<f32>],
    shape: [usize; 3],
) -> Result<BatchOutput, LsskdError> {
    let student = student.valid();
    let device = device_of(&student);
    let [c, h, w] = shape;
    let mut logits = Vec::with_capacity(inputs.len());
    let mut embeddings = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(256) {
        let flat: Vec<f32> = chunk.concat();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), c, h, w]), &device);
        let out = student.forward(x);
        logits.extend(rows(out.logits)?);
        embeddings.extend(rows(out.embedding)?);
    }
    Ok(BatchOutput { logits, embeddings })
}
