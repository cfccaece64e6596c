//! The candidates of an adaptation judged against the live model: the evidence the gate
//! needs (the live model and each candidate over the gate set, leave-one-out of the
//! imprint on the samples, the fine-tune's cross-validation when that leaves its verdict
//! open, held-back samples of shipped classes), the gate's verdict on each candidate, and
//! the one to promote. Called by the adaptation core (`adapt::core`).
//!
//! *(choice)* What each candidate is judged on:
//! - shipped classes: the package's gate set (validation exemplars, never trained on),
//!   paired, the same images through the live model and the candidate; a package without
//!   a gate set holds back every second replay exemplar instead;
//! - new labels: leave-one-out of the imprinted model on the support set (each sample
//!   classified by the head imprinted from the *other* samples, against the shipped
//!   classes and the other new labels). No sample is held back from training. The imprint
//!   is the weaker learner (BENCHMARKS.md: the fine-tune adds about 25 points on digits),
//!   so the estimate is pessimistic for the fine-tune: it decides the fine-tune only when
//!   it is clear, and in between the fine-tune is cross-validated ([`finetune_cv`]);
//! - samples of shipped classes the user sent: every `holdout_every`-th is held back,
//!   paired, live vs candidate.

use std::collections::{BTreeMap, BTreeSet};

