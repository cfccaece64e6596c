//! `lsskd-edge bench`: per-input latency of what the daemon does for every camera frame or
//! audio window — features (the shared preprocessing) and inference (tract on the
//! package's `model.onnx`) — on the package's replay exemplars, one input at a time on
//! one thread, as the inference thread runs them.
//!
//! A build with the `bench` feature also honours `LSSKD_EDGE_DIRECT_CONV=0`: tract's own
//! convolutions instead of ours (`inference::direct`), to compare the two; and
//! `LSSKD_EDGE_KERNEL_ISA=avx+fma` (or `portable`): our convolutions on no wider a vector
//! path than that, to measure here what a CPU without AVX-512 (or AVX) would run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::features::change::REFERENCE_FRAMES;
use crate::features::{ChangeLocator, Raw, Region};
use crate::inference::{Classifier, KernelChoice, fma_per_node};
use crate::registry::{ModelPackage, replay};

/// Latency distribution of one stage, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl Stage {
    fn from(mut v: Vec<f64>) -> Stage {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Stage {
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            max_ms: at(1.0),
        }
    }
}

/// The result for one model.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub modality: String,
    pub input_shape: [usize; 3],
    pub iterations: usize,
    pub features: Stage,
    pub inference: Stage,
    pub total: Stage,
    /// Frames or windows per second one pipeline thread sustains (1 / mean total).
    pub throughput_per_s: f64,
    pub peak_rss_mb: Option<f64>,
    /// Which convolutions ran (`direct <isa>` or `tract`).
    pub kernel: String,
    /// How the daemon's load-time timing chose them (none with `LSSKD_EDGE_DIRECT_CONV=0`).
    pub kernel_choice: Option<KernelChoice>,
    /// Per-node profile (`bench --profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// Where one inference spends its time: tract's optimized plan node by node, grouped by
/// the ONNX node each plan node was lowered from.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// Sum of the nodes' mean times (the evaluation loop's own overhead is not in it).
    pub nodes_ms: f64,
    /// GFLOP/s of one large single-thread matrix product (512³, `gemm`) on this machine:
    /// the practical peak the convolutions are compared with.
    pub peak_gflops: f64,
    pub rows: Vec<ProfileRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileRow {
    /// The ONNX node (or the plan node, when it matches none).
    pub node: String,
    /// tract's operators that ran for it, in plan order, with their mean milliseconds.
    pub ops: Vec<(String, f64)>,
    pub ms: f64,
    /// Multiply-adds of the ONNX node (convolutions and matrix products).
    pub fma: Option<u64>,
    /// 2·fma / time, for the nodes with a multiply-add count.
    pub gflops: Option<f64>,
}

/// The package's classifier as the daemon loads it (the faster of our convolutions and
/// tract's, with the timings it chose by), or, with `LSSKD_EDGE_DIRECT_CONV=0` in a build
/// with the `bench` feature, with tract's own convolutions only, for the comparison in
/// `scripts/bench-latency.sh`.
fn load_classifier(onnx: &Path) -> anyhow::Result<(Classifier, Option<KernelChoice>)> {
    let tract_only = std::env::var_os("LSSKD_EDGE_DIRECT_CONV").is_some_and(|v| v == "0");
    #[cfg(feature = "bench")]
    if tract_only {
        return Ok((Classifier::load_tract_only(onnx)?, None));
    }
    #[cfg(not(feature = "bench"))]
    anyhow::ensure!(
        !tract_only,
        "LSSKD_EDGE_DIRECT_CONV=0 needs a build with `--features bench` (the shipped build always runs our convolutions)"
    );
    let (classifier, choice) = Classifier::load_fastest(onnx)?;
    Ok((classifier, Some(choice)))
}

