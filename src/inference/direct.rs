//! Our convolutions in tract's plan: a graph pass that swaps tract's `Conv` for
//! [`lsskd_kernels::direct::DirectConv`] where the shape fits, with the residual `Add` and
//! the `Relu` after it fused in.
//!
//! tract lowers every 3×3 convolution to an explicit `Pad`, a lazy im2col and a packed
//! GEMM, with the ReLU and the residual add as passes of their own. On our networks' narrow
//! images (28, 14, 7 columns; 16–64 channels) that ran at 28–55 % of the machine's GEMM
//! peak, and it left tract at 2.7× onnxruntime (BENCHMARKS.md, "Where inference spends its
//! time"). The pass runs on the decluttered model, before tract's own codegen, so what it
//! does not take (the head, any other shape) tract optimizes as before.
//!
//! Taken: float32 `Conv` nodes with one group, a 3×3 kernel with padding 1 or a 1×1 kernel
//! without, stride 1 or 2, dilation 1, a batch of one in NCHW or CHW, constant weights and
//! bias. A following `Max(x, 0)` (ONNX `Relu`) is fused when the convolution is its only
//! input, and so is an `Add` of another tensor of the same shape between the two (a ResNet
//! block's residual).

use std::sync::Arc;

use lsskd_kernels::direct::DirectConv as Kernel;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    EvalContext, EvalOp, Op, StaticName, TypedModelPatch, TypedOp,
};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// The tract op: one [`Kernel`] and what is fused after it. Inputs: the image, and the
/// residual when `residual` is set.
#[derive(Debug, Clone)]
pub struct DirectConv {
    kernel: Arc<Kernel>,
    /// The input's height and width.
    in_hw: (usize, usize),
    /// The output shape (rank 3 or 4, batch 1): `[.., c_out, ho, wo]`.
    shape: TVec<usize>,
    residual: bool,
    relu: bool,
}

impl PartialEq for DirectConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.kernel, &other.kernel)
            && self.in_hw == other.in_hw
            && self.shape == other.shape
            && self.residual == other.residual
            && self.relu == other.relu
    }
}

impl Eq for DirectConv {}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "DirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{0}×{0} stride {1}, {2}→{3} channels, {4:?}, residual add: {5}, relu: {6}",
            self.kernel.kernel(),
            self.kernel.stride(),
            self.kernel.c_in(),
            self.kernel.c_out(),
            self.shape,
            self.residual,
            self.relu
        )])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for DirectConv {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (h, w) = self.in_hw;
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let residual = match (self.residual, inputs.get(1)) {
            (true, Some(r)) => Some(r.try_as_plain_ram()?),
            (false, None) => None,
            _ => anyhow::bail!("DirectConv: expected {} inputs", 1 + self.residual as usize),
        };
        let residual = residual.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        let mut out = Tensor::zero::<f32>(&self.shape)?;
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let y = view.as_slice_mut::<f32>()?;
            self.kernel.run(h, w, x, residual, self.relu, y);
        }
        Ok(tvec!(out.into_tvalue()))
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl TypedOp for DirectConv {
    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.shape)))
    }
}

/// The vector path our convolution takes on this machine (`avx512f`, `avx+fma`, `neon`,
/// `portable`).
pub fn isa() -> &'static str {
    lsskd_kernels::direct::isa().name()
}

/// Replaces every convolution [`DirectConv`] can run (see the module's doc) in a
/// decluttered model; returns how many it replaced.
pub fn use_direct_convolutions(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    // One replacement per pass: a patch renumbers nothing it does not touch, but the
    // replaced nodes stay in the graph until it is compacted.
    while let Some(patch) = next_patch(model)? {
        patch.apply(model)?;
        model.compact()?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The node reading `outlet` when it is its only reader and `outlet` is not a model output.
fn sole_successor(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let succ = &model.nodes[outlet.node].outputs[outlet.slot].successors;
    if succ.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    Some(&model.nodes[succ[0].node])
}

fn bin_op<'a>(node: &'a TypedNode, name: &str) -> Option<&'a TypedBinOp> {
    node.op_as::<TypedBinOp>()
        .filter(|op| op.0.name() == name && node.inputs.len() == 2)
}

