//! `lsskd-edge fewshot-bench`: N-way K-shot episodes of classes a package does not know,
//! each adapted and judged by the daemon's own adaptation core (`adapt::core`: the same
//! recipe resolution, imprint + fine-tune, gate evidence and candidate choice as the
//! learner), evaluated through tract (the deployed path) with argmax over all classes,
//! shipped and new.
//!
//! `--kind` makes adversarial episodes the gate must reject: `shuffled` (labels shuffled
//! among the episode's samples), `mislabelled` (half of each label's samples carry another
//! episode label) and `renamed` (one label's samples are of a shipped class, from
//! `--base-data`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::adapt::candidates::accuracy;
use crate::adapt::core::{self, Candidates, Request, ShippedSets};
use crate::adapt::{Candidate, GateConfig, ModelKind, Overrides, Recipe, Verdict};
use crate::dataset::{self, Dataset, LoadOptions};
use crate::features::{Preprocess, Raw};
use crate::inference::{Classifier, argmax, write_onnx};
use crate::lsskd::{TrainNet, export};
use crate::registry::ModelPackage;
use crate::settings::AdaptSettings;

/// What an episode's support set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EpisodeKind {
    /// Correctly labelled samples of new classes.
    Good,
    /// Labels shuffled among the episode's samples.
    Shuffled,
    /// Half of each label's samples carry another label of the episode.
    Mislabelled,
    /// One label's samples are of a shipped class (needs `--base-data`).
    Renamed,
}

/// Which part of the novel-class data the episodes draw from. A quarter of every class
/// (every fourth item, in file order) is kept out of recipe tuning and reported on only
/// at the end of a tuning round (BENCHMARKS.md, "Few-shot vision on a held-out quarter of
/// the digits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolPart {
    /// Every item.
    All,
    /// The three quarters for tuning.
    Tune,
    /// The held-out quarter.
    Final,
}

impl PoolPart {
    /// Keeps the items of `ds` in this part: by position within their class.
    pub fn select(self, ds: &mut Dataset) {
        if self == PoolPart::All {
            return;
        }
        let mut seen = vec![0usize; ds.classes.len()];
        ds.items.retain(|it| {
            let n = seen[it.label];
            seen[it.label] += 1;
            (n % 4 == 3) == (self == PoolPart::Final)
        });
    }
}

/// What `fewshot-bench` and `view-bench` may change in the adaptation recipe (see
/// [`Overrides`]; each flag unset: the model's recipe, `Recipe::for_model`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecipeFlags {
    /// Fine-tune epochs per adaptation (0: imprint only).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Fine-tune peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Stages the fine-tune trains, counted from the output side (0: the head only; see
    /// `Recipe::trained_stages`).
    #[arg(long)]
    pub trained_stages: Option<usize>,
    /// Weight of the fine-tuned parameters against the imprinted ones (1: the fine-tune as
    /// trained; see `Recipe::mix`).
    #[arg(long)]
    pub mix: Option<f32>,
    /// Offset of the new labels' logits in the fine-tuned model (`Recipe::new_label_offset`).
    #[arg(long)]
    pub new_label_offset: Option<f32>,
    /// Augmentation of the user's audio samples: speed range, time shift in milliseconds,
    /// and the largest time and frequency masks (`Recipe::sample_audio_augment`).
    #[arg(long)]
    pub sample_speed: Option<f32>,
    #[arg(long)]
    pub sample_shift_ms: Option<f32>,
    #[arg(long)]
    pub sample_time_mask: Option<usize>,
    #[arg(long)]
    pub sample_freq_mask: Option<usize>,
    /// Augmentation of the user's image samples: random-crop padding in pixels, rotation
    /// range in degrees, scale range (`Recipe::sample_augment`).
    #[arg(long)]
    pub sample_crop: Option<usize>,
    #[arg(long)]
    pub sample_rotate: Option<f32>,
    #[arg(long)]
    pub sample_scale: Option<f32>,
    /// Replay exemplars' pull towards the pre-adaptation prediction and embedding
    /// (`Recipe::anchor_weight`, `anchor_embedding_weight`).
    #[arg(long)]
    pub anchor_weight: Option<f32>,
    #[arg(long)]
    pub anchor_embedding_weight: Option<f32>,
}

