//! The student network and its training-only auxiliary heads (LSSKD.md §2).
//!
//! Student: stem conv → L stages of BasicBlocks → GAP → classifier (cosine by default).
//! Auxiliary head l (HSAKD design): a fresh copy of stages l+1..L (for l = L one extra
//! stride-1 block of stage-L shape), GAP, and an N·M-way classifier. Every auxiliary head
//! therefore ends in a feature map of exactly f_L's shape. Only the student is exported.

use burn::module::{Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use super::kernels;

/// Which classifier sits on pooled features (LSSKD.md §2, *(choice)*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// L2-normalised features and weights times a fixed scale: supports weight imprinting.
    Cosine,
    /// Plain affine layer (ablation).
    Linear,
}

/// Shape of the student; stored in the manifest so a package can be rebuilt exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchConfig {
    /// Channels of the model input (1 gray / spectrogram, 3 RGB).
    pub in_channels: usize,
    /// Output channels of each stage; stage 1 has stride 1, later stages stride 2.
    pub widths: Vec<usize>,
    /// BasicBlocks per stage.
    pub blocks_per_stage: usize,
    pub head: HeadKind,
    /// Scale s of the cosine classifiers.
    pub cosine_scale: f32,
    /// Stride of the stem convolution (1 in every preset; 2 quarters the compute of large
    /// inputs, e.g. 49×40 spectrograms → stage maps 25×20, 13×10, 7×5).
    #[serde(default = "one")]
    pub stem_stride: usize,
}

fn one() -> usize {
    1
}

impl Default for ArchConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            widths: vec![16, 32, 64],
            blocks_per_stage: 2,
            head: HeadKind::Cosine,
            cosine_scale: 16.0,
            stem_stride: 1,
        }
    }
}

impl ArchConfig {
    /// Named presets for `--arch`: `resnet-s` (16/32/64 ×2, ≈175k parameters),
    /// `resnet-xs` (8/16/32 ×1) and `resnet-m` (24/48/96 ×2).
    pub fn preset(name: &str, in_channels: usize) -> Option<Self> {
        let (widths, blocks) = match name {
            "resnet-s" => (vec![16, 32, 64], 2),
            "resnet-xs" => (vec![8, 16, 32], 1),
            "resnet-m" => (vec![24, 48, 96], 2),
            _ => return None,
        };
        Some(Self {
            in_channels,
            widths,
            blocks_per_stage: blocks,
            ..Self::default()
        })
    }

    pub fn embedding_dim(&self) -> usize {
        *self.widths.last().expect("validated: at least one stage")
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.in_channels == 0 || self.widths.is_empty() || self.blocks_per_stage == 0 {
            return Err(
                "arch needs in_channels > 0, at least one stage, blocks_per_stage > 0".into(),
            );
        }
        if !(1..=4).contains(&self.stem_stride) {
            return Err("arch stem_stride must be 1..=4".into());
        }
        if self.widths.contains(&0) {
            return Err("arch stage widths must be > 0".into());
        }
        if !(self.cosine_scale.is_finite() && self.cosine_scale > 0.0) {
            return Err("arch cosine_scale must be a positive number".into());
        }
        Ok(())
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).init(device)
}

