//! `lsskd-edge bench-train`: wall-clock time of one training step
//! ([`lsskd::Trainer::step`](crate::lsskd::Trainer::step)) on a fixed synthetic batch, and
//! with `--profile` a per-op breakdown of that step.
//!
//! The step is the real one: the same `TrainNet` (student and auxiliary heads), transforms,
//! losses, soft-target store and optimizer as `train`, on 1×28×28 inputs with 10 classes.
//! Only the data is synthetic (fixed random images, labels `i mod 10`, no augmentation),
//! and the learning rate is constant. `scripts/bench-train-step.sh` runs it beside a
//! PyTorch peer of the same network and losses (`scripts/torch_train_bench.py`).
//!
//! The profile times every distinct layer of the network alone, on the training (autodiff)
//! device with the exact shape it sees in the step, through the same code (convolution and
//! batch norm through `lsskd::kernels` unless `--plain`): forward, then backward from the sum
//! of its output (so the backward includes one fill of the output's shape). The ReLU that
//! follows a batch norm is fused into it in the step but timed on its own here. Each time is the
//! median of `--profile-reps` runs and is multiplied by how often the layer occurs in the
//! `TrainNet`. The table puts the total beside the measured step; the difference is what
//! the isolated ops do not cover (batch expansion and targets on the CPU, read-backs, graph
//! bookkeeping, caches and allocation in a whole graph).

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::lsskd::loss::{feature_mse, kl_divergence, soft_cross_entropy};
use crate::lsskd::net::{Block, ClassifierHead, ConvBn};
use crate::lsskd::{
    self, ArchConfig, Method, SoftStore, TrainConfig, TrainData, TrainNet, Trainer, TransformMode,
    TransformSet,
};

/// Input shape of the benchmark (one gray 28×28 image, like the vision model).
pub const INPUT_SHAPE: [usize; 3] = [1, 28, 28];
/// Classes of the benchmark's final head.
pub const CLASSES: usize = 10;

/// Arguments of `bench-train`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchTrainArgs {
    /// ce, pskd, sla or lsskd.
    #[arg(long, default_value = "lsskd")]
    pub method: Method,
    /// Joint-label transform rows per sample (methods with auxiliary heads): `sampled`
    /// (identity + 1 random rotation, 2 rows) or `all` (4 rows).
    #[arg(long, default_value = "sampled")]
    pub transforms: TransformMode,
    /// Samples per step (before expansion by transforms).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// resnet-xs, resnet-s or resnet-m.
    #[arg(long, default_value = "resnet-s")]
    pub arch: String,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Size of the rayon pool the step runs in (burn flex's threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also time every distinct layer of the step alone (forward / backward by layer kind).
    #[arg(long)]
    pub profile: bool,
    /// Runs per op in the profile (median taken, after one untimed run).
    #[arg(long, default_value_t = 5)]
    pub profile_reps: usize,
    /// Train through the plain burn ops instead of `lsskd::kernels` (the "before" of the
    /// kernels, step and profile). Needs a build with `--features bench`.
    #[arg(long)]
    pub plain: bool,
    /// The adaptation's fine-tune step: the stem and all stages but the last frozen, run
    /// as a plain forward pass, only the last stage, the classifier and the last stage's
    /// auxiliary head train (as `adapt::job::adapt` runs it; no replay anchors).
    #[arg(long)]
    pub finetune: bool,
}

/// Distribution of the step time, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StepTimes {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl StepTimes {
    fn of(mut v: Vec<f64>) -> StepTimes {
        v.sort_by(f64::total_cmp);
        StepTimes {
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
            p50_ms: median_sorted(&v),
            min_ms: v[0],
            max_ms: v[v.len() - 1],
        }
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    median_sorted(&v)
}

/// The `--json` report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchTrainReport {
    pub method: String,
    pub transforms: String,
    pub arch: String,
    pub batch: usize,
    /// Rows through the network per step (batch × transform rows per sample).
    pub rows: usize,
    pub input_shape: [usize; 3],
    pub classes: usize,
    pub params: usize,
    pub threads: usize,
    /// Convolution and batch norm through `lsskd::kernels` (false: `--plain`).
    pub kernels: bool,
    /// The adaptation's fine-tune step (`--finetune`).
    pub finetune: bool,
    pub steps: usize,
    pub warmup: usize,
    pub step: StepTimes,
    /// Process CPU time over wall time of the timed steps: how many cores the step kept
    /// busy on average (at most `threads`, less where it runs serial code or waits).
    pub cores_busy: f64,
    /// Peak resident memory after the timed steps (before any profiling), MiB.
    pub peak_rss_mb: Option<f64>,
    pub profile: Option<Profile>,
}