impl RecipeFlags {
    /// The overrides these flags ask for (the budget is the settings' business).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            epochs: self.epochs,
            lr: self.lr,
            budget_secs: None,
            trained_stages: self.trained_stages,
            mix: self.mix,
            new_label_offset: self.new_label_offset,
            anchor_weight: self.anchor_weight,
            anchor_embedding_weight: self.anchor_embedding_weight,
            sample_crop: self.sample_crop,
            sample_rotate: self.sample_rotate,
            sample_scale: self.sample_scale,
            sample_speed: self.sample_speed,
            sample_shift_ms: self.sample_shift_ms,
            sample_time_mask: self.sample_time_mask,
            sample_freq_mask: self.sample_freq_mask,
        }
    }
}

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
    /// The adaptation recipe's overrides (default: the model's recipe).
    #[command(flatten)]
    pub recipe: RecipeFlags,
    /// The most one episode's fine-tune may take, seconds: it runs its recipe's steps or
    /// fails (default: the daemon's `adapt.budget_secs`).
    #[arg(long)]
    pub budget_secs: Option<u64>,
    #[arg(long, value_enum, default_value = "good")]
    pub kind: EpisodeKind,
    /// Split each class's support and queries by this column of the data sets'
    /// `manifest-<split>.csv` (e.g. `accent` of espeak-kws, `kit` of drum-hits): the support
    /// comes from as few values as give `--shot` samples, drawn at random, and the queries
    /// only from the other values — speakers or kits the support never had.
    #[arg(long)]
    pub group_by: Option<String>,
    /// The part of the support and query data the episodes draw from (`final`: the quarter
    /// held out of recipe tuning).
    #[arg(long, value_enum, default_value = "all")]
    pub pool_part: PoolPart,
    /// Gate thresholds (default: the daemon's defaults, config/default.toml `[adapt]`).
    #[arg(long)]
    pub min_new_accuracy: Option<f64>,
    #[arg(long)]
    pub max_old_drop: Option<f64>,
    #[arg(long)]
    pub max_class_drop: Option<f64>,
    #[arg(long)]
    pub confidence: Option<f64>,
}

/// One episode's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub classes: Vec<String>,
    pub imprint_only_novel_accuracy: f64,
    pub novel_accuracy: f64,
    /// Share of the novel queries classified as a shipped class (the rest of the errors
    /// are confusions among the new labels), imprinted and fine-tuned.
    pub imprint_only_novel_to_shipped: f64,
    pub novel_to_shipped: f64,
    /// Base accuracy with the imprinted (not fine-tuned) model.
    pub imprint_only_base_accuracy: Option<f64>,
    pub base_accuracy_after: Option<f64>,
    /// The imprinted model at the fine-tune's operating point (with `--base-data`): the
    /// offset on its new labels' logits, closest to 0, at which it keeps as many shipped
    /// items as the fine-tune does, and its novel accuracy there.
    pub imprint_matched_offset: Option<f32>,
    pub imprint_matched_novel_accuracy: Option<f64>,
    /// With `--base-data`: the fine-tune's trade-off between its new labels and the shipped
    /// classes, `(extra offset, novel accuracy, base accuracy)` with the offset on its new
    /// labels' logits moved by −1 … +2 in steps of 0.25 from the one it serves with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuned_offset_curve: Vec<(f32, f64, f64)>,
    pub seconds: f64,
    /// The gate (evaluating both candidates on their evidence), seconds: the daemon spends
    /// `seconds + gate_seconds` from the job's start to its verdict.
    pub gate_seconds: f64,
    /// Fine-tune steps run (the recipe's).
    pub steps: usize,
    /// The offset of the new labels' logits in the fine-tuned model.
    pub new_label_offset: f32,
    pub kind: EpisodeKind,
    /// Promoted by the daemon's gate (either candidate).
    pub promoted: bool,
    /// `finetuned`, `imprinted` or none.
    pub promoted_as: Option<String>,
    /// The gate's leave-one-out estimate of new-class accuracy and its bounds.
    pub estimate: Option<f64>,
    pub estimate_lower: Option<f64>,
    pub estimate_upper: Option<f64>,
    /// The fine-tune's old-class drop on the gate's set and its lower bound.
    pub gate_drop: Option<f64>,
    pub gate_drop_lower: Option<f64>,
    /// The shipped class the reported candidate hurt most on the gate's set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_old_class: Option<crate::registry::card::ClassChange>,
    /// Per new label, the shipped class its samples are closest to in the live model's
    /// embedding space (the rename check's evidence).
    pub lookalikes: Vec<crate::adapt::gate::Lookalike>,
    /// How the reported candidate's new-class estimate was obtained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_method: Option<String>,
    /// Promote, or the reported candidate's rejection.
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
    /// Mean of the episodes' [`Episode::imprint_matched_novel_accuracy`] and its interval.
    pub imprint_matched_novel_accuracy: Option<f64>,
    pub imprint_matched_novel_ci95: Option<f64>,
    pub base_accuracy_before: Option<f64>,
    pub base_accuracy_after: Option<f64>,
    /// Items the base accuracies are measured on.
    pub base_items: usize,
    pub seconds_per_episode: f64,
    pub kind: EpisodeKind,
    /// The manifest column support and queries were split by (`--group-by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    pub pool_part: PoolPart,
    pub gate: GateConfig,
    /// The recipe the episodes ran (its `seed` is the first episode's).
    pub recipe: Recipe,
    pub promoted_episodes: usize,
    pub finetune_promoted_episodes: usize,
    pub peak_rss_mb: Option<f64>,
    pub per_episode: Vec<Episode>,
}

