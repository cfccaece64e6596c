//! `lsskd-edge view-bench`: per-view teaching of a camera view's states (issue 30). For
//! each view (group) of a grouped image data set (`<split>/<view>/<class>/*`), a person's
//! teaching is simulated: `--shot` frames of each state of that view are the samples, they
//! go through the adaptation core exactly as the daemon's learner takes stored samples
//! (samples of the model's own classes split into trained and held back with
//! `gate::split_holdout`, the `[adapt]` defaults, the gate), and the view's other frames
//! are classified among the view's states by the model before teaching, the imprinted
//! candidate, the fine-tuned one and the one the gate serves. Views are never mixed.

use std::path::PathBuf;

use anyhow::Context;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::fewshot::{RecipeFlags, deployed_classifier, logits_of, mean_ci95};
use crate::adapt::core::{self, Request, ShippedSets};
use crate::adapt::gate::{GateConfig, Verdict, split_holdout};
use crate::adapt::recipe::{ModelKind, Recipe};
use crate::dataset::{self, Dataset, LoadOptions};
use crate::features::Raw;
use crate::inference::Classifier;
use crate::registry::ModelPackage;
use crate::settings::AdaptSettings;

/// Arguments of `view-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct ViewBenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// A grouped image data set: `<split>/<view>/<state>/*`.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub split: String,
    /// Each view's region of interest (`train --regions`); frames are cut to it first.
    #[arg(long)]
    pub regions: Option<PathBuf>,
    /// Teaching frames per state.
    #[arg(long, default_value_t = 5)]
    pub shot: usize,
    /// Teachings per view: the first takes each state's first `--shot` frames (file
    /// order), the others draw them at random.
    #[arg(long, default_value_t = 1)]
    pub draws: usize,
    /// Only these views (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub views: Option<Vec<String>>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The adaptation recipe's overrides (default: the model's recipe).
    #[command(flatten)]
    pub recipe: RecipeFlags,
    /// The most one teaching's fine-tune may take, seconds: it runs its recipe's steps or
    /// fails (default: `adapt.budget_secs`).
    #[arg(long)]
    pub budget_secs: Option<u64>,
    /// After the region, cut every frame to the square around its change from the view's
    /// reference, the mean of the teaching frames of this state, as the daemon does for a
    /// model with a `change_reference` (default: the model's `change_reference`).
    #[arg(long)]
    pub crop_to_change: Option<String>,
}

/// One teaching of one view.
#[derive(Debug, Clone, Serialize)]
pub struct Teaching {
    pub view: String,
    pub draw: usize,
    /// Accuracy on the view's other frames among its states.
    pub before: Option<f64>,
    pub imprinted: f64,
    pub finetuned: f64,
    /// The gate's choice (the model before teaching when it rejects both).
    pub served: f64,
    pub verdict: String,
    pub promoted_as: Option<String>,
    pub queries: usize,
    pub adapt_secs: f64,
    pub gate_secs: f64,
}

/// Per view, the mean over its teachings; over views, the mean and the worst view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewBenchReport {
    pub model: String,
    pub shot: usize,
    pub draws: usize,
    pub views: usize,
    pub before: Option<f64>,
    pub imprinted: f64,
    pub finetuned: f64,
    pub finetuned_ci95: f64,
    pub served: f64,
    pub worst_view_finetuned: (String, f64),
    pub promoted: usize,
    pub teachings: Vec<Teaching>,
}

/// Accuracy of `(label, logits)` among the classes `among` (model class indices).
fn accuracy_among(items: &[(usize, Vec<f32>)], among: &[usize]) -> f64 {
    let right = items
        .iter()
        .filter(|(label, logits)| {
            let best = among
                .iter()
                .copied()
                .max_by(|a, b| logits[*a].total_cmp(&logits[*b]));
            best == Some(*label)
        })
        .count();
    right as f64 / items.len().max(1) as f64
}

/// The items of one view, by class: `(class name, raw)` in file order.
fn view_items<'a>(ds: &'a Dataset, view: &str) -> Vec<Vec<&'a Raw>> {
    let mut by_class = vec![Vec::new(); ds.classes.len()];
    for item in ds.items.iter().filter(|i| i.group.as_deref() == Some(view)) {
        by_class[item.label].push(&item.raw);
    }
    by_class
}