/// One distinct op of the step, timed alone.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileOp {
    /// conv, batchnorm, elementwise, pool+classifier, loss or optimizer.
    pub kind: &'static str,
    pub op: String,
    /// How often the op occurs in one step.
    pub count: usize,
    /// Median of one occurrence, milliseconds.
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// `count × (forward + backward)`.
    pub total_ms: f64,
}

/// Forward / backward totals of one layer kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindTotal {
    pub kind: &'static str,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub total_ms: f64,
}

/// The per-op breakdown of one step.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub reps: usize,
    pub ops: Vec<ProfileOp>,
    pub kinds: Vec<KindTotal>,
    /// Sum of all ops.
    pub total_ms: f64,
    /// The measured step (mean of the timed steps), for comparison.
    pub step_mean_ms: f64,
    /// `total_ms / step_mean_ms`.
    pub coverage: f64,
}

/// A fixed synthetic batch: random images in [-1, 1], labels `i mod classes`.
struct Synthetic {
    inputs: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

impl Synthetic {
    fn new(n: usize, shape: [usize; 3], classes: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let len = shape.iter().product::<usize>();
        Self {
            inputs: (0..n)
                .map(|_| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect(),
            labels: (0..n).map(|i| i % classes).collect(),
        }
    }
}

impl TrainData for Synthetic {
    fn len(&self) -> usize {
        self.inputs.len()
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn input(&self, i: usize, _rng: Option<&mut StdRng>) -> Vec<f32> {
        self.inputs[i].clone()
    }
}

/// Run the benchmark in a rayon pool of `--threads` threads.
pub fn run(args: &BenchTrainArgs) -> anyhow::Result<BenchTrainReport> {
    anyhow::ensure!(args.batch > 0, "--batch must be > 0");
    anyhow::ensure!(args.threads > 0, "--threads must be > 0");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .thread_name(|i| format!("bench-train-{i}"))
        .build()
        .context("building the rayon pool")?;
    with_kernels(!args.plain, || pool.install(|| run_in_pool(args)))
}

/// `f` with training through `lsskd::kernels` on or off (a `bench` build), the switch
/// restored after.
#[cfg(feature = "bench")]
fn with_kernels<T>(on: bool, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let was = lsskd::kernels::enabled();
    lsskd::kernels::set_enabled(on);
    let r = f();
    lsskd::kernels::set_enabled(was);
    r
}

/// `f`, which trains through `lsskd::kernels`: without the `bench` feature there is no
/// switch to turn them off.
#[cfg(not(feature = "bench"))]
fn with_kernels<T>(on: bool, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    anyhow::ensure!(
        on,
        "--plain needs a build with `--features bench` (the shipped build always trains through lsskd::kernels)"
    );
    f()
}

fn run_in_pool(args: &BenchTrainArgs) -> anyhow::Result<BenchTrainReport> {
    let arch = ArchConfig::preset(&args.arch, INPUT_SHAPE[0])
        .with_context(|| format!("unknown --arch `{}`", args.arch))?;
    let set = TransformSet::Rot4;
    let m = set.len();
    let device = lsskd::training_device(args.seed);
    let net = TrainNet::new(&arch, CLASSES, m, args.method.aux_heads(), &device);
    let params = net.param_count();
    let heads = net.aux.len();
    let mut cfg = TrainConfig::new(args.method, set);
    cfg.transform_mode = args.transforms;
    cfg.batch_size = args.batch;
    cfg.seed = args.seed;
    if args.finetune {
        cfg.freeze_early = true;
        cfg.frozen_stages = arch.widths.len().saturating_sub(1);
    }
    let per_sample = match (args.method.aux_heads(), args.transforms) {
        (false, _) => 1,
        (true, TransformMode::Sampled) => 2,
        (true, TransformMode::All) => m,
    };
    let rows = args.batch * per_sample;
    let data = Synthetic::new(args.batch, INPUT_SHAPE, CLASSES, args.seed);
    let batch: Vec<usize> = (0..args.batch).collect();
    let mut store = args
        .method
        .soft_targets()
        .then(|| SoftStore::new(args.batch, CLASSES, heads, m));
    let mut trainer = Trainer::new(net, cfg, INPUT_SHAPE);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut times = Vec::with_capacity(args.steps);
    let mut cpu0 = 0.0;
    for i in 0..args.warmup + args.steps.max(1) {
        if i == args.warmup {
            cpu0 = cpu_seconds();
        }
        let t0 = Instant::now();
        trainer.step(&batch, &data, 0.5, 0.01, store.as_mut(), &mut rng)?;
        if i >= args.warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let cores_busy = (cpu_seconds() - cpu0) / (times.iter().sum::<f64>() / 1e3);
    let step = StepTimes::of(times);
    let peak_rss_mb = super::fewshot::peak_rss_mb();
    let profile = if args.profile {
        Some(profile(
            &trainer.into_net(),
            args,
            rows,
            step.mean_ms,
            &device,
        ))
    } else {
        None
    };
    Ok(BenchTrainReport {
        kernels: lsskd::kernels::enabled(),
        finetune: args.finetune,
        method: args.method.name().into(),
        transforms: match (args.method.aux_heads(), args.transforms) {
            (false, _) => "-",
            (true, TransformMode::Sampled) => "sampled",
            (true, TransformMode::All) => "all",
        }
        .into(),
        arch: args.arch.clone(),
        batch: args.batch,
        rows,
        input_shape: INPUT_SHAPE,
        classes: CLASSES,
        params,
        threads: args.threads,
        steps: args.steps.max(1),
        warmup: args.warmup,
        step,
        cores_busy,
        peak_rss_mb,
        profile,
    })
}

/// User + system CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain old data (all-zero is a valid value) and getrusage only
    // writes the struct it is given.
    let (rc, u) = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut u), u)
    };
    if rc != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `[rows, c, h, w]` of an activation, without the rows.
type Chw = [usize; 3];

/// A distinct op of the step, with the first layer instance that performs it.
#[derive(Clone, Copy, PartialEq)]
enum Key {
    /// `grad_in`: the input needs a gradient (every conv but the stem's).
    Conv {
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        hw: [usize; 2],
        grad_in: bool,
    },
    Bn(Chw),
    Relu(Chw),
    Add(Chw),
    PoolClassifier(Chw, usize),
    FinalCe(usize),
    SadCe(usize),
    Kl(usize),
    Mse(Chw),
    Optimizer,
}

#[derive(Clone, Copy)]
enum Layer<'a> {
    Conv(&'a ConvBn),
    Bn(&'a ConvBn),
    Classifier(&'a ClassifierHead),
    None,
}

struct Ops<'a> {
    list: Vec<(Key, usize, Layer<'a>)>,
}

impl<'a> Ops<'a> {
    fn add(&mut self, key: Key, layer: Layer<'a>) {
        match self.list.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, n, _)) => *n += 1,
            None => self.list.push((key, 1, layer)),
        }
    }

