//! Student → [`DeployedNet`]: BatchNorm folded into convolutions, cosine-head normalisation
//! and scale folded into the weights, every auxiliary head left behind.

use super::net::{Block, ClassifierHead, ConvBn, Student, offset_fits};
use super::{LsskdError, values};
use crate::inference::graph::{BasicBlock, ConvLayer, DeployedNet, Head};

fn fold(cb: &ConvBn) -> Result<ConvLayer, LsskdError> {
    let w = cb.conv.weight.val();
    let shape = w.dims();
    let mut weight = values(w)?;
    let gamma = values(cb.bn.gamma.val())?;
    let beta = values(cb.bn.beta.val())?;
    let mean = values(cb.bn.running_mean.value())?;
    let var = values(cb.bn.running_var.value())?;
    let per_out = shape[1] * shape[2] * shape[3];
    let mut bias = vec![0.0; shape[0]];
    for o in 0..shape[0] {
        let scale = gamma[o] / (var[o] + cb.bn.epsilon as f32).sqrt();
        for v in &mut weight[o * per_out..(o + 1) * per_out] {
            *v *= scale;
        }
        bias[o] = beta[o] - mean[o] * scale;
    }
    Ok(ConvLayer {
        weight,
        shape,
        bias,
        stride: cb.stride(),
        padding: shape[2] / 2,
    })
}

fn block(b: &Block) -> Result<BasicBlock, LsskdError> {
    Ok(BasicBlock {
        conv1: fold(&b.c1)?,
        conv2: fold(&b.c2)?,
        shortcut: b.shortcut.as_ref().map(fold).transpose()?,
    })
}

/// The deployed form of a classifier (cosine: rows normalised and scaled).
pub fn head(c: &ClassifierHead) -> Result<Head, LsskdError> {
    let [classes, dim] = c.weight.shape().dims::<2>();
    let mut weight = values(c.weight.val())?;
    // One that does not fit is a bug upstream (imprinting and `offset_labels` resize it,
    // the package load checks it).
    if !offset_fits(&c.offset, classes) {
        return Err(LsskdError::Arch(format!(
            "classifier has {classes} classes but {} logit offsets",
            c.offset.len()
        )));
    }
    Ok(match &c.bias {
        None => {
            for row in weight.chunks_mut(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
                for v in row {
                    *v *= c.scale / norm;
                }
            }
            Head::Cosine {
                weight,
                classes,
                dim,
                eps: 1e-6,
                offset: c.offset.clone(),
            }
        }
        Some(b) => Head::Linear {
            weight,
            bias: values(b.val())?,
            classes,
            dim,
        },
    })
}

/// Fold a student (any mode) into plain arrays for the ONNX writer.
pub fn deployed(student: &Student, input_shape: [usize; 3]) -> Result<DeployedNet, LsskdError> {
    let blocks = student
        .stages
        .iter()
        .flatten()
        .map(block)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DeployedNet {
        input_shape,
        stem: fold(&student.stem)?,
        blocks,
        head: head(&student.classifier)?,
    })
}
