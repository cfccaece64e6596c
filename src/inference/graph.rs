//! The deployed (head-free) student as plain data: what the trainer hands to the ONNX
//! writer. BatchNorm is already folded into each convolution; the cosine head already has
//! its weight normalisation and scale folded in. No auxiliary head ever appears here.

use serde::{Deserialize, Serialize};

use super::InferenceError;

/// A 2-D convolution with bias (BatchNorm folded in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvLayer {
    /// `[out_channels, in_channels, kernel_h, kernel_w]`, row-major.
    pub weight: Vec<f32>,
    pub shape: [usize; 4],
    /// `[out_channels]`.
    pub bias: Vec<f32>,
    pub stride: usize,
    pub padding: usize,
}

/// `relu(conv2(relu(conv1(x))) + shortcut(x))`; `shortcut` is identity when `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BasicBlock {
    pub conv1: ConvLayer,
    pub conv2: ConvLayer,
    pub shortcut: Option<ConvLayer>,
}

/// The classifier on the pooled feature `h` (`[1, D]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Head {
    /// `logits = (h / max(‖h‖, eps)) · weightᵀ + offset`; `weight` `[N, D]` row-major, rows
    /// already L2-normalised and multiplied by the cosine scale; `offset` `[N]` or empty (none:
    /// the graph has no addition).
    Cosine {
        weight: Vec<f32>,
        classes: usize,
        dim: usize,
        eps: f32,
        offset: Vec<f32>,
    },
    /// `logits = h · weightᵀ + bias`; `weight` `[N, D]` row-major.
    Linear {
        weight: Vec<f32>,
        bias: Vec<f32>,
        classes: usize,
        dim: usize,
    },
}

/// Stem conv + ReLU, then basic blocks, then global average pooling (`embedding`), then head
/// (`logits`). Input `input` `[1, C, H, W]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedNet {
    /// `[C, H, W]`.
    pub input_shape: [usize; 3],
    pub stem: ConvLayer,
    pub blocks: Vec<BasicBlock>,
    pub head: Head,
}

impl ConvLayer {
    pub fn param_count(&self) -> usize {
        self.weight.len() + self.bias.len()
    }
}

impl DeployedNet {
    /// Number of stored parameters (folded weights, biases, head); must equal the number of
    /// float values in the ONNX initializers other than helper constants.
    pub fn param_count(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.conv1.param_count()
                    + b.conv2.param_count()
                    + b.shortcut.as_ref().map_or(0, ConvLayer::param_count)
            })
            .sum();
        let head = match &self.head {
            Head::Cosine { weight, offset, .. } => weight.len() + offset.len(),
            Head::Linear { weight, bias, .. } => weight.len() + bias.len(),
        };
        self.stem.param_count() + blocks + head
    }

    pub fn num_classes(&self) -> usize {
        match &self.head {
            Head::Cosine { classes, .. } | Head::Linear { classes, .. } => *classes,
        }
    }

    pub fn embedding_dim(&self) -> usize {
        match &self.head {
            Head::Cosine { dim, .. } | Head::Linear { dim, .. } => *dim,
        }
    }
}

impl ConvLayer {
    /// Output spatial size for an `h × w` input, or `None` when the kernel does not fit.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let [_, _, kh, kw] = self.shape;
        if self.stride == 0 {
            return None;
        }
        let out = |n: usize, k: usize| {
            (n + 2 * self.padding)
                .checked_sub(k)
                .map(|span| span / self.stride + 1)
        };
        Some((out(h, kh)?, out(w, kw)?))
    }

    /// Checks weight/bias lengths against `shape`, and that the layer takes `in_channels`.
    fn validate(&self, name: &str, in_channels: usize) -> Result<(), InferenceError> {
        let [out_c, in_c, kh, kw] = self.shape;
        if in_c != in_channels {
            return Err(InferenceError::Shape(format!(
                "{name}: takes {in_c} input channels but receives {in_channels}"
            )));
        }
        if self.weight.len() != out_c * in_c * kh * kw {
            return Err(InferenceError::Shape(format!(
                "{name}: weight has {} values, shape {:?} needs {}",
                self.weight.len(),
                self.shape,
                out_c * in_c * kh * kw
            )));
        }
        if self.bias.len() != out_c {
            return Err(InferenceError::Shape(format!(
                "{name}: bias has {} values, expected {out_c}",
                self.bias.len()
            )));
        }
        if out_c == 0 || kh == 0 || kw == 0 || self.stride == 0 {
            return Err(InferenceError::Shape(format!(
                "{name}: zero-sized shape {:?} or stride {}",
                self.shape, self.stride
            )));
        }
        Ok(())
    }
}

