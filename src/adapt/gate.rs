//! Pure decisions of on-device adaptation: which samples are held back for the gate,
//! when to fine-tune, and whether a candidate is promoted (on evidence: bounds at a
//! configured confidence, see [`judge`] and [`super::stats`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::{Bounds, Paired, wilson};
pub use crate::registry::card::{
    ClassChange, Confusion, GateMetrics, LabelEstimate, ShippedClasses,
};

/// Promotion thresholds and the confidence they are judged at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// New classes: the accuracy they must reach (estimated on samples the candidate did
    /// not learn them from).
    pub min_new_accuracy: f64,
    /// Shipped classes: the largest accuracy drop (candidate vs live model, same images)
    /// that is acceptable.
    pub max_old_drop: f64,
    /// Any one shipped class: the largest accuracy drop acceptable when most of its lost
    /// images go to one new label (a shipped class sent under a new name).
    #[serde(default = "default_max_class_drop")]
    pub max_class_drop: f64,
    /// Confidence of the one-sided bounds the thresholds are judged with (0.5..1).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// A new label at least this typical of a shipped class ([`Lookalike::typicality`]) is
    /// that class under a new name; 1 turns the check off.
    #[serde(default = "default_rename_typicality")]
    pub rename_typicality: f64,
}

/// `[adapt] rename_typicality` when it is not set.
pub const DEFAULT_RENAME_TYPICALITY: f64 = 0.3;

fn default_rename_typicality() -> f64 {
    DEFAULT_RENAME_TYPICALITY
}

/// `[adapt] confidence` when it is not set.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}

/// `[adapt] max_class_drop` when it is not set.
pub const DEFAULT_MAX_CLASS_DROP: f64 = 0.05;

fn default_max_class_drop() -> f64 {
    DEFAULT_MAX_CLASS_DROP
}

impl GateConfig {
    /// The thresholds of `[adapt]`.
    pub fn from_settings(s: &crate::settings::AdaptSettings) -> Self {
        Self {
            min_new_accuracy: s.min_new_accuracy,
            max_old_drop: s.max_old_drop,
            max_class_drop: s.max_class_drop,
            confidence: s.confidence,
            rename_typicality: s.rename_typicality,
        }
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_new_accuracy: 0.6,
            max_old_drop: 0.02,
            max_class_drop: DEFAULT_MAX_CLASS_DROP,
            confidence: DEFAULT_CONFIDENCE,
            rename_typicality: DEFAULT_RENAME_TYPICALITY,
        }
    }
}

/// What kind of candidate is judged: the imprinted model (new rows in the head only) or
/// the fine-tuned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    Imprinted,
    Finetuned,
}

/// One image of a shipped class, classified by the live model and by the candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct ShippedItem {
    pub class: String,
    pub before: String,
    pub after: String,
}

/// Everything the gate decides on, collected on data the candidate did not train on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    /// Shipped classes, paired: the same images before (live model) and after (candidate).
    pub shipped: Vec<ShippedItem>,
    /// Where `shipped` comes from: `gate` (the package's gate set) or `replay` (held-back
    /// replay exemplars, for packages without a gate set).
    pub shipped_source: String,
    /// New classes: `(true label, predicted label)` of held-out predictions.
    pub new: Vec<(String, String)>,
    /// How `new` was obtained (e.g. "leave-one-out of the imprinted model").
    pub new_method: String,
    /// The user's held-back samples of shipped classes, paired: (right before, right after).
    pub labelled: Vec<(bool, bool)>,
    /// Per new label, the shipped class it is closest to in the live model's embedding
    /// space ([`lookalikes`]).
    pub lookalikes: Vec<Lookalike>,
    /// The live model serves one view (it holds a view's reference): its shipped classes
    /// are that view's states, which teaching is meant to specialise. With held-back frames
    /// of the view (`labelled`), those judge the shipped classes; `shipped` (other views)
    /// is reported but rejects nothing.
    pub per_view: bool,
}

/// Where a new label's samples sit among a shipped class's own images, in the live
/// model's embedding space: a shipped class sent under a new name sits among them, a new
/// thing does not, however confidently the live model's softmax names a class for it (the
/// cosine head saturates; BENCHMARKS.md "Telling a renamed class from a new one").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lookalike {
    pub label: String,
    /// The shipped class whose centroid the label's samples are closest to on average.
    pub class: String,
    /// Mean cosine similarity of the samples to that centroid.
    pub similarity: f64,
    /// Median of the same for the class's own images.
    pub class_similarity: f64,
    /// Mean over the samples of the share of the class's own images that are farther from
    /// the centroid than the sample: 0 when it is unlike all of them, about 0.5 when it is
    /// a typical member.
    pub typicality: f64,
}

/// `v` scaled to length 1 (a zero vector stays zero).
pub(super) fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() as f64
}