/// Accuracy on novel queries, `(label, logits)`, and the share of them sent to one of the
/// first `shipped` classes.
fn novel_scores(items: &[(usize, Vec<f32>)], shipped: usize) -> (f64, f64) {
    let to_shipped = items.iter().filter(|(_, l)| argmax(l) < shipped).count();
    let n = items.len().max(1) as f64;
    (accuracy_at(items, shipped, 0.0), to_shipped as f64 / n)
}

/// Each item's label and logits under `model`.
pub(crate) fn logits_of(
    model: &Classifier,
    pre: &Preprocess,
    items: &[(usize, &Raw)],
) -> anyhow::Result<Vec<(usize, Vec<f32>)>> {
    items
        .iter()
        .map(|(label, raw)| Ok((*label, model.classify(&pre.tensor(raw)?)?.logits)))
        .collect()
}

/// Accuracy of `(label, logits)` items with `offset` added to the logits of the classes
/// from `first` on.
fn accuracy_at(items: &[(usize, Vec<f32>)], first: usize, offset: f32) -> f64 {
    let right = items
        .iter()
        .filter(|(label, l)| {
            let shifted: Vec<f32> = l
                .iter()
                .enumerate()
                .map(|(c, v)| if c >= first { v + offset } else { *v })
                .collect();
            argmax(&shifted) == *label
        })
        .count();
    right as f64 / items.len().max(1) as f64
}

/// A model compared at another's operating point: the offset on its new labels' logits
/// (classes from `first` on), closest to 0 and not above it, at which its accuracy on the
/// shipped items `base` reaches `target`, and its accuracy on the `novel` items there.
/// Lowering the offset only sends items from new labels to shipped classes, so the
/// candidates are 0 and the offsets just below those at which a base item changes sides.
fn matched_operating_point(
    novel: &[(usize, Vec<f32>)],
    base: &[(usize, Vec<f32>)],
    first: usize,
    target: f64,
) -> (f32, f64) {
    let mut offsets: Vec<f32> = base
        .iter()
        .filter(|(_, l)| first < l.len())
        .map(|(_, l)| {
            let best = |s: &[f32]| s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let margin = best(&l[first..]) - best(&l[..first]);
            // Just past the offset at which the item leaves the new labels.
            -margin - 1e-4 * (1.0 + margin.abs())
        })
        .filter(|o| *o < 0.0)
        .collect();
    offsets.push(0.0);
    offsets.sort_by(|a, b| b.total_cmp(a));
    let chosen = offsets
        .iter()
        .copied()
        .find(|&o| accuracy_at(base, first, o) >= target)
        .unwrap_or_else(|| offsets.last().copied().unwrap_or(0.0));
    (chosen, accuracy_at(novel, first, chosen))
}