/// `Max(x, 0)` reading `x` (either side): its other input is a constant of zeros.
fn is_relu_of(model: &TypedModel, node: &TypedNode, x: OutletId) -> bool {
    bin_op(node, "Max").is_some()
        && node.inputs.iter().any(|&i| i != x && is_zeros(model, i))
        && node.inputs.contains(&x)
}

fn is_zeros(model: &TypedModel, outlet: OutletId) -> bool {
    const_f32(model, outlet).is_some_and(|v| v.iter().all(|&z| z == 0.0))
}

fn const_f32(model: &TypedModel, outlet: OutletId) -> Option<Vec<f32>> {
    let t = model.outlet_fact(outlet).ok()?.konst.clone()?;
    let v = t.try_as_plain_ram().ok()?;
    v.as_slice::<f32>().ok().map(<[f32]>::to_vec)
}

/// The `[c, h, w]` of a batch-of-one NCHW or CHW shape.
fn chw(format: DataFormat, shape: &[usize]) -> Option<[usize; 3]> {
    match (format, shape) {
        (DataFormat::NCHW, [1, c, h, w]) | (DataFormat::CHW, [c, h, w]) => Some([*c, *h, *w]),
        _ => None,
    }
}

/// The first convolution of `model` that [`DirectConv`] takes, as a patch.
fn next_patch(model: &TypedModel) -> TractResult<Option<TypedModelPatch>> {
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let spec = &conv.pool_spec;
        let k = match spec.kernel_shape.as_slice() {
            [3, 3] => 3,
            [1, 1] => 1,
            _ => continue,
        };
        let pad = k / 2;
        let padding_fits = match &spec.padding {
            PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, _) => {
                b.iter().chain(a.iter()).all(|&p| p == pad)
            }
            // Same as padding 1 for a 3×3 kernel at stride 1 only.
            PaddingSpec::SameUpper | PaddingSpec::SameLower => {
                k == 3 && spec.strides().iter().all(|&s| s == 1)
            }
            PaddingSpec::Valid => k == 1,
        };
        let strides = spec.strides();
        let stride = strides[0];
        if conv.group != 1
            || conv.q_params.is_some()
            || !(stride == 1 || stride == 2)
            || strides.iter().any(|&s| s != stride)
            || spec.dilations().iter().any(|&d| d != 1)
            || !padding_fits
            || node.inputs.len() != 3
        {
            continue;
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let output = &node.outputs[0].fact;
        if input.datum_type != f32::datum_type() || output.datum_type != f32::datum_type() {
            continue;
        }
        let (Some(in_shape), Some(out_shape)) =
            (input.shape.as_concrete(), output.shape.as_concrete())
        else {
            continue;
        };
        let (Some([c_in, h, w]), Some([c_out, ho, wo])) = (
            chw(spec.data_format, in_shape),
            chw(spec.data_format, out_shape),
        ) else {
            continue;
        };
        // Weights `[c_out][c_in][k][k]` (OIHW) and a bias per channel or a scalar.
        let Some(weights) = const_f32(model, node.inputs[1]) else {
            continue;
        };
        if conv.kernel_fmt != tract_onnx::tract_core::ops::cnn::KernelFormat::OIHW
            || weights.len() != c_out * c_in * k * k
        {
            continue;
        }
        let Some(bias) = const_f32(model, node.inputs[2]) else {
            continue;
        };
        let bias = match bias.len() {
            1 => vec![bias[0]; c_out],
            n if n == c_out => bias,
            _ => continue,
        };
        let kernel = Kernel::new(c_in, c_out, k, stride, &weights, Some(&bias));
        if kernel.output_hw(h, w) != (ho, wo) {
            continue;
        }

        // What follows: Add(conv, residual) then Max(·, 0), or Max(conv, 0) alone.
        let conv_out = OutletId::new(id, 0);
        let mut last = conv_out;
        let mut residual = None;
        let mut relu = false;
        if let Some(next) = sole_successor(model, conv_out) {
            if is_relu_of(model, next, conv_out) {
                last = OutletId::new(next.id, 0);
                relu = true;
            } else if bin_op(next, "Add").is_some() {
                let other = next.inputs.iter().copied().find(|&i| i != conv_out);
                let same_shape = other
                    .and_then(|o| model.outlet_fact(o).ok())
                    .is_some_and(|f| f.shape == output.shape && f.datum_type == output.datum_type);
                if let (Some(other), true) = (other, same_shape) {
                    let add_out = OutletId::new(next.id, 0);
                    residual = Some(other);
                    last = add_out;
                    if let Some(after) = sole_successor(model, add_out)
                        && is_relu_of(model, after, add_out)
                    {
                        last = OutletId::new(after.id, 0);
                        relu = true;
                    }
                }
            }
        }

        let op = DirectConv {
            kernel: Arc::new(kernel),
            in_hw: (h, w),
            shape: out_shape.into(),
            residual: residual.is_some(),
            relu,
        };
        let mut patch = TypedModelPatch::new(format!("direct conv {}", node.name));
        let mut inputs = tvec!(patch.tap_model(model, node.inputs[0])?);
        if let Some(r) = residual {
            inputs.push(patch.tap_model(model, r)?);
        }
        let out = patch.wire_node(format!("{}.direct", node.name), op, &inputs)?[0];
        patch.shunt_outside(model, last, out)?;
        return Ok(Some(patch));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::inference::Classifier;
    use crate::inference::onnx::write_onnx;
    use crate::inference::test_nets::{cosine_net, random_input};

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    /// Our kernels and tract's lowering give the same outputs on `bytes`; returns how many
    /// convolutions ran direct.
    fn same_as_tract(bytes: &[u8], seeds: std::ops::Range<u64>) -> usize {
        let ours = Classifier::from_bytes(bytes).expect("load");
        let tract = Classifier::from_bytes_tract_only(bytes).expect("load");
        assert_eq!(tract.direct_convolutions(), 0);
        for seed in seeds {
            let x = random_input(ours.input_shape(), seed);
            let (a, b) = (
                ours.classify(&x).expect("ours"),
                tract.classify(&x).expect("tract"),
            );
            let (dl, de) = (
                max_rel_diff(&a.logits, &b.logits),
                max_rel_diff(&a.embedding, &b.embedding),
            );
            assert!(
                dl <= 1e-4 && de <= 1e-4,
                "logits differ by {dl}, embedding by {de}"
            );
            assert!(
                a.embedding.iter().any(|v| v.abs() > 1e-3),
                "vacuous comparison"
            );
        }
        ours.direct_convolutions()
    }

    #[test]
    fn the_faster_of_ours_and_tracts_is_kept_and_says_which_it_is() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vision/model.onnx");
        let (clf, choice) = Classifier::load_fastest(&path).expect("load");
        let (d, t) = (
            choice.direct_ms.expect("timed"),
            choice.tract_ms.expect("timed"),
        );
        assert!(d > 0.0 && t > 0.0, "{choice:?}");
        let want = if d <= t {
            format!("direct {}", super::isa())
        } else {
            "tract".into()
        };
        assert_eq!(
            (choice.kernel.as_str(), clf.kernel()),
            (want.as_str(), want.clone())
        );
        assert_eq!(clf.direct_convolutions() > 0, d <= t);
        assert!(
            ["avx512f", "avx+fma", "neon", "portable"].contains(&super::isa()),
            "{}",
            super::isa()
        );
    }

    #[test]
    fn shipped_models_give_tracts_outputs_with_every_convolution_direct() {
        // stem + 6 blocks × 2 (two of them stride 2); the 1×1 shortcuts reach the pass
        // already lowered by tract's declutter.
        for m in ["vision", "audio"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(m)
                .join("model.onnx");
            let bytes = std::fs::read(&path).expect("shipped model");
            assert_eq!(same_as_tract(&bytes, 0..4), 13, "{m}");
        }
    }

    #[test]
    fn a_small_test_network_gives_tracts_outputs() {
        assert!(same_as_tract(&write_onnx(&cosine_net(31)), 10..14) > 0);
    }
}
