//! The LSSKD trainer and its baselines (`ce`, `pskd`, `sla`), on burn's flex CPU backend.
//!
//! Receives training data through [`TrainData`] (the caller owns decoding, features and
//! label-preserving augmentation), produces a trained [`TrainNet`]. Runs on whatever thread
//! calls it: callers put it on a dedicated OS thread, never on an async worker.
//!
//! Previous-epoch soft targets *(choice, LSSKD.md §4)*: a per-sample store of the
//! predictions recorded during the previous epoch's training pass (PS-KD's own
//! implementation), which costs no extra forward pass. In `sampled` mode, an auxiliary
//! target for a transform not drawn last epoch falls back to the last recorded one, or to
//! one-hot if it was never drawn.

use std::time::{Duration, Instant};

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::loss::{
    alpha_at, feature_mse, kl_divergence, mix_anchor, progressive_target, soft_cross_entropy,
};
use super::net::{Student, TrainNet, TrainOut, l2_normalize};
use super::transforms::{TransformMode, TransformSet, expand};
use super::{LsskdError, device_of, values};
use crate::inference::argmax;

/// Training method (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Plain cross-entropy, no auxiliary heads.
    Ce,
    /// Progressive self-knowledge distillation on the final head only.
    Pskd,
    /// Joint-label auxiliary heads with hard labels only.
    Sla,
    /// All LSSKD terms.
    Lsskd,
}

impl Method {
    pub fn aux_heads(self) -> bool {
        matches!(self, Method::Sla | Method::Lsskd)
    }

    pub fn soft_targets(self) -> bool {
        matches!(self, Method::Pskd | Method::Lsskd)
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Ce => "ce",
            Method::Pskd => "pskd",
            Method::Sla => "sla",
            Method::Lsskd => "lsskd",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ce" => Ok(Method::Ce),
            "pskd" => Ok(Method::Pskd),
            "sla" => Ok(Method::Sla),
            "lsskd" => Ok(Method::Lsskd),
            _ => Err(format!(
                "unknown method `{s}` (expected ce, pskd, sla or lsskd)"
            )),
        }
    }
}

/// Hyper-parameters; stored in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub method: Method,
    pub transforms: TransformSet,
    pub transform_mode: TransformMode,
    pub epochs: usize,
    /// Samples per step, before expansion by transforms.
    pub batch_size: usize,
    /// Peak learning rate (SGD, Nesterov momentum), cosine decay after a linear warm-up.
    pub lr: f64,
    pub warmup_fraction: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// α_T of the progressive targets.
    pub alpha_t: f32,
    /// Temperature of the deep-to-shallow KL term.
    pub tau: f32,
    pub lambda_kl: f32,
    pub lambda_feat: f32,
    pub seed: u64,
    /// Wall-clock budget; the schedule is compressed to fit it (measured after a few steps).
    pub budget_secs: Option<u64>,
    /// A wall-clock limit that never shortens the schedule: when the speed measured after a
    /// few steps (and again every 25) says the configured steps cannot finish within it,
    /// training stops with [`LsskdError::TimeCap`].
    #[serde(default)]
    pub time_cap_secs: Option<u64>,
    /// Freeze the stem and the first `frozen_stages` stages — weights and BatchNorm
    /// statistics (few-shot fine-tuning).
    pub freeze_early: bool,
    #[serde(default = "one")]
    pub frozen_stages: usize,
    /// *(choice, few-shot fine-tuning)* Items with an [`Anchor`]: weight β of its
    /// probabilities in the final-head target, `(1 − β)·target + β·anchor`.
    #[serde(default)]
    pub anchor_weight: f32,
    /// Items with an [`Anchor`]: weight of `‖ĥ − ĥ_anchor‖²` (unit-normalised embeddings).
    #[serde(default)]
    pub anchor_embedding_weight: f32,
}

fn one() -> usize {
    1
}

