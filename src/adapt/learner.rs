//! One on-device adaptation of a model, end to end and synchronous (the daemon runs it on
//! its trainer thread; tests call it directly): the live version's training model is
//! imprinted with the new labels (and, unless `imprint_only`, fine-tuned: `adapt::job`) on
//! all samples of new labels; the candidates are judged through tract against the live
//! model ([`judge_candidates`], shared with `fewshot-bench`); a candidate that passes the
//! gate is written as a new version and promoted.
//!
//! *(choice)* What each candidate is judged on:
//! - shipped classes: the package's gate set (validation exemplars, never trained on),
//!   paired, the same images through the live model and the candidate; a package without
//!   a gate set holds back every second replay exemplar instead;
//! - new labels: leave-one-out of the imprinted model on the support set (each sample
//!   classified by the head imprinted from the *other* samples, against the old classes
//!   and the other new labels). No sample is held back from training. The fine-tuned
//!   candidate is judged on the same estimate: held-out predictions of a fine-tune would
//!   need one fine-tune per fold, k times the 50 s budget. Imprinting is the weaker
//!   learner (BENCHMARKS.md: the fine-tune adds about 25 points on digits), so the
//!   estimate is conservative for the fine-tune;
//! - samples of shipped classes the user sent: every `holdout_every`-th is held back,
//!   paired, live vs candidate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context;

use super::gate::{
    Candidate, Evidence, GateConfig, GateMetrics, OldItem, Verdict, judge, split_holdout, unit,
};
use super::job::{AdaptConfig, Adapted, Replay, Snapshot, adapt};
use super::stats::wilson;
use crate::features::{Preprocess, Raw};
use crate::inference::{Classifier, argmax};
use crate::lsskd;
pub use crate::registry::card::AdaptationInfo;
use crate::registry::package::{MODEL_ONNX, REPLAY_DIR, TRAIN_STATE};
use crate::registry::versions::Versions;
use crate::registry::{ModelPackage, replay};
use crate::samples::SampleStore;
use crate::settings::AdaptSettings;

/// Exemplars of each new class added to the new version's replay set.
pub const NEW_CLASS_REPLAY: usize = 5;

/// How new-class accuracy is estimated (recorded in the gate metrics).
pub const NEW_METHOD: &str = "leave-one-out of the imprinted model on the samples";

/// How the fine-tune's new-class estimate is obtained when it is its own.
pub const FINETUNE_CV_METHOD: &str =
    "cross-validation of the fine-tune: each fold's fine-tune predicts the samples it did not see";

/// Folds of [`finetune_cv`].
pub const CV_FOLDS: usize = 3;