/// [`Lookalike`]s of the labels in `new` (`(label, embedding)` of each sample) against the
/// shipped classes' images `shipped` (`(class, embedding)`), both embedded by the live model.
pub fn lookalikes(shipped: &[(String, Vec<f32>)], new: &[(String, Vec<f32>)]) -> Vec<Lookalike> {
    let mut classes: BTreeMap<&str, Vec<Vec<f32>>> = BTreeMap::new();
    for (c, e) in shipped {
        classes.entry(c).or_default().push(unit(e));
    }
    // Each class: its centroid and its own images' similarities to it, ascending.
    let profiles: Vec<(&str, Vec<f32>, Vec<f64>)> = classes
        .into_iter()
        .map(|(c, es)| {
            let mut sum = vec![0f32; es[0].len()];
            for e in &es {
                sum.iter_mut().zip(e).for_each(|(s, v)| *s += v);
            }
            let centroid = unit(&sum);
            let mut own: Vec<f64> = es.iter().map(|e| dot(e, &centroid)).collect();
            own.sort_by(f64::total_cmp);
            (c, centroid, own)
        })
        .collect();
    let mut labels: BTreeMap<&str, Vec<Vec<f32>>> = BTreeMap::new();
    for (l, e) in new {
        labels.entry(l).or_default().push(unit(e));
    }
    let mut out = Vec::new();
    for (label, es) in labels {
        let mean_sim =
            |centroid: &[f32]| es.iter().map(|e| dot(e, centroid)).sum::<f64>() / es.len() as f64;
        let Some((class, centroid, own)) = profiles
            .iter()
            .max_by(|a, b| mean_sim(&a.1).total_cmp(&mean_sim(&b.1)))
        else {
            continue;
        };
        let below = |s: f64| own.iter().filter(|&&o| o < s).count() as f64 / own.len() as f64;
        out.push(Lookalike {
            label: label.to_string(),
            class: class.to_string(),
            similarity: mean_sim(centroid),
            class_similarity: own[own.len() / 2],
            typicality: es.iter().map(|e| below(dot(e, centroid))).sum::<f64>() / es.len() as f64,
        });
    }
    out
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Promote,
    Reject(String),
}

/// The paired evidence on the shipped classes, overall and as the card reports it (the
/// five most affected classes); None without any.
fn shipped_classes(ev: &Evidence, confidence: f64) -> Option<(Paired, ShippedClasses)> {
    if ev.shipped.is_empty() {
        return None;
    }
    let mut all = Paired::default();
    let mut per: BTreeMap<&str, (Paired, BTreeMap<&str, usize>)> = BTreeMap::new();
    for it in &ev.shipped {
        let (b, a) = (it.before == it.class, it.after == it.class);
        all.add(b, a);
        let e = per.entry(it.class.as_str()).or_default();
        e.0.add(b, a);
        if b && !a {
            *e.1.entry(it.after.as_str()).or_default() += 1;
        }
    }
    let mut worst: Vec<ClassChange> = per
        .into_iter()
        .filter(|(_, (p, _))| p.losses > p.gains)
        .map(|(class, (p, to))| ClassChange {
            class: class.to_string(),
            n: p.n,
            losses: p.losses,
            gains: p.gains,
            taken_by: to
                .into_iter()
                .max_by_key(|(_, c)| *c)
                .filter(|(_, c)| 2 * c >= p.losses)
                .map(|(l, _)| l.to_string()),
            drop_lower: p.drop_bounds(confidence).lower,
        })
        .collect();
    worst.sort_by_key(|c| std::cmp::Reverse(c.losses - c.gains));
    worst.truncate(5);
    let b = all.drop_bounds(confidence);
    Some((
        all,
        ShippedClasses {
            set: ev.shipped_source.clone(),
            judged: !ev.per_view || ev.labelled.is_empty(),
            n: all.n,
            losses: all.losses,
            gains: all.gains,
            drop: b.estimate,
            drop_lower: b.lower,
            drop_upper: b.upper,
            worst,
        },
    ))
}