impl TrainConfig {
    pub fn new(method: Method, transforms: TransformSet) -> Self {
        Self {
            method,
            transforms,
            transform_mode: TransformMode::Sampled,
            epochs: 10,
            batch_size: 64,
            lr: 0.05,
            warmup_fraction: 0.03,
            momentum: 0.9,
            weight_decay: 5e-4,
            alpha_t: 0.8,
            tau: 3.0,
            lambda_kl: 1.0,
            lambda_feat: 1.0,
            seed: 0,
            budget_secs: None,
            time_cap_secs: None,
            freeze_early: false,
            frozen_stages: 1,
            anchor_weight: 0.0,
            anchor_embedding_weight: 0.0,
        }
    }

    /// Learning rate at training progress `p ∈ [0, 1]`.
    pub fn lr_at(&self, p: f64) -> f64 {
        if p < self.warmup_fraction {
            self.lr * (p / self.warmup_fraction).max(0.02)
        } else {
            let q = (p - self.warmup_fraction) / (1.0 - self.warmup_fraction).max(1e-9);
            0.5 * self.lr * (1.0 + (std::f64::consts::PI * q.min(1.0)).cos())
        }
    }
}

/// The trainer's view of a data set.
pub trait TrainData: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn label(&self, i: usize) -> usize;
    /// Model input `[C, H, W]` of item i; with `rng`, after label-preserving augmentation.
    fn input(&self, i: usize, rng: Option<&mut StdRng>) -> Vec<f32>;
    /// What the model said about item i before this training began (few-shot
    /// fine-tuning: the replay exemplars of the existing classes), or None.
    fn anchor(&self, _i: usize) -> Option<Anchor<'_>> {
        None
    }
}

/// The reference outputs of one item, kept fixed while training (against forgetting).
#[derive(Debug, Clone, Copy)]
pub struct Anchor<'a> {
    /// Softmax of the final head over the classes it had (a prefix of today's classes).
    pub probs: &'a [f32],
    /// The pooled embedding h.
    pub embedding: &'a [f32],
}

/// Loss terms averaged over an epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossParts {
    pub total: f32,
    pub final_ce: f32,
    pub sad: f32,
    pub kl: f32,
    pub feat: f32,
}

impl LossParts {
    fn add(&mut self, p: &LossParts) {
        self.total += p.total;
        self.final_ce += p.final_ce;
        self.sad += p.sad;
        self.kl += p.kl;
        self.feat += p.feat;
    }

    /// The mean of sums over `steps` steps.
    fn mean(&self, steps: usize) -> LossParts {
        let k = steps.max(1) as f32;
        LossParts {
            total: self.total / k,
            final_ce: self.final_ce / k,
            sad: self.sad / k,
            kl: self.kl / k,
            feat: self.feat / k,
        }
    }
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub steps: usize,
    pub alpha: f32,
    pub lr_end: f64,
    pub loss: LossParts,
    pub train_accuracy: f32,
    pub val_accuracy: Option<f32>,
    /// Wall-clock seconds of the training steps (validation excluded).
    pub seconds: f64,
    /// Wall-clock seconds of the validation pass.
    pub val_seconds: f64,
}

/// Progress callback events.
pub enum Progress<'a> {
    Planned { total_steps: usize, epochs: usize },
    Step { step: usize, loss: f32 },
    Epoch(&'a EpochReport),
}

/// Previous-epoch predictions per sample (see module docs).
pub struct SoftStore {
    classes: usize,
    final_probs: Vec<f32>,
    /// `[sample, head, transform, classes·M]`.
    aux_probs: Vec<f32>,
    heads: usize,
    m: usize,
}

impl SoftStore {
    /// Store for `samples` items, `heads` auxiliary heads and `m` transforms; nothing recorded yet.
    pub fn new(samples: usize, classes: usize, heads: usize, m: usize) -> Self {
        Self {
            classes,
            final_probs: vec![f32::NAN; samples * classes],
            aux_probs: vec![f32::NAN; samples * heads * m * classes * m],
            heads,
            m,
        }
    }

    fn final_slot(&mut self, i: usize) -> &mut [f32] {
        &mut self.final_probs[i * self.classes..(i + 1) * self.classes]
    }