pub(crate) fn mean_ci95(v: &[f64]) -> (f64, f64) {
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

pub(crate) fn deployed_classifier(net: &TrainNet, shape: [usize; 3]) -> anyhow::Result<Classifier> {
    Ok(Classifier::from_bytes(&write_onnx(&export::deployed(
        &net.student,
        shape,
    )?))?)
}

/// The group values (`--group-by`) a class's support comes from: values in random order
/// until their support items number `shot`, such that a query item of another value is
/// left. `None` when 64 orders give no such split.
fn split_groups(
    support: &[usize],
    support_groups: &[String],
    queries: &[usize],
    query_groups: &[String],
    shot: usize,
    rng: &mut StdRng,
) -> Option<BTreeSet<String>> {
    let mut values: Vec<&String> = support.iter().map(|&i| &support_groups[i]).collect();
    values.sort();
    values.dedup();
    for _ in 0..64 {
        values.shuffle(rng);
        let mut taken = BTreeSet::new();
        let mut n = 0;
        for v in &values {
            if n >= shot {
                break;
            }
            taken.insert((*v).clone());
            n += support
                .iter()
                .filter(|&&i| support_groups[i] == **v)
                .count();
        }
        let query_left = queries.iter().any(|&i| !taken.contains(&query_groups[i]));
        if n >= shot && query_left {
            return Some(taken);
        }
    }
    None
}

/// The one-line summary.
pub fn render(r: &FewshotReport) -> String {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
    format!(
        "{}-way {}-shot, {} episodes: novel accuracy {:.4} ± {:.4} (imprint only {:.4} ± {:.4}; at the fine-tune's base accuracy {}); base {} → {}; {:.1} s per adaptation; {} promoted; peak RSS {} MiB\n",
        r.way,
        r.shot,
        r.episodes,
        r.novel_accuracy,
        r.novel_ci95,
        r.imprint_only_novel_accuracy,
        r.imprint_only_novel_ci95,
        opt(r.imprint_matched_novel_accuracy, &|v| format!("{v:.4}")),
        opt(r.base_accuracy_before, &|v| format!("{v:.4}")),
        opt(r.base_accuracy_after, &|v| format!("{v:.4}")),
        r.seconds_per_episode,
        r.promoted_episodes,
        opt(r.peak_rss_mb, &|v| format!("{v:.0}")),
    )
}

/// The daemon's `[adapt]` settings as the benchmark runs them (the defaults, with its gate
/// and budget flags) and the recipe overrides its flags ask for.
fn settings_and_overrides(args: &FewshotArgs) -> (AdaptSettings, Overrides) {
    let mut settings = AdaptSettings::defaults();
    if let Some(v) = args.min_new_accuracy {
        settings.min_new_accuracy = v;
    }
    if let Some(v) = args.max_old_drop {
        settings.max_old_drop = v;
    }
    if let Some(v) = args.max_class_drop {
        settings.max_class_drop = v;
    }
    if let Some(v) = args.confidence {
        settings.confidence = v;
    }
    if let Some(v) = args.budget_secs {
        settings.budget_secs = v;
    }
    let overrides = args.recipe.overrides();
    (settings, overrides)
}

/// Adapt the shipped package `pkg` to `support` (new labels only, in the order they are
/// appended) through the adaptation core, exactly as the daemon's learner would with
/// `settings` and no held-back samples.
pub fn adapt_support(
    pkg: &ModelPackage,
    sets: &ShippedSets,
    support: &[(String, Raw)],
    settings: &AdaptSettings,
    overrides: &Overrides,
    seed: u64,
) -> anyhow::Result<Candidates> {
    let m = &pkg.manifest;
    let recipe = Recipe::resolve(ModelKind::of(m), settings, overrides, false, seed);
    let req = Request {
        live: pkg,
        shipped_classes: &m.classes,
        sets,
        support,
        held_shipped: &[],
        recipe: &recipe,
        gate: &GateConfig::from_settings(settings),
    };
    core::run(&req, &|| false, &mut |_| {})
}

/// The data episodes draw from, loaded once.
struct Pools {
    support: Dataset,
    /// `None`: the queries come from the support's split.
    query: Option<Dataset>,
    /// The `--group-by` value of every support and query item.
    groups: Option<(Vec<String>, Vec<String>)>,
    /// Classes of the support data the model does not know.
    novel: Vec<String>,
    /// The model's own classes (`--base-data`), to measure forgetting.
    base: Option<Dataset>,
}

impl Pools {
    fn query(&self) -> &Dataset {
        self.query.as_ref().unwrap_or(&self.support)
    }
}

fn load_pools(
    args: &FewshotArgs,
    classes: &[String],
    background: Option<&str>,
) -> anyhow::Result<Pools> {
    let mut support = dataset::load(
        &args.support_data,
        &args.support_split,
        &LoadOptions::default(),
    )
    .with_context(|| format!("loading support split `{}`", args.support_split))?;
    args.pool_part.select(&mut support);
    let same_split = args.support_data == args.query_data && args.support_split == args.query_split;
    let query = match same_split {
        true => None,
        false => {
            let mut q = dataset::load(&args.query_data, &args.query_split, &LoadOptions::default())
                .with_context(|| format!("loading query split `{}`", args.query_split))?;
            args.pool_part.select(&mut q);
            Some(q)
        }
    };
    let groups = match &args.group_by {
        Some(col) => Some((
            dataset::manifest::column(&args.support_data, &args.support_split, &support, col)?,
            dataset::manifest::column(
                &args.query_data,
                &args.query_split,
                query.as_ref().unwrap_or(&support),
                col,
            )?,
        )),
        None => None,
    };
    let novel: Vec<String> = support
        .classes
        .iter()
        .filter(|c| !classes.contains(c))
        .cloned()
        .collect();
    if novel.len() < args.way {
        bail!(
            "{}-way needs {} classes the model does not know; the support set has {}",
            args.way,
            args.way,
            novel.len()
        );
    }
    let base = match (&args.base_data, &args.base_split) {
        (Some(d), Some(s)) => Some(
            dataset::load_for_model(d, s, classes, background, &LoadOptions::default())
                .with_context(|| format!("loading base split `{s}`"))?,
        ),
        _ => None,
    };
    if args.kind == EpisodeKind::Renamed && base.is_none() {
        bail!("--kind renamed takes the samples of a shipped class from --base-data");
    }
    Ok(Pools {
        support,
        query,
        groups,
        novel,
        base,
    })
}

/// One episode's classes, support samples and queries.
struct Draw<'a> {
    classes: Vec<String>,
    support: Vec<(String, Raw)>,
    queries: Vec<(String, &'a Raw)>,
}

/// Draw `args.way` novel classes, `args.shot` support samples and up to
/// `args.queries_per_class` other queries of each.
fn draw<'a>(pools: &'a Pools, args: &FewshotArgs, rng: &mut StdRng) -> anyhow::Result<Draw<'a>> {
    let (support_ds, query_ds) = (&pools.support, pools.query());
    let classes: Vec<String> = pools
        .novel
        .choose_multiple(rng, args.way)
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
        let qi = query_ds.classes.iter().position(|x| x == c);
        let mut q: Vec<usize> = (0..query_ds.len())
            .filter(|&i| Some(query_ds.items[i].label) == qi)
            .collect();
        if let Some((support_groups, query_groups)) = &pools.groups {
            let taken = split_groups(&pool, support_groups, &q, query_groups, args.shot, rng)
                .with_context(|| {
                    format!(
                        "class `{c}`: no split of its `{}` values gives {} support samples and a query",
                        args.group_by.as_deref().unwrap_or_default(),
                        args.shot
                    )
                })?;
            pool.retain(|&i| taken.contains(&support_groups[i]));
            q.retain(|&i| !taken.contains(&query_groups[i]));
        }
        pool.shuffle(rng);
        anyhow::ensure!(
            pool.len() >= args.shot,
            "class `{c}` has only {} support samples",
            pool.len()
        );
        for &i in &pool[..args.shot] {
            support.push((c.clone(), support_ds.items[i].raw.clone()));
            used.insert(support_ds.items[i].source.clone());
        }
        q.retain(|&i| !used.contains(&query_ds.items[i].source));
        q.shuffle(rng);
        q.truncate(args.queries_per_class);
        anyhow::ensure!(!q.is_empty(), "class `{c}` has no query samples left");
        queries.extend(q.into_iter().map(|i| (c.clone(), &query_ds.items[i].raw)));
    }
    Ok(Draw {
        classes,
        support,
        queries,
    })
}