/// Conv + BatchNorm pair (no bias: BatchNorm supplies it).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv: conv(cin, cout, k, stride, device),
            bn: bn(cout, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_act(x, false)
    }

    /// `relu(bn(conv x))`.
    fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_act(x, true)
    }

    /// In training (autodiff device) through the kernels of [`super::kernels`]; otherwise,
    /// and whenever those decline a tensor, through the plain burn modules.
    fn forward_act(&self, x: Tensor<4>, act: bool) -> Tensor<4> {
        if kernels::enabled()
            && x.is_autodiff()
            && let Some(y) = self.forward_kernels(&x, act)
        {
            return y;
        }
        let y = self.bn.forward(self.conv.forward(x));
        if act { relu(y) } else { y }
    }

    /// The convolution through [`kernels::conv2d`], when its shape is one the kernel takes.
    pub(crate) fn conv_kernel(&self, x: &Tensor<4>) -> Option<Tensor<4>> {
        let c = &self.conv;
        let [k0, k1] = c.kernel_size;
        let PaddingConfig2d::Explicit(top, left, bottom, right) = c.padding else {
            return None;
        };
        let square = k0 == k1 && c.stride[0] == c.stride[1];
        let symmetric = top == left && top == bottom && top == right;
        if !square || !symmetric || c.dilation != [1, 1] || c.groups != 1 || c.bias.is_some() {
            return None;
        }
        kernels::conv2d(x, &c.weight.val(), c.stride[0], top)
    }

    fn forward_kernels(&self, x: &Tensor<4>, act: bool) -> Option<Tensor<4>> {
        let y = self.conv_kernel(x)?;
        let bn = &self.bn;
        if !bn.training.is_enabled() {
            let y = bn.forward(y);
            return Some(if act { relu(y) } else { y });
        }
        let r = kernels::batch_norm_train(&y, &bn.gamma.val(), &bn.beta.val(), bn.epsilon, act)?;
        // Running statistics exactly as `BatchNorm::forward_train` updates them.
        let device = y.device();
        let [ch] = bn.gamma.shape().dims();
        let stat = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [ch]), &device);
        let m = bn.momentum;
        let running_mean = bn.running_mean.value_sync().to_device(&device);
        let running_var = bn.running_var.value_sync().to_device(&device);
        let running_mean = running_mean
            .mul_scalar(1.0 - m)
            .add(stat(r.mean).mul_scalar(m));
        let running_var = running_var
            .mul_scalar(1.0 - m)
            .add(stat(r.variance).mul_scalar(m));
        bn.running_mean.update(running_mean.detach());
        bn.running_var.update(running_var.detach());
        Some(r.output)
    }

    pub fn stride(&self) -> usize {
        self.conv.stride[0]
    }
}

/// `relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct Block {
    pub c1: ConvBn,
    pub c2: ConvBn,
    pub shortcut: Option<ConvBn>,
}

impl Block {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let shortcut =
            (stride != 1 || cin != cout).then(|| ConvBn::new(cin, cout, 1, stride, device));
        Self {
            c1: ConvBn::new(cin, cout, 3, stride, device),
            c2: ConvBn::new(cout, cout, 3, 1, device),
            shortcut,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.shortcut {
            Some(sc) => sc.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.c1.forward_relu(x);
        relu(self.c2.forward(y) + identity)
    }
}

fn stage(cin: usize, cout: usize, stride: usize, blocks: usize, device: &Device) -> Vec<Block> {
    (0..blocks)
        .map(|b| {
            if b == 0 {
                Block::new(cin, cout, stride, device)
            } else {
                Block::new(cout, cout, 1, device)
            }
        })
        .collect()
}

/// The classifier on pooled features: cosine ([`HeadKind::Cosine`]) or affine
/// ([`HeadKind::Linear`]). `weight` is `[classes, dim]`. Not to be confused with
/// [`crate::inference::Classifier`], the tract model the daemon runs.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub scale: f32,
    /// Cosine heads: a fixed offset added to each class's logit, `[classes]` or empty
    /// (none). Not trained; kept by the package manifest (`CheckpointInfo::logit_offset`), not
    /// the training state.
    #[module(skip)]
    pub offset: Vec<f32>,
}

/// Whether `offset` is a valid [`ClassifierHead::offset`] for `classes` classes: empty
/// (none) or one per class. The package load and the export both hold a classifier to it.
pub fn offset_fits(offset: &[f32], classes: usize) -> bool {
    offset.is_empty() || offset.len() == classes
}

/// Row-wise L2 normalisation, `[R, D] → [R, D]`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-6); // [R, 1]
    x / norm
}