    fn aux_slot(&mut self, i: usize, head: usize, j: usize) -> &mut [f32] {
        let k = self.classes * self.m;
        let at = ((i * self.heads + head) * self.m + j) * k;
        &mut self.aux_probs[at..at + k]
    }
}

/// How many stages after the stem a fine-tune with `freeze_early` keeps frozen (at least
/// one stage always trains).
fn frozen_prefix_stages(cfg: &TrainConfig, student: &Student) -> usize {
    cfg.frozen_stages
        .min(student.stages.len().saturating_sub(1))
}

/// Owns the training model and optimizer state.
pub struct Trainer {
    net: Option<TrainNet>,
    optim: ModuleOptimizer,
    cfg: TrainConfig,
    device: Device,
    input_shape: [usize; 3],
}

/// One step's batch as its loss terms see it, beside the network's input.
struct StepBatch<'a> {
    /// The samples, indices into `data`, `[B]`.
    items: &'a [usize],
    data: &'a dyn TrainData,
    /// Label of each sample, `[B]`.
    labels: Vec<usize>,
    /// Rows per sample: sample r's untransformed row is row `r·per_sample` (1 without
    /// auxiliary heads).
    per_sample: usize,
    /// Transform of each row, `[B·per_sample]`.
    transform: Vec<usize>,
    /// Joint (label, transform) label of each row, `[B·per_sample]`.
    joint: Vec<usize>,
    /// α of the progressive targets.
    alpha: f32,
}