fn load(args: &ViewBenchArgs, pkg: &ModelPackage) -> anyhow::Result<(Dataset, Vec<String>)> {
    let mut ds = dataset::load(&args.data, &args.split, &LoadOptions::default())
        .with_context(|| format!("loading split `{}` of {}", args.split, args.data.display()))?;
    if let Some(path) = &args.regions {
        ds.crop_to_regions(&dataset::regions::load(path)?)?;
    }
    let mut views: Vec<String> = ds.items.iter().filter_map(|i| i.group.clone()).collect();
    views.sort();
    views.dedup();
    anyhow::ensure!(
        !views.is_empty(),
        "{} split `{}` has no view folders (`<split>/<view>/<class>/*`)",
        args.data.display(),
        args.split
    );
    let change = args.crop_to_change.as_ref();
    if let Some(reference) = change.or(pkg.manifest.change_reference.as_ref()) {
        // The teaching frames of the reference state (draw 0's) are the reference.
        ds.crop_to_changes(reference, args.shot)?;
    }
    if let Some(only) = &args.views {
        for v in only {
            anyhow::ensure!(views.contains(v), "no view `{v}` in the split");
        }
        views.retain(|v| only.contains(v));
    }
    Ok((ds, views))
}

/// One teaching: the support drawn, the core run, the queries scored.
#[allow(clippy::too_many_arguments)]
fn teach(
    pkg: &ModelPackage,
    sets: &ShippedSets,
    ds: &Dataset,
    view: &str,
    draw: usize,
    args: &ViewBenchArgs,
    settings: &AdaptSettings,
    rng: &mut StdRng,
) -> anyhow::Result<Teaching> {
    let m = &pkg.manifest;
    let pre = &m.preprocess;
    let mut support: Vec<(String, &Raw)> = Vec::new();
    let mut queries: Vec<(String, &Raw)> = Vec::new();
    for (class, mut raws) in ds.classes.iter().zip(view_items(ds, view)) {
        anyhow::ensure!(
            raws.len() > args.shot,
            "view `{view}` has {} frames of `{class}`, needs more than {}",
            raws.len(),
            args.shot
        );
        if draw > 0 {
            raws.shuffle(rng);
        }
        let (s, q) = raws.split_at(args.shot);
        support.extend(s.iter().map(|r| (class.clone(), *r)));
        queries.extend(q.iter().map(|r| (class.clone(), *r)));
    }
    // As the learner: samples of the model's own classes are split into trained and
    // held back (judged paired); new labels are all trained.
    let mut shipped = std::collections::BTreeMap::new();
    let mut support_set: Vec<(String, Raw)> = Vec::new();
    for (i, (label, raw)) in support.iter().enumerate() {
        if m.classes.contains(label) {
            shipped
                .entry(label.clone())
                .or_insert_with(Vec::new)
                .push(i.to_string());
        } else {
            support_set.push((label.clone(), (*raw).clone()));
        }
    }
    let (train_ids, held_ids) = split_holdout(&shipped, settings.holdout_every, settings.min_shots);
    let pick = |ids: &[(String, String)]| -> Vec<(String, Raw)> {
        ids.iter()
            .map(|(l, i)| {
                let i: usize = i.parse().expect("ids are support indices");
                (l.clone(), support[i].1.clone())
            })
            .collect()
    };
    let mut trained = pick(&train_ids);
    trained.extend(support_set);
    let held = pick(&held_ids);
    let overrides = args.recipe.overrides();
    let recipe = Recipe::resolve(
        ModelKind::of(m),
        settings,
        &overrides,
        false,
        args.seed + draw as u64,
    );
    let req = Request {
        live: pkg,
        shipped_classes: &m.classes,
        sets,
        support: &trained,
        held_shipped: &held,
        recipe: &recipe,
        gate: &GateConfig::from_settings(settings),
    };
    let c = core::run(&req, &|| false, &mut |_| {})?;
    let classes = &c.adapted.classes;
    let index = |l: &str| classes.iter().position(|x| x == l).expect("taught label");
    let labelled: Vec<(usize, &Raw)> = queries.iter().map(|(l, r)| (index(l), *r)).collect();
    let among: Vec<usize> = ds.classes.iter().map(|l| index(l)).collect();
    let score = |model: &Classifier| -> anyhow::Result<f64> {
        Ok(accuracy_among(&logits_of(model, pre, &labelled)?, &among))
    };
    let live = Classifier::load(&pkg.onnx_path())?;
    let before = ds
        .classes
        .iter()
        .all(|l| m.classes.contains(l))
        .then(|| score(&live))
        .transpose()?;
    let imprinted = score(&Classifier::from_bytes(&c.adapted.imprinted.onnx)?)?;
    let finetuned = score(&deployed_classifier(&c.adapted.tuned, pre.input_shape())?)?;
    let j = &c.judgement;
    let promoted_as = j.chosen.map(|k| format!("{k:?}").to_lowercase());
    let served = match promoted_as.as_deref() {
        Some("imprinted") => imprinted,
        Some(_) => finetuned,
        None => before.unwrap_or(0.0),
    };
    let verdict = match j.reported().map(|r| &r.verdict) {
        Some(Verdict::Promote) => "promote".to_string(),
        Some(Verdict::Reject(r)) => r.clone(),
        None => "nothing to judge".into(),
    };
    tracing::info!(view, draw, ?before, imprinted, finetuned, served, %verdict, "view taught");
    Ok(Teaching {
        view: view.into(),
        draw,
        before,
        imprinted,
        finetuned,
        served,
        verdict,
        promoted_as,
        queries: labelled.len(),
        adapt_secs: c.adapt_secs,
        gate_secs: c.gate_secs,
    })
}