impl ClassifierHead {
    fn new(dim: usize, classes: usize, kind: HeadKind, scale: f32, device: &Device) -> Self {
        let k = (1.0 / dim as f64).sqrt();
        let weight = Initializer::Uniform { min: -k, max: k }.init([classes, dim], device);
        let bias = (kind == HeadKind::Linear).then(|| Initializer::Zeros.init([classes], device));
        Self {
            weight,
            bias,
            scale,
            offset: Vec::new(),
        }
    }

    pub fn is_cosine(&self) -> bool {
        self.bias.is_none()
    }

    pub fn classes(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// `[R, D] → [R, classes]`.
    pub fn forward(&self, h: Tensor<2>) -> Tensor<2> {
        let w = self.weight.val();
        match &self.bias {
            None => {
                let device = w.device();
                let logits = l2_normalize(h).matmul(l2_normalize(w).transpose()) * self.scale;
                if self.offset.is_empty() {
                    return logits;
                }
                let n = self.offset.len();
                let offset =
                    Tensor::<1>::from_data(TensorData::new(self.offset.clone(), [n]), &device);
                logits + offset.unsqueeze_dim(0)
            }
            Some(b) => h.matmul(w.transpose()) + b.val().unsqueeze_dim(0),
        }
    }
}

fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [r, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([r, c])
}

/// The deployed network: stem, stages, classifier.
#[derive(Module, Debug)]
pub struct Student {
    pub stem: ConvBn,
    pub stages: Vec<Vec<Block>>,
    pub classifier: ClassifierHead,
}

/// Outputs of a student forward pass.
pub struct StudentOut {
    /// `[R, N]`.
    pub logits: Tensor<2>,
    /// Pooled feature h, `[R, D]`.
    pub embedding: Tensor<2>,
    /// Stage outputs f_1..f_L, each `[R, C_l, H_l, W_l]`.
    pub stages: Vec<Tensor<4>>,
}

impl Student {
    pub fn new(arch: &ArchConfig, classes: usize, device: &Device) -> Self {
        let w0 = arch.widths[0];
        let mut cin = w0;
        let stages = arch
            .widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let s = stage(
                    cin,
                    w,
                    if i == 0 { 1 } else { 2 },
                    arch.blocks_per_stage,
                    device,
                );
                cin = w;
                s
            })
            .collect();
        Self {
            stem: ConvBn::new(arch.in_channels, w0, 3, arch.stem_stride, device),
            stages,
            classifier: ClassifierHead::new(
                arch.embedding_dim(),
                classes,
                arch.head,
                arch.cosine_scale,
                device,
            ),
        }
    }

    /// `x`: `[R, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> StudentOut {
        self.forward_from(self.stem.forward_relu(x), 0)
    }

    /// The stem and the first `stages` stages: `[R, C, H, W]` → the map that stage
    /// `stages` (0-based) takes as input (the stem's output for 0).
    pub fn forward_prefix(&self, x: Tensor<4>, stages: usize) -> Tensor<4> {
        let mut f = self.stem.forward_relu(x);
        for st in &self.stages[..stages] {
            for b in st {
                f = b.forward(f);
            }
        }
        f
    }

    /// The rest of the network from the input of stage `start` (what
    /// [`Self::forward_prefix`] returns for `start`); `StudentOut::stages` then holds the
    /// outputs of stages `start..`.
    pub fn forward_from(&self, x: Tensor<4>, start: usize) -> StudentOut {
        let mut f = x;
        let mut stages = Vec::with_capacity(self.stages.len() - start);
        for st in &self.stages[start..] {
            for b in st {
                f = b.forward(f);
            }
            stages.push(f.clone());
        }
        let embedding = global_avg_pool(f);
        let logits = self.classifier.forward(embedding.clone());
        StudentOut {
            logits,
            embedding,
            stages,
        }
    }
}

/// Auxiliary head l: blocks producing an f_L-shaped map, GAP, N·M-way classifier.
#[derive(Module, Debug)]
pub struct AuxHead {
    pub blocks: Vec<Block>,
    pub classifier: ClassifierHead,
}