/// Arguments of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model package folder(s).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    #[arg(long, default_value_t = 500)]
    pub iterations: usize,
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Then time tract's plan node by node (grouped by ONNX node, with GFLOP/s of the
    /// convolutions against a single-thread matrix product's).
    #[arg(long)]
    pub profile: bool,
    /// One JSON object per model, one per line.
    #[arg(long)]
    pub json: bool,
    /// Time camera frames instead of the replay exemplars: the image files of this folder
    /// as the camera delivers them (JPEG), so the features stage is decode + region cut +
    /// the model's resize and normalisation.
    #[arg(long)]
    pub frames: Option<PathBuf>,
    /// With `--frames`: the region cut from each frame, `X,Y,WIDTH,HEIGHT`.
    #[arg(long, value_parser = parse_region)]
    pub region: Option<Region>,
    /// With `--frames`: the view's empty frames (image files of this folder, the first
    /// five, cut to the region): their mean is the reference each frame is then cut to its
    /// change from, as the pipeline worker does for a version that holds one.
    #[arg(long, requires = "frames")]
    pub reference: Option<PathBuf>,
    /// Instead: this machine's figures of README's board table (inference, one adaptation
    /// with the daemon's recipe, memory; CPU, cores, vector path, training kernels) as one
    /// JSON object (`commands::bench_report`, which the binary calls instead).
    #[arg(long, conflicts_with_all = ["frames", "profile", "json"])]
    pub report: bool,
}

/// `40,30,160,160` → the region at (40, 30), 160×160.
fn parse_region(s: &str) -> Result<Region, String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not X,Y,WIDTH,HEIGHT"))?;
    match v[..] {
        [x, y, width, height] => Ok(Region {
            x,
            y,
            width,
            height,
        }),
        _ => Err(format!("`{s}` is not X,Y,WIDTH,HEIGHT")),
    }
}

/// What one timed input is: a decoded exemplar, or the bytes of a camera frame.
enum Input {
    Raw(Raw),
    Frame(Vec<u8>),
}

/// The image files of `dir`, read into memory, in name order.
fn frame_bytes(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| image::ImageFormat::from_path(p).is_ok())
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no image files in {}", dir.display());
    files.iter().map(|f| Ok(std::fs::read(f)?)).collect()
}