    fn conv_bn(&mut self, cb: &'a ConvBn, [c, h, w]: Chw, grad_in: bool) -> Chw {
        let [cout, cin, k, _] = cb.conv.weight.dims();
        debug_assert_eq!(cin, c);
        let s = cb.stride();
        let out = |x: usize| (x + 2 * (k / 2) - k) / s + 1;
        let (ho, wo) = (out(h), out(w));
        self.add(
            Key::Conv {
                cin,
                cout,
                k,
                stride: s,
                hw: [h, w],
                grad_in,
            },
            Layer::Conv(cb),
        );
        self.add(Key::Bn([cout, ho, wo]), Layer::Bn(cb));
        [cout, ho, wo]
    }

    /// The ops of `Block::forward`.
    fn block(&mut self, b: &'a Block, x: Chw) -> Chw {
        let y = self.conv_bn(&b.c1, x, true);
        self.add(Key::Relu(y), Layer::None);
        let y = self.conv_bn(&b.c2, y, true);
        if let Some(sc) = &b.shortcut {
            self.conv_bn(sc, x, true);
        }
        self.add(Key::Add(y), Layer::None);
        self.add(Key::Relu(y), Layer::None);
        y
    }

    /// Every op of one `Trainer::step` of `method` on `net`.
    fn of_step(net: &'a TrainNet, method: Method) -> Self {
        let mut ops = Ops { list: Vec::new() };
        let s = &net.student;
        let mut f = ops.conv_bn(&s.stem, INPUT_SHAPE, false);
        ops.add(Key::Relu(f), Layer::None);
        let mut stage_out = Vec::new();
        for st in &s.stages {
            for b in st {
                f = ops.block(b, f);
            }
            stage_out.push(f);
        }
        ops.add(
            Key::PoolClassifier(f, s.classifier.classes()),
            Layer::Classifier(&s.classifier),
        );
        for (head, &x) in net.aux.iter().zip(&stage_out) {
            let mut a = x;
            for b in &head.blocks {
                a = ops.block(b, a);
            }
            ops.add(
                Key::PoolClassifier(a, head.classifier.classes()),
                Layer::Classifier(&head.classifier),
            );
        }
        ops.add(Key::FinalCe(s.classifier.classes()), Layer::None);
        let heads = net.aux.len();
        if let Some(k) = net.aux.first().map(|h| h.classifier.classes()) {
            for _ in 0..heads {
                ops.add(Key::SadCe(k), Layer::None);
            }
            if method == Method::Lsskd {
                for _ in 1..heads {
                    ops.add(Key::Kl(k), Layer::None);
                }
                for _ in 0..heads {
                    ops.add(Key::Mse(f), Layer::None);
                }
            }
        }
        ops.add(Key::Optimizer, Layer::None);
        ops
    }
}