/// Outputs of one auxiliary head.
pub struct AuxOut {
    /// Joint logits `[R, N·M]`.
    pub logits: Tensor<2>,
    /// Pooled feature `[R, D]` (imprinting).
    pub pooled: Tensor<2>,
    /// Final feature map, f_L's shape (feature L2 term).
    pub feature: Tensor<4>,
}

impl AuxHead {
    pub fn forward(&self, f: Tensor<4>) -> AuxOut {
        let mut a = f;
        for b in &self.blocks {
            a = b.forward(a);
        }
        let pooled = global_avg_pool(a.clone());
        AuxOut {
            logits: self.classifier.forward(pooled.clone()),
            pooled,
            feature: a,
        }
    }
}

/// The whole training model: student plus one auxiliary head per stage.
#[derive(Module, Debug)]
pub struct TrainNet {
    pub student: Student,
    pub aux: Vec<AuxHead>,
}

/// The values of every float tensor of a module (parameters and running statistics), in
/// the order burn visits them.
struct FloatValues(Vec<TensorData>);

impl burn::module::ModuleVisitor for FloatValues {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.0.push(param.val().into_data());
    }
}

/// `w·x + (1 − w)·y` for every float tensor `x` of a module, `y` the same tensor of another
/// module of the same structure (its [`FloatValues`]).
struct Interpolate<'a> {
    others: std::slice::Iter<'a, TensorData>,
    weight: f32,
}

impl burn::module::ModuleMapper for Interpolate<'_> {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let other = self
            .others
            .next()
            .expect("both modules have the same structure");
        let w = self.weight;
        param.map(|x| {
            let y = Tensor::<D>::from_data(other.clone(), &x.device());
            let grad = x.is_require_grad();
            let mixed = x.mul_scalar(w).add(y.mul_scalar(1.0 - w)).detach();
            if grad { mixed.require_grad() } else { mixed }
        })
    }
}

impl TrainNet {
    /// A copy of every float tensor's values (for [`TrainNet::interpolate`]).
    pub fn float_values(&self) -> Vec<TensorData> {
        let mut v = FloatValues(Vec::new());
        self.visit(&mut v);
        v.0
    }

    /// Fold every pending BatchNorm running-statistics update into its value. burn keeps a
    /// training step's update pending (per thread) until something syncs it (`valid()`,
    /// `value_sync()`), while the export, [`TrainNet::float_values`] and
    /// [`TrainNet::interpolate`] read and write the value alone: unsynced, an exported model
    /// lacks the last step's statistics, and an interpolated one gets the fine-tune's raw
    /// statistics back at the next sync (the checkpoint's `valid()`), so that the saved
    /// training state no longer matches the exported model. `valid()` syncs the states it
    /// shares with `self`.
    pub fn sync_running_stats(&self) {
        let _ = self.valid();
    }

    /// `weight·self + (1 − weight)·other` for every parameter and running statistic;
    /// `other` is [`TrainNet::float_values`] of a network of the same shape (the same
    /// classes).
    pub fn interpolate(self, other: &[TensorData], weight: f32) -> TrainNet {
        let mut m = Interpolate {
            others: other.iter(),
            weight,
        };
        self.map(&mut m)
    }
}

/// Outputs of a training forward pass.
pub struct TrainOut {
    pub student: StudentOut,
    /// Outputs of the auxiliary heads `first_head..` (all of them after a full forward).
    pub aux: Vec<AuxOut>,
    /// Index of the first head in `aux`.
    pub first_head: usize,
}