/// Make `d` the adversarial episode `kind` asks for.
fn corrupt<'a>(
    d: &mut Draw<'a>,
    kind: EpisodeKind,
    shot: usize,
    base: Option<&'a Dataset>,
    shipped: usize,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    match kind {
        EpisodeKind::Good => {}
        EpisodeKind::Shuffled => {
            let mut labels: Vec<String> = d.support.iter().map(|(l, _)| l.clone()).collect();
            labels.shuffle(rng);
            for ((l, _), new) in d.support.iter_mut().zip(labels) {
                *l = new;
            }
        }
        EpisodeKind::Mislabelled => {
            // Every second sample of each label gets the next label of the episode.
            for (i, (l, _)) in d.support.iter_mut().enumerate() {
                if (i % shot) % 2 == 1 {
                    let k = d
                        .classes
                        .iter()
                        .position(|c| c == l)
                        .expect("episode label");
                    *l = d.classes[(k + 1) % d.classes.len()].clone();
                }
            }
        }
        EpisodeKind::Renamed => {
            // The last label's samples (and queries) become a shipped class's.
            let b = base.expect("checked when the pools were loaded");
            let class = rng.random_range(0..shipped);
            let renamed = d.classes.last().expect("way ≥ 1").clone();
            let mut pool: Vec<usize> = (0..b.len())
                .filter(|&i| b.items[i].label == class)
                .collect();
            pool.shuffle(rng);
            let mut k = pool.iter();
            for (_, raw) in d.support.iter_mut().filter(|(l, _)| *l == renamed) {
                *raw = b.items[*k.next().context("shipped class too small")?]
                    .raw
                    .clone();
            }
            for (_, raw) in d.queries.iter_mut().filter(|(l, _)| *l == renamed) {
                if let Some(&i) = k.next() {
                    *raw = &b.items[i].raw;
                }
            }
        }
    }
    Ok(())
}