fn chw(c: Chw) -> String {
    format!("{}@{}×{}", c[0], c[1], c[2])
}

fn describe(key: Key, rows: usize, batch: usize) -> (&'static str, String) {
    match key {
        Key::Conv {
            cin,
            cout,
            k,
            stride,
            hw,
            grad_in,
        } => (
            "conv",
            format!(
                "{k}×{k} {cin}→{cout} s{stride} @{}×{}, {rows} rows{}",
                hw[0],
                hw[1],
                if grad_in { "" } else { " (no dX)" }
            ),
        ),
        Key::Bn(c) => ("batchnorm", format!("{}, {rows} rows", chw(c))),
        Key::Relu(c) => ("elementwise", format!("relu {}, {rows} rows", chw(c))),
        Key::Add(c) => ("elementwise", format!("add {}, {rows} rows", chw(c))),
        Key::PoolClassifier(c, n) => (
            "pool+classifier",
            format!("GAP {} + cosine {}→{n}, {rows} rows", chw(c), c[0]),
        ),
        Key::FinalCe(n) => ("loss", format!("final soft CE, {batch}×{n}")),
        Key::SadCe(k) => ("loss", format!("SAD soft CE, {rows}×{k}")),
        Key::Kl(k) => ("loss", format!("τ²·KL deepest→shallower, {rows}×{k}")),
        Key::Mse(c) => ("loss", format!("feature MSE {}, {rows} rows", chw(c))),
        Key::Optimizer => ("optimizer", "SGD Nesterov + weight decay".into()),
    }
}

