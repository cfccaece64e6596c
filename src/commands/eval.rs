//! `lsskd-edge eval`: accuracy and confusion matrix of a package's `model.onnx` (run by
//! tract, the deployed path) over a data set split.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::dataset::{self, Dataset, LoadOptions};
use crate::inference::{Classifier, argmax};
use crate::registry::ModelPackage;

/// Arguments of `eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub split: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub skip_bad: bool,
    /// Cut each view's frames to its region first (`train --regions`).
    #[arg(long)]
    pub regions: Option<PathBuf>,
}

/// `lsskd-edge eval`: load the package and the split, evaluate, print the report.
pub fn execute(args: &EvalArgs) -> anyhow::Result<()> {
    let pkg = ModelPackage::load(&args.model)?;
    let opts = LoadOptions {
        skip_bad: args.skip_bad,
        ..LoadOptions::default()
    };
    let mut ds = dataset::load(&args.data, &args.split, &opts)
        .with_context(|| format!("loading split `{}` of {}", args.split, args.data.display()))?;
    if let Some(path) = &args.regions {
        ds.crop_to_regions(&dataset::regions::load(path)?)?;
    }
    if let Some(reference) = &pkg.manifest.change_reference {
        // As `train --crop-to-change`: each view's first frames of the reference state.
        ds.crop_to_changes(reference, crate::features::change::REFERENCE_FRAMES)?;
    }
    super::print_report(&evaluate(&pkg, &ds)?, args.json, render)
}

/// Result of an evaluation; `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub model_version: u32,
    pub accuracy: f64,
    pub n: usize,
    /// Samples whose class the model does not know.
    pub skipped: usize,
    /// Unreadable files skipped while loading (`--skip-bad`).
    pub skipped_bad: usize,
    pub per_class: BTreeMap<String, f64>,
    /// Row = true class, column = predicted class, in `classes` order.
    pub classes: Vec<String>,
    pub confusion: Vec<Vec<usize>>,
    pub seconds: f64,
}

/// Evaluate `pkg` on `ds` through tract, two worker threads.
pub fn evaluate(pkg: &ModelPackage, ds: &Dataset) -> anyhow::Result<EvalReport> {
    let started = std::time::Instant::now();
    let classes = &pkg.manifest.classes;
    let classifier = Classifier::load(&pkg.onnx_path())?;
    // Map data-set class index → model class index.
    let map: Vec<Option<usize>> = ds
        .classes
        .iter()
        .map(|c| classes.iter().position(|m| m == c))
        .collect();
    let known: Vec<(usize, &crate::dataset::Item)> = ds
        .items
        .iter()
        .filter_map(|item| map[item.label].map(|m| (m, item)))
        .collect();
    let skipped = ds.len() - known.len();
    let preprocess = &pkg.manifest.preprocess;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let chunk = known.len().div_ceil(threads).max(1);
    let preds: Vec<anyhow::Result<Vec<usize>>> = std::thread::scope(|s| {
        let handles: Vec<_> = known
            .chunks(chunk)
            .map(|part| {
                let classifier = &classifier;
                s.spawn(move || {
                    part.iter()
                        .map(|(_, item)| {
                            let x = preprocess
                                .tensor(&item.raw)
                                .with_context(|| format!("featurising {}", item.source))?;
                            Ok(argmax(&classifier.classify(&x)?.logits))
                        })
                        .collect::<anyhow::Result<Vec<usize>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("evaluation thread panicked")))
            })
            .collect()
    });
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    let mut it = known.iter();
    for part in preds {
        for p in part? {
            let (truth, _) = it.next().expect("one prediction per known item");
            confusion[*truth][p] += 1;
        }
    }
    let n = known.len();
    let correct: usize = (0..classes.len()).map(|i| confusion[i][i]).sum();
    let per_class = classes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let total: usize = confusion[i].iter().sum();
            (total > 0).then(|| (c.clone(), confusion[i][i] as f64 / total as f64))
        })
        .collect();
    Ok(EvalReport {
        model: pkg.manifest.name.clone(),
        model_version: pkg.manifest.version,
        accuracy: if n > 0 {
            correct as f64 / n as f64
        } else {
            0.0
        },
        n,
        skipped,
        skipped_bad: ds.skipped_bad,
        per_class,
        classes: classes.clone(),
        confusion,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Human-readable table of a report.
pub fn render(r: &EvalReport) -> String {
    let mut s = format!(
        "model {} v{}: accuracy {:.4} on {} samples ({} skipped: unknown class, {} unreadable)\n\n",
        r.model, r.model_version, r.accuracy, r.n, r.skipped, r.skipped_bad
    );
    let w = r.classes.iter().map(String::len).max().unwrap_or(5).max(5);
    s += &format!("{:>w$}  accuracy   n\n", "class");
    for (i, c) in r.classes.iter().enumerate() {
        let total: usize = r.confusion[i].iter().sum();
        if total > 0 {
            s += &format!("{c:>w$}  {:.4}   {total}\n", r.per_class[c]);
        }
    }
    s += "\nconfusion (rows: true class, columns: predicted, in the order above)\n";
    for row in &r.confusion {
        s += &row.iter().map(|v| format!("{v:>5}")).collect::<String>();
        s += "\n";
    }
    s
}
