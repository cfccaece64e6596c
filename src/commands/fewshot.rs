//! `lsskd-edge fewshot-bench`: N-way K-shot episodes of classes a package does not know,
//! adapted with the same imprint + fine-tune + gate code as the daemon, evaluated through
//! tract (the deployed path) with argmax over all classes, old and new.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;

use crate::adapt::job::{AdaptConfig, adapt};
use crate::adapt::learner::accuracy;
use crate::adapt::{GateConfig, GateMetrics, Verdict, decide};
use crate::dataset::{self, Dataset, LoadOptions};
use crate::features::Raw;
use crate::inference::{Classifier, write_onnx};
use crate::lsskd::{self, TrainNet, checkpoint, export};
use crate::registry::{ModelPackage, replay};

/// Arguments of `fewshot-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct FewshotArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub support_data: PathBuf,
    #[arg(long)]
    pub support_split: String,
    #[arg(long)]
    pub query_data: PathBuf,
    #[arg(long)]
    pub query_split: String,
    #[arg(long, default_value_t = 5)]
    pub way: usize,
    #[arg(long, default_value_t = 5)]
    pub shot: usize,
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Data of the model's own classes, to measure forgetting.
    #[arg(long)]
    pub base_data: Option<PathBuf>,
    #[arg(long)]
    pub base_split: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Query samples per class and episode (at most).
    #[arg(long, default_value_t = 50)]
    pub queries_per_class: usize,
    /// Base samples evaluated per episode (at most).
    #[arg(long, default_value_t = 1000)]
    pub base_limit: usize,
    /// Fine-tune epochs per episode (0: imprint only).
    #[arg(long, default_value_t = AdaptConfig::default().epochs)]
    pub epochs: usize,
    /// Fine-tune wall-clock budget per episode, seconds.
    #[arg(long, default_value_t = AdaptConfig::default().budget_secs.unwrap_or(10))]
    pub budget_secs: u64,
    /// Augmented views per item whose frozen-prefix activations are cached (0: none, every
    /// step runs the whole network).
    #[arg(long, default_value_t = AdaptConfig::default().prefix_cache_views)]
    pub cache_views: usize,
}

/// One episode's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub classes: Vec<String>,
    pub imprint_only_novel_accuracy: f64,
    pub novel_accuracy: f64,
    /// Base accuracy with the imprinted (not fine-tuned) model.
    pub imprint_only_base_accuracy: Option<f64>,
    pub base_accuracy_after: Option<f64>,
    pub seconds: f64,
    /// Fine-tune steps within the budget.
    pub steps: usize,
    pub promoted: bool,
    pub gate: String,
}

/// The `--json` report.
#[derive(Debug, Clone, Serialize)]
pub struct FewshotReport {
    pub model: String,
    pub way: usize,
    pub shot: usize,
    pub episodes: usize,
    pub novel_accuracy: f64,
    pub novel_ci95: f64,
    pub imprint_only_novel_accuracy: f64,
    pub imprint_only_novel_ci95: f64,
    pub base_accuracy_before: Option<f64>,
    pub base_accuracy_after: Option<f64>,
    pub seconds_per_episode: f64,
    pub promoted_episodes: usize,
    pub peak_rss_mb: Option<f64>,
    pub per_episode: Vec<Episode>,
}

fn mean_ci95(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 1.96 * var.sqrt() / n.sqrt())
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn deployed_classifier(net: &TrainNet, shape: [usize; 3]) -> anyhow::Result<Classifier> {
    Ok(Classifier::from_bytes(&write_onnx(&export::deployed(
        &net.student,
        shape,
    )?))?)
}

