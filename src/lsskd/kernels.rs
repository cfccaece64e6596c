//! Training kernels with hand-written backward passes (issue 9, "make the step fast").
//!
//! burn 0.22.1 runs a convolution's backward on flex through the generic decomposition in
//! burn-backend (`conv2d_x_backward` → `conv_transpose2d`, `conv2d_weight_backward` → a
//! convolution over swapped batch/channel dims, whose GEMMs have K = N·H·W and an output of
//! only kh·kw columns), and batch-norm training as a dozen separate full passes (mean,
//! centred square, mean, normalise; the backward about as many again, with
//! `swap_dims` + `reshape` copies).
//!
//! Here the two ops get their own `Autodiff<Flex>` nodes (burn's custom-op API:
//! [`Backward`], `prepare`, [`OpsKind`]), reached from our dispatch `Tensor<D>` through
//! `Tensor::try_into_primitive::<Autodiff<Flex>>` (burn's `extension` feature):
//!
//! - [`conv2d`]: forward parallel over chunks of the batch (rayon): per sample, im2col and
//!   one GEMM (a 1×1 stride-1 convolution multiplies x directly). Backward is one pass
//!   parallel over chunks of the batch: per sample, im2col of x and
//!   `dW += dY_b · colᵀ` (a GEMM with K = H_out·W_out, accumulated in a per-chunk partial),
//!   `dcol = Wᵀ · dY_b` and col2im into dX_b.
//! - [`batch_norm_train`]: per-channel statistics in one pass (f64 accumulators), the
//!   normalised output (optionally followed by ReLU) in another; backward two passes.
//!
//! The loops themselves live in the `lsskd-kernels` crate (crates/lsskd-kernels), which
//! builds at the dependencies' opt-level 3: at this crate's opt-level 1 they run several
//! times slower.
//!
//! Only float32 on flex with autodiff (no gradient checkpointing) takes these paths; any
//! other tensor makes the functions return `None` and the caller uses plain burn ops. And
//! only where they win: [`choice`] times one layer both ways once per process and training
//! takes burn's plain ops on a machine where those are faster (`status` and
//! `bench --report` say which).
//! Gradients are checked against the plain ops in the tests below.

use std::sync::OnceLock;
#[cfg(feature = "bench")]
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use lsskd_kernels::{
    Geom, bn_apply, bn_backward, channel_stats, conv_backward, conv_forward, inv_std,
};
use serde::Serialize;

/// `Autodiff<Flex>` without gradient checkpointing: what `Device::default().autodiff()` is.
type Ad = Autodiff<Flex>;

/// Which training kernels this machine runs, and the timings they were chosen by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainKernelChoice {
    /// `ours` (this module's) or `burn` (the plain burn ops).
    pub kernels: String,
    /// One convolution + BatchNorm + ReLU layer of the networks' first stage (batch 32,
    /// 16 → 16 channels, 28×28, 3×3), forward and backward, best of 5 alternating rounds:
    /// through this module's kernels, and through burn's modules.
    pub ours_ms: f64,
    pub burn_ms: f64,
}

static CHOICE: OnceLock<TrainKernelChoice> = OnceLock::new();

/// The training kernels of this machine: measured once per process, on first use (about
/// 0.1 s here), and kept: ours where they win, burn's plain ops where those are faster
/// (a CPU whose vector paths `gemm` or our loops serve worse than burn's).
pub fn choice() -> &'static TrainKernelChoice {
    CHOICE.get_or_init(measure_choice)
}

/// The choice if this process has made it yet (the daemon's trainer makes it as it starts).
pub fn measured() -> Option<&'static TrainKernelChoice> {
    CHOICE.get()
}