/// Per-label estimates from held-out predictions, in label order.
pub fn label_estimates(new: &[(String, String)], confidence: f64) -> Vec<LabelEstimate> {
    let mut by: BTreeMap<&str, (usize, usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for (truth, pred) in new {
        let e = by.entry(truth.as_str()).or_default();
        e.0 += 1;
        if truth == pred {
            e.1 += 1;
        } else {
            *e.2.entry(pred.as_str()).or_default() += 1;
        }
    }
    by.into_iter()
        .map(|(label, (n, correct, conf))| {
            let b = wilson(correct, n, confidence);
            let mut confused_with: Vec<Confusion> = conf
                .into_iter()
                .map(|(l, count)| Confusion {
                    label: l.to_string(),
                    count,
                })
                .collect();
            confused_with.sort_by_key(|c| std::cmp::Reverse(c.count));
            LabelEstimate {
                label: label.to_string(),
                n,
                correct,
                accuracy: b.estimate,
                lower: b.lower,
                upper: b.upper,
                confused_with,
            }
        })
        .collect()
}

/// Held-out predictions that would make the estimate's lower bound reach `min` if the
/// accuracy held, counted from `n`; `None` beyond 200.
fn samples_needed(accuracy: f64, n: usize, min: f64, confidence: f64) -> Option<usize> {
    (n..=200).find(|&m| {
        let k = (accuracy * m as f64).round() as usize;
        wilson(k.min(m), m, confidence).lower >= min
    })
}

/// Advice for people: which label is at fault and what to send next.
fn advise(
    cfg: &GateConfig,
    labels: &[LabelEstimate],
    new_failed: bool,
    shipped: Option<&ShippedClasses>,
    shipped_failed: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if new_failed {
        let mut weak = 0;
        for l in labels.iter().filter(|l| l.accuracy < cfg.min_new_accuracy) {
            weak += 1;
            if let Some(c) = l.confused_with.first()
                && 2 * c.count >= l.n - l.correct
            {
                out.push(format!(
                    "`{}` looks like `{}`: {} of {} held-out samples were confused",
                    l.label, c.label, c.count, l.n
                ));
            }
            out.push(format!(
                "send {} more samples of `{}`",
                3.max(l.n / 2),
                l.label
            ));
        }
        let (n, correct) = labels
            .iter()
            .fold((0, 0), |(n, k), l| (n + l.n, k + l.correct));
        let accuracy = correct as f64 / n.max(1) as f64;
        if weak == 0 && !labels.is_empty() && accuracy >= cfg.min_new_accuracy {
            // Every label is good enough; the evidence is too thin.
            let more = samples_needed(accuracy, n, cfg.min_new_accuracy, cfg.confidence)
                .map_or(5, |m| (m - n).div_ceil(labels.len()).max(1));
            let names: Vec<String> = labels.iter().map(|l| format!("`{}`", l.label)).collect();
            out.push(format!(
                "send {more} more samples of each new label ({})",
                names.join(", ")
            ));
        }
        let new_confusions: usize = labels
            .iter()
            .flat_map(|l| &l.confused_with)
            .filter(|c| labels.iter().any(|o| o.label == c.label))
            .map(|c| c.count)
            .sum();
        if labels.len() > 1 && 2 * new_confusions >= n && n > 0 {
            out.push(format!(
                "check the labels: {new_confusions} of {n} held-out samples were taken for another new label"
            ));
        }
    }
    if shipped_failed && let Some(shipped) = shipped {
        for c in &shipped.worst {
            if let Some(t) = &c.taken_by
                && labels.iter().any(|l| &l.label == t)
            {
                out.push(format!(
                    "`{t}` looks like the shipped class `{}`: {} of its {} {} images are now taken for it; if it is the same thing, send these samples as `{}`",
                    c.class, c.losses, c.n, shipped.set, c.class
                ));
            }
        }
        if !out.iter().any(|a| a.contains("shipped class")) {
            out.push(
                "shipped classes are forgotten: send more samples and adapt again (imprinted labels stay served)"
                    .into(),
            );
        }
    }
    out
}

/// Judge a candidate on its evidence.
///
/// - **Shipped classes** (paired, same images): rejected only when the evidence says the
///   drop exceeds `max_old_drop`, i.e. its lower bound at `confidence` is above it.
/// - **New classes** (held-out predictions, in the learner leave-one-out of the imprint):
///   the imprinted candidate is rejected when the estimate's *upper* bound is below
///   `min_new_accuracy` (the evidence says the labels are not learnt; the shipped classes'
///   logits do not change, so serving a weak label costs little and more samples improve
///   it). The fine-tuned candidate, which changes the backbone, is rejected when the
///   estimate itself is below `min_new_accuracy`. *(choice, measured)* Its estimate is the
///   imprint's leave-one-out when that decides (a pessimistic proxy: the fine-tune adds
///   about 25 points on digits, so an imprint estimate at or above the threshold passes
///   the fine-tune, and one whose upper bound is below it fails it); in between, the
///   learner cross-validates the fine-tune itself (`candidates::finetune_cv`: three folds,
///   each fine-tuned on the other samples with a quarter of the recipe's epochs, predicts
///   its own).
///   With the imprint's point value alone 6 of 10 good vision 5-way 5-shot episodes
///   were promoted as fine-tunes (BENCHMARKS.md "The gate's error rates").
/// - **One shipped class taken by a new label** (most of its lost images now predicted as
///   that label: the same thing sent under a new name): rejected when that class's drop
///   has a lower bound above `max_class_drop`. One such class of ten moves the overall
///   drop by a few points only.
/// - **Samples of shipped classes** that were held back: rejected when they got worse by
///   the exact one-sided McNemar test at `confidence`.
/// - **A shipped class renamed** ([`Lookalike`]): rejected when a new label's samples sit
///   among a shipped class's own images (typicality at least `rename_typicality`).
/// - No evidence on new labels nor on held-back samples: rejected.
///
/// Each rule is a function of its own that gives its reason against; the verdict lists
/// them in a fixed order (shipped-class drop, shipped class taken, shipped class renamed,
/// new classes, held-back samples, no evidence), then the advice.
pub fn judge(cfg: &GateConfig, ev: &Evidence, candidate: Candidate) -> (GateMetrics, Verdict) {
    let c = cfg.confidence;
    let shipped = shipped_classes(ev, c);
    let shipped_card = shipped.as_ref().map(|(_, o)| o);
    let labels = label_estimates(&ev.new, c);
    let new_correct = ev.new.iter().filter(|(t, p)| t == p).count();
    let new_b = (!ev.new.is_empty()).then(|| wilson(new_correct, ev.new.len(), c));
    let mut labelled = Paired::default();
    for &(b, a) in &ev.labelled {
        labelled.add(b, a);
    }
    let labelled_p = (!ev.labelled.is_empty()).then(|| labelled.mcnemar_p());

    let mut reasons: Vec<String> = Vec::new();
    let judged = shipped_card.filter(|o| o.judged);
    reasons.extend(judged.and_then(|o| shipped_drop_reason(cfg, o)));
    reasons.extend(judged.into_iter().flat_map(|o| {
        o.worst
            .iter()
            .filter_map(|w| taken_class_reason(cfg, o, w, &labels))
    }));
    let shipped_failed = !reasons.is_empty();
    let renamed: Vec<(&Lookalike, String)> = ev
        .lookalikes
        .iter()
        .filter_map(|l| renamed_reason(cfg, l).map(|r| (l, r)))
        .collect();
    reasons.extend(renamed.iter().map(|(_, r)| r.clone()));
    let new_reason = new_b
        .and_then(|b| new_accuracy_reason(cfg, candidate, b, (new_correct, ev.new.len()), &labels));
    let new_failed = new_reason.is_some();
    reasons.extend(new_reason);
    reasons.extend(labelled_p.and_then(|p| held_back_reason(c, p, &labelled)));
    reasons.extend(no_evidence_reason(ev));

    let advice = if reasons.is_empty() {
        Vec::new()
    } else {
        let mut a: Vec<String> = renamed.iter().map(|(l, _)| rename_advice(l)).collect();
        a.extend(advise(
            cfg,
            &labels,
            new_failed,
            shipped_card,
            shipped_failed,
        ));
        a
    };
    let metrics = GateMetrics {
        old_before: shipped.as_ref().map_or(1.0, |(p, _)| p.before()),
        old_after: shipped.as_ref().map_or(1.0, |(p, _)| p.after()),
        new_after: new_b.map(|b| b.estimate),
        labelled_after: (!ev.labelled.is_empty()).then(|| labelled.after()),
        labelled_before: (!ev.labelled.is_empty()).then(|| labelled.before()),
        confidence: Some(c),
        old: shipped.map(|(_, o)| o),
        new_lower: new_b.map(|b| b.lower),
        new_upper: new_b.map(|b| b.upper),
        new_n: new_b.map(|_| ev.new.len()),
        new_method: (!ev.new.is_empty()).then(|| ev.new_method.clone()),
        labels,
        labelled_p,
        advice,
    };
    let verdict = verdict(&reasons, &metrics.advice);
    (metrics, verdict)
}

/// Rule *shipped classes*: the drop over all of them (paired, same images) has a lower
/// bound above `max_old_drop`.
fn shipped_drop_reason(cfg: &GateConfig, shipped: &ShippedClasses) -> Option<String> {
    if shipped.drop_lower <= cfg.max_old_drop + 1e-12 {
        return None;
    }
    let worst = shipped
        .worst
        .iter()
        .take(3)
        .map(|w| format!("`{}` {} of {} lost", w.class, w.losses, w.n))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "shipped classes would drop by {:.3} (at least {:.3} at {:.0} % confidence) on {} {} images, more than {:.3}; most affected: {worst}",
        shipped.drop,
        shipped.drop_lower,
        cfg.confidence * 100.0,
        shipped.n,
        shipped.set,
        cfg.max_old_drop
    ))
}

