//! `lsskd-edge export`: re-export `model.onnx` from a package's training state, optionally
//! trimming the replay set; and `--gate-data`: add (or replace) a package's gate set without
//! touching anything else ([`add_gate`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::dataset::{self, LoadOptions};
use crate::features::Raw;
use crate::inference::write_onnx;
use crate::lsskd::{self, export};
use crate::registry::package::{
    GATE_DIR, MANIFEST, MODEL_ONNX, REPLAY_DIR, sha256_file, write_synced,
};
use crate::registry::{ModelPackage, replay};

/// Gate exemplars the promotion gate judges the shipped classes on, per class.
pub const GATE_PER_CLASS: usize = 50;

/// Arguments of `export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Keep only the first N replay exemplars of each class.
    #[arg(long)]
    pub replay_per_class: Option<usize>,
    /// Instead of re-exporting: add (or replace) the package's gate set, validation
    /// exemplars of every class from this data set that the promotion gate judges the
    /// shipped classes on. Nothing else in the package changes.
    #[arg(long)]
    pub gate_data: Option<PathBuf>,
    /// Split the gate set comes from (the first N of each class).
    #[arg(long, default_value = "val")]
    pub gate_split: String,
    /// Split that fills classes with fewer validation items (replay exemplars skipped).
    #[arg(long)]
    pub gate_fill_split: Option<String>,
    #[arg(long, default_value_t = GATE_PER_CLASS)]
    pub gate_per_class: usize,
}

/// `lsskd-edge export`: re-export ([`run`]) or, with `--gate-data`, add a gate set
/// ([`add_gate`]); the two do not combine.
pub fn execute(args: ExportArgs) -> anyhow::Result<()> {
    match args.gate_data {
        Some(_) if args.replay_per_class.is_some() => {
            anyhow::bail!("--gate-data adds a gate set only; run --replay-per-class separately")
        }
        Some(data) => {
            let pkg = add_gate(
                &args.model,
                &GateSource {
                    data,
                    split: args.gate_split,
                    fill_split: args.gate_fill_split,
                    per_class: args.gate_per_class,
                },
            )?;
            print!("{}", render_gate(&pkg));
        }
        None => print!("{}", render(&run(&args.model, args.replay_per_class)?)),
    }
    Ok(())
}

/// Where a gate set comes from.
#[derive(Debug, Clone)]
pub struct GateSource {
    pub data: PathBuf,
    /// Validation split: the first `per_class` of each class.
    pub split: String,
    /// Split that fills classes with fewer than `per_class` validation items, skipping the
    /// package's replay exemplars (e.g. `train` for espeak-kws, 8 validation clips a word).
    pub fill_split: Option<String>,
    pub per_class: usize,
}

/// Choose up to `per_class` gate exemplars of each class: the validation items first, in
/// file order, then `fill` items that are not among `exclude` (encoded bytes). Returns
/// `(relative path, bytes)` entries under `gate/`.
pub fn select_gate(
    classes: &[String],
    val: &[(usize, &Raw)],
    fill: &[(usize, &Raw)],
    exclude: &std::collections::HashSet<Vec<u8>>,
    per_class: usize,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut chosen: Vec<(usize, Raw)> = Vec::new();
    let mut count = vec![0usize; classes.len()];
    for &(l, raw) in val {
        if count[l] < per_class {
            chosen.push((l, trim_trailing_silence(raw)));
            count[l] += 1;
        }
    }
    for &(l, raw) in fill {
        if count[l] >= per_class {
            continue;
        }
        let (bytes, _) = replay::encode(raw).map_err(anyhow::Error::msg)?;
        if !exclude.contains(&bytes) {
            chosen.push((l, trim_trailing_silence(raw)));
            count[l] += 1;
        }
    }
    let items: Vec<(usize, &Raw)> = chosen.iter().map(|(l, r)| (*l, r)).collect();
    replay::select_into(GATE_DIR, &items, classes, per_class).map_err(anyhow::Error::msg)
}