/// Held-out predictions of the fine-tune: the new labels' samples are split into `folds`
/// (every `folds`-th sample of each label, oldest first; a label keeps at least one sample
/// to train on), and for each fold the live model is imprinted and fine-tuned on the
/// other samples (samples of shipped classes and the replay all train) with `cfg`'s
/// recipe shortened to `2/folds` of its epochs and a fifth of its budget, then predicts
/// the fold's samples through tract. Returns `(true label, predicted label)` per held-out sample.
#[allow(clippy::too_many_arguments)]
pub fn finetune_cv(
    pkg: &ModelPackage,
    device: &lsskd::Device,
    support: &[(String, Raw)],
    replay: &Replay<'_>,
    new_labels: &BTreeSet<String>,
    cfg: &AdaptConfig,
    folds: usize,
    cancel: &dyn Fn() -> bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let folds = folds.max(2);
    // Fold of each support sample (None: always trains).
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let count = |l: &str| support.iter().filter(|(x, _)| x == l).count();
    let fold_of: Vec<Option<usize>> = support
        .iter()
        .map(|(l, _)| {
            if !new_labels.contains(l) || count(l) < 2 {
                return None;
            }
            let i = seen.entry(l.as_str()).or_default();
            let f = *i % folds;
            *i += 1;
            Some(f)
        })
        .collect();
    let fold_cfg = AdaptConfig {
        // Two `folds`-ths of the epochs: at one, the folds of the image recipe (strong
        // augmentation) were still underfitted and judged good fine-tunes below the
        // imprint (BENCHMARKS.md "Few-shot vision: the sample augmentation and the
        // fine-tune's method").
        epochs: (2 * cfg.epochs).div_ceil(folds).max(1),
        // A fifth of the budget each: the three folds together cost about 60 % of the
        // fine-tune they judge.
        budget_secs: cfg.budget_secs.map(|b| (b / 5).max(1)),
        ..cfg.clone()
    };
    let m = &pkg.manifest;
    let pre = &m.preprocess;
    let shape = pre.input_shape();
    let mut out = Vec::new();
    for f in 0..folds {
        let held: Vec<&(String, Raw)> = support
            .iter()
            .zip(&fold_of)
            .filter(|(_, k)| **k == Some(f))
            .map(|(s, _)| s)
            .collect();
        if held.is_empty() {
            continue;
        }
        let train: Vec<(String, Raw)> = support
            .iter()
            .zip(&fold_of)
            .filter(|(_, k)| **k != Some(f))
            .map(|(s, _)| s.clone())
            .collect();
        let t0 = std::time::Instant::now();
        let adapted = adapt(
            pkg.load_train_net(device)?,
            &m.classes,
            pre,
            m.train_state.transforms,
            &train,
            replay,
            &AdaptConfig {
                seed: cfg.seed.wrapping_add(1 + f as u64),
                ..fold_cfg.clone()
            },
            cancel,
            &mut |_| {},
        )?;
        let t1 = std::time::Instant::now();
        let model = Classifier::from_bytes(&Snapshot::of(&adapted.tuned, shape)?.onnx)?;
        let raws: Vec<&Raw> = held.iter().map(|(_, r)| r).collect();
        let predicted = predict(&model, &adapted.classes, pre, &raws)?;
        tracing::debug!(
            fold = f,
            steps = adapted.steps,
            adapt_secs = (t1 - t0).as_secs_f64(),
            predict_secs = t1.elapsed().as_secs_f64(),
            "fine-tune cross-validation fold"
        );
        out.extend(held.iter().map(|(l, _)| l.clone()).zip(predicted));
    }
    Ok(out)
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub enum Outcome {
    Promoted {
        package: Box<ModelPackage>,
        info: AdaptationInfo,
    },
    Rejected {
        reason: String,
        info: AdaptationInfo,
    },
    /// Nothing to learn from (no usable samples).
    Skipped(String),
}

/// Progress of a run, for `training/state`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Preparing,
    Training(f64),
    Gating,
}

/// Top-1 accuracy of a deployed model on labelled inputs (0 when there are none).
pub fn accuracy(
    model: &Classifier,
    pre: &Preprocess,
    items: &[(usize, &Raw)],
) -> anyhow::Result<f64> {
    let mut right = 0usize;
    for (label, raw) in items {
        let out = model.classify(&pre.tensor(raw)?)?;
        right += usize::from(argmax(&out.logits) == *label);
    }
    Ok(right as f64 / items.len().max(1) as f64)
}

/// Predicted class names of a deployed model whose classes are `classes`.
pub fn predict(
    model: &Classifier,
    classes: &[String],
    pre: &Preprocess,
    items: &[&Raw],
) -> anyhow::Result<Vec<String>> {
    Ok(predict_and_embed(model, classes, pre, items)?
        .into_iter()
        .map(|(label, _)| label)
        .collect())
}

/// Predicted class name and embedding of each item, from one pass of the model.
fn predict_and_embed(
    model: &Classifier,
    classes: &[String],
    pre: &Preprocess,
    items: &[&Raw],
) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    items
        .iter()
        .map(|raw| {
            let out = model.classify(&pre.tensor(raw)?)?;
            let label = classes
                .get(argmax(&out.logits))
                .cloned()
                .unwrap_or_default();
            Ok((label, out.embedding))
        })
        .collect()
}

/// Labelled inputs by class index.
type Items = Vec<(usize, Raw)>;

/// Split replay exemplars per class: every second one is held back for the gate.
fn split_replay(items: Items) -> (Items, Items) {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (label, raw) in items {
        let n = seen.entry(label).or_default();
        if *n % 2 == 1 {
            held.push((label, raw));
        } else {
            train.push((label, raw));
        }
        *n += 1;
    }
    (train, held)
}