/// Score one adapted episode: novel queries and shipped items through tract, for the
/// imprinted and the fine-tuned model, and the gate's judgement.
fn score(
    d: Draw<'_>,
    c: &Candidates,
    pre: &Preprocess,
    shipped: usize,
    base_items: &[(usize, &Raw)],
    has_base: bool,
    kind: EpisodeKind,
) -> anyhow::Result<Episode> {
    let adapted = &c.adapted;
    let index = |l: &str| {
        adapted
            .classes
            .iter()
            .position(|x| x == l)
            .expect("adapted classes include the episode's")
    };
    let labelled: Vec<(usize, &Raw)> = d.queries.iter().map(|(l, r)| (index(l), *r)).collect();
    // Each model's logits, once: its scores as served, the imprint at the fine-tune's
    // operating point, the fine-tune's offset curve.
    let imprinted = Classifier::from_bytes(&adapted.imprinted.onnx)?;
    let imprint_novel = logits_of(&imprinted, pre, &labelled)?;
    let imprint_base_logits = logits_of(&imprinted, pre, base_items)?;
    let (imprint_acc, imprint_to_shipped) = novel_scores(&imprint_novel, shipped);
    let imprint_base = has_base.then(|| accuracy_at(&imprint_base_logits, shipped, 0.0));
    let tuned = deployed_classifier(&adapted.tuned, pre.input_shape())?;
    let tuned_novel = logits_of(&tuned, pre, &labelled)?;
    let tuned_base = logits_of(&tuned, pre, base_items)?;
    let (novel_acc, to_shipped) = novel_scores(&tuned_novel, shipped);
    let base_after = has_base.then(|| accuracy_at(&tuned_base, shipped, 0.0));
    let tuned_offset_curve = match has_base {
        true => (-4..=8)
            .map(|k| {
                let o = k as f32 * 0.25;
                (
                    o,
                    accuracy_at(&tuned_novel, shipped, o),
                    accuracy_at(&tuned_base, shipped, o),
                )
            })
            .collect(),
        false => Vec::new(),
    };
    let matched = base_after.map(|target| {
        matched_operating_point(&imprint_novel, &imprint_base_logits, shipped, target)
    });
    let judgement = &c.judgement;
    let reported = judgement.reported().context("a candidate to judge")?;
    let tuned_gate = judgement.finetuned.as_ref().map(|j| &j.gate);
    tracing::info!(
        imprint = imprint_acc,
        tuned = novel_acc,
        base_after = base_after.unwrap_or(f64::NAN),
        seconds = c.adapt_secs,
        gate_seconds = c.gate_secs,
        steps = adapted.steps,
        "episode"
    );
    Ok(Episode {
        classes: d.classes,
        imprint_only_novel_accuracy: imprint_acc,
        novel_accuracy: novel_acc,
        imprint_only_novel_to_shipped: imprint_to_shipped,
        novel_to_shipped: to_shipped,
        imprint_only_base_accuracy: imprint_base,
        base_accuracy_after: base_after,
        imprint_matched_offset: matched.map(|m| m.0),
        imprint_matched_novel_accuracy: matched.map(|m| m.1),
        tuned_offset_curve,
        seconds: c.adapt_secs,
        gate_seconds: c.gate_secs,
        steps: adapted.steps,
        new_label_offset: adapted.new_label_offset,
        kind,
        promoted: judgement.chosen.is_some(),
        promoted_as: judgement.chosen.map(|c| {
            match c {
                Candidate::Imprinted => "imprinted",
                Candidate::Finetuned => "finetuned",
            }
            .into()
        }),
        estimate: reported.gate.new_after,
        estimate_lower: reported.gate.new_lower,
        estimate_upper: reported.gate.new_upper,
        gate_drop: tuned_gate.and_then(|g| g.old.as_ref()).map(|o| o.drop),
        gate_drop_lower: tuned_gate
            .and_then(|g| g.old.as_ref())
            .map(|o| o.drop_lower),
        worst_old_class: reported
            .gate
            .old
            .as_ref()
            .and_then(|o| o.worst.first().cloned()),
        estimate_method: reported.gate.new_method.clone(),
        lookalikes: judgement.lookalikes.clone(),
        gate: match &reported.verdict {
            Verdict::Promote => "promote".into(),
            Verdict::Reject(r) => r.clone(),
        },
    })
}