impl DeployedNet {
    /// Checks that every layer's shapes chain together from `input_shape` to the head:
    /// channel counts, weight lengths, spatial sizes (each conv must fit), identity
    /// shortcuts that really preserve the shape, and a head of width `embedding_dim()`.
    pub fn validate(&self) -> Result<(), InferenceError> {
        let [c, mut h, mut w] = self.input_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(InferenceError::Shape(format!(
                "input shape {:?} has a zero dimension",
                self.input_shape
            )));
        }
        let step = |layer: &ConvLayer, name: &str, c: usize, h: usize, w: usize| {
            layer.validate(name, c)?;
            layer.output_hw(h, w).ok_or_else(|| {
                InferenceError::Shape(format!(
                    "{name}: kernel {:?} does not fit a {h}x{w} input",
                    layer.shape
                ))
            })
        };
        (h, w) = step(&self.stem, "stem", c, h, w)?;
        let mut c = self.stem.shape[0];
        for (i, block) in self.blocks.iter().enumerate() {
            let (h1, w1) = step(&block.conv1, &format!("blocks.{i}.conv1"), c, h, w)?;
            let (h2, w2) = step(
                &block.conv2,
                &format!("blocks.{i}.conv2"),
                block.conv1.shape[0],
                h1,
                w1,
            )?;
            let out_c = block.conv2.shape[0];
            let short = match &block.shortcut {
                Some(sc) => {
                    let hw = step(sc, &format!("blocks.{i}.shortcut"), c, h, w)?;
                    (sc.shape[0], hw.0, hw.1)
                }
                None => (c, h, w),
            };
            if short != (out_c, h2, w2) {
                return Err(InferenceError::Shape(format!(
                    "blocks.{i}: residual branch gives {:?} but shortcut gives {short:?}",
                    (out_c, h2, w2)
                )));
            }
            (c, h, w) = (out_c, h2, w2);
        }
        let (classes, dim) = (self.num_classes(), self.embedding_dim());
        if dim != c {
            return Err(InferenceError::Shape(format!(
                "head: expects an embedding of {dim} but the backbone produces {c} channels"
            )));
        }
        if classes == 0 {
            return Err(InferenceError::Shape("head: zero classes".into()));
        }
        let (weight_len, bias_len) = match &self.head {
            Head::Cosine {
                weight,
                eps,
                offset,
                ..
            } => {
                if !(*eps > 0.0 && eps.is_finite()) {
                    return Err(InferenceError::Shape(format!(
                        "head: cosine eps must be positive and finite, got {eps}"
                    )));
                }
                if !(offset.is_empty() || offset.len() == classes) {
                    return Err(InferenceError::Shape(format!(
                        "head: {} logit offsets for {classes} classes",
                        offset.len()
                    )));
                }
                (weight.len(), classes)
            }
            Head::Linear { weight, bias, .. } => (weight.len(), bias.len()),
        };
        if weight_len != classes * dim || bias_len != classes {
            return Err(InferenceError::Shape(format!(
                "head: weight has {weight_len} values (expected {}) and bias {bias_len} (expected {classes})",
                classes * dim
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::test_nets::{conv, cosine_net, linear_net};
    use rand::SeedableRng;

    #[test]
    fn output_hw_applies_padding_and_stride() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert_eq!(
            conv(&mut rng, [2, 2, 3, 3], 2, 1).output_hw(10, 12),
            Some((5, 6))
        );
        assert_eq!(
            conv(&mut rng, [2, 2, 1, 1], 2, 0).output_hw(10, 11),
            Some((5, 6))
        );
        assert_eq!(conv(&mut rng, [2, 2, 5, 5], 1, 0).output_hw(4, 8), None);
    }

    #[test]
    fn validate_rejects_identity_shortcut_that_changes_shape() {
        let mut net = cosine_net(1);
        net.blocks[1].shortcut = None;
        let err = net
            .validate()
            .expect_err("stride-2 block needs a shortcut conv");
        assert!(err.to_string().contains("blocks.1"), "{err}");
    }

    #[test]
    fn validate_rejects_channel_mismatch() {
        let mut net = linear_net(2);
        net.blocks[0].conv1.shape[1] = 3;
        let err = net.validate().expect_err("channel mismatch");
        assert!(err.to_string().contains("blocks.0.conv1"), "{err}");
    }

    #[test]
    fn validate_rejects_head_of_wrong_width() {
        let mut net = linear_net(3);
        if let Head::Linear { dim, .. } = &mut net.head {
            *dim += 1;
        }
        let err = net.validate().expect_err("head width");
        assert!(err.to_string().contains("head"), "{err}");
    }

    #[test]
    fn param_count_sums_every_layer() {
        let net = linear_net(4);
        // stem 4·1·9+4, block0 2·(4·4·9+4), block1 6·4·9+6 + 6·6·9+6 + 6·4+6, head 3·6+3
        let expected = 40 + 2 * 148 + 222 + 330 + 30 + 21;
        assert_eq!(net.param_count(), expected);
    }
}