/// Run the benchmark.
pub fn run(args: &ViewBenchArgs) -> anyhow::Result<ViewBenchReport> {
    let pkg = ModelPackage::load(&args.model)?;
    let (ds, views) = load(args, &pkg)?;
    let mut settings = AdaptSettings::defaults();
    if let Some(b) = args.budget_secs {
        settings.budget_secs = b;
    }
    let sets = ShippedSets::load(&pkg, None)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut teachings = Vec::new();
    for view in &views {
        for draw in 0..args.draws.max(1) {
            teachings.push(teach(
                &pkg, &sets, &ds, view, draw, args, &settings, &mut rng,
            )?);
        }
    }
    Ok(summarise(&pkg.manifest.name, args, views.len(), teachings))
}

fn summarise(
    model: &str,
    args: &ViewBenchArgs,
    views: usize,
    teachings: Vec<Teaching>,
) -> ViewBenchReport {
    let mean = |f: &dyn Fn(&Teaching) -> f64| {
        teachings.iter().map(f).sum::<f64>() / teachings.len().max(1) as f64
    };
    // Each view's mean fine-tuned accuracy over its teachings.
    let mut tuned: Vec<(String, f64)> = Vec::new();
    for t in &teachings {
        match tuned.iter_mut().find(|(v, _)| *v == t.view) {
            Some((_, sum)) => *sum += t.finetuned,
            None => tuned.push((t.view.clone(), t.finetuned)),
        }
    }
    let draws = args.draws.max(1) as f64;
    tuned.iter_mut().for_each(|(_, s)| *s /= draws);
    let tuned_views: Vec<f64> = tuned.iter().map(|v| v.1).collect();
    let worst = tuned
        .into_iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_default();
    ViewBenchReport {
        model: model.into(),
        shot: args.shot,
        draws: args.draws.max(1),
        views,
        before: teachings
            .iter()
            .all(|t| t.before.is_some())
            .then(|| mean(&|t| t.before.unwrap_or(0.0))),
        imprinted: mean(&|t| t.imprinted),
        finetuned: mean(&|t| t.finetuned),
        finetuned_ci95: mean_ci95(&tuned_views).1,
        served: mean(&|t| t.served),
        worst_view_finetuned: worst,
        promoted: teachings.iter().filter(|t| t.promoted_as.is_some()).count(),
        teachings,
    }
}

/// The human-readable report: one row per view, then the means.
pub fn render(r: &ViewBenchReport) -> String {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    let mut out = format!(
        "{}: {} views, {}-shot, {} teaching(s) each\n| view | before | imprinted | fine-tuned | served | gate |\n|---|---|---|---|---|---|\n",
        r.model, r.views, r.shot, r.draws
    );
    for t in &r.teachings {
        out += &format!(
            "| {} #{} | {} | {:.3} | {:.3} | {:.3} | {} |\n",
            t.view,
            t.draw,
            f(t.before),
            t.imprinted,
            t.finetuned,
            t.served,
            t.promoted_as.as_deref().unwrap_or(&t.verdict)
        );
    }
    out += &format!(
        "| **mean** | {} | {:.3} | {:.3} ± {:.3} | {:.3} | {} of {} promoted |\nworst view (fine-tuned): {} {:.3}\n",
        f(r.before),
        r.imprinted,
        r.finetuned,
        r.finetuned_ci95,
        r.served,
        r.promoted,
        r.teachings.len(),
        r.worst_view_finetuned.0,
        r.worst_view_finetuned.1
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_is_taken_among_the_views_states_only() {
        // Class 0 is a class of the model the view was not taught (e.g. a clothing class):
        // it wins the first item's logits but does not count.
        let items = vec![(1, vec![9.0, 2.0, 1.0]), (2, vec![0.0, 3.0, 1.0])];
        assert_eq!(accuracy_among(&items, &[1, 2]), 0.5);
        assert_eq!(accuracy_among(&items, &[0, 1, 2]), 0.0);
        assert_eq!(accuracy_among(&[], &[1]), 0.0);
    }
}
