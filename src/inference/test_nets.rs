//! Test fixtures for the inference module (compiled only under `cfg(test)`).
//!
//! Owns small seeded [`DeployedNet`]s and a plain-Rust reference forward pass (naive
//! convolution with padding and stride, ReLU, residual add, mean pooling, cosine / linear
//! head), computed in f64. Receives a net and an input; produces `(logits, embedding)` that
//! tract's outputs are compared against.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::graph::{BasicBlock, ConvLayer, DeployedNet, Head};

/// A conv layer with weights uniform in ±1/√fan_in and biases in ±0.1.
pub(crate) fn conv(
    rng: &mut StdRng,
    shape: [usize; 4],
    stride: usize,
    padding: usize,
) -> ConvLayer {
    let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
    let bound = 1.5 / fan_in.sqrt();
    ConvLayer {
        weight: (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-bound..bound))
            .collect(),
        shape,
        bias: (0..shape[0]).map(|_| rng.random_range(-0.1..0.1)).collect(),
        stride,
        padding,
    }
}

/// Stem `in_c→4` (3×3, pad 1), an identity block `4→4`, and a stride-2 block `4→out_c`
/// with a 1×1 stride-2 shortcut conv.
fn backbone(rng: &mut StdRng, input_shape: [usize; 3], out_c: usize) -> DeployedNet {
    let stem = conv(rng, [4, input_shape[0], 3, 3], 1, 1);
    let blocks = vec![
        BasicBlock {
            conv1: conv(rng, [4, 4, 3, 3], 1, 1),
            conv2: conv(rng, [4, 4, 3, 3], 1, 1),
            shortcut: None,
        },
        BasicBlock {
            conv1: conv(rng, [out_c, 4, 3, 3], 2, 1),
            conv2: conv(rng, [out_c, out_c, 3, 3], 1, 1),
            shortcut: Some(conv(rng, [out_c, 4, 1, 1], 2, 0)),
        },
    ];
    DeployedNet {
        input_shape,
        stem,
        blocks,
        head: Head::Linear {
            weight: vec![],
            bias: vec![],
            classes: 0,
            dim: 0,
        },
    }
}

/// Input `[3, 10, 12]`, embedding 8, cosine head with 5 classes (rows of norm 4).
pub(crate) fn cosine_net(seed: u64) -> DeployedNet {
    let mut rng = StdRng::seed_from_u64(seed);
    let (classes, dim) = (5, 8);
    let mut net = backbone(&mut rng, [3, 10, 12], dim);
    let mut weight: Vec<f32> = (0..classes * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    for row in weight.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v *= 4.0 / norm);
    }
    net.head = Head::Cosine {
        weight,
        classes,
        dim,
        eps: 1e-6,
        offset: Vec::new(),
    };
    net
}

/// Input `[1, 8, 8]`, embedding 6, linear head with 3 classes.
pub(crate) fn linear_net(seed: u64) -> DeployedNet {
    let mut rng = StdRng::seed_from_u64(seed);
    let (classes, dim) = (3, 6);
    let mut net = backbone(&mut rng, [1, 8, 8], dim);
    net.head = Head::Linear {
        weight: (0..classes * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
        bias: (0..classes).map(|_| rng.random_range(-0.5..0.5)).collect(),
        classes,
        dim,
    };
    net
}

/// Uniform `[-1, 1)` input of `C*H*W` values.
pub(crate) fn random_input(shape: [usize; 3], seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

/// A `[C, H, W]` activation in f64.
struct Act {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f64>,
}

/// Naive zero-padded strided convolution plus bias.
fn conv_ref(x: &Act, l: &ConvLayer) -> Act {
    let [oc, ic, kh, kw] = l.shape;
    assert_eq!(ic, x.c);
    let (s, p) = (l.stride, l.padding as isize);
    let oh = (x.h + 2 * l.padding - kh) / s + 1;
    let ow = (x.w + 2 * l.padding - kw) / s + 1;
    let mut data = vec![0.0; oc * oh * ow];
    for o in 0..oc {
        for y in 0..oh {
            for xo in 0..ow {
                let mut acc = f64::from(l.bias[o]);
                for i in 0..ic {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (y * s) as isize + ky as isize - p;
                            let ix = (xo * s) as isize + kx as isize - p;
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            let wv = l.weight[((o * ic + i) * kh + ky) * kw + kx];
                            let xv = x.data[(i * x.h + iy as usize) * x.w + ix as usize];
                            acc += f64::from(wv) * xv;
                        }
                    }
                }
                data[(o * oh + y) * ow + xo] = acc;
            }
        }
    }
    Act {
        c: oc,
        h: oh,
        w: ow,
        data,
    }
}

fn relu(mut a: Act) -> Act {
    a.data.iter_mut().for_each(|v| *v = v.max(0.0));
    a
}

/// Reference `(logits, embedding)` for one `[C, H, W]` input.
pub(crate) fn reference_forward(net: &DeployedNet, input: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let [c, h, w] = net.input_shape;
    let mut x = Act {
        c,
        h,
        w,
        data: input.iter().map(|&v| f64::from(v)).collect(),
    };
    x = relu(conv_ref(&x, &net.stem));
    for b in &net.blocks {
        let y = conv_ref(&relu(conv_ref(&x, &b.conv1)), &b.conv2);
        let short = match &b.shortcut {
            Some(sc) => conv_ref(&x, sc),
            None => x,
        };
        assert_eq!((y.c, y.h, y.w), (short.c, short.h, short.w));
        let data = y.data.iter().zip(&short.data).map(|(a, b)| a + b).collect();
        x = relu(Act { data, ..y });
    }
    let hw = x.h * x.w;
    let emb: Vec<f64> = x
        .data
        .chunks(hw)
        .map(|ch| ch.iter().sum::<f64>() / hw as f64)
        .collect();
    let logits: Vec<f64> = match &net.head {
        Head::Cosine {
            weight,
            classes,
            dim,
            eps,
            offset,
        } => {
            let norm = emb
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt()
                .max(f64::from(*eps));
            (0..*classes)
                .map(|n| {
                    offset.get(n).map_or(0.0, |&o| f64::from(o))
                        + (0..*dim)
                            .map(|d| emb[d] / norm * f64::from(weight[n * dim + d]))
                            .sum::<f64>()
                })
                .collect()
        }
        Head::Linear {
            weight,
            bias,
            classes,
            dim,
        } => (0..*classes)
            .map(|n| {
                f64::from(bias[n])
                    + (0..*dim)
                        .map(|d| emb[d] * f64::from(weight[n * dim + d]))
                        .sum::<f64>()
            })
            .collect(),
    };
    let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (to32(logits), to32(emb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_nets_are_valid() {
        cosine_net(1).validate().expect("cosine net");
        linear_net(1).validate().expect("linear net");
    }

    #[test]
    fn reference_conv_pads_and_strides() {
        // 1×1 input channel 3×3 of ones, 3×3 kernel of ones, pad 1, stride 2 → 2×2 output
        // whose corners each see a 2×2 window of ones.
        let l = ConvLayer {
            weight: vec![1.0; 9],
            shape: [1, 1, 3, 3],
            bias: vec![0.5],
            stride: 2,
            padding: 1,
        };
        let x = Act {
            c: 1,
            h: 3,
            w: 3,
            data: vec![1.0; 9],
        };
        let y = conv_ref(&x, &l);
        assert_eq!((y.h, y.w), (2, 2));
        assert_eq!(y.data, vec![4.5; 4]);
    }
}