/// Run the benchmark.
pub fn run(args: &FewshotArgs) -> anyhow::Result<FewshotReport> {
    let pkg = ModelPackage::load(&args.model)?;
    let m = &pkg.manifest;
    let pre = &m.preprocess;
    let shape = pre.input_shape();
    let set = m.train_state.transforms;
    let support_ds = dataset::load(
        &args.support_data,
        &args.support_split,
        &LoadOptions::default(),
    )
    .with_context(|| format!("loading support split `{}`", args.support_split))?;
    let same_split = args.support_data == args.query_data && args.support_split == args.query_split;
    let query_ds_owned;
    let query_ds: &Dataset = if same_split {
        &support_ds
    } else {
        query_ds_owned =
            dataset::load(&args.query_data, &args.query_split, &LoadOptions::default())
                .with_context(|| format!("loading query split `{}`", args.query_split))?;
        &query_ds_owned
    };
    let novel_pool: Vec<String> = support_ds
        .classes
        .iter()
        .filter(|c| !m.classes.contains(c))
        .cloned()
        .collect();
    if novel_pool.len() < args.way {
        bail!(
            "{}-way needs {} classes the model does not know; the support set has {}",
            args.way,
            args.way,
            novel_pool.len()
        );
    }
    let base = match (&args.base_data, &args.base_split) {
        (Some(d), Some(s)) => Some(
            dataset::load(
                d,
                s,
                &LoadOptions {
                    classes: Some(m.classes.clone()),
                    ..LoadOptions::default()
                },
            )
            .with_context(|| format!("loading base split `{s}`"))?,
        ),
        _ => None,
    };
    let replay = replay::load(&pkg.dir, &m.classes).map_err(anyhow::Error::msg)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let base_items: Vec<(usize, &Raw)> = match &base {
        Some(b) => {
            let mut idx: Vec<usize> = (0..b.len()).collect();
            idx.shuffle(&mut rng);
            idx.truncate(args.base_limit);
            idx.into_iter()
                .map(|i| (b.items[i].label, &b.items[i].raw))
                .collect()
        }
        None => Vec::new(),
    };
    let base_before = if base.is_some() {
        Some(accuracy(
            &Classifier::load(&pkg.onnx_path())?,
            pre,
            &base_items,
        )?)
    } else {
        None
    };

    let mut episodes = Vec::new();
    for e in 0..args.episodes {
        let classes: Vec<String> = novel_pool
            .choose_multiple(&mut rng, args.way)
            .cloned()
            .collect();
        let mut support: Vec<(String, Raw)> = Vec::new();
        let mut used = std::collections::HashSet::new();
        let mut queries: Vec<(String, &Raw)> = Vec::new();
        for c in &classes {
            let ci = support_ds
                .classes
                .iter()
                .position(|x| x == c)
                .expect("pool comes from the support classes");
            let mut pool: Vec<usize> = (0..support_ds.len())
                .filter(|&i| support_ds.items[i].label == ci)
                .collect();
            pool.shuffle(&mut rng);
            anyhow::ensure!(
                pool.len() >= args.shot,
                "class `{c}` has only {} support samples",
                pool.len()
            );
            for &i in &pool[..args.shot] {
                support.push((c.clone(), support_ds.items[i].raw.clone()));
                used.insert(support_ds.items[i].source.clone());
            }
            let qi = query_ds.classes.iter().position(|x| x == c);
            let mut q: Vec<usize> = (0..query_ds.len())
                .filter(|&i| {
                    Some(query_ds.items[i].label) == qi && !used.contains(&query_ds.items[i].source)
                })
                .collect();
            q.shuffle(&mut rng);
            q.truncate(args.queries_per_class);
            anyhow::ensure!(!q.is_empty(), "class `{c}` has no query samples left");
            queries.extend(q.into_iter().map(|i| (c.clone(), &query_ds.items[i].raw)));
        }
        let started = Instant::now();
        let device = lsskd::training_device(args.seed + e as u64);
        let net = checkpoint::load_package(&pkg, &device)?;
        let cfg = AdaptConfig {
            epochs: args.epochs,
            budget_secs: Some(args.budget_secs),
            prefix_cache_views: args.cache_views,
            seed: args.seed + e as u64,
            ..AdaptConfig::default()
        };
        let adapted = adapt(
            net,
            &m.classes,
            pre,
            set,
            &support,
            &replay,
            &cfg,
            &|| false,
            &mut |_| {},
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let index = |l: &str| {
            adapted
                .classes
                .iter()
                .position(|c| c == l)
                .expect("adapted classes include the episode's")
        };
        let labelled: Vec<(usize, &Raw)> = queries.iter().map(|(l, r)| (index(l), *r)).collect();
        let imprinted = Classifier::from_bytes(&adapted.imprinted.onnx)?;
        let imprint_acc = accuracy(&imprinted, pre, &labelled)?;
        let imprint_base = if base.is_some() {
            Some(accuracy(&imprinted, pre, &base_items)?)
        } else {
            None
        };
        let tuned = deployed_classifier(&adapted.tuned, shape)?;
        let novel_acc = accuracy(&tuned, pre, &labelled)?;
        let base_after = if base.is_some() {
            Some(accuracy(&tuned, pre, &base_items)?)
        } else {
            None
        };
        let verdict = decide(
            &GateConfig::default(),
            &GateMetrics {
                old_before: base_before.unwrap_or(1.0),
                old_after: base_after.unwrap_or(1.0),
                new_after: Some(novel_acc),
                labelled_after: None,
                labelled_before: None,
            },
        );
        tracing::info!(
            episode = e,
            imprint = imprint_acc,
            tuned = novel_acc,
            base_after = base_after.unwrap_or(f64::NAN),
            seconds,
            steps = adapted.steps,
            "episode"
        );
        episodes.push(Episode {
            classes,
            imprint_only_novel_accuracy: imprint_acc,
            novel_accuracy: novel_acc,
            imprint_only_base_accuracy: imprint_base,
            base_accuracy_after: base_after,
            seconds,
            steps: adapted.steps,
            promoted: verdict == Verdict::Promote,
            gate: match verdict {
                Verdict::Promote => "promote".into(),
                Verdict::Reject(r) => r,
            },
        });
    }
    let novel: Vec<f64> = episodes.iter().map(|e| e.novel_accuracy).collect();
    let imprint: Vec<f64> = episodes
        .iter()
        .map(|e| e.imprint_only_novel_accuracy)
        .collect();
    let (novel_accuracy, novel_ci95) = mean_ci95(&novel);
    let (imprint_only_novel_accuracy, imprint_only_novel_ci95) = mean_ci95(&imprint);
    let base_after: Vec<f64> = episodes
        .iter()
        .filter_map(|e| e.base_accuracy_after)
        .collect();
    Ok(FewshotReport {
        model: m.name.clone(),
        way: args.way,
        shot: args.shot,
        episodes: episodes.len(),
        novel_accuracy,
        novel_ci95,
        imprint_only_novel_accuracy,
        imprint_only_novel_ci95,
        base_accuracy_before: base_before,
        base_accuracy_after: (!base_after.is_empty()).then(|| mean_ci95(&base_after).0),
        seconds_per_episode: episodes.iter().map(|e| e.seconds).sum::<f64>()
            / episodes.len().max(1) as f64,
        promoted_episodes: episodes.iter().filter(|e| e.promoted).count(),
        peak_rss_mb: peak_rss_mb(),
        per_episode: episodes,
    })
}