/// Leave-one-out predictions of imprinting, for the samples of `cv_labels`: each sample is
/// classified by the live model's rows for the other classes and, for every label of
/// `cv_labels`, by a row imprinted from that label's *other* samples exactly as
/// `lsskd::imprint` does (normalised mean of normalised embeddings minus the reference's
/// mean, normalised; cosine × `scale`). The live model's own rows for those labels (from an
/// earlier imprint) are replaced. Returns `(true label, predicted label)` per sample.
#[allow(clippy::too_many_arguments)]
pub fn imprint_loo(
    live: &Classifier,
    classes: &[String],
    pre: &Preprocess,
    scale: f32,
    reference: &[&Raw],
    support: &[(String, &Raw)],
    cv_labels: &BTreeSet<String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut centre: Option<Vec<f32>> = None;
    for raw in reference {
        let e = unit(&live.classify(&pre.tensor(raw)?)?.embedding);
        match &mut centre {
            None => centre = Some(e),
            Some(c) => c.iter_mut().zip(&e).for_each(|(a, b)| *a += b),
        }
    }
    if let Some(c) = &mut centre {
        c.iter_mut().for_each(|v| *v /= reference.len() as f32);
    }
    let mut outs = Vec::new();
    for (label, raw) in support.iter().filter(|(l, _)| cv_labels.contains(l)) {
        let out = live.classify(&pre.tensor(raw)?)?;
        outs.push((label.as_str(), out.logits, unit(&out.embedding)));
    }
    let labels: Vec<&String> = cv_labels.iter().collect();
    let dim = outs.first().map_or(0, |o| o.2.len());
    // Sum of normalised embeddings and count per label.
    let mut sums: BTreeMap<&str, (Vec<f32>, usize)> = BTreeMap::new();
    for (l, _, e) in &outs {
        let s = sums.entry(*l).or_insert_with(|| (vec![0.0; dim], 0));
        s.0.iter_mut().zip(e).for_each(|(a, b)| *a += b);
        s.1 += 1;
    }
    let mut preds = Vec::new();
    for (label, logits, e) in &outs {
        let mut best = (String::new(), f32::NEG_INFINITY);
        for (i, c) in classes.iter().enumerate() {
            if !cv_labels.contains(c) && logits[i] > best.1 {
                best = (c.clone(), logits[i]);
            }
        }
        for l in &labels {
            let Some((sum, n)) = sums.get(l.as_str()) else {
                continue;
            };
            let own = l.as_str() == *label;
            let n = n - usize::from(own);
            if n == 0 {
                continue;
            }
            let mut p: Vec<f32> = sum
                .iter()
                .zip(e)
                .map(|(s, x)| (s - if own { *x } else { 0.0 }) / n as f32)
                .collect();
            if let Some(c) = &centre {
                p.iter_mut().zip(c).for_each(|(a, b)| *a -= b);
            }
            let p = unit(&p);
            let logit = scale * p.iter().zip(e).map(|(a, b)| a * b).sum::<f32>();
            if logit > best.1 {
                best = ((*l).clone(), logit);
            }
        }
        preds.push((label.to_string(), best.0));
    }
    Ok(preds)
}

/// Runs [`finetune_cv`] for the candidates' judge: `(true label, predicted label)` pairs.
pub type FoldRunner<'a> = dyn Fn() -> anyhow::Result<Vec<(String, String)>> + 'a;