/// Rule *one shipped class taken by a new label*, for one of the most affected shipped
/// classes `w`: most of its lost images now go to a new label (the same thing under a new
/// name) and its own drop has a lower bound above `max_class_drop`. Judged per class,
/// since one such class of many moves the overall drop little.
fn taken_class_reason(
    cfg: &GateConfig,
    shipped: &ShippedClasses,
    w: &ClassChange,
    labels: &[LabelEstimate],
) -> Option<String> {
    let t = w.taken_by.as_ref()?;
    if !labels.iter().any(|l| &l.label == t) || w.drop_lower <= cfg.max_class_drop + 1e-12 {
        return None;
    }
    Some(format!(
        "the new label `{t}` takes the shipped class `{}`: {} of its {} {} images lost (drop at least {:.3} at {:.0} % confidence, more than {:.3})",
        w.class,
        w.losses,
        w.n,
        shipped.set,
        w.drop_lower,
        cfg.confidence * 100.0,
        cfg.max_class_drop
    ))
}

/// Rule *a shipped class renamed*, for one new label: its samples sit among a shipped
/// class's own images (typicality at least `rename_typicality`), whatever it does to the
/// gate set (on 4-50 images per class it may take few of them).
fn renamed_reason(cfg: &GateConfig, l: &Lookalike) -> Option<String> {
    (l.typicality >= cfg.rename_typicality).then(|| {
        format!(
            "the new label `{}` looks like the shipped class `{}`: its samples sit among `{}`'s own images (typicality {:.2}, similarity {:.2} vs {:.2} for `{}`'s own)",
            l.label, l.class, l.class, l.typicality, l.similarity, l.class_similarity, l.class
        )
    })
}