/// Up to `args.base_limit` items of the model's own classes, drawn at random.
fn draw_base<'a>(
    base: Option<&'a Dataset>,
    limit: usize,
    rng: &mut StdRng,
) -> Vec<(usize, &'a Raw)> {
    let Some(b) = base else {
        return Vec::new();
    };
    let mut idx: Vec<usize> = (0..b.len()).collect();
    idx.shuffle(rng);
    idx.truncate(limit);
    idx.into_iter()
        .map(|i| (b.items[i].label, &b.items[i].raw))
        .collect()
}

/// The report over all episodes.
fn summarise(
    args: &FewshotArgs,
    model: &str,
    gate: GateConfig,
    recipe: Recipe,
    base_before: Option<f64>,
    base_items: usize,
    episodes: Vec<Episode>,
) -> FewshotReport {
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
    let matched: Vec<f64> = episodes
        .iter()
        .filter_map(|e| e.imprint_matched_novel_accuracy)
        .collect();
    let matched = (!matched.is_empty()).then(|| mean_ci95(&matched));
    FewshotReport {
        model: model.into(),
        way: args.way,
        shot: args.shot,
        episodes: episodes.len(),
        novel_accuracy,
        novel_ci95,
        imprint_only_novel_accuracy,
        imprint_only_novel_ci95,
        imprint_matched_novel_accuracy: matched.map(|m| m.0),
        imprint_matched_novel_ci95: matched.map(|m| m.1),
        base_accuracy_before: base_before,
        base_accuracy_after: (!base_after.is_empty()).then(|| mean_ci95(&base_after).0),
        base_items,
        seconds_per_episode: episodes.iter().map(|e| e.seconds).sum::<f64>()
            / episodes.len().max(1) as f64,
        kind: args.kind,
        group_by: args.group_by.clone(),
        pool_part: args.pool_part,
        gate,
        recipe,
        promoted_episodes: episodes.iter().filter(|e| e.promoted).count(),
        finetune_promoted_episodes: episodes
            .iter()
            .filter(|e| e.promoted_as.as_deref() == Some("finetuned"))
            .count(),
        peak_rss_mb: peak_rss_mb(),
        per_episode: episodes,
    }
}