/// The view's reference from the first [`REFERENCE_FRAMES`] image files of `dir`, each cut
/// to `region`.
fn reference_of(dir: &Path, region: Option<&Region>) -> anyhow::Result<ChangeLocator> {
    let frames = frame_bytes(dir)
        .and_then(|files| {
            files
                .iter()
                .take(REFERENCE_FRAMES)
                .map(|bytes| {
                    let img = image::load_from_memory(bytes)?;
                    Ok(match region {
                        Some(r) => r.crop(&img)?,
                        None => img,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .with_context(|| format!("--reference {}", dir.display()))?;
    Ok(ChangeLocator::from_references(
        &frames.iter().collect::<Vec<_>>(),
    )?)
}

/// `LSSKD_EDGE_KERNEL_ISA`: in a `bench` build, the widest vector path our convolutions may
/// take; refused in the shipped build.
fn limit_isa_from_env() -> anyhow::Result<()> {
    let Some(name) = std::env::var_os("LSSKD_EDGE_KERNEL_ISA") else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    let isa = lsskd_kernels::direct::Isa::parse(&name).with_context(|| {
        format!("LSSKD_EDGE_KERNEL_ISA `{name}`: not one of portable, avx+fma, avx512f, neon")
    })?;
    anyhow::ensure!(
        cfg!(feature = "bench"),
        "LSSKD_EDGE_KERNEL_ISA needs a build with `--features bench`"
    );
    lsskd_kernels::direct::limit_isa(isa);
    Ok(())
}

/// `lsskd-edge bench`: time each model in turn, printing each report as it is done.
pub fn execute(args: &BenchArgs) -> anyhow::Result<()> {
    limit_isa_from_env()?;
    let frames = args
        .frames
        .as_deref()
        .map(|dir| {
            let files = frame_bytes(dir).with_context(|| format!("--frames {}", dir.display()))?;
            anyhow::Ok(files.into_iter().map(Input::Frame).collect::<Vec<_>>())
        })
        .transpose()?;
    let change = args
        .reference
        .as_deref()
        .map(|dir| reference_of(dir, args.region.as_ref()))
        .transpose()?;
    for m in &args.models {
        let r = run(m, args, frames.as_deref(), change.as_ref())?;
        super::print_report(&r, args.json, render)?;
    }
    Ok(())
}

/// [`run`] on the package's replay exemplars (`bench --report`).
pub(crate) fn time_exemplars(model: &Path, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    run(model, args, None, None)
}

/// Time `args.iterations` inputs (cycling over `frames`, or else the replay exemplars)
/// after `args.warmup` untimed ones; with `args.profile`, then time tract's plan node by
/// node over `args.iterations` more runs.
fn run(
    model: &Path,
    args: &BenchArgs,
    frames: Option<&[Input]>,
    change: Option<&ChangeLocator>,
) -> anyhow::Result<BenchReport> {
    let (iterations, warmup) = (args.iterations, args.warmup);
    let pkg = ModelPackage::load(model)?;
    let (classifier, choice) = load_classifier(&pkg.onnx_path())?;
    let exemplars: Vec<Input>;
    let inputs = match frames {
        Some(f) => f,
        None => {
            exemplars = replay::load(&pkg.dir, &pkg.manifest.classes)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("replay exemplars of {}", model.display()))?
                .into_iter()
                .map(|(_, raw)| Input::Raw(raw))
                .collect();
            &exemplars
        }
    };
    anyhow::ensure!(
        !inputs.is_empty(),
        "{} has no replay exemplars to time",
        model.display()
    );
    let pre = &pkg.manifest.preprocess;
    let features = |input: &Input| -> anyhow::Result<Vec<f32>> {
        match input {
            Input::Raw(raw) => Ok(pre.tensor(raw)?),
            Input::Frame(bytes) => {
                let raw = crate::features::decode(bytes)?;
                let raw = match (&args.region, raw) {
                    (Some(r), Raw::Image(img)) => Raw::Image(r.crop(&img)?),
                    (_, raw) => raw,
                };
                let raw = match change {
                    Some(c) => c.cut_raw(&raw)?,
                    None => raw,
                };
                Ok(pre.tensor(&raw)?)
            }
        }
    };
    let (mut feats, mut infer, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + iterations.max(1) {
        let input = &inputs[i % inputs.len()];
        let t0 = Instant::now();
        let x = features(input)?;
        let t1 = Instant::now();
        let out = classifier.classify(&x)?;
        let t2 = Instant::now();
        std::hint::black_box(out);
        if i >= warmup {
            feats.push((t1 - t0).as_secs_f64() * 1e3);
            infer.push((t2 - t1).as_secs_f64() * 1e3);
            total.push((t2 - t0).as_secs_f64() * 1e3);
        }
    }
    let total = Stage::from(total);
    Ok(BenchReport {
        model: pkg.manifest.name.clone(),
        modality: format!("{:?}", pre.modality()).to_lowercase(),
        input_shape: pre.input_shape(),
        iterations: iterations.max(1),
        features: Stage::from(feats),
        inference: Stage::from(infer),
        throughput_per_s: 1e3 / total.mean_ms,
        total,
        peak_rss_mb: super::fewshot::peak_rss_mb(),
        kernel: classifier.kernel(),
        kernel_choice: choice,
        profile: if args.profile {
            let x = features(&inputs[0])?;
            Some(profile_of(&pkg.onnx_path(), &classifier, &x, iterations)?)
        } else {
            None
        },
    })
}

fn profile_of(
    onnx: &Path,
    classifier: &Classifier,
    x: &[f32],
    iterations: usize,
) -> anyhow::Result<Profile> {
    let fmas = fma_per_node(onnx)?;
    let times = classifier.profile(x, iterations)?;
    // A plan node belongs to the ONNX node whose name is its name or a dotted prefix of it
    // (tract's lowering suffixes names); the longest such name wins.
    let onnx_names = crate::inference::inspect(onnx)?.node_names;
    let owner = |plan: &str| -> String {
        onnx_names
            .iter()
            .filter(|n| plan == n.as_str() || plan.starts_with(&format!("{n}.")))
            .max_by_key(|n| n.len())
            .cloned()
            .unwrap_or_else(|| plan.to_string())
    };
    let mut rows: Vec<ProfileRow> = Vec::new();
    for t in &times {
        let node = owner(&t.node);
        let row = match rows.iter_mut().position(|r| r.node == node) {
            Some(i) => &mut rows[i],
            None => {
                let fma = fmas.iter().find(|(n, _)| *n == node).map(|&(_, f)| f);
                rows.push(ProfileRow {
                    node,
                    ops: Vec::new(),
                    ms: 0.0,
                    fma,
                    gflops: None,
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.ms += t.ms;
        row.ops.push((t.op.clone(), t.ms));
    }
    for r in &mut rows {
        r.gflops = r
            .fma
            .filter(|_| r.ms > 0.0)
            .map(|f| 2.0 * f as f64 / (r.ms * 1e-3) / 1e9);
    }
    Ok(Profile {
        nodes_ms: rows.iter().map(|r| r.ms).sum(),
        peak_gflops: peak_gflops(),
        rows,
    })
}

/// The profile as a table.
pub fn render_profile(p: &Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  per node ({:.3} ms in nodes; single-thread matmul peak {:.1} GFLOP/s):",
        p.nodes_ms, p.peak_gflops
    );
    for r in &p.rows {
        let rate = match (r.fma, r.gflops) {
            (Some(f), Some(g)) => format!(
                "{:>6.2} MFMA {:>6.1} GFLOP/s ({:>3.0}% of peak)",
                f as f64 / 1e6,
                g,
                100.0 * g / p.peak_gflops
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "    {:<28} {:>7.4} ms {:>5.1}%  {rate}  [{}]",
            r.node,
            r.ms,
            100.0 * r.ms / p.nodes_ms,
            r.ops
                .iter()
                .map(|(op, ms)| format!("{op} {ms:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

/// The human-readable report: timings, throughput, memory and the profile when taken.
pub fn render(r: &BenchReport) -> String {
    let mut out = format!(
        "{} ({}, input {:?}), {} inputs, one thread:\n",
        r.model, r.modality, r.input_shape, r.iterations
    );
    for (name, s) in [
        ("features", &r.features),
        ("inference", &r.inference),
        ("total", &r.total),
    ] {
        let _ = writeln!(
            out,
            "  {name:<10} mean {:>7.3} ms  p50 {:>7.3}  p95 {:>7.3}  max {:>7.3}",
            s.mean_ms, s.p50_ms, s.p95_ms, s.max_ms
        );
    }
    let _ = writeln!(
        out,
        "  throughput {:.0}/s, peak RSS {}",
        r.throughput_per_s,
        r.peak_rss_mb.map_or("-".into(), |v| format!("{v:.0} MiB"))
    );
    let _ = match &r.kernel_choice {
        Some(KernelChoice {
            direct_ms: Some(d),
            tract_ms: Some(t),
            ..
        }) => writeln!(
            out,
            "  convolutions: {} (timed when loaded: ours {d:.3} ms, tract's {t:.3} ms a run)",
            r.kernel
        ),
        _ => writeln!(out, "  convolutions: {}", r.kernel),
    };
    if let Some(p) = &r.profile {
        out.push_str(&render_profile(p));
    }
    out
}

/// Best of five 512³ single-thread matrix products, GFLOP/s.
pub(crate) fn peak_gflops() -> f64 {
    let n = 512;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b = a.clone();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(lsskd_kernels::matmul(&a, &b, n, n, n));
            2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let s = Stage::from((1..=100).map(f64::from).collect());
        assert_eq!(s.p50_ms, 51.0);
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.max_ms, 100.0);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
    }
}