/// What to do about a new label that looks like a shipped class renamed.
fn rename_advice(l: &Lookalike) -> String {
    format!(
        "if `{}` is the same thing as `{}`, send its samples as `{}`; if not, send `forget {}` to `model/<model>/cmd` and samples that show what tells them apart",
        l.label, l.class, l.class, l.label
    )
}

/// Rule *new classes*: the imprinted candidate fails when the accuracy's upper bound `b`
/// is below `min_new_accuracy`, the fine-tuned one when the estimate is. `b` bounds the
/// held-out predictions' accuracy, `(correct, n)` counts them.
fn new_accuracy_reason(
    cfg: &GateConfig,
    candidate: Candidate,
    b: Bounds,
    (correct, n): (usize, usize),
    labels: &[LabelEstimate],
) -> Option<String> {
    let fails = match candidate {
        Candidate::Imprinted => b.upper < cfg.min_new_accuracy,
        Candidate::Finetuned => b.estimate < cfg.min_new_accuracy,
    };
    if !fails {
        return None;
    }
    let weak: Vec<String> = labels
        .iter()
        .filter(|l| l.accuracy < cfg.min_new_accuracy)
        .map(|l| format!("`{}` {}/{}", l.label, l.correct, l.n))
        .collect();
    Some(format!(
        "new-class accuracy {:.3} ({} of {}, bounds {:.3}..{:.3} at {:.0} % confidence) {} {:.3}{}",
        b.estimate,
        correct,
        n,
        b.lower,
        b.upper,
        cfg.confidence * 100.0,
        match candidate {
            Candidate::Imprinted => "is evidently below",
            Candidate::Finetuned => "is below",
        },
        cfg.min_new_accuracy,
        if weak.is_empty() {
            String::new()
        } else {
            format!("; weakest: {}", weak.join(", "))
        }
    ))
}

/// Rule *held-back samples of shipped classes*: they got worse by the exact one-sided
/// McNemar test (p-value `p`) at `confidence`.
fn held_back_reason(confidence: f64, p: f64, labelled: &Paired) -> Option<String> {
    (p < 1.0 - confidence).then(|| {
        format!(
            "held-back samples of shipped classes got worse ({} lost, {} gained; p = {p:.3})",
            labelled.losses, labelled.gains
        )
    })
}

/// Rule *no evidence*: neither held-out predictions of new labels nor held-back samples.
fn no_evidence_reason(ev: &Evidence) -> Option<String> {
    (ev.new.is_empty() && ev.labelled.is_empty())
        .then(|| "no held-out samples to judge the candidate on".into())
}

/// Promote without reasons against; else reject with the reasons and the advice.
fn verdict(reasons: &[String], advice: &[String]) -> Verdict {
    if reasons.is_empty() {
        return Verdict::Promote;
    }
    let mut r = reasons.join("; ");
    if !advice.is_empty() {
        r.push_str(". Next: ");
        r.push_str(&advice.join("; "));
    }
    Verdict::Reject(r)
}

/// `(label, sample id)` pairs.
pub type Labelled = Vec<(String, String)>;

/// Split each label's sample ids (oldest first) into (train, held-back): every
/// `holdout_every`-th sample is held back, but a label keeps at least `min_train` for
/// training and holds back nothing when it has fewer than `min_train + 1`.
pub fn split_holdout(
    by_label: &BTreeMap<String, Vec<String>>,
    holdout_every: usize,
    min_train: usize,
) -> (Labelled, Labelled) {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    let every = holdout_every.max(2);
    for (label, ids) in by_label {
        let mut held_here = 0;
        for (i, id) in ids.iter().enumerate() {
            let remaining_train = ids.len() - held_here - 1;
            if (i + 1) % every == 0 && remaining_train >= min_train {
                held.push((label.clone(), id.clone()));
                held_here += 1;
            } else {
                train.push((label.clone(), id.clone()));
            }
        }
    }
    (train, held)
}