impl Trainer {
    /// `net` must live on an autodiff device (see [`super::training_device`]).
    pub fn new(net: TrainNet, cfg: TrainConfig, input_shape: [usize; 3]) -> Self {
        let device = device_of(&net);
        let momentum = MomentumConfig::new()
            .with_momentum(cfg.momentum)
            .with_dampening(0.0)
            .with_nesterov(true);
        let optim = SgdConfig::new()
            .with_momentum(Some(momentum))
            .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
            .init();
        let net = if cfg.freeze_early {
            freeze_early(net, cfg.frozen_stages)
        } else {
            net
        };
        Self {
            net: Some(net),
            optim,
            cfg,
            device,
            input_shape,
        }
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn net(&self) -> &TrainNet {
        self.net.as_ref().expect("net is only taken inside step")
    }

    /// The trained network, its BatchNorm statistics synced
    /// ([`TrainNet::sync_running_stats`]).
    pub fn into_net(self) -> TrainNet {
        let net = self.net.expect("net is only taken inside step");
        net.sync_running_stats();
        net
    }

    /// Train for the configured epochs (or budget). `cancel` is polled between steps.
    pub fn fit(
        &mut self,
        train: &dyn TrainData,
        val: Option<&dyn TrainData>,
        cancel: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Vec<EpochReport>, LsskdError> {
        if train.is_empty() {
            return Err(LsskdError::EmptyData);
        }
        let mut rng = StdRng::seed_from_u64(self.cfg.seed);
        let classes = self.net().classes();
        let heads = self.net().aux.len();
        let m = self.cfg.transforms.len();
        let mut store = self
            .cfg
            .method
            .soft_targets()
            .then(|| SoftStore::new(train.len(), classes, heads, m));
        let bs = self.cfg.batch_size.max(1).min(train.len());
        let mut plan = Schedule::new(&self.cfg, train.len().div_ceil(bs));
        progress(plan.planned());
        let started = Instant::now();
        let mut reports = Vec::new();
        let mut step = 0usize;
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut epoch = 0;
        while epoch < plan.epochs {
            let t0 = Instant::now();
            order.shuffle(&mut rng);
            let alpha = alpha_at(self.cfg.alpha_t, epoch, plan.epochs);
            let mut sums = LossParts::default();
            let (mut correct, mut seen, mut n_steps) = (0usize, 0usize, 0usize);
            let mut lr = 0.0;
            for batch in order.chunks(bs) {
                if cancel() {
                    return Err(LsskdError::Cancelled);
                }
                if step >= plan.total_steps {
                    break;
                }
                lr = self.cfg.lr_at(step as f64 / plan.total_steps as f64);
                let s = self.step(batch, train, alpha, lr, store.as_mut(), &mut rng)?;
                sums.add(&s.parts);
                correct += s.correct;
                seen += batch.len();
                n_steps += 1;
                step += 1;
                progress(Progress::Step {
                    step,
                    loss: s.parts.total,
                });
                if plan.refit(step, started.elapsed())? {
                    progress(plan.planned());
                }
            }
            let train_seconds = t0.elapsed().as_secs_f64();
            let val_accuracy = match val {
                Some(v) if !v.is_empty() => {
                    Some(accuracy(&self.net().student.valid(), v, self.input_shape)?)
                }
                _ => None,
            };
            let report = EpochReport {
                epoch,
                steps: n_steps,
                alpha,
                lr_end: lr,
                loss: sums.mean(n_steps),
                train_accuracy: correct as f32 / seen.max(1) as f32,
                val_accuracy,
                seconds: train_seconds,
                val_seconds: t0.elapsed().as_secs_f64() - train_seconds,
            };
            progress(Progress::Epoch(&report));
            reports.push(report);
            epoch += 1;
        }
        Ok(reports)
    }

    /// One optimisation step on the samples `batch` (indices into `data`).
    pub fn step(
        &mut self,
        batch: &[usize],
        data: &dyn TrainData,
        alpha: f32,
        lr: f64,
        store: Option<&mut SoftStore>,
        rng: &mut StdRng,
    ) -> Result<StepStats, LsskdError> {
        let (x, b) = self.expand_batch(batch, data, alpha, rng);
        let net = self.net.take().expect("net present between steps");
        let (loss, parts, correct) = match self.loss(&net, x, &b, store) {
            Ok(l) if l.1.total.is_finite() => l,
            Ok((_, parts, _)) => {
                self.net = Some(net);
                return Err(LsskdError::Diverged(parts.total));
            }
            Err(e) => {
                self.net = Some(net);
                return Err(e);
            }
        };
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        self.net = Some(self.optim.step(lr, net, grads));
        Ok(StepStats { parts, correct })
    }

    /// The network's input for the samples `batch` (after augmentation): with auxiliary
    /// heads, each sample expanded by the transforms (its untransformed row first).
    fn expand_batch<'a>(
        &self,
        batch: &'a [usize],
        data: &'a dyn TrainData,
        alpha: f32,
        rng: &mut StdRng,
    ) -> (Tensor<4>, StepBatch<'a>) {
        let cfg = &self.cfg;
        let [c, h, w] = self.input_shape;
        let b = batch.len();
        let labels: Vec<usize> = batch.iter().map(|&i| data.label(i)).collect();
        let inputs: Vec<Vec<f32>> = batch.iter().map(|&i| data.input(i, Some(rng))).collect();
        let (flat, per_sample, transform, joint) = if cfg.method.aux_heads() {
            let e = expand(
                &inputs,
                &labels,
                [c, h, w],
                cfg.transforms,
                cfg.transform_mode,
                rng,
            );
            (e.inputs, e.per_sample, e.transform, e.joint)
        } else {
            (inputs.concat(), 1, vec![0; b], labels.clone())
        };
        let x = Tensor::<4>::from_data(
            TensorData::new(flat, [b * per_sample, c, h, w]),
            &self.device,
        ); // [B·per_sample, C, H, W]
        let batch = StepBatch {
            items: batch,
            data,
            labels,
            per_sample,
            transform,
            joint,
            alpha,
        };
        (x, batch)
    }

    /// The training forward pass. With `freeze_early`, the frozen stem and stages run in
    /// inference mode, detached, and only the rest builds a graph; the auxiliary heads of
    /// frozen stages cannot move the student and are skipped.
    fn forward(&self, net: &TrainNet, x: Tensor<4>) -> TrainOut {
        if self.cfg.freeze_early {
            let start = frozen_prefix_stages(&self.cfg, &net.student);
            let f = net.student.forward_prefix(x, start).detach();
            net.forward_from(f, start)
        } else {
            net.forward(x)
        }
    }

    /// The forward pass and the loss of the step: the total, its parts, and the final
    /// head's correct predictions.
    fn loss(
        &self,
        net: &TrainNet,
        x: Tensor<4>,
        b: &StepBatch<'_>,
        mut store: Option<&mut SoftStore>,
    ) -> Result<(Tensor<1>, LossParts, usize), LsskdError> {
        let cfg = &self.cfg;
        let out = self.forward(net, x);
        let (l_final, correct) = self.final_loss(&out, b, store.as_deref_mut())?;
        let mut parts = LossParts {
            final_ce: l_final.clone().into_scalar::<f32>(),
            ..LossParts::default()
        };
        let mut loss = l_final;
        if cfg.method.aux_heads() && !out.aux.is_empty() {
            let l_sad = self.sad_loss(&out, b, store)?;
            parts.sad = l_sad.clone().into_scalar::<f32>();
            loss = loss + l_sad;
            if cfg.method == Method::Lsskd {
                if let Some(l_kl) = kl_loss(&out, cfg.tau) {
                    parts.kl = l_kl.clone().into_scalar::<f32>();
                    loss = loss + l_kl * cfg.lambda_kl;
                }
                if let Some(l_feat) = feature_loss(&out) {
                    parts.feat = l_feat.clone().into_scalar::<f32>();
                    loss = loss + l_feat * cfg.lambda_feat;
                }
            }
        }
        if let Some(l_anchor) = self.anchor_embedding_loss(&out, b) {
            loss = loss + l_anchor * cfg.anchor_embedding_weight;
        }
        parts.total = loss.clone().into_scalar::<f32>();
        Ok((loss, parts, correct))
    }

    /// L_final: soft cross-entropy of the final head on the untransformed rows against the
    /// progressive targets (the stored previous-epoch predictions with `store`, else
    /// one-hot), an anchored item's target mixed with its anchor probabilities
    /// ([`TrainConfig::anchor_weight`]). Records this step's predictions in `store`; also
    /// returns the correct top-1 predictions.
    fn final_loss(
        &self,
        out: &TrainOut,
        b: &StepBatch<'_>,
        mut store: Option<&mut SoftStore>,
    ) -> Result<(Tensor<1>, usize), LsskdError> {
        let n = b.items.len();
        let z = if b.per_sample == 1 {
            out.student.logits.clone()
        } else {
            let idx: Vec<i64> = (0..n).map(|i| (i * b.per_sample) as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
            out.student.logits.clone().select(0, idx)
        }; // [B, N]
        let classes = z.dims()[1];
        let probs = values(softmax(z.clone().detach(), 1))?;
        let mut target = vec![0.0f32; n * classes];
        for (r, (&i, &y)) in b.items.iter().zip(&b.labels).enumerate() {
            let slot = &mut target[r * classes..(r + 1) * classes];
            match store.as_deref_mut() {
                Some(st) => {
                    progressive_target(slot, y, b.alpha, Some(st.final_slot(i)));
                    st.final_slot(i)
                        .copy_from_slice(&probs[r * classes..(r + 1) * classes]);
                }
                None => progressive_target(slot, y, 0.0, None),
            }
            if let Some(a) = b.data.anchor(i).filter(|_| self.cfg.anchor_weight > 0.0) {
                mix_anchor(slot, a.probs, self.cfg.anchor_weight);
            }
        }
        let correct = (0..n)
            .filter(|&r| argmax(&probs[r * classes..(r + 1) * classes]) == b.labels[r])
            .count();
        let target = Tensor::<2>::from_data(TensorData::new(target, [n, classes]), &self.device);
        Ok((soft_cross_entropy(z, target), correct))
    }

    /// L_SAD: each auxiliary head's soft cross-entropy on every row against the progressive
    /// targets of the joint labels, summed over the heads. Records the heads' predictions
    /// in `store`. `out` has at least one auxiliary head.
    fn sad_loss(
        &self,
        out: &TrainOut,
        b: &StepBatch<'_>,
        mut store: Option<&mut SoftStore>,
    ) -> Result<Tensor<1>, LsskdError> {
        let rows = b.items.len() * b.per_sample;
        let k = out.student.logits.dims()[1] * self.cfg.transforms.len(); // N·M
        let mut terms = Vec::with_capacity(out.aux.len());
        for (l, a) in (out.first_head..).zip(&out.aux) {
            let mut t = vec![0.0f32; rows * k];
            let q = if store.is_some() {
                Some(values(softmax(a.logits.clone().detach(), 1))?)
            } else {
                None
            };
            for row in 0..rows {
                let i = b.items[row / b.per_sample];
                let slot = &mut t[row * k..(row + 1) * k];
                match (store.as_deref_mut(), &q) {
                    (Some(st), Some(q)) => {
                        let prev = st.aux_slot(i, l, b.transform[row]);
                        progressive_target(slot, b.joint[row], b.alpha, Some(prev));
                        prev.copy_from_slice(&q[row * k..(row + 1) * k]);
                    }
                    _ => progressive_target(slot, b.joint[row], 0.0, None),
                }
            }
            let t = Tensor::<2>::from_data(TensorData::new(t, [rows, k]), &self.device);
            terms.push(soft_cross_entropy(a.logits.clone(), t));
        }
        Ok(sum_terms(terms).expect("at least one auxiliary head"))
    }

    /// The embedding anchor: `‖ĥ − ĥ_anchor‖²` of the anchored items' untransformed rows
    /// against their unit anchor embeddings, averaged (unweighted; None without anchored
    /// items or with [`TrainConfig::anchor_embedding_weight`] 0).
    fn anchor_embedding_loss(&self, out: &TrainOut, b: &StepBatch<'_>) -> Option<Tensor<1>> {
        if self.cfg.anchor_embedding_weight <= 0.0 {
            return None;
        }
        let mut idx = Vec::new();
        let mut target = Vec::new();
        for (r, &i) in b.items.iter().enumerate() {
            if let Some(a) = b.data.anchor(i) {
                idx.push((r * b.per_sample) as i64);
                let n = a.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
                target.extend(a.embedding.iter().map(|v| v / n.max(1e-6)));
            }
        }
        if idx.is_empty() {
            return None;
        }
        let n = idx.len();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &self.device);
        let h = l2_normalize(out.student.embedding.clone().select(0, idx)); // [n, D]
        let d = target.len() / n;
        let t = Tensor::<2>::from_data(TensorData::new(target, [n, d]), &self.device);
        Some((h - t).powf_scalar(2.0).sum_dim(1).mean().reshape([1]))
    }
}

/// L_KL: `τ²·Σ KL(deepest head ‖ shallower head)` at temperature τ over the shallower
/// auxiliary heads; None with a single head.
fn kl_loss(out: &TrainOut, tau: f32) -> Option<Tensor<1>> {
    let (deepest, shallower) = out.aux.split_last()?;
    let terms = shallower
        .iter()
        .map(|a| kl_divergence(deepest.logits.clone(), a.logits.clone(), tau));
    sum_terms(terms).map(|l| l * (tau * tau))
}

/// L_feat: `Σ MSE(aux feature map, f_L)` over the auxiliary heads; None without any.
fn feature_loss(out: &TrainOut) -> Option<Tensor<1>> {
    let f_l = out.student.stages.last().expect("at least one stage");
    sum_terms(
        out.aux
            .iter()
            .map(|a| feature_mse(a.feature.clone(), f_l.clone())),
    )
}

/// The sum of the terms, in order; None for none.
fn sum_terms(terms: impl IntoIterator<Item = Tensor<1>>) -> Option<Tensor<1>> {
    terms.into_iter().reduce(|sum, term| sum + term)
}

/// The step plan of [`Trainer::fit`], fitted to the wall-clock budget as the speed becomes
/// known.
struct Schedule {
    steps_per_epoch: usize,
    /// The configured epochs' steps.
    planned_steps: usize,
    total_steps: usize,
    epochs: usize,
    budget: Option<Duration>,
    cap: Option<u64>,
    /// The end of the first step and the step count then.
    steady_from: Option<(Instant, usize)>,
}

impl Schedule {
    fn new(cfg: &TrainConfig, steps_per_epoch: usize) -> Self {
        let epochs = cfg.epochs.max(1);
        Self {
            steps_per_epoch,
            planned_steps: epochs * steps_per_epoch,
            total_steps: epochs * steps_per_epoch,
            epochs,
            budget: cfg.budget_secs.map(Duration::from_secs),
            cap: cfg.time_cap_secs,
            steady_from: None,
        }
    }