/// An audio clip without its trailing digital silence (the features pad short clips with
/// zeros, so this changes no feature and keeps the package small); images as they are.
pub(crate) fn trim_trailing_silence(raw: &Raw) -> Raw {
    match raw {
        Raw::Audio(clip) => {
            let end = clip
                .samples
                .iter()
                .rposition(|s| (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16 != 0)
                .map_or(1, |i| i + 1);
            let mut c = clip.clone();
            c.samples.truncate(end);
            Raw::Audio(c)
        }
        other => other.clone(),
    }
}

/// Add a gate set to a package (replacing any it has) without retraining or re-exporting:
/// the new files are written, then the manifest's `files` (hashes) is rewritten.
pub fn add_gate(model: &Path, src: &GateSource) -> anyhow::Result<ModelPackage> {
    let pkg = ModelPackage::load(model)?;
    let m = &pkg.manifest;
    let load = |split: &str| {
        dataset::load_for_model(
            &src.data,
            split,
            &m.classes,
            m.background.as_deref(),
            &LoadOptions::default(),
        )
        .with_context(|| format!("loading split `{split}`"))
    };
    let val = load(&src.split)?;
    let fill = src.fill_split.as_deref().map(load).transpose()?;
    let mut exclude = std::collections::HashSet::new();
    for rel in m
        .files
        .keys()
        .filter(|k| k.starts_with(&format!("{REPLAY_DIR}/")))
    {
        exclude.insert(std::fs::read(pkg.dir.join(rel))?);
    }
    let val_items: Vec<(usize, &Raw)> = val.items.iter().map(|i| (i.label, &i.raw)).collect();
    let fill_items: Vec<(usize, &Raw)> = fill
        .iter()
        .flat_map(|d| d.items.iter().map(|i| (i.label, &i.raw)))
        .collect();
    let files = select_gate(&m.classes, &val_items, &fill_items, &exclude, src.per_class)?;
    let mut manifest = m.clone();
    let gate_prefix = format!("{GATE_DIR}/");
    let old: Vec<String> = manifest
        .files
        .keys()
        .filter(|k| k.starts_with(&gate_prefix))
        .cloned()
        .collect();
    for rel in old {
        let path = pkg.dir.join(&rel);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        manifest.files.remove(&rel);
    }
    for (rel, bytes) in &files {
        let path = pkg.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_synced(&path, bytes)?;
        manifest.files.insert(rel.clone(), sha256_file(&path)?);
    }
    replace(
        &pkg.dir.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(ModelPackage::load(model)?)
}

/// What `export` prints after a re-export.
pub fn render(pkg: &ModelPackage) -> String {
    format!(
        "re-exported {} ({} parameters)\n",
        pkg.onnx_path().display(),
        pkg.manifest.deployed.param_count
    )
}

/// What `export --gate-data` prints.
pub fn render_gate(pkg: &ModelPackage) -> String {
    let prefix = format!("{}/", crate::registry::package::GATE_DIR);
    format!(
        "{}: gate set of {} exemplars\n",
        pkg.dir.display(),
        pkg.manifest
            .files
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .count()
    )
}

/// Rebuild the student from `train-state`, write a new `model.onnx` and, with
/// `replay_per_class`, keep only the first that many exemplars of each class; then rewrite
/// the manifest's file hashes. Each file is replaced atomically (write, fsync, rename).
pub fn run(model: &Path, replay_per_class: Option<usize>) -> anyhow::Result<ModelPackage> {
    let pkg = ModelPackage::load(model)?;
    let m = &pkg.manifest;
    let device = lsskd::cpu_device();
    let net = pkg.load_train_net(&device)?;
    let deployed = export::deployed(&net.student, m.preprocess.input_shape())?;
    replace(&pkg.dir.join(MODEL_ONNX), &write_onnx(&deployed))?;

    let mut manifest = m.clone();
    manifest.deployed.param_count = deployed.param_count();
    if let Some(keep) = replay_per_class {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let replay: Vec<String> = manifest
            .files
            .keys()
            .filter(|k| k.starts_with(&format!("{REPLAY_DIR}/")))
            .cloned()
            .collect();
        for rel in replay {
            let class = rel.split('/').nth(1).unwrap_or_default().to_string();
            let n = seen.entry(class).or_default();
            *n += 1;
            if *n > keep {
                let path = pkg.dir.join(&rel);
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                manifest.files.remove(&rel);
            }
        }
    }
    for (rel, hash) in manifest.files.iter_mut() {
        *hash = sha256_file(&pkg.dir.join(rel))?;
    }
    replace(
        &pkg.dir.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(ModelPackage::load(model)?)
}

fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
