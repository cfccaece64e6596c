//! `lsskd-edge bench --report`: on the machine it runs on, the figures README's board table
//! predicts — per model the inference time of one input, the time of one adaptation (the
//! daemon's recipe: imprint, the fine-tune's steps, the gate) and the memory all of it
//! took — with what they depend on (CPU, cores, vector path, the training kernels chosen,
//! a single-thread matrix product's GFLOP/s), as one JSON object to compare and post.
//! `scripts/board-table.py` turns this machine's report into README's table.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::bench::{BenchArgs, Stage};
use crate::adapt::core::{self, Request, ShippedSets};
use crate::adapt::{GateConfig, ModelKind, Overrides, Recipe};
use crate::features::Raw;
use crate::inference::fma_per_node;
use crate::lsskd::kernels::TrainKernelChoice;
use crate::registry::ModelPackage;
use crate::settings::AdaptSettings;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BoardReport {
    pub lsskd_edge: &'static str,
    pub machine: Machine,
    pub training_kernels: TrainKernelChoice,
    pub models: Vec<ModelFigures>,
    /// The process's peak resident memory: the models loaded, timed and adapted in turn.
    pub peak_rss_mib: Option<f64>,
}

/// What the figures depend on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub arch: &'static str,
    /// `/proc/cpuinfo`'s model name (x86) or `Model` / `Hardware` line (boards).
    pub cpu: String,
    pub cores: usize,
    pub memory_mib: Option<u64>,
    /// The vector path our convolutions take (`avx512f`, `avx+fma`, `neon`, `portable`).
    pub vector_path: &'static str,
    /// GFLOP/s of one 512³ matrix product on one thread, the best of five.
    pub matmul_gflops_one_thread: f64,
}

/// One model's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    pub model: String,
    pub input_shape: [usize; 3],
    /// Multiply-adds of one inference (its convolutions and matrix products).
    pub mfma_per_input: f64,
    /// Which convolutions ran (`direct <path>` or `tract`).
    pub kernel: String,
    /// Features + inference of one input, one thread.
    pub inference: Stage,
    pub adaptation: Adaptation,
}

/// One adaptation as the daemon runs it: five samples of a new label, the model's recipe.
#[derive(Debug, Clone, Serialize)]
pub struct Adaptation {
    pub samples: usize,
    /// Fine-tune steps the recipe ran.
    pub steps: usize,
    /// Imprint and fine-tune, seconds.
    pub train_secs: f64,
    /// The gate (its cross-validation included), seconds.
    pub gate_secs: f64,
}

/// `bench --report`: time inference and one adaptation of each `--model`.
pub fn execute(args: &BenchArgs) -> anyhow::Result<()> {
    let machine = machine();
    let training_kernels = crate::lsskd::kernels::choice().clone();
    let models = args
        .models
        .iter()
        .map(|m| model_figures(m, args).with_context(|| format!("--model {}", m.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = BoardReport {
        lsskd_edge: env!("CARGO_PKG_VERSION"),
        machine,
        training_kernels,
        models,
        peak_rss_mib: super::fewshot::peak_rss_mb(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn model_figures(model: &Path, args: &BenchArgs) -> anyhow::Result<ModelFigures> {
    let timed = super::bench::time_exemplars(model, args)?;
    let pkg = ModelPackage::load(model)?;
    let fma: u64 = fma_per_node(&pkg.onnx_path())?.iter().map(|(_, f)| f).sum();
    Ok(ModelFigures {
        model: timed.model,
        input_shape: timed.input_shape,
        mfma_per_input: fma as f64 / 1e6,
        kernel: timed.kernel,
        inference: timed.total,
        adaptation: adaptation(&pkg)?,
    })
}

/// Samples of the new label: [`NEW_SAMPLES`] gate items of the first class, mirrored
/// (images) or reversed in time (clips), so that they are not items the model knows.
const NEW_SAMPLES: usize = 5;

/// One adaptation of `pkg` with the daemon's default `[adapt]` settings and the model's
/// recipe, timed; the verdict does not matter here, only the time each part takes.
fn adaptation(pkg: &ModelPackage) -> anyhow::Result<Adaptation> {
    let m = &pkg.manifest;
    let sets = ShippedSets::load(pkg, None)?;
    let support: Vec<(String, Raw)> = sets
        .gate
        .iter()
        .chain(&sets.replay)
        .filter(|(l, _)| *l == 0)
        .take(NEW_SAMPLES)
        .map(|(_, raw)| ("bench-report-new".to_string(), unlike(raw)))
        .collect();
    anyhow::ensure!(
        support.len() == NEW_SAMPLES,
        "fewer than {NEW_SAMPLES} items of `{}` to make samples of a new label from",
        m.classes[0]
    );
    let settings = AdaptSettings::defaults();
    let recipe = Recipe::resolve(ModelKind::of(m), &settings, &Overrides::default(), false, 0);
    let req = Request {
        live: pkg,
        shipped_classes: &m.classes,
        sets: &sets,
        support: &support,
        held_shipped: &[],
        recipe: &recipe,
        gate: &GateConfig::from_settings(&settings),
    };
    let c = core::run(&req, &|| false, &mut |_| {})?;
    Ok(Adaptation {
        samples: support.len(),
        steps: c.adapted.steps,
        train_secs: c.adapt_secs,
        gate_secs: c.gate_secs,
    })
}

/// `raw` mirrored left to right (an image) or reversed in time (a clip).
fn unlike(raw: &Raw) -> Raw {
    match raw {
        Raw::Image(img) => Raw::Image(img.fliph()),
        Raw::Audio(clip) => {
            let mut c = clip.clone();
            c.samples.reverse();
            Raw::Audio(c)
        }
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let cpu = field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("Hardware"))
        .unwrap_or_else(|| "unknown".into());
    let memory_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024)
    });
    Machine {
        arch: std::env::consts::ARCH,
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        vector_path: crate::inference::direct::isa(),
        matmul_gflops_one_thread: super::bench::peak_gflops(),
    }
}