    fn planned(&self) -> Progress<'static> {
        Progress::Planned {
            total_steps: self.total_steps,
            epochs: self.epochs,
        }
    }

    /// After `step` steps, `elapsed` since the fit began: whether the plan changed; an
    /// error when the steps left cannot finish within the time cap.
    fn refit(&mut self, step: usize, elapsed: Duration) -> Result<bool, LsskdError> {
        // The speed is measured from the end of the first step: that one also pays for the
        // allocations and the first touch of every buffer.
        let (steady_at, steady_step) = *self
            .steady_from
            .get_or_insert_with(|| (Instant::now(), step));
        if !(step == 5 || step.is_multiple_of(25)) {
            return Ok(false);
        }
        if let Some(cap) = self.cap
            && step > steady_step
        {
            let per_step = steady_at.elapsed().as_secs_f64() / (step - steady_step) as f64;
            let projected = projected_secs(
                elapsed,
                per_step,
                self.total_steps - step.min(self.total_steps),
            );
            if projected > cap as f64 {
                return Err(LsskdError::TimeCap {
                    steps: self.total_steps,
                    steps_per_sec: 1.0 / per_step.max(1e-9),
                    projected_secs: projected,
                    cap_secs: cap,
                });
            }
        }
        // Budget: re-estimate the speed now and then and fit the schedule to what is left
        // (the machine may be shared, so speed changes).
        let Some(budget) = self.budget else {
            return Ok(false);
        };
        let fitted = fit_to_budget(
            budget,
            elapsed,
            steady_at.elapsed(),
            step - steady_step,
            step,
            self.planned_steps,
        );
        if fitted == self.total_steps {
            return Ok(false);
        }
        self.total_steps = fitted;
        self.epochs = fitted.div_ceil(self.steps_per_epoch);
        Ok(true)
    }
}