/// Median forward and backward milliseconds of `fwd` on inputs made by `prepare`
/// (not timed), after one untimed run. Backward runs from the sum of the output.
fn measure<I, const D: usize>(
    reps: usize,
    device: &Device,
    mut prepare: impl FnMut() -> I,
    mut fwd: impl FnMut(I) -> Tensor<D>,
) -> (f64, f64) {
    let (mut f, mut b) = (Vec::new(), Vec::new());
    for i in 0..reps.max(1) + 1 {
        let input = prepare();
        let _ = device.sync();
        let t0 = Instant::now();
        let y = fwd(input);
        let _ = device.sync();
        let t1 = Instant::now();
        let grads = y.sum().backward();
        let _ = device.sync();
        let t2 = Instant::now();
        drop(grads);
        if i > 0 {
            f.push((t1 - t0).as_secs_f64() * 1e3);
            b.push((t2 - t1).as_secs_f64() * 1e3);
        }
    }
    (median(f), median(b))
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn profile(
    net: &TrainNet,
    args: &BenchTrainArgs,
    rows: usize,
    step_mean_ms: f64,
    device: &Device,
) -> Profile {
    let reps = args.profile_reps;
    let batch = args.batch;
    let ops = Ops::of_step(net, args.method);
    let timed: Vec<ProfileOp> = ops
        .list
        .iter()
        .map(|&(key, count, layer)| {
            let (fwd, bwd) = time_op(key, layer, net, reps, rows, batch, device);
            let (kind, op) = describe(key, rows, batch);
            ProfileOp {
                kind,
                op,
                count,
                forward_ms: fwd,
                backward_ms: bwd,
                total_ms: count as f64 * (fwd + bwd),
            }
        })
        .collect();
    let kinds = kind_totals(&timed);
    let total_ms = timed.iter().map(|o| o.total_ms).sum::<f64>();
    Profile {
        reps,
        ops: timed,
        kinds,
        total_ms,
        step_mean_ms,
        coverage: total_ms / step_mean_ms,
    }
}

/// Median forward and backward milliseconds of one occurrence of the op `key` (performed
/// by `layer`), on random inputs of its shape with `rows` rows (`batch` for the final head).
fn time_op(
    key: Key,
    layer: Layer<'_>,
    net: &TrainNet,
    reps: usize,
    rows: usize,
    batch: usize,
    device: &Device,
) -> (f64, f64) {
    let act = |[c, h, w]: Chw| random([rows, c, h, w], device).require_grad();
    let logits = |r: usize, k: usize| random([r, k], device).require_grad();
    match (key, layer) {
        (
            Key::Conv {
                cin, hw, grad_in, ..
            },
            Layer::Conv(cb),
        ) => measure(
            reps,
            device,
            || {
                let x = random([rows, cin, hw[0], hw[1]], device);
                if grad_in { x.require_grad() } else { x }
            },
            |x| conv_as_trained(cb, x),
        ),
        (Key::Bn(c), Layer::Bn(cb)) => measure(reps, device, || act(c), |x| bn_as_trained(cb, x)),
        (Key::Relu(c), _) => measure(reps, device, || act(c), relu),
        (Key::Add(c), _) => measure(reps, device, || (act(c), act(c)), |(a, b)| a + b),
        (Key::PoolClassifier(c, _), Layer::Classifier(cls)) => measure(
            reps,
            device,
            || act(c),
            |x| cls.forward(x.mean_dim(3).mean_dim(2).reshape([rows, c[0]])),
        ),
        (Key::FinalCe(n), _) => measure(
            reps,
            device,
            || (logits(batch, n), targets(batch, n, device)),
            |(z, t)| soft_cross_entropy(z, t),
        ),
        (Key::SadCe(k), _) => measure(
            reps,
            device,
            || (logits(rows, k), targets(rows, k, device)),
            |(z, t)| soft_cross_entropy(z, t),
        ),
        (Key::Kl(k), _) => measure(
            reps,
            device,
            || (logits(rows, k), logits(rows, k)),
            |(t, s)| kl_divergence(t, s, 3.0) * 9.0,
        ),
        (Key::Mse(c), _) => measure(
            reps,
            device,
            || (act(c), act(c)),
            |(a, t)| feature_mse(a, t),
        ),
        (Key::Optimizer, _) => (time_optimizer(net, reps, device), 0.0),
        _ => unreachable!("every layer op carries its layer"),
    }
}

/// The convolution of `cb` alone, as a training step runs it: through
/// [`lsskd::kernels::conv2d`] when the step would (see `ConvBn::forward_act`).
fn conv_as_trained(cb: &ConvBn, x: Tensor<4>) -> Tensor<4> {
    match lsskd::kernels::enabled()
        .then(|| cb.conv_kernel(&x))
        .flatten()
    {
        Some(y) => y,
        None => cb.conv.forward(x),
    }
}

/// The batch norm of `cb` alone (no ReLU), as a training step runs it: through
/// [`lsskd::kernels::batch_norm_train`] when the step would. The running statistics are
/// left alone.
fn bn_as_trained(cb: &ConvBn, y: Tensor<4>) -> Tensor<4> {
    let bn = &cb.bn;
    let fused = lsskd::kernels::enabled() && bn.training.is_enabled();
    match fused
        .then(|| {
            lsskd::kernels::batch_norm_train(&y, &bn.gamma.val(), &bn.beta.val(), bn.epsilon, false)
        })
        .flatten()
    {
        Some(r) => r.output,
        None => bn.forward(y),
    }
}

/// Forward / backward / total milliseconds per op kind, in the order the kinds first occur.
fn kind_totals(ops: &[ProfileOp]) -> Vec<KindTotal> {
    let mut kinds: Vec<KindTotal> = Vec::new();
    for o in ops {
        let (f, b) = (
            o.count as f64 * o.forward_ms,
            o.count as f64 * o.backward_ms,
        );
        match kinds.iter_mut().find(|k| k.kind == o.kind) {
            Some(k) => {
                k.forward_ms += f;
                k.backward_ms += b;
                k.total_ms += f + b;
            }
            None => kinds.push(KindTotal {
                kind: o.kind,
                forward_ms: f,
                backward_ms: b,
                total_ms: f + b,
            }),
        }
    }
    kinds
}

/// One-hot targets `[rows, k]` (no gradient).
fn targets(rows: usize, k: usize, device: &Device) -> Tensor<2> {
    let mut t = vec![0.0f32; rows * k];
    for r in 0..rows {
        t[r * k + r % k] = 1.0;
    }
    Tensor::from_data(TensorData::new(t, [rows, k]), device)
}

/// Median milliseconds of one optimizer update of every parameter of `net` (the same SGD
/// configuration as the trainer), with gradients from a 2-row forward pass.
fn time_optimizer(net: &TrainNet, reps: usize, device: &Device) -> f64 {
    let cfg = TrainConfig::new(Method::Lsskd, TransformSet::Rot4);
    let mut optim: ModuleOptimizer = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(cfg.momentum)
                .with_dampening(0.0)
                .with_nesterov(true),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
        .init();
    let [c, h, w] = INPUT_SHAPE;
    let mut net = net.clone();
    let mut times = Vec::new();
    for i in 0..reps.max(1) + 1 {
        let out = net.forward(random([2, c, h, w], device));
        let mut loss = out.student.logits.sum();
        for a in out.aux {
            loss = loss + a.logits.sum();
        }
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let _ = device.sync();
        let t0 = Instant::now();
        net = optim.step(0.01, net, grads);
        let _ = device.sync();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    median(times)
}

/// The human-readable report.
pub fn render(r: &BenchTrainReport) -> String {
    let mut out = String::new();
    let name = match r.transforms.as_str() {
        "-" => r.method.clone(),
        t => format!("{} {t}", r.method),
    };
    let _ = writeln!(
        out,
        "bench-train: {name}, batch {} → {} rows, {} ({} parameters) {}×{}×{}, {} classes, {} threads",
        r.batch,
        r.rows,
        r.arch,
        r.params,
        r.input_shape[0],
        r.input_shape[1],
        r.input_shape[2],
        r.classes,
        r.threads
    );
    let s = &r.step;
    let _ = writeln!(
        out,
        "  step mean {:.1} ms  p50 {:.1}  min {:.1}  max {:.1}  ({} steps after {} warm-up); {:.2} cores busy; peak RSS {}",
        s.mean_ms,
        s.p50_ms,
        s.min_ms,
        s.max_ms,
        r.steps,
        r.warmup,
        r.cores_busy,
        r.peak_rss_mb.map_or("-".into(), |v| format!("{v:.0} MiB"))
    );
    let Some(p) = &r.profile else { return out };
    let _ = writeln!(
        out,
        "  profile: each op alone on the autodiff device, median of {} runs, × its count in the step",
        p.reps
    );
    let _ = writeln!(
        out,
        "  {:<16} {:<48} {:>5} {:>9} {:>9} {:>9} {:>6}",
        "kind", "op", "count", "fwd ms", "bwd ms", "total ms", "share"
    );
    for o in &p.ops {
        let _ = writeln!(
            out,
            "  {:<16} {:<48} {:>5} {:>9.2} {:>9.2} {:>9.1} {:>5.1}%",
            o.kind,
            o.op,
            o.count,
            o.forward_ms,
            o.backward_ms,
            o.total_ms,
            100.0 * o.total_ms / p.step_mean_ms
        );
    }
    let _ = writeln!(
        out,
        "  by kind (fwd + bwd = total ms, share of the measured step):"
    );
    for k in &p.kinds {
        let _ = writeln!(
            out,
            "    {:<16} {:>8.1} + {:>8.1} = {:>8.1}  {:>5.1}%",
            k.kind,
            k.forward_ms,
            k.backward_ms,
            k.total_ms,
            100.0 * k.total_ms / p.step_mean_ms
        );
    }
    let _ = writeln!(
        out,
        "  sum of ops {:.1} ms vs measured step {:.1} ms: coverage {:.0}% (rest: expansion, targets and read-backs on the CPU, graph bookkeeping, allocation)",
        p.total_ms,
        p.step_mean_ms,
        100.0 * p.coverage
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_walk_counts_every_layer_of_the_lsskd_train_net() {
        let device = lsskd::training_device(0);
        let arch = ArchConfig::preset("resnet-s", 1).unwrap();
        let net = TrainNet::new(&arch, CLASSES, 4, true, &device);
        let ops = Ops::of_step(&net, Method::Lsskd);
        let count = |pred: &dyn Fn(&Key) -> bool| -> usize {
            ops.list
                .iter()
                .filter(|(k, _, _)| pred(k))
                .map(|(_, n, _)| n)
                .sum()
        };
        // Student: stem + 3 stages × 2 blocks × 2 convs + 2 shortcuts = 15 convs.
        // Aux head 1: stages 2-3 copy (8 + 2), head 2: stage 3 copy (4 + 1), head 3: 2.
        let convs = count(&|k| matches!(k, Key::Conv { .. }));
        assert_eq!(convs, 15 + 10 + 5 + 2);
        assert_eq!(count(&|k| matches!(k, Key::Bn(_))), convs);
        let blocks = 6 + 4 + 2 + 1;
        assert_eq!(count(&|k| matches!(k, Key::Add(_))), blocks);
        assert_eq!(count(&|k| matches!(k, Key::Relu(_))), 1 + 2 * blocks);
        assert_eq!(count(&|k| matches!(k, Key::PoolClassifier(..))), 4);
        assert_eq!(count(&|k| matches!(k, Key::SadCe(40))), 3);
        assert_eq!(count(&|k| matches!(k, Key::Kl(40))), 2);
        assert_eq!(count(&|k| matches!(k, Key::Mse([64, 7, 7]))), 3);
        // The stem is the only conv without an input gradient; stage 1 runs at 28×28.
        assert_eq!(count(&|k| matches!(k, Key::Conv { grad_in: false, .. })), 1);
        assert_eq!(
            count(&|k| matches!(
                k,
                Key::Conv {
                    cin: 16,
                    cout: 16,
                    hw: [28, 28],
                    ..
                }
            )),
            4
        );
        let ce_net = TrainNet::new(&arch, CLASSES, 4, false, &device);
        let ce = Ops::of_step(&ce_net, Method::Ce);
        assert!(
            ce.list
                .iter()
                .all(|(k, _, _)| !matches!(k, Key::SadCe(_) | Key::Kl(_) | Key::Mse(_)))
        );
        // 15 convs + 15 BatchNorms + 13 ReLUs + 6 adds + pool/classifier + CE + optimizer.
        assert_eq!(ce.list.iter().map(|(_, n, _)| n).sum::<usize>(), 52);
    }

    #[test]
    fn a_tiny_bench_runs_and_profiles() {
        let args = BenchTrainArgs {
            method: Method::Lsskd,
            transforms: TransformMode::Sampled,
            batch: 2,
            arch: "resnet-xs".into(),
            steps: 1,
            warmup: 0,
            threads: 1,
            seed: 0,
            profile: true,
            profile_reps: 1,
            plain: false,
            finetune: false,
        };
        let r = run(&args).unwrap();
        assert_eq!(r.rows, 4);
        let p = r.profile.unwrap();
        assert!(p.total_ms > 0.0 && p.ops.iter().all(|o| o.total_ms >= 0.0));
        assert!(p.kinds.iter().any(|k| k.kind == "conv"));
        // The adaptation's step: a frozen prefix, the same rows.
        let ft = run(&BenchTrainArgs {
            finetune: true,
            profile: false,
            ..args
        })
        .unwrap();
        assert!(ft.finetune && ft.rows == 4 && ft.step.mean_ms > 0.0);
    }
}
