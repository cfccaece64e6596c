//! The one adaptation core. Given the live package, the samples to learn from and a
//! resolved [`Recipe`], it imprints (and fine-tunes: `adapt::job`) the candidates, gathers
//! their evidence and has the gate judge them (`adapt::candidates`). Two callers, one
//! path: the daemon's learner (`adapt::learner::run`: pick the stored samples → core →
//! write the version) and `fewshot-bench` (draw an episode → core → score it), so what the
//! benchmark measures is what the device does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::candidates::{CV_FOLDS, GateData, Judgement, finetune_cv, judge_candidates};
use super::gate::GateConfig;
use super::job::{Adapted, AnchoredReplay, adapt};
use super::recipe::Recipe;
use crate::features::Raw;
use crate::inference::Classifier;
use crate::lsskd;
use crate::registry::{ModelPackage, replay};

/// Labelled inputs by class index.
pub type Items = Vec<(usize, Raw)>;

/// Progress of an adaptation, for `training/state`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Preparing,
    Training(f64),
    Gating,
}

/// The shipped classes' exemplars of an adaptation: what the fine-tune replays against
/// forgetting and what the gate judges the shipped classes on.
pub struct ShippedSets {
    /// Replay exemplars the fine-tune trains on (and imprinting's reference).
    pub replay: Items,
    /// The gate's images of the shipped classes, never trained on.
    pub gate: Items,
    /// `gate` (the package's gate set) or `replay` (every second replay exemplar, held
    /// back: a package without a gate set).
    pub gate_source: &'static str,
}

impl ShippedSets {
    /// The replay of `live` and the gate set of `live` or, when it has none, of `shipped`
    /// (versions made on the device do not copy it); without either, every second replay
    /// exemplar of each class is held back for the gate. Items of classes `live` learnt on
    /// the device are left out of the gate (it judges the shipped classes).
    pub fn load(live: &ModelPackage, shipped: Option<&ModelPackage>) -> anyhow::Result<Self> {
        let m = &live.manifest;
        let replay_all = replay::load(&live.dir, &m.classes).map_err(anyhow::Error::msg)?;
        let gate_pkg = std::iter::once(live)
            .chain(shipped)
            .find(|p| p.has_gate_set());
        let (replay, gate, gate_source) = match gate_pkg {
            // Class indices of a shipped package are those of `live` (classes are only
            // ever appended).
            Some(p) => (
                replay_all,
                replay::load_gate(&p.dir, &p.manifest.classes).map_err(anyhow::Error::msg)?,
                "gate",
            ),
            None => {
                let (train, held) = split_replay(replay_all);
                (train, held, "replay")
            }
        };
        let shipped_count = shipped.map_or(m.classes.len(), |p| p.manifest.classes.len());
        let gate = gate
            .into_iter()
            .filter(|(l, _)| *l < shipped_count)
            .collect();
        Ok(ShippedSets {
            replay,
            gate,
            gate_source,
        })
    }
}

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

/// One adaptation's inputs.
pub struct Request<'a> {
    /// The live package: the adaptation starts from its training state and its candidates
    /// are judged against its `model.onnx`.
    pub live: &'a ModelPackage,
    /// The classes the model was shipped with (the live package's, unless it is a version
    /// made on the device); every other label is new.
    pub shipped_classes: &'a [String],
    pub sets: &'a ShippedSets,
    /// Every sample trained on, (label, raw), in the order their new labels are appended.
    pub support: &'a [(String, Raw)],
    /// Samples of shipped classes held back from training, judged paired.
    pub held_shipped: &'a [(String, Raw)],
    /// Resolved ([`Recipe::resolve`]); `epochs == 0`: imprint only.
    pub recipe: &'a Recipe,
    pub gate: &'a GateConfig,
}

/// What [`run`] produced: the candidates and the gate's judgement of them.
pub struct Candidates {
    pub adapted: Adapted,
    pub judgement: Judgement,
    /// Seconds of the imprint and fine-tune (from loading the training model on).
    pub adapt_secs: f64,
    /// Seconds of the gate, cross-validation included.
    pub gate_secs: f64,
}

/// Imprint (and fine-tune) the live model on `req.support`, then judge the candidates.
/// `cancel` is polled between training steps.
pub fn run(
    req: &Request<'_>,
    cancel: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Phase),
) -> anyhow::Result<Candidates> {
    let started = Instant::now();
    let pkg = req.live;
    let m = &pkg.manifest;
    let pre = &m.preprocess;
    let set = m.train_state.transforms;
    let device = lsskd::training_device(req.recipe.seed);
    let net = pkg.load_train_net(&device)?;
    let replay = AnchoredReplay::new(&net, pre, set, &req.sets.replay)?;
    progress(Phase::Training(0.0));
    let adapted = adapt(
        net,
        &m.classes,
        pre,
        set,
        req.support,
        &replay,
        req.recipe,
        cancel,
        &mut |f| progress(Phase::Training(f)),
    )?;
    let adapt_secs = started.elapsed().as_secs_f64();
    progress(Phase::Gating);

    let gate_started = Instant::now();
    let live = Classifier::load(&pkg.onnx_path())?;
    let new_labels: BTreeSet<String> = req
        .support
        .iter()
        .map(|(l, _)| l)
        .filter(|l| !req.shipped_classes.contains(l))
        .cloned()
        .collect();
    let cv = || {
        finetune_cv(
            pkg,
            &device,
            req.support,
            &replay,
            &new_labels,
            req.recipe,
            CV_FOLDS,
            cancel,
        )
    };
    let data = GateData {
        shipped: req
            .sets
            .gate
            .iter()
            .map(|(l, r)| (m.classes[*l].clone(), r))
            .collect(),
        shipped_source: req.sets.gate_source.into(),
        per_view: m.change_reference.is_some(),
        reference: req.sets.replay.iter().map(|(_, r)| r).collect(),
        support: req.support.iter().map(|(l, r)| (l.clone(), r)).collect(),
        new_labels: new_labels.clone(),
        held_shipped: req
            .held_shipped
            .iter()
            .map(|(l, r)| (l.clone(), r))
            .collect(),
        finetune_cv: Some(&cv),
    };
    let judgement = judge_candidates(
        req.gate,
        &live,
        &m.classes,
        pre,
        m.arch.cosine_scale,
        &adapted,
        req.recipe.fine_tunes(),
        &data,
    )?;
    Ok(Candidates {
        adapted,
        judgement,
        adapt_secs,
        gate_secs: gate_started.elapsed().as_secs_f64(),
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