/// Fine-tune when enough new samples arrived since the last attempt and the cool-down
/// has passed (or on command).
pub fn should_adapt(
    new_samples: usize,
    min_new_samples: usize,
    since_last_ms: Option<u64>,
    cooldown_ms: u64,
) -> bool {
    new_samples >= min_new_samples.max(1) && since_last_ms.is_none_or(|t| t >= cooldown_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` gate images of shipped classes `a`/`b`: all right before; `lost` wrong after
    /// (taken for `to`), `gained` of the wrong-before ones right after.
    fn old(
        n: usize,
        wrong_before: usize,
        lost: usize,
        gained: usize,
        to: &str,
    ) -> Vec<ShippedItem> {
        (0..n)
            .map(|i| {
                let class = if i % 2 == 0 { "a" } else { "b" }.to_string();
                let other = if i % 2 == 0 { "b" } else { "a" }.to_string();
                let right_before = i >= wrong_before;
                let after_right = if right_before {
                    i >= wrong_before + lost
                } else {
                    i < gained
                };
                ShippedItem {
                    before: if right_before {
                        class.clone()
                    } else {
                        other.clone()
                    },
                    after: if after_right {
                        class.clone()
                    } else if to == class {
                        other.clone()
                    } else {
                        to.to_string()
                    },
                    class,
                }
            })
            .collect()
    }

    /// Held-out predictions: `right` of `n` per label correct, the rest taken for `to`.
    fn new(labels: &[&str], n: usize, right: usize, to: &str) -> Vec<(String, String)> {
        labels
            .iter()
            .flat_map(|l| {
                (0..n).map(move |i| {
                    (
                        l.to_string(),
                        if i < right {
                            l.to_string()
                        } else {
                            to.to_string()
                        },
                    )
                })
            })
            .collect()
    }

    fn ev(old_items: Vec<ShippedItem>, new_preds: Vec<(String, String)>) -> Evidence {
        Evidence {
            shipped: old_items,
            shipped_source: "gate".into(),
            new: new_preds,
            new_method: "test".into(),
            labelled: Vec::new(),
            lookalikes: Vec::new(),
            per_view: false,
        }
    }

    /// Points around `centre` (unit 3-d vectors), spread by `spread`, deterministic.
    fn cluster(label: &str, centre: [f32; 3], n: usize, spread: f32) -> Vec<(String, Vec<f32>)> {
        (0..n)
            .map(|i| {
                let t = i as f32 * 2.399; // golden angle: spread evenly around the centre
                let r = spread * ((i % 5) as f32 + 1.0) / 5.0;
                let v = vec![
                    centre[0] + r * t.cos(),
                    centre[1] + r * t.sin(),
                    centre[2] + r * 0.5,
                ];
                (label.to_string(), v)
            })
            .collect()
    }

    #[test]
    fn a_shipped_class_under_a_new_name_sits_among_its_images_and_a_new_thing_does_not() {
        let mut old = cluster("sandal", [1.0, 0.0, 0.0], 50, 0.3);
        old.extend(cluster("bag", [0.0, 1.0, 0.0], 50, 0.3));
        // `shoe` is more sandals; `digit_1` is near `sandal` too (the softmax would call
        // it a sandal) but outside the class's own spread.
        let mut support: Vec<(String, Vec<f32>)> = cluster("shoe", [1.0, 0.0, 0.0], 7, 0.3)
            .into_iter()
            .skip(2)
            .collect();
        support.extend(cluster("digit_1", [1.0, 0.0, 0.9], 5, 0.05));
        let looks = lookalikes(&old, &support);
        let by = |l: &str| looks.iter().find(|x| x.label == l).expect("label").clone();
        let (shoe, digit) = (by("shoe"), by("digit_1"));
        assert_eq!(
            (shoe.class.as_str(), digit.class.as_str()),
            ("sandal", "sandal")
        );
        assert!(shoe.typicality > 0.3, "{shoe:?}");
        assert!(digit.typicality < 0.05, "{digit:?}");
        assert!(digit.similarity < digit.class_similarity, "{digit:?}");

        // The gate refuses the renamed label, and says what to do; the new thing passes.
        let cfg = GateConfig::default();
        let mut e = ev(Vec::new(), new(&["shoe", "digit_1"], 5, 5, "x"));
        e.lookalikes = vec![shoe, digit];
        let (m, v) = judge(&cfg, &e, Candidate::Imprinted);
        let Verdict::Reject(r) = v else {
            panic!("renamed class promoted")
        };
        assert!(
            r.contains("`shoe` looks like the shipped class `sandal`"),
            "{r}"
        );
        assert!(!r.contains("`digit_1` looks like"), "{r}");
        assert!(
            m.advice
                .iter()
                .any(|a| a.contains("send its samples as `sandal`")),
            "{m:?}"
        );
        e.lookalikes.retain(|l| l.label == "digit_1");
        assert_eq!(judge(&cfg, &e, Candidate::Imprinted).1, Verdict::Promote);
    }

    #[test]
    fn promotes_good_adaptations_despite_noise_on_the_old_classes() {
        // 500 gate images, 40 wrong before; the candidate loses 9 and gains 4 (drop 0.01).
        let e = ev(old(500, 40, 9, 4, "a"), new(&["x", "y", "z"], 5, 5, "x"));
        let (m, v) = judge(&GateConfig::default(), &e, Candidate::Finetuned);
        assert_eq!(v, Verdict::Promote, "{m:?}");
        let o = m.old.expect("old-class evidence");
        assert!((o.drop - 0.01).abs() < 1e-12);
        assert!(o.drop_lower < 0.0 && o.drop_upper > 0.02, "{o:?}");
        assert!((m.old_before - 0.92).abs() < 1e-12);
        assert_eq!(m.labels.len(), 3);
        assert!(m.advice.is_empty());
        // Two points lost on the 500 images is not evidence of more than two points.
        let e = ev(old(500, 40, 12, 2, "a"), new(&["x"], 5, 5, "x"));
        assert_eq!(
            judge(&GateConfig::default(), &e, Candidate::Finetuned).1,
            Verdict::Promote
        );
    }

    #[test]
    fn a_real_old_class_drop_is_caught_and_names_the_class_and_the_thief() {
        // 30 lost, all taken for the new label `x`: drop 0.06.
        let e = ev(old(500, 0, 30, 0, "x"), new(&["x"], 5, 5, "x"));
        let (m, v) = judge(&GateConfig::default(), &e, Candidate::Imprinted);
        let Verdict::Reject(r) = v else {
            panic!("promoted {m:?}")
        };
        assert!(r.contains("shipped classes would drop by 0.060"), "{r}");
        assert!(r.contains("`a` 15 of 250 lost"), "{r}");
        assert!(
            m.advice
                .iter()
                .any(|a| a.contains("`x` looks like the shipped class `a`")),
            "{:?}",
            m.advice
        );
    }

    /// 10 shipped classes × 50 gate images, all right before; `lost` images of `c0` are
    /// taken for `thief` after.
    fn one_class_taken(lost: usize, thief: &str) -> Vec<ShippedItem> {
        (0..500)
            .map(|i| {
                let class = format!("c{}", i / 50);
                let after = if i < lost {
                    thief.to_string()
                } else {
                    class.clone()
                };
                ShippedItem {
                    before: class.clone(),
                    after,
                    class,
                }
            })
            .collect()
    }

    #[test]
    fn a_shipped_class_under_a_new_name_is_caught_per_class_and_noise_is_not() {
        let cfg = GateConfig::default();
        // `shoe` is `c0` renamed: it takes 15 of c0's 50 images. Overall that is a drop of
        // 0.03, whose lower bound stays under max_old_drop; for c0 it is 0.3 (at least 0.18).
        let e = ev(one_class_taken(15, "shoe"), new(&["shoe"], 5, 5, "shoe"));
        let (m, v) = judge(&cfg, &e, Candidate::Imprinted);
        let Verdict::Reject(r) = v else {
            panic!("promoted {m:?}")
        };
        assert!(!r.contains("shipped classes would drop"), "{r}");
        assert!(
            r.contains(
                "the new label `shoe` takes the shipped class `c0`: 15 of its 50 gate images lost"
            ),
            "{r}"
        );
        assert!(
            m.advice
                .iter()
                .any(|a| a.contains("`shoe` looks like the shipped class `c0`")),
            "{:?}",
            m.advice
        );
        // Three of 50 taken is noise at this size.
        let e = ev(one_class_taken(3, "shoe"), new(&["shoe"], 5, 5, "shoe"));
        let (m, v) = judge(&cfg, &e, Candidate::Imprinted);
        assert_eq!(v, Verdict::Promote, "{m:?}");
        // Losses that go to another shipped class are the overall rule's business.
        let e = ev(one_class_taken(15, "c1"), new(&["shoe"], 5, 5, "shoe"));
        assert_eq!(judge(&cfg, &e, Candidate::Imprinted).1, Verdict::Promote);
    }

    #[test]
    fn the_fine_tune_needs_the_estimate_the_imprint_only_no_evidence_against_it() {
        let cfg = GateConfig::default();
        // 3 labels × 5 leave-one-out predictions, 8 of 15 right (0.53): bounds [0.33, 0.73].
        let mut preds = new(&["x", "y"], 5, 3, "z");
        preds.extend(new(&["z"], 5, 2, "x"));
        let e = ev(old(500, 0, 0, 0, "a"), preds);
        assert_eq!(judge(&cfg, &e, Candidate::Imprinted).1, Verdict::Promote);
        let (m, v) = judge(&cfg, &e, Candidate::Finetuned);
        let Verdict::Reject(r) = v else {
            panic!("fine-tune promoted {m:?}")
        };
        assert!(
            r.contains("new-class accuracy 0.533 (8 of 15, bounds"),
            "{r}"
        );
        assert!(r.contains("weakest: `z` 2/5"), "{r}");
        assert_eq!(
            m.advice,
            vec![
                "`z` looks like `x`: 3 of 5 held-out samples were confused".to_string(),
                "send 3 more samples of `z`".to_string(),
            ]
        );
        let (lo, hi) = (m.new_lower.expect("lower"), m.new_upper.expect("upper"));
        assert!(
            (0.32..0.35).contains(&lo) && (0.71..0.74).contains(&hi),
            "{lo} {hi}"
        );
        // 11 of 15: the fine-tune passes.
        let mut preds = new(&["x", "y"], 5, 4, "z");
        preds.extend(new(&["z"], 5, 3, "x"));
        let e = ev(old(500, 0, 0, 0, "a"), preds);
        assert_eq!(judge(&cfg, &e, Candidate::Finetuned).1, Verdict::Promote);
        // The point value decides for the fine-tune: 1 of 2 reaches 0.5.
        let e = ev(old(500, 0, 0, 0, "a"), new(&["x"], 2, 1, "a"));
        let (m, v) = judge(
            &GateConfig {
                min_new_accuracy: 0.5,
                ..cfg.clone()
            },
            &e,
            Candidate::Finetuned,
        );
        assert_eq!(v, Verdict::Promote, "{m:?}");
    }

    #[test]
    fn shuffled_labels_are_rejected_with_a_hint_to_check_the_labels() {
        // 3 labels, each taken for the others 4 times of 5.
        let mut preds = Vec::new();
        for (l, other) in [("x", "y"), ("y", "z"), ("z", "x")] {
            preds.extend(new(&[l], 5, 1, other));
        }
        let e = ev(old(500, 0, 0, 0, "a"), preds);
        for cand in [Candidate::Imprinted, Candidate::Finetuned] {
            let (m, v) = judge(&GateConfig::default(), &e, cand);
            assert!(matches!(v, Verdict::Reject(_)), "{m:?}");
            assert!(
                m.advice.iter().any(|a| a.contains("check the labels")),
                "{m:?}"
            );
            assert!(
                m.advice
                    .iter()
                    .any(|a| a == "`x` looks like `y`: 4 of 5 held-out samples were confused"),
                "{:?}",
                m.advice
            );
        }
    }

    #[test]
    fn held_back_samples_of_shipped_classes_must_not_get_worse_by_evidence() {
        let cfg = GateConfig::default();
        let mut e = ev(old(100, 0, 0, 0, "a"), Vec::new());
        // One of five lost: noise.
        e.labelled = vec![
            (true, true),
            (true, true),
            (true, false),
            (false, false),
            (true, true),
        ];
        assert_eq!(judge(&cfg, &e, Candidate::Finetuned).1, Verdict::Promote);
        // Six of six lost: evidence (p = 1/64).
        e.labelled = vec![(true, false); 6];
        let (m, v) = judge(&cfg, &e, Candidate::Finetuned);
        assert!(
            matches!(&v, Verdict::Reject(r) if r.contains("got worse")),
            "{v:?}"
        );
        assert!((m.labelled_p.expect("p") - 1.0 / 64.0).abs() < 1e-12);
    }

    #[test]
    fn a_views_own_held_back_frames_judge_its_states_not_other_views() {
        let cfg = GateConfig::default();
        // The candidate loses 10 of 100 images of other views.
        let mut e = ev(old(100, 0, 10, 0, "a"), Vec::new());
        e.labelled = vec![(true, true), (false, true), (true, true), (true, true)];
        let rejected =
            |e: &Evidence| matches!(judge(&cfg, e, Candidate::Finetuned).1, Verdict::Reject(_));
        assert!(rejected(&e), "a model of every view answers for every view");
        e.per_view = true;
        let (m, v) = judge(&cfg, &e, Candidate::Finetuned);
        assert_eq!(v, Verdict::Promote, "{m:?}");
        let old = m.old.expect("still reported");
        assert!(!old.judged && old.losses == 10);
        // Without held-back frames of the view, other views are all the evidence there is.
        e.labelled.clear();
        assert!(rejected(&e));
        // The view's own frames still reject a candidate that gets them wrong.
        e.labelled = vec![(true, false); 6];
        assert!(rejected(&e));
    }

    #[test]
    fn rejects_without_evidence() {
        let e = ev(old(100, 0, 0, 0, "a"), Vec::new());
        assert!(matches!(
            judge(&GateConfig::default(), &e, Candidate::Finetuned).1,
            Verdict::Reject(r) if r.contains("no held-out samples")
        ));
    }

    #[test]
    fn metrics_of_earlier_cards_still_parse() {
        let old_card = r#"{"old_before":0.94,"old_after":0.9,"new_after":0.333,"labelled_after":null,"labelled_before":null}"#;
        let m: GateMetrics = serde_json::from_str(old_card).expect("old card");
        assert_eq!(m.new_after, Some(0.333));
        assert!(m.labels.is_empty() && m.old.is_none());
        let cfg: GateConfig =
            serde_json::from_str(r#"{"min_new_accuracy":0.6,"max_old_drop":0.02}"#).expect("cfg");
        assert_eq!(cfg.confidence, DEFAULT_CONFIDENCE);
    }
    #[test]
    fn holdout_keeps_enough_training_samples_per_label() {
        let mut by = BTreeMap::new();
        by.insert("a".to_string(), (0..6).map(|i| format!("a{i}")).collect());
        by.insert("b".to_string(), vec!["b0".to_string(), "b1".to_string()]);
        let (train, held) = split_holdout(&by, 3, 2);
        assert_eq!(
            held,
            vec![("a".into(), "a2".into()), ("a".into(), "a5".into())]
        );
        assert_eq!(
            train.iter().filter(|(l, _)| l == "b").count(),
            2,
            "too few to hold any back"
        );
    }

    #[test]
    fn adapts_after_enough_samples_and_cooldown() {
        assert!(should_adapt(5, 5, None, 60_000));
        assert!(!should_adapt(4, 5, None, 60_000));
        assert!(!should_adapt(5, 5, Some(10_000), 60_000));
        assert!(should_adapt(5, 5, Some(60_000), 60_000));
    }
}