/// Times one layer both ways (see [`TrainKernelChoice`]).
fn measure_choice() -> TrainKernelChoice {
    let d = Device::default().autodiff();
    let (n, c, hw) = (32, 16, 28);
    let conv = burn::nn::conv::Conv2dConfig::new([c, c], [3, 3])
        .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&d);
    let bn = burn::nn::BatchNormConfig::new(c).init(&d);
    let values: Vec<f32> = (0..n * c * hw * hw)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(values, [n, c, hw, hw]), &d).require_grad();
    let w = conv.weight.val();
    let (g, b) = (bn.gamma.val(), bn.beta.val());
    let ours = || {
        let y = conv2d(&x, &w, 1, 1).expect("float32 on flex");
        let y = batch_norm_train(&y, &g, &b, 1e-5, true).expect("float32 on flex");
        let _ = y.output.sum().backward();
    };
    let plain = || {
        let y = burn::tensor::activation::relu(bn.forward(conv.forward(x.clone())));
        let _ = y.sum().backward();
    };
    let time = |f: &dyn Fn()| {
        let t0 = Instant::now();
        f();
        t0.elapsed().as_secs_f64() * 1e3
    };
    ours();
    plain();
    let (mut best_ours, mut best_burn) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        best_ours = best_ours.min(time(&ours));
        best_burn = best_burn.min(time(&plain));
    }
    TrainKernelChoice {
        kernels: if best_ours <= best_burn {
            "ours"
        } else {
            "burn"
        }
        .into(),
        ours_ms: best_ours,
        burn_ms: best_burn,
    }
}

/// The benchmarks' A/B switch (0: as [`choice`] says, 1: ours, 2: burn's); only a `bench`
/// build has it.
#[cfg(feature = "bench")]
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Train through the kernels of this module (`true`) or through the plain burn ops,
/// whatever [`choice`] says: the A/B timing of `bench-train --plain` and the
/// `kernels_bench` harness. Only in a build with the `bench` feature.
#[cfg(feature = "bench")]
pub fn set_enabled(on: bool) {
    FORCED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether training takes the kernels of this module: as [`choice`] measured, unless a
/// `bench` build forced one way with `set_enabled`.
pub fn enabled() -> bool {
    #[cfg(feature = "bench")]
    match FORCED.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    choice().kernels == "ours"
}

/// The `Autodiff<Flex>` primitive of a float32 tensor, or None (other backend, dtype or
/// checkpointing strategy).
fn ad_primitive<const D: usize>(
    t: &Tensor<D>,
) -> Option<<Ad as burn::backend::BackendTypes>::FloatTensorPrimitive> {
    if t.dtype() != DType::F32 || !t.is_autodiff() {
        return None;
    }
    t.clone().try_into_primitive::<Ad>().ok()
}

fn f32s(t: &FlexTensor) -> (FlexTensor, Vec<usize>) {
    let t = t.to_contiguous();
    let dims = t.layout().shape().to_vec();
    (t, dims)
}

fn flex_tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

// ---------------------------------------------------------------------------------------
// conv2d
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Conv2dBackward;

impl Backward<Flex, 2> for Conv2dBackward {
    /// Input, weight, stride, padding.
    type State = (FlexTensor, FlexTensor, usize, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, w, stride, pad) = ops.state;
        let (x, x_dims) = f32s(&x);
        let (w, w_dims) = f32s(&w);
        let (grad, _) = f32s(&grad);
        let g = Geom::new(&x_dims, &w_dims, stride, pad);
        let (dx, dw) = conv_backward(
            &g,
            x.storage::<f32>(),
            w.storage::<f32>(),
            grad.storage::<f32>(),
            node_x.is_some(),
            node_w.is_some(),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, &x_dims));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex_tensor(dw, &w_dims));
        }
    }
}

/// `conv2d(x, w)` without bias, dilation 1, one group, stride and padding equal in both
/// dimensions, with the backward above. None when `x` or `w` is not a float32 flex
/// autodiff tensor.
pub fn conv2d(x: &Tensor<4>, w: &Tensor<4>, stride: usize, pad: usize) -> Option<Tensor<4>> {
    let xp = ad_primitive(x)?;
    let wp = ad_primitive(w)?;
    let (x_inner, x_node) = xp.into_parts();
    let (w_inner, w_node) = wp.into_parts();
    let (x_inner, x_dims) = f32s(&x_inner);
    let (w_inner, w_dims) = f32s(&w_inner);
    let g = Geom::new(&x_dims, &w_dims, stride, pad);
    let y = flex_tensor(
        conv_forward(&g, x_inner.storage::<f32>(), w_inner.storage::<f32>()),
        &[g.n, g.co, g.ho, g.wo],
    );
    let out = match Conv2dBackward
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([x_node, w_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x_inner, w_inner, stride, pad), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<Ad>(out))
}