use super::gate::{
    Candidate, Evidence, GateConfig, GateMetrics, ShippedItem, Verdict, judge, unit,
};
use super::job::{Adapted, AnchoredReplay, Snapshot, adapt};
use super::recipe::Recipe;
use super::stats::wilson;
use crate::features::{Preprocess, Raw};
use crate::inference::{Classifier, argmax};
use crate::lsskd;
use crate::registry::ModelPackage;

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
/// other samples (samples of shipped classes and the replay all train) with the recipe
/// shortened to a quarter of its epochs, then predicts
/// the fold's samples through tract. Returns `(true label, predicted label)` per held-out sample.
#[allow(clippy::too_many_arguments)]
pub fn finetune_cv(
    pkg: &ModelPackage,
    device: &lsskd::Device,
    support: &[(String, Raw)],
    replay: &AnchoredReplay<'_>,
    new_labels: &BTreeSet<String>,
    recipe: &Recipe,
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
    let fold_recipe = Recipe {
        // A quarter of the recipe's epochs each (4 of vision's 15, 8 of audio's 30): the
        // three folds together cost about 80 % of the fine-tune they judge. What the
        // folds were measured with before recipes ran in steps: two `folds`-ths of the
        // epochs compressed into a fifth of the 10 s budget, about 4 of 15 vision epochs
        // and 6 of 30 audio ones on the 2-core reference machine; at one epoch the folds
        // of the image recipe were still underfitted and judged good fine-tunes below the
        // imprint (BENCHMARKS.md "Few-shot vision: the sample augmentation and the
        // fine-tune's method").
        epochs: recipe.epochs.div_ceil(4).max(1),
        ..recipe.clone()
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
            &Recipe {
                seed: recipe.seed.wrapping_add(1 + f as u64),
                ..fold_recipe.clone()
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
    pub shipped: Vec<(String, &'a Raw)>,
    /// `gate` or `replay`.
    pub shipped_source: String,
    /// The live model serves one view ([`super::gate::Evidence::per_view`]).
    pub per_view: bool,
    /// Reference exemplars of imprinting (the replay the adaptation used).
    pub reference: Vec<&'a Raw>,
    /// The support set (every sample trained on).
    pub support: Vec<(String, &'a Raw)>,
    /// Labels judged as new (learnt on the device): leave-one-out over their samples.
    pub new_labels: BTreeSet<String>,
    /// Held-back samples of shipped classes, by class name.
    pub held_shipped: Vec<(String, &'a Raw)>,
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

/// What the live model makes of the evidence, once for both candidates.
struct LiveView {
    /// Its prediction of each gate-set image (the "before").
    old_before: Vec<String>,
    /// Its prediction of each held-back sample of a shipped class.
    held_before: Vec<String>,
    /// Per new label, the shipped class it looks most like.
    lookalikes: Vec<crate::adapt::gate::Lookalike>,
}

/// One pass of the live model over the gate set (its predictions and embeddings), the
/// held-back samples and the new labels' samples (the rename check's embeddings).
fn live_view(
    live: &Classifier,
    live_classes: &[String],
    pre: &Preprocess,
    data: &GateData<'_>,
) -> anyhow::Result<LiveView> {
    let old_raw: Vec<&Raw> = data.shipped.iter().map(|(_, r)| *r).collect();
    let (old_before, old_embedded): (Vec<String>, Vec<Vec<f32>>) =
        predict_and_embed(live, live_classes, pre, &old_raw)?
            .into_iter()
            .unzip();
    let held_raw: Vec<&Raw> = data.held_shipped.iter().map(|(_, r)| *r).collect();
    let held_before = predict(live, live_classes, pre, &held_raw)?;
    let old_embedded: Vec<(String, Vec<f32>)> = data
        .shipped
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
    Ok(LiveView {
        old_before,
        held_before,
        lookalikes: super::gate::lookalikes(&old_embedded, &new_embedded),
    })
}

/// The fine-tune's own held-out estimate, when the imprint's leave-one-out `loo` cannot
/// decide: it is pessimistic for the fine-tune (which adds about 25 points on digits), so
/// a point value at or above `min_new_accuracy` passes it and an upper bound below fails
/// it; in between, the folds of [`finetune_cv`] each predict the samples they did not see.
fn finetune_estimate(
    cfg: &GateConfig,
    loo: &[(String, String)],
    data: &GateData<'_>,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let Some(cv) = data.finetune_cv else {
        return Ok(None);
    };
    if loo.is_empty() {
        return Ok(None);
    }
    let right = loo.iter().filter(|(t, p)| t == p).count();
    let b = wilson(right, loo.len(), cfg.confidence);
    if b.estimate < cfg.min_new_accuracy && b.upper >= cfg.min_new_accuracy {
        Ok(Some(cv()?))
    } else {
        Ok(None)
    }
}

/// The gate's verdict on one candidate, from its predictions and the shared evidence.
#[allow(clippy::too_many_arguments)]
fn judge_one(
    cfg: &GateConfig,
    pre: &Preprocess,
    adapted: &Adapted,
    data: &GateData<'_>,
    view: &LiveView,
    new: Vec<(String, String)>,
    new_method: &str,
    snapshot: Snapshot,
    candidate: Candidate,
) -> anyhow::Result<Judged> {
    let model = Classifier::from_bytes(&snapshot.onnx)?;
    let old_raw: Vec<&Raw> = data.shipped.iter().map(|(_, r)| *r).collect();
    let held_raw: Vec<&Raw> = data.held_shipped.iter().map(|(_, r)| *r).collect();
    let old_after = predict(&model, &adapted.classes, pre, &old_raw)?;
    let held_after = predict(&model, &adapted.classes, pre, &held_raw)?;
    let ev = Evidence {
        shipped: data
            .shipped
            .iter()
            .zip(view.old_before.iter().zip(old_after))
            .map(|((class, _), (before, after))| ShippedItem {
                class: class.clone(),
                before: before.clone(),
                after,
            })
            .collect(),
        shipped_source: data.shipped_source.clone(),
        new,
        new_method: new_method.into(),
        labelled: data
            .held_shipped
            .iter()
            .zip(view.held_before.iter().zip(held_after))
            .map(|((l, _), (b, a))| (b == l, &a == l))
            .collect(),
        lookalikes: view.lookalikes.clone(),
        per_view: data.per_view,
    };
    let (gate, verdict) = judge(cfg, &ev, candidate);
    Ok(Judged {
        candidate,
        snapshot,
        gate,
        verdict,
    })
}

/// Judge the imprinted candidate (when it adds a label) and, when the adaptation
/// fine-tuned (`adapted.steps > 0` or a fine-tuning recipe), the fine-tuned one against the
/// live model; choose the fine-tuned one when it passes, else the imprinted one.
#[allow(clippy::too_many_arguments)]
pub fn judge_candidates(
    cfg: &GateConfig,
    live: &Classifier,
    live_classes: &[String],
    pre: &Preprocess,
    cosine_scale: f32,
    adapted: &Adapted,
    fine_tuned: bool,
    data: &GateData<'_>,
) -> anyhow::Result<Judgement> {
    let view = live_view(live, live_classes, pre, data)?;
    let loo = imprint_loo(
        live,
        live_classes,
        pre,
        cosine_scale,
        &data.reference,
        &data.support,
        &data.new_labels,
    )?;
    let finetune_new = match fine_tuned {
        true => finetune_estimate(cfg, &loo, data)?,
        false => None,
    };
    let one = |snapshot, candidate, new, method: &str| {
        judge_one(
            cfg, pre, adapted, data, &view, new, method, snapshot, candidate,
        )
    };
    let imprinted = match adapted.new_classes.is_empty() {
        true => None,
        false => Some(one(
            adapted.imprinted.clone(),
            Candidate::Imprinted,
            loo.clone(),
            NEW_METHOD,
        )?),
    };
    let finetuned = match fine_tuned {
        false => None,
        true => {
            let (new, method) = match finetune_new {
                Some(cv) if !cv.is_empty() => (cv, FINETUNE_CV_METHOD),
                _ => (loo, NEW_METHOD),
            };
            let snapshot = Snapshot::of(&adapted.tuned, pre.input_shape())?;
            Some(one(snapshot, Candidate::Finetuned, new, method)?)
        }
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
        lookalikes: view.lookalikes,
    })
}