/// Result of one step.
#[derive(Debug, Clone)]
pub struct StepStats {
    pub parts: LossParts,
    /// Correct top-1 predictions of the final head on untransformed rows.
    pub correct: usize,
}

/// Freeze the stem and the first `stages` stages: their weights and BatchNorm statistics
/// stay fixed. (What [`TrainConfig::freeze_early`] does before training.)
pub fn freeze_early(net: TrainNet, stages: usize) -> TrainNet {
    let TrainNet { mut student, aux } = net;
    student.stem = student.stem.freeze();
    for stage in student.stages.iter_mut().take(stages) {
        let blocks = std::mem::take(stage);
        *stage = blocks.into_iter().map(|b| b.freeze()).collect();
    }
    TrainNet { student, aux }
}

/// Top-1 accuracy of a (validation-mode) student on `data`, batches of 256, through burn.
pub fn accuracy(
    student: &Student,
    data: &dyn TrainData,
    input_shape: [usize; 3],
) -> Result<f32, LsskdError> {
    let [c, h, w] = input_shape;
    let device = device_of(student);
    let mut correct = 0;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(256) {
        let flat: Vec<f32> = chunk.iter().flat_map(|&i| data.input(i, None)).collect();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), c, h, w]), &device);
        let logits = values(student.forward(x).logits)?;
        let n = logits.len() / chunk.len();
        correct += chunk
            .iter()
            .enumerate()
            .filter(|&(r, &i)| argmax(&logits[r * n..(r + 1) * n]) == data.label(i))
            .count();
    }
    Ok(correct as f32 / data.len().max(1) as f32)
}