// ---------------------------------------------------------------------------------------
// batch norm (training) + optional ReLU
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct BnState {
    x: FlexTensor,
    /// The output when a ReLU follows (its mask), else None.
    y: Option<FlexTensor>,
    gamma: Vec<f32>,
    mean: Vec<f32>,
    istd: Vec<f32>,
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = BnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let BnState {
            x,
            y,
            gamma,
            mean,
            istd,
        } = ops.state;
        let (x, dims) = f32s(&x);
        let (grad, _) = f32s(&grad);
        let y = y.map(|y| f32s(&y).0);
        let [n, c] = [dims[0], dims[1]];
        let hw = dims[2..].iter().product();
        let (dx, dgamma, dbeta) = bn_backward(
            x.storage::<f32>(),
            y.as_ref().map(|y| y.storage::<f32>()),
            grad.storage::<f32>(),
            [n, c, hw],
            &mean,
            &istd,
            &gamma,
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, &dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, &[c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, &[c]));
        }
    }
}

/// Output of [`batch_norm_train`].
pub struct BatchNormTrain {
    pub output: Tensor<4>,
    /// Batch mean and biased variance per channel (for the running statistics).
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// Batch-norm in training mode (batch statistics), followed by ReLU when `relu`.
/// None when an input is not a float32 flex autodiff tensor.
pub fn batch_norm_train(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> Option<BatchNormTrain> {
    let xp = ad_primitive(x)?;
    let gp = ad_primitive(gamma)?;
    let bp = ad_primitive(beta)?;
    let (x_inner, x_node) = xp.into_parts();
    let (g_inner, g_node) = gp.into_parts();
    let (b_inner, b_node) = bp.into_parts();
    let (xc, dims) = f32s(&x_inner);
    let [n, c] = [dims[0], dims[1]];
    let hw = dims[2..].iter().product();
    let gamma_v = f32s(&g_inner).0.storage::<f32>().to_vec();
    let beta_v = f32s(&b_inner).0.storage::<f32>().to_vec();
    let xs = xc.storage::<f32>();
    let (mean, variance) = channel_stats(xs, n, c, hw);
    let istd = inv_std(&variance, epsilon);
    let y = flex_tensor(
        bn_apply(xs, [n, c, hw], &mean, &istd, &gamma_v, &beta_v, relu),
        &dims,
    );
    let out = match BatchNormBackward
        .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
            x_node, g_node, b_node,
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = BnState {
                x: xc,
                y: relu.then(|| y.clone()),
                gamma: gamma_v,
                mean: mean.clone(),
                istd,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(BatchNormTrain {
        output: Tensor::from_primitive::<Ad>(out),
        mean,
        variance,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::ops::ConvOptions;
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;

    #[test]
    fn the_training_kernels_are_chosen_by_timing_both_ways() {
        let c = choice();
        assert!(c.ours_ms > 0.0 && c.burn_ms > 0.0, "{c:?}");
        let want = if c.ours_ms <= c.burn_ms {
            "ours"
        } else {
            "burn"
        };
        assert_eq!(c.kernels, want, "{c:?}");
        #[cfg(not(feature = "bench"))]
        assert_eq!(enabled(), want == "ours");
        assert!(std::ptr::eq(c, choice()), "measured once");
    }

    fn device() -> Device {
        let d = Device::default().autodiff();
        d.seed(7);
        d
    }

    /// max |a − b| / max |b|: the error relative to the tensor's scale (also used by
    /// `net`'s tests of ConvBn).
    pub(crate) fn rel_err<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let a = a.into_data().try_to_vec::<f32>().unwrap();
        let b = b.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "a trivial reference ({scale})");
        let err = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        err / scale
    }

    /// Output and x/w gradients of our conv2d against burn's, under a random linear loss.
    fn check_conv(n: usize, ci: usize, co: usize, hw: usize, k: usize, stride: usize, pad: usize) {
        let d = device();
        let conv = Conv2dConfig::new([ci, co], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(&d);
        let x0 = Tensor::<4>::random([n, ci, hw, hw], Distribution::Normal(0.0, 1.0), &d);
        let plain_x = x0.clone().detach().require_grad();
        let ours_x = x0.detach().require_grad();
        let plain = conv.forward(plain_x.clone());
        let w = conv.weight.val();
        let ours = conv2d(&ours_x, &w, stride, pad).expect("flex autodiff f32");
        assert_eq!(plain.dims(), ours.dims());
        let probe = Tensor::<4>::random(plain.dims(), Distribution::Normal(0.0, 1.0), &d);
        let e_out = rel_err(ours.clone().detach(), plain.clone().detach());
        let gp = (plain * probe.clone()).sum().backward();
        let go = (ours * probe).sum().backward();
        let e_dx = rel_err(
            ours_x.grad(&go).expect("dx"),
            plain_x.grad(&gp).expect("dx"),
        );
        let e_dw = rel_err(w.grad(&go).expect("dw"), w.grad(&gp).expect("dw"));
        eprintln!(
            "conv n{n} {ci}->{co} {hw}x{hw} k{k} s{stride} p{pad}: out {e_out:.1e} dx {e_dx:.1e} dw {e_dw:.1e}"
        );
        assert!(e_out <= 1e-4 && e_dx <= 1e-4 && e_dw <= 1e-4);
    }

    #[test]
    fn conv2d_matches_burn_at_stride_1_and_2_with_and_without_padding() {
        check_conv(4, 3, 5, 9, 3, 1, 1);
        check_conv(4, 3, 5, 9, 3, 1, 0);
        check_conv(4, 3, 5, 9, 3, 2, 1);
        check_conv(4, 3, 5, 10, 3, 2, 0);
        check_conv(3, 4, 6, 8, 1, 2, 0);
        check_conv(2, 1, 16, 28, 3, 1, 1);
        check_conv(5, 16, 32, 14, 3, 2, 1);
    }

    /// im2col and col2im (its adjoint) against the definition, element by element, on the
    /// shapes where the flat-shift path applies and where it does not.
    #[test]
    fn im2col_and_col2im_match_their_definition() {
        use lsskd_kernels::{col2im, im2col};
        for (ci, h, w, k, stride, pad) in [
            (2, 5, 5, 3, 1, 1),
            (1, 1, 1, 3, 1, 1),
            (2, 7, 6, 5, 1, 2),
            (3, 7, 7, 3, 2, 1),
            (2, 4, 4, 1, 2, 0),
            (2, 6, 5, 3, 1, 0),
        ] {
            let g = Geom::new(&[1, ci, h, w], &[1, ci, k, k], stride, pad);
            let x: Vec<f32> = (0..ci * h * w).map(|i| i as f32 + 1.0).collect();
            let at = |c: usize, iy: isize, ix: isize| {
                let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                inside.then(|| (c * h + iy as usize) * w + ix as usize)
            };
            let src = |row: usize, o: usize| {
                let (c, ky, kx) = (row / (k * k), row / k % k, row % k);
                let (oy, ox) = (o / g.wo, o % g.wo);
                let iy = (oy * stride + ky) as isize - pad as isize;
                let ix = (ox * stride + kx) as isize - pad as isize;
                at(c, iy, ix)
            };
            let mut col = vec![f32::NAN; g.k() * g.p()];
            im2col(&g, &x, &mut col);
            let mut dcol: Vec<f32> = (0..col.len()).map(|i| (i % 7) as f32 - 3.0).collect();
            let mut want_dx = vec![0.0f32; x.len()];
            for row in 0..g.k() {
                for o in 0..g.p() {
                    let want = src(row, o).map_or(0.0, |i| x[i]);
                    assert_eq!(col[row * g.p() + o], want, "{g:?} row {row} o {o}");
                    if let Some(i) = src(row, o) {
                        want_dx[i] += dcol[row * g.p() + o];
                    }
                }
            }
            let mut dx = vec![0.0f32; x.len()];
            col2im(&g, &mut dcol, &mut dx);
            assert_eq!(dx, want_dx, "{g:?}");
        }
    }

    #[test]
    fn conv2d_without_input_gradient_gives_the_weight_gradient() {
        let d = device();
        let x = Tensor::<4>::random([3, 2, 7, 7], Distribution::Normal(0.0, 1.0), &d);
        let w = Param::from_tensor(Tensor::<4>::random(
            [4, 2, 3, 3],
            Distribution::Normal(0.0, 1.0),
            &d,
        ));
        let plain = burn::tensor::module::conv2d(
            x.clone(),
            w.val(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let ours = conv2d(&x, &w.val(), 1, 1).unwrap();
        let gp = plain.sum().backward();
        let go = ours.sum().backward();
        assert!(rel_err(w.val().grad(&go).unwrap(), w.val().grad(&gp).unwrap()) <= 1e-4);
    }

    fn check_bn(n: usize, c: usize, hw: usize, relu_after: bool) {
        let d = device();
        let bn = BatchNormConfig::new(c).init(&d);
        // Non-trivial γ, β.
        let gamma = Tensor::<1>::random([c], Distribution::Uniform(0.5, 1.5), &d)
            .detach()
            .require_grad();
        let beta = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &d)
            .detach()
            .require_grad();
        let x0 = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.5, 2.0), &d);
        let plain_x = x0.clone().detach().require_grad();
        let ours_x = x0.detach().require_grad();
        let r = burn::tensor::module::batch_norm_train(
            plain_x.clone(),
            gamma.clone(),
            beta.clone(),
            bn.epsilon,
        );
        let plain = if relu_after { relu(r.output) } else { r.output };
        let ours = batch_norm_train(&ours_x, &gamma, &beta, bn.epsilon, relu_after).unwrap();
        let mean = Tensor::<1>::from_data(TensorData::new(ours.mean.clone(), [c]), &d);
        let var = Tensor::<1>::from_data(TensorData::new(ours.variance.clone(), [c]), &d);
        let e_mean = rel_err(mean, r.mean.detach());
        let e_var = rel_err(var, r.variance.detach());
        let ours = ours.output;
        let probe = Tensor::<4>::random(plain.dims(), Distribution::Normal(0.0, 1.0), &d);
        let e_out = rel_err(ours.clone().detach(), plain.clone().detach());
        let gp = (plain * probe.clone()).sum().backward();
        let go = (ours * probe).sum().backward();
        let e_dx = rel_err(ours_x.grad(&go).unwrap(), plain_x.grad(&gp).unwrap());
        let e_dg = rel_err(gamma.grad(&go).unwrap(), gamma.grad(&gp).unwrap());
        let e_db = rel_err(beta.grad(&go).unwrap(), beta.grad(&gp).unwrap());
        eprintln!(
            "bn n{n} c{c} {hw}x{hw} relu {relu_after}: mean {e_mean:.1e} var {e_var:.1e} out {e_out:.1e} dx {e_dx:.1e} dgamma {e_dg:.1e} dbeta {e_db:.1e}"
        );
        for e in [e_mean, e_var, e_out, e_dx, e_dg, e_db] {
            assert!(e <= 1e-4, "{e}");
        }
    }

    #[test]
    fn batch_norm_train_matches_burn_with_and_without_relu() {
        check_bn(8, 3, 5, false);
        check_bn(8, 3, 5, true);
        check_bn(64, 16, 28, true);
        check_bn(16, 64, 7, false);
    }
}