/// Run the benchmark.
pub fn run(args: &FewshotArgs) -> anyhow::Result<FewshotReport> {
    let pkg = ModelPackage::load(&args.model)?;
    let m = &pkg.manifest;
    let pre = &m.preprocess;
    let pools = load_pools(args, &m.classes, m.background.as_deref())?;
    let (settings, overrides) = settings_and_overrides(args);
    // The same split of replay and gate set as the daemon's learner.
    let sets = ShippedSets::load(&pkg, None)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let base_items = draw_base(pools.base.as_ref(), args.base_limit, &mut rng);
    let has_base = pools.base.is_some();
    let base_before = match has_base {
        true => Some(accuracy(
            &Classifier::load(&pkg.onnx_path())?,
            pre,
            &base_items,
        )?),
        false => None,
    };
    let mut episodes = Vec::new();
    for e in 0..args.episodes {
        let mut d = draw(&pools, args, &mut rng)?;
        let shipped = m.classes.len();
        corrupt(
            &mut d,
            args.kind,
            args.shot,
            pools.base.as_ref(),
            shipped,
            &mut rng,
        )?;
        let seed = args.seed + e as u64;
        let c = adapt_support(&pkg, &sets, &d.support, &settings, &overrides, seed)?;
        tracing::debug!(episode = e, "episode adapted");
        episodes.push(score(
            d,
            &c,
            pre,
            shipped,
            &base_items,
            has_base,
            args.kind,
        )?);
    }
    let recipe = Recipe::resolve(ModelKind::of(m), &settings, &overrides, false, args.seed);
    Ok(summarise(
        args,
        &m.name,
        GateConfig::from_settings(&settings),
        recipe,
        base_before,
        base_items.len(),
        episodes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Item;
    use crate::features::Raw;

    fn dataset(per_class: &[usize]) -> Dataset {
        let mut items = Vec::new();
        for (label, &n) in per_class.iter().enumerate() {
            for i in 0..n {
                items.push(Item {
                    label,
                    raw: Raw::Image(::image::DynamicImage::new_luma8(1, 1)),
                    source: format!("c{label}/{i}"),
                    group: None,
                });
            }
        }
        Dataset {
            classes: (0..per_class.len()).map(|c| format!("c{c}")).collect(),
            items,
            skipped_bad: 0,
        }
    }

    #[test]
    fn the_matched_operating_point_lowers_new_labels_until_base_is_kept() {
        // Classes 0-1 shipped, 2 new. Base items' margins (best new − best old): −1, 0.5,
        // 2; novel items' margins: 3, 1, 0.2.
        let base = vec![
            (0, vec![2.0, 0.0, 1.0]),
            (1, vec![0.0, 1.0, 1.5]),
            (0, vec![1.0, 0.0, 3.0]),
        ];
        let novel = vec![
            (2, vec![0.0, 0.0, 3.0]),
            (2, vec![1.0, 0.0, 2.0]),
            (2, vec![0.0, 1.0, 1.2]),
        ];
        // Already there: offset 0.
        let (o, acc) = matched_operating_point(&novel, &base, 2, 1.0 / 3.0);
        assert_eq!((o, acc), (0.0, 1.0));
        // Two of three base items: just below −0.5, which takes the novel item at 0.2.
        let (o, acc) = matched_operating_point(&novel, &base, 2, 0.66);
        assert!(o < -0.5 && o > -0.51, "{o}");
        assert!((acc - 2.0 / 3.0).abs() < 1e-9, "{acc}");
        // All base items: just below −2, where only the novel item at 3 stays.
        let (o, acc) = matched_operating_point(&novel, &base, 2, 1.0);
        assert!(o < -2.0 && o > -2.01, "{o}");
        assert!((acc - 1.0 / 3.0).abs() < 1e-9, "{acc}");
    }

    #[test]
    fn tune_and_final_split_every_class_three_to_one_without_overlap() {
        let sources = |part: PoolPart| {
            let mut ds = dataset(&[8, 5]);
            part.select(&mut ds);
            ds.items.into_iter().map(|i| i.source).collect::<Vec<_>>()
        };
        let (all, tune, fin) = (
            sources(PoolPart::All),
            sources(PoolPart::Tune),
            sources(PoolPart::Final),
        );
        assert_eq!(all.len(), 13);
        assert_eq!(fin, vec!["c0/3", "c0/7", "c1/3"]);
        assert_eq!(tune.len(), 10);
        assert!(tune.iter().all(|s| !fin.contains(s)));
    }
}