/// What the candidates are judged on (see the module documentation).
pub struct GateData<'a> {
    /// Shipped-class images, by class name.
    pub old: Vec<(String, &'a Raw)>,
    /// `gate` or `replay`.
    pub old_set: String,
    /// Reference exemplars of imprinting (the replay the adaptation used).
    pub reference: Vec<&'a Raw>,
    /// The support set (every sample trained on).
    pub support: Vec<(String, &'a Raw)>,
    /// Labels judged as new (learnt on the device): leave-one-out over their samples.
    pub new_labels: BTreeSet<String>,
    /// Held-back samples of shipped classes, by class name.
    pub held_known: Vec<(String, &'a Raw)>,
    /// Held-out predictions of the fine-tune by cross-validation ([`finetune_cv`]), run
    /// only when the imprint's leave-one-out leaves the fine-tune's verdict open.
    pub finetune_cv: Option<&'a FoldRunner<'a>>,
}

/// One judged candidate.
pub struct Judged {
    pub candidate: Candidate,
    pub snapshot: Snapshot,
    pub gate: GateMetrics,
    pub verdict: Verdict,
}

/// Both candidates judged, and the one to promote.
pub struct Judgement {
    /// The imprinted candidate, when it adds a label.
    pub imprinted: Option<Judged>,
    pub finetuned: Option<Judged>,
    /// The candidate to promote: the fine-tuned one when it passes (it is what the
    /// fine-tune is for: on digits it adds about 25 points to imprinting, and it gives
    /// back shipped classes that imprinting takes), else the imprinted one when it passes.
    pub chosen: Option<Candidate>,
    /// Per new label, the shipped class it looks most like (the rename check's evidence).
    pub lookalikes: Vec<crate::adapt::gate::Lookalike>,
}

impl Judgement {
    pub fn get(&self, c: Candidate) -> Option<&Judged> {
        match c {
            Candidate::Imprinted => self.imprinted.as_ref(),
            Candidate::Finetuned => self.finetuned.as_ref(),
        }
    }

    /// The chosen candidate, or the one whose rejection explains the outcome best (the
    /// fine-tune's, when there is one).
    pub fn reported(&self) -> Option<&Judged> {
        self.chosen
            .and_then(|c| self.get(c))
            .or(self.finetuned.as_ref())
            .or(self.imprinted.as_ref())
    }
}

/// Judge the imprinted and (unless `imprint_only`) the fine-tuned candidate of `adapted`
/// against the live model. The daemon's learner and `fewshot-bench` both call this.
#[allow(clippy::too_many_arguments)]
pub fn judge_candidates(
    cfg: &GateConfig,
    live: &Classifier,
    live_classes: &[String],
    pre: &Preprocess,
    cosine_scale: f32,
    adapted: &Adapted,
    imprint_only: bool,
    data: &GateData<'_>,
) -> anyhow::Result<Judgement> {
    let shape = pre.input_shape();
    let old_raw: Vec<&Raw> = data.old.iter().map(|(_, r)| *r).collect();
    // One pass of the live model over the gate set: its predictions (the "before") and
    // embeddings (the rename check).
    let (old_before, old_embedded): (Vec<String>, Vec<Vec<f32>>) =
        predict_and_embed(live, live_classes, pre, &old_raw)?
            .into_iter()
            .unzip();
    let known_raw: Vec<&Raw> = data.held_known.iter().map(|(_, r)| *r).collect();
    let known_before = predict(live, live_classes, pre, &known_raw)?;
    // The rename check: the gate set's and the new labels' samples, embedded by the live
    // model, each with its class.
    let old_embedded: Vec<(String, Vec<f32>)> = data
        .old
        .iter()
        .map(|(c, _)| c.clone())
        .zip(old_embedded)
        .collect();
    let new_embedded = data
        .support
        .iter()
        .filter(|(l, _)| data.new_labels.contains(l))
        .map(|(l, raw)| Ok((l.clone(), live.classify(&pre.tensor(raw)?)?.embedding)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lookalikes = super::gate::lookalikes(&old_embedded, &new_embedded);
    let new = imprint_loo(
        live,
        live_classes,
        pre,
        cosine_scale,
        &data.reference,
        &data.support,
        &data.new_labels,
    )?;
    // The fine-tune's own held-out estimate, when the imprint's cannot decide: the
    // imprint's is pessimistic for the fine-tune (which adds about 25 points on digits),
    // so a point value at or above `min_new_accuracy` passes it and an upper bound below
    // fails it; in between, `folds` fine-tunes each predict the samples they did not see.
    let finetune_new = match data.finetune_cv {
        Some(cv) if !imprint_only && !new.is_empty() => {
            let right = new.iter().filter(|(t, p)| t == p).count();
            let b = wilson(right, new.len(), cfg.confidence);
            if b.estimate < cfg.min_new_accuracy && b.upper >= cfg.min_new_accuracy {
                Some(cv()?)
            } else {
                None
            }
        }
        _ => None,
    };
    let judge_one = |snapshot: Snapshot, candidate: Candidate| -> anyhow::Result<Judged> {
        let model = Classifier::from_bytes(&snapshot.onnx)?;
        let (new, new_method) = match (candidate, &finetune_new) {
            (Candidate::Finetuned, Some(cv)) if !cv.is_empty() => (cv.clone(), FINETUNE_CV_METHOD),
            _ => (new.clone(), NEW_METHOD),
        };
        let old_after = predict(&model, &adapted.classes, pre, &old_raw)?;
        let known_after = predict(&model, &adapted.classes, pre, &known_raw)?;
        let ev = Evidence {
            old: data
                .old
                .iter()
                .zip(old_before.iter().zip(old_after))
                .map(|((class, _), (before, after))| OldItem {
                    class: class.clone(),
                    before: before.clone(),
                    after,
                })
                .collect(),
            old_set: data.old_set.clone(),
            new,
            new_method: new_method.into(),
            labelled: data
                .held_known
                .iter()
                .zip(known_before.iter().zip(known_after))
                .map(|((l, _), (b, a))| (b == l, &a == l))
                .collect(),
            lookalikes: lookalikes.clone(),
        };
        let (gate, verdict) = judge(cfg, &ev, candidate);
        Ok(Judged {
            candidate,
            snapshot,
            gate,
            verdict,
        })
    };
    let imprinted = if adapted.new_classes.is_empty() {
        None
    } else {
        Some(judge_one(adapted.imprinted.clone(), Candidate::Imprinted)?)
    };
    let finetuned = if imprint_only {
        None
    } else {
        Some(judge_one(
            Snapshot::of(&adapted.tuned, shape)?,
            Candidate::Finetuned,
        )?)
    };
    let passes = |j: &Option<Judged>| j.as_ref().is_some_and(|j| j.verdict == Verdict::Promote);
    let chosen = if passes(&finetuned) {
        Some(Candidate::Finetuned)
    } else if passes(&imprinted) {
        Some(Candidate::Imprinted)
    } else {
        None
    };
    Ok(Judgement {
        imprinted,
        finetuned,
        chosen,
        lookalikes,
    })
}

/// The shipped classes' images for the gate: the gate set of `pkg` or, when it has none,
/// of the shipped package (versions made on the device do not copy it); `None` when
/// neither has one.
fn gate_set(pkg: &ModelPackage, shipped: Option<&ModelPackage>) -> anyhow::Result<Option<Items>> {
    for p in std::iter::once(pkg).chain(shipped) {
        if p.has_gate_set() {
            let items =
                replay::load_gate(&p.dir, &p.manifest.classes).map_err(anyhow::Error::msg)?;
            // Class indices of `p` are those of `pkg` (classes are only ever appended).
            return Ok(Some(items));
        }
    }
    Ok(None)
}

/// Adapt the live version of `versions` to the samples in `store`.
pub fn run(
    versions: &Versions,
    store: &SampleStore,
    cfg: &AdaptSettings,
    imprint_only: bool,
    seed: u64,
    cancel: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Phase),
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    progress(Phase::Preparing);
    let current = versions.open_current()?;
    let pkg = &current.package;
    let m = &pkg.manifest;
    let pre = &m.preprocess;

    // "New" classes are those learnt on the device (not in the shipped package), whether
    // this run adds them or an earlier imprint did.
    let shipped_pkg = if current.version == 0 {
        None
    } else {
        ModelPackage::load(&versions.path_of(0)).ok()
    };
    let shipped_classes = shipped_pkg
        .as_ref()
        .map(|p| p.manifest.classes.clone())
        .unwrap_or_else(|| m.classes.clone());

    // Samples: labels with enough shots (new labels need `min_shots`), oldest first.
    let metas = store.list()?;
    let mut by_label: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for meta in &metas {
        by_label
            .entry(meta.label.clone())
            .or_default()
            .push(meta.id.clone());
    }
    let samples_per_class: BTreeMap<String, usize> = by_label
        .iter()
        .map(|(l, ids)| (l.clone(), ids.len()))
        .collect();
    by_label.retain(|label, ids| m.classes.contains(label) || ids.len() >= cfg.min_shots);
    if by_label.is_empty() {
        return Ok(Outcome::Skipped(format!(
            "no label has {} samples yet",
            cfg.min_shots
        )));
    }
    if imprint_only && by_label.keys().all(|l| m.classes.contains(l)) {
        return Ok(Outcome::Skipped("no new label to imprint".into()));
    }
    // Samples of new labels all train (they are judged by leave-one-out); samples of
    // shipped classes are split, every `holdout_every`-th held back.
    let (known, new_by_label): (BTreeMap<_, _>, BTreeMap<_, _>) = by_label
        .into_iter()
        .partition(|(l, _)| shipped_classes.contains(l));
    let (mut train_ids, held_ids) = split_holdout(&known, cfg.holdout_every, cfg.min_shots);
    for (label, ids) in &new_by_label {
        train_ids.extend(ids.iter().map(|id| (label.clone(), id.clone())));
    }
    let by_id: BTreeMap<&str, _> = metas.iter().map(|m| (m.id.as_str(), m)).collect();
    let load = |pairs: &[(String, String)]| -> anyhow::Result<Vec<(String, Raw)>> {
        let mut out = Vec::new();
        for (label, id) in pairs {
            match store.load(by_id[id.as_str()]) {
                Ok(raw) => out.push((label.clone(), raw)),
                Err(e) => tracing::warn!(error = %e, "stored sample unusable; skipped"),
            }
        }
        Ok(out)
    };
    let support = load(&train_ids)?;
    let held = load(&held_ids)?;
    anyhow::ensure!(!support.is_empty(), "no readable training samples");
    let replay_all = replay::load(&pkg.dir, &m.classes).map_err(anyhow::Error::msg)?;
    // The gate set judges the shipped classes; without one, every second replay exemplar
    // is held back for it.
    let (replay_train, old_items, old_set) = match gate_set(pkg, shipped_pkg.as_ref())? {
        Some(gate) => (replay_all, gate, "gate"),
        None => {
            let (train, held) = split_replay(replay_all);
            (train, held, "replay")
        }
    };

    // Imprint (+ fine-tune).
    let device = lsskd::training_device(seed);
    let set = m.train_state.transforms;
    let net = pkg.load_train_net(&device)?;
    let recipe = AdaptConfig::for_modality(pre.modality());
    let acfg = AdaptConfig {
        epochs: if imprint_only {
            0
        } else {
            cfg.epochs.unwrap_or(recipe.epochs)
        },
        budget_secs: Some(cfg.budget_secs),
        seed,
        ..recipe
    };
    // The gate set's items of shipped classes: what the gate judges them on, and what
    // calibrates the new labels' offset where the recipe asks for it.
    let shipped_old: Vec<(usize, &Raw)> = old_items
        .iter()
        .filter(|(l, _)| shipped_classes.contains(&m.classes[*l]))
        .map(|(l, r)| (*l, r))
        .collect();
    let mut replay = Replay::new(&net, pre, set, &replay_train)?;
    if acfg.calibrates() {
        replay = replay.calibrate_on(pre, &shipped_old)?;
    }
    progress(Phase::Training(0.0));
    let adapted = adapt(
        net,
        &m.classes,
        pre,
        set,
        &support,
        &replay,
        &acfg,
        cancel,
        &mut |f| progress(Phase::Training(f)),
    )?;
    progress(Phase::Gating);

    let live = Classifier::load(&pkg.onnx_path())?;
    let new_labels: BTreeSet<String> = new_by_label.keys().cloned().collect();
    let cv = || {
        finetune_cv(
            pkg,
            &device,
            &support,
            &replay,
            &new_labels,
            &acfg,
            CV_FOLDS,
            cancel,
        )
    };
    let data = GateData {
        old: shipped_old
            .iter()
            .map(|(l, r)| (m.classes[*l].clone(), *r))
            .collect(),
        old_set: old_set.into(),
        reference: replay_train.iter().map(|(_, r)| r).collect(),
        support: support.iter().map(|(l, r)| (l.clone(), r)).collect(),
        new_labels: new_by_label.keys().cloned().collect(),
        held_known: held.iter().map(|(l, r)| (l.clone(), r)).collect(),
        finetune_cv: Some(&cv),
    };
    let judgement = judge_candidates(
        &GateConfig::from_settings(cfg),
        &live,
        &m.classes,
        pre,
        m.arch.cosine_scale,
        &adapted,
        imprint_only,
        &data,
    )?;
    let reported = judgement
        .reported()
        .context("no candidate to judge (nothing new to learn)")?;
    let info = AdaptationInfo {
        kind: if imprint_only { "imprint" } else { "finetune" }.into(),
        chosen: match reported.candidate {
            Candidate::Imprinted => "imprinted",
            Candidate::Finetuned => "finetuned",
        }
        .into(),
        new_classes: adapted.new_classes.clone(),
        samples_per_class,
        held_back: held.len(),
        gate: reported.gate.clone(),
        seconds: started.elapsed().as_secs_f64(),
        finetune_rejected: match (&judgement.chosen, &judgement.finetuned) {
            (Some(Candidate::Imprinted), Some(f)) => match &f.verdict {
                Verdict::Reject(r) => Some(r.clone()),
                Verdict::Promote => None,
            },
            _ => None,
        },
    };
    if judgement.chosen.is_none() {
        let reason = match &reported.verdict {
            Verdict::Reject(r) => r.clone(),
            Verdict::Promote => unreachable!("a passing candidate is chosen"),
        };
        return Ok(Outcome::Rejected { reason, info });
    }
    if cancel() {
        anyhow::bail!("adaptation cancelled");
    }
    let snapshot = reported.snapshot.clone();

    // Write the new version: model, training state, replay (parent's + new classes').
    let mut files = vec![
        (MODEL_ONNX.to_string(), snapshot.onnx),
        (TRAIN_STATE.to_string(), snapshot.train_state),
    ];
    for rel in m
        .files
        .keys()
        .filter(|k| k.starts_with(&format!("{REPLAY_DIR}/")))
    {
        let path = pkg.dir.join(rel);
        files.push((
            rel.clone(),
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        ));
    }
    for class in &adapted.new_classes {
        for (i, (_, raw)) in support
            .iter()
            .filter(|(l, _)| l == class)
            .take(NEW_CLASS_REPLAY)
            .enumerate()
        {
            let (bytes, ext) = replay::encode(raw).map_err(anyhow::Error::msg)?;
            files.push((format!("{REPLAY_DIR}/{class}/{i:03}.{ext}"), bytes));
        }
    }
    let mut manifest = m.clone();
    manifest.classes = adapted.classes.clone();
    manifest.created_at = crate::registry::package::now_rfc3339();
    manifest.deployed.param_count = snapshot.param_count;
    manifest.train_state.logit_offset = snapshot.logit_offset.clone();
    manifest.training_seconds = info.seconds;
    manifest.adaptation = Some(info.clone());
    let staged = versions.stage(manifest, current.version, files)?;
    let package = versions.promote(staged.manifest.version)?;
    Ok(Outcome::Promoted {
        package: Box::new(package),
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Clip;

    fn clip(v: f32) -> Raw {
        Raw::Audio(Clip {
            samples: vec![v],
            sample_rate_hz: 16_000,
        })
    }

    #[test]
    fn replay_is_split_per_class_alternately() {
        let items = vec![
            (0, clip(0.0)),
            (0, clip(1.0)),
            (1, clip(2.0)),
            (0, clip(3.0)),
            (1, clip(4.0)),
        ];
        let (train, held) = split_replay(items);
        let labels = |v: &[(usize, Raw)]| v.iter().map(|(l, _)| *l).collect::<Vec<_>>();
        assert_eq!(labels(&train), vec![0, 1, 0]);
        assert_eq!(labels(&held), vec![0, 1]);
    }
}
