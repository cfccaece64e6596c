//! `lsskd-edge bench`: per-input latency of what the daemon does for every camera frame or
//! audio window — features (the shared preprocessing) and inference (tract on the
//! package's `model.onnx`) — on the package's replay exemplars, one input at a time on
//! one thread, as the inference thread runs them.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::features::Raw;
use crate::inference::Classifier;
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
}

/// Time `iterations` inputs (cycling over the replay exemplars) after `warmup` untimed ones.
pub fn run(model: &Path, iterations: usize, warmup: usize) -> anyhow::Result<BenchReport> {
    let pkg = ModelPackage::load(model)?;
    let classifier = Classifier::load(&pkg.onnx_path())?;
    let inputs: Vec<Raw> = replay::load(&pkg.dir, &pkg.manifest.classes)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("replay exemplars of {}", model.display()))?
        .into_iter()
        .map(|(_, raw)| raw)
        .collect();
    anyhow::ensure!(
        !inputs.is_empty(),
        "{} has no replay exemplars to time",
        model.display()
    );
    let pre = &pkg.manifest.preprocess;
    let (mut feats, mut infer, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + iterations.max(1) {
        let raw = &inputs[i % inputs.len()];
        let t0 = Instant::now();
        let x = pre.tensor(raw)?;
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
    })
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