impl TrainNet {
    /// `transforms` is M; with `aux_heads == false` the auxiliary list is empty (`ce`, `pskd`).
    pub fn new(
        arch: &ArchConfig,
        classes: usize,
        transforms: usize,
        aux_heads: bool,
        device: &Device,
    ) -> Self {
        let student = Student::new(arch, classes, device);
        let mut aux = Vec::new();
        if aux_heads {
            let l = arch.widths.len();
            let last = arch.widths[l - 1];
            for i in 0..l {
                let blocks = if i + 1 < l {
                    let mut cin = arch.widths[i];
                    arch.widths[i + 1..]
                        .iter()
                        .flat_map(|&w| {
                            let s = stage(cin, w, 2, arch.blocks_per_stage, device);
                            cin = w;
                            s
                        })
                        .collect()
                } else {
                    vec![Block::new(last, last, 1, device)]
                };
                aux.push(AuxHead {
                    blocks,
                    classifier: ClassifierHead::new(
                        last,
                        classes * transforms,
                        arch.head,
                        arch.cosine_scale,
                        device,
                    ),
                });
            }
        }
        Self { student, aux }
    }

    pub fn forward(&self, x: Tensor<4>) -> TrainOut {
        self.forward_from(self.student.stem.forward_relu(x), 0)
    }

    /// Forward from the input of stage `start` (see [`Student::forward_from`]), with the
    /// auxiliary heads of stages `start..` only. With the stem and the first `start` stages
    /// frozen, the heads on those stages see inputs that do not depend on any trained
    /// weight of the student, and every loss term on them is detached from it (their own
    /// label CE, the KL with the teacher detached, the feature MSE to a detached f_L): they
    /// cannot change the student, so a fine-tune skips them.
    pub fn forward_from(&self, x: Tensor<4>, start: usize) -> TrainOut {
        let student = self.student.forward_from(x, start);
        let aux = self.aux[start.min(self.aux.len())..]
            .iter()
            .zip(&student.stages)
            .map(|(head, f)| head.forward(f.clone()))
            .collect();
        TrainOut {
            student,
            aux,
            first_head: start,
        }
    }

    pub fn classes(&self) -> usize {
        self.student.classifier.classes()
    }

