//! `lsskd-edge predict`: top-k labels and scores for files (images or WAV clips).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::features::decode;
use crate::inference::Classifier;
use crate::inference::{Scored, top_k};
use crate::registry::ModelPackage;

/// Predictions for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FilePrediction {
    pub file: PathBuf,
    pub top_k: Vec<Scored>,
}

/// Arguments of `predict`.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    #[arg(long)]
    pub json: bool,
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `lsskd-edge predict`: classify the files and print their top-k.
pub fn execute(args: &PredictArgs) -> anyhow::Result<()> {
    let preds = run(&args.model, &args.files, args.top_k)?;
    super::print_report(preds.as_slice(), args.json, render)
}

/// Classify each file with the package's model.
pub fn run(model: &Path, files: &[PathBuf], k: usize) -> anyhow::Result<Vec<FilePrediction>> {
    let pkg = ModelPackage::load(model)?;
    let classifier = Classifier::load(&pkg.onnx_path())?;
    // A taught view's version cuts each frame to its change, as the pipeline does.
    let change = pkg.change_locator()?;
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let mut raw = decode(&bytes).with_context(|| format!("decoding {}", f.display()))?;
            if let Some(locator) = &change {
                raw = locator.cut_raw(&raw).with_context(|| {
                    format!("{} does not fit the view's reference", f.display())
                })?;
            }
            let x = pkg.manifest.preprocess.tensor(&raw).with_context(|| {
                format!("{} does not fit model {}", f.display(), pkg.manifest.name)
            })?;
            let out = classifier.classify(&x)?;
            Ok(FilePrediction {
                file: f.clone(),
                top_k: top_k(&out.logits, &pkg.manifest.classes, k),
            })
        })
        .collect()
}

/// One line per file: its top-k labels with scores.
pub fn render(preds: &[FilePrediction]) -> String {
    preds
        .iter()
        .map(|p| {
            let labels: Vec<String> = p
                .top_k
                .iter()
                .map(|s| format!("{} {:.3}", s.label, s.score))
                .collect();
            format!("{}: {}\n", p.file.display(), labels.join(", "))
        })
        .collect()
}