/// Seconds a schedule takes in all: `elapsed` so far and `left` steps at `per_step` seconds.
fn projected_secs(elapsed: Duration, per_step: f64, left: usize) -> f64 {
    elapsed.as_secs_f64() + per_step * left as f64
}

/// The steps a budgeted schedule can take: those done (`step`) plus as many as the budget's
/// remaining 90 % (the rest is left for validation passes) holds at the steady speed,
/// measured over the `steady_steps` taken in `steady` since the first step. At least one
/// more step, never more than planned.
fn fit_to_budget(
    budget: Duration,
    elapsed: Duration,
    steady: Duration,
    steady_steps: usize,
    step: usize,
    planned: usize,
) -> usize {
    if steady_steps == 0 {
        return planned;
    }
    let per_step = steady.as_secs_f64() / steady_steps as f64;
    let left = (budget.as_secs_f64() * 0.9 - elapsed.as_secs_f64()).max(0.0);
    let more = if per_step > 0.0 {
        (left / per_step).min(planned as f64) as usize
    } else {
        planned
    };
    (step + more).clamp(step + 1, planned.max(step + 1))
}

#[cfg(test)]
mod tests {
    use super::{Schedule, fit_to_budget};
    use crate::lsskd::{LsskdError, Method, TrainConfig, TransformSet};
    use std::time::Duration;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_time_cap_never_shortens_the_schedule_it_stops_one_that_cannot_finish() {
        let mut cfg = TrainConfig::new(Method::Ce, TransformSet::Rot4);
        cfg.epochs = 4;
        cfg.time_cap_secs = Some(60);
        // 4 epochs of 10 steps; 20 ms a step: 0.8 s, well within the cap.
        let mut fits = Schedule::new(&cfg, 10);
        fits.refit(1, MS(30)).expect("first step");
        std::thread::sleep(MS(80));
        assert!(!fits.refit(5, MS(110)).expect("fits"));
        assert_eq!(fits.total_steps, 40, "never shortened");
        // 1000 epochs of 10 steps at 20 ms: 200 s, over a 60 s cap.
        cfg.epochs = 1000;
        let mut slow = Schedule::new(&cfg, 10);
        slow.refit(1, MS(30)).expect("first step");
        std::thread::sleep(MS(80));
        match slow.refit(5, MS(110)) {
            Err(LsskdError::TimeCap {
                steps,
                projected_secs,
                cap_secs,
                ..
            }) => {
                assert_eq!((steps, cap_secs), (10_000, 60));
                assert!(projected_secs > 60.0, "{projected_secs}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_slow_first_step_does_not_shorten_a_schedule_that_fits() {
        // 285 steps at 18 ms are 5.1 s of a 10 s budget; the first step took 150 ms.
        let fitted = fit_to_budget(Duration::from_secs(10), MS(222), MS(72), 4, 5, 285);
        assert_eq!(fitted, 285);
    }

    #[test]
    fn a_schedule_that_does_not_fit_is_cut_to_the_time_left() {
        // 100 ms a step, 2 s spent at step 20: 7 s of the 9 s left hold 70 more steps.
        let fitted = fit_to_budget(Duration::from_secs(10), MS(2000), MS(1900), 19, 20, 285);
        assert_eq!(fitted, 90);
    }

    #[test]
    fn a_spent_budget_still_takes_one_more_step_and_never_more_than_planned() {
        let over = fit_to_budget(Duration::from_secs(1), MS(5000), MS(4000), 40, 41, 285);
        assert_eq!(over, 42);
        let planned = fit_to_budget(Duration::from_secs(60), MS(50), MS(40), 4, 5, 10);
        assert_eq!(planned, 10);
        assert_eq!(
            fit_to_budget(Duration::from_secs(1), MS(9), MS(0), 0, 1, 10),
            10
        );
    }
}