    /// Parameters of the whole training model (auxiliary heads included).
    pub fn param_count(&self) -> usize {
        self.num_params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::lsskd::kernels::tests::rel_err;

    /// A training step leaves its BatchNorm update pending; after `sync_running_stats` the
    /// export and a later `valid()` (the checkpoint) see the same statistics, and an
    /// interpolation of a synced network survives the checkpoint's sync.
    #[test]
    fn synced_running_statistics_are_what_export_and_checkpoint_see() {
        let arch = ArchConfig::preset("resnet-xs", 1).expect("preset");
        let device = crate::lsskd::training_device(5);
        let shape = [1, 16, 16];
        let export = |n: &TrainNet| {
            crate::inference::write_onnx(
                &crate::lsskd::export::deployed(&n.student, shape).expect("export"),
            )
        };
        let step = |n: &TrainNet| {
            let x = Tensor::<4>::random([4, 1, 16, 16], Distribution::Normal(1.0, 2.0), &device);
            let _ = n.student.forward(x);
        };
        let net = TrainNet::new(&arch, 4, 4, false, &device);
        step(&net);
        let pending = export(&net);
        net.sync_running_stats();
        let synced = export(&net);
        assert!(pending != synced, "the step's update was pending");
        let _ = net.valid();
        assert!(export(&net) == synced, "nothing pending after the sync");

        // Interpolating a network with a pending update: the checkpoint's sync would undo
        // the mix of the running statistics; synced first, it keeps it.
        let other = TrainNet::new(&arch, 4, 4, false, &device).float_values();
        let trained = TrainNet::new(&arch, 4, 4, false, &device);
        step(&trained);
        trained.sync_running_stats();
        let mixed = trained.interpolate(&other, 0.5);
        let before = export(&mixed);
        let _ = mixed.valid();
        assert!(export(&mixed) == before, "the mix survives a sync");
    }

    /// Weight 1 keeps a network, 0 gives the other's values, ½ the mean of the two — for
    /// every parameter and running statistic — and trainable parameters stay trainable.
    #[test]
    fn interpolation_mixes_every_float_tensor() {
        let arch = ArchConfig::preset("resnet-xs", 1).expect("preset");
        let device = crate::lsskd::training_device(3);
        let a = TrainNet::new(&arch, 4, 4, true, &device);
        let b = TrainNet::new(&arch, 4, 4, true, &device);
        let (va, vb) = (a.float_values(), b.float_values());
        assert_eq!(va.len(), vb.len());
        let flat = |v: &[TensorData]| -> Vec<f32> {
            v.iter()
                .flat_map(|d| d.clone().try_into_vec::<f32>().expect("f32"))
                .collect()
        };
        let (fa, fb) = (flat(&va), flat(&vb));
        assert_ne!(fa, fb, "two initialisations differ");
        let same = a.clone().interpolate(&vb, 1.0);
        assert_eq!(flat(&same.float_values()), fa);
        let other = a.clone().interpolate(&vb, 0.0);
        assert_eq!(flat(&other.float_values()), fb);
        let half = a.interpolate(&vb, 0.5);
        for (m, (x, y)) in flat(&half.float_values()).iter().zip(fa.iter().zip(&fb)) {
            assert!((m - (x + y) / 2.0).abs() <= 1e-6 * (1.0 + x.abs() + y.abs()));
        }
        assert!(half.student.classifier.weight.is_require_grad());
    }

    /// ConvBn in training through the kernels against the plain burn modules: output,
    /// gradients of input, weight, γ, β, and the running statistics, at strides 1 and 2,
    /// with (3×3) and without (1×1) padding, with and without the fused ReLU.
    #[test]
    fn conv_bn_kernels_match_the_plain_modules() {
        for (cin, cout, k, stride, act) in [
            (3, 8, 3, 1, true),
            (4, 8, 3, 2, false),
            (4, 8, 1, 2, false),
            (8, 8, 3, 1, false),
        ] {
            let d = Device::default().autodiff();
            let ours = ConvBn::new(cin, cout, k, stride, &d);
            // The same parameters, its own running statistics (a clone would share them).
            let plain =
                ConvBn::new(cin, cout, k, stride, &d).load_record(ours.clone().into_record());
            let x0 = Tensor::<4>::random([6, cin, 10, 10], Distribution::Normal(0.0, 1.0), &d);
            let (xo, xp) = (x0.clone().require_grad(), x0.detach().require_grad());
            let yo = ours.forward_kernels(&xo, act).expect("flex autodiff f32");
            let yp = plain.bn.forward(plain.conv.forward(xp.clone()));
            let yp = if act { relu(yp) } else { yp };
            let probe = Tensor::<4>::random(yp.dims(), Distribution::Normal(0.0, 1.0), &d);
            assert!(rel_err(yo.clone().detach(), yp.clone().detach()) <= 1e-4);
            let go = (yo * probe.clone()).sum().backward();
            let gp = (yp * probe).sum().backward();
            let pairs = [
                rel_err(xo.grad(&go).unwrap(), xp.grad(&gp).unwrap()),
                rel_err(
                    ours.conv.weight.val().grad(&go).unwrap(),
                    plain.conv.weight.val().grad(&gp).unwrap(),
                ),
                rel_err(
                    ours.bn.gamma.val().grad(&go).unwrap(),
                    plain.bn.gamma.val().grad(&gp).unwrap(),
                ),
                rel_err(
                    ours.bn.beta.val().grad(&go).unwrap(),
                    plain.bn.beta.val().grad(&gp).unwrap(),
                ),
                rel_err(
                    ours.bn.running_mean.value_sync(),
                    plain.bn.running_mean.value_sync(),
                ),
                rel_err(
                    ours.bn.running_var.value_sync(),
                    plain.bn.running_var.value_sync(),
                ),
            ];
            assert!(
                pairs.iter().all(|&e| e <= 1e-4),
                "{cin}->{cout} k{k} s{stride}: {pairs:?}"
            );
        }
    }
}
