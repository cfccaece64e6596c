//! One on-device adaptation of a model, end to end and synchronous (the daemon runs it on
//! its trainer thread; tests call it directly): the stored samples are split into train
//! and held-back, the replay exemplars too; the live version's training model is imprinted
//! with the new labels (and, unless `imprint_only`, fine-tuned with LSSKD); the candidate
//! and the live model are both judged through tract on the held-back data; a candidate
//! that passes the gate is written as a new version and promoted.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::gate::{GateConfig, GateMetrics, Verdict, decide, split_holdout};
use super::job::{AdaptConfig, Snapshot, adapt};
use crate::features::{Preprocess, Raw};
use crate::inference::{Classifier, argmax};
use crate::lsskd::{self, checkpoint};
use crate::registry::package::{MODEL_ONNX, REPLAY_DIR, TRAIN_STATE};
use crate::registry::versions::Versions;
use crate::registry::{ModelPackage, replay};
use crate::samples::SampleStore;
use crate::settings::AdaptSettings;

/// Exemplars of each new class added to the new version's replay set.
pub const NEW_CLASS_REPLAY: usize = 5;

/// What an adapted version records about how it was made (manifest `adaptation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptationInfo {
    /// `imprint` (new labels only, no fine-tune) or `finetune`.
    pub kind: String,
    /// The candidate that was judged best and kept: `imprinted` or `finetuned`.
    pub chosen: String,
    pub new_classes: Vec<String>,
    /// Stored samples per label when it was made.
    pub samples_per_class: BTreeMap<String, usize>,
    pub held_back: usize,
    pub gate: GateMetrics,
    pub seconds: f64,
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
    let shape = pre.input_shape();

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
    let (train_ids, held_ids) = split_holdout(&by_label, cfg.holdout_every, cfg.min_shots);
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
    let (replay_train, replay_held) = split_replay(replay_all);

    // Imprint (+ fine-tune).
    let device = lsskd::training_device(seed);
    let set = m.train_state.transforms;
    let net = checkpoint::load_package(pkg, &device)?;
    let acfg = AdaptConfig {
        epochs: if imprint_only { 0 } else { cfg.epochs },
        budget_secs: Some(cfg.budget_secs),
        seed,
        ..AdaptConfig::default()
    };
    progress(Phase::Training(0.0));
    let adapted = adapt(
        net,
        &m.classes,
        pre,
        set,
        &support,
        &replay_train,
        &acfg,
        cancel,
        &mut |f| progress(Phase::Training(f)),
    )?;
    progress(Phase::Gating);

    // Gate on what the candidates did not train on. Both the imprinted and the fine-tuned
    // model are candidates: with few shots a short fine-tune can lose to imprinting alone,
    // and the device should promote whichever is better on the held-back data.
    let index_of = |classes: &[String], l: &str| classes.iter().position(|c| c == l);
    let live = Classifier::load(&pkg.onnx_path())?;
    // "New" classes are those learnt on the device (not in the shipped package), whether
    // this run adds them or an earlier imprint did; samples of shipped classes are judged
    // against the live model.
    let shipped_classes = ModelPackage::load(&versions.path_of(0))
        .map(|p| p.manifest.classes)
        .unwrap_or_else(|_| m.classes.clone());
    let old: Vec<(usize, &Raw)> = replay_held
        .iter()
        .filter(|(l, _)| shipped_classes.contains(&m.classes[*l]))
        .map(|(l, r)| (*l, r))
        .collect();
    let new_held: Vec<(usize, &Raw)> = held
        .iter()
        .filter(|(l, _)| !shipped_classes.contains(l))
        .filter_map(|(l, r)| Some((index_of(&adapted.classes, l)?, r)))
        .collect();
    let known_held: Vec<(usize, &Raw)> = held
        .iter()
        .filter(|(l, _)| shipped_classes.contains(l))
        .filter_map(|(l, r)| Some((index_of(&m.classes, l)?, r)))
        .collect();
    // No held-back exemplar of a shipped class: nothing to lose (1.0 before and after).
    let old_accuracy = |model: &Classifier| {
        if old.is_empty() {
            Ok(1.0)
        } else {
            accuracy(model, pre, &old)
        }
    };
    let old_before = old_accuracy(&live)?;
    let labelled_before = if known_held.is_empty() {
        None
    } else {
        Some(accuracy(&live, pre, &known_held)?)
    };
    let gate_cfg = GateConfig {
        min_new_accuracy: cfg.min_new_accuracy,
        max_old_drop: cfg.max_old_drop,
    };
    let judge = |snap: &Snapshot| -> anyhow::Result<(GateMetrics, Verdict)> {
        let candidate = Classifier::from_bytes(&snap.onnx)?;
        let gate = GateMetrics {
            old_before,
            old_after: old_accuracy(&candidate)?,
            new_after: if new_held.is_empty() {
                None
            } else {
                Some(accuracy(&candidate, pre, &new_held)?)
            },
            labelled_after: if known_held.is_empty() {
                None
            } else {
                Some(accuracy(&candidate, pre, &known_held)?)
            },
            labelled_before,
        };
        let mut verdict = decide(&gate_cfg, &gate);
        // Imprinting only adds classes: with nothing held back yet it is judged on the
        // old classes alone.
        if gate.new_after.is_none()
            && gate.labelled_after.is_none()
            && gate.old_before - gate.old_after <= cfg.max_old_drop + 1e-12
            && !adapted.new_classes.is_empty()
        {
            verdict = Verdict::Promote;
        }
        Ok((gate, verdict))
    };
    let score = |g: &GateMetrics| {
        g.new_after.unwrap_or(0.0) + g.labelled_after.unwrap_or(0.0) + g.old_after
    };
    let imprinted = judge(&adapted.imprinted)?;
    let (chosen, snapshot, (gate, verdict)) = if imprint_only {
        ("imprinted", adapted.imprinted.clone(), imprinted)
    } else {
        let tuned_snap = Snapshot::of(&adapted.tuned, shape)?;
        let tuned = judge(&tuned_snap)?;
        let tuned_wins = match (&tuned.1, &imprinted.1) {
            (Verdict::Promote, Verdict::Promote) => score(&tuned.0) >= score(&imprinted.0),
            (Verdict::Promote, _) => true,
            (_, Verdict::Promote) => false,
            _ => true,
        };
        if tuned_wins {
            ("finetuned", tuned_snap, tuned)
        } else {
            ("imprinted", adapted.imprinted.clone(), imprinted)
        }
    };
    let info = AdaptationInfo {
        kind: if imprint_only { "imprint" } else { "finetune" }.into(),
        chosen: chosen.into(),
        new_classes: adapted.new_classes.clone(),
        samples_per_class,
        held_back: held.len(),
        gate,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Verdict::Reject(reason) = verdict {
        return Ok(Outcome::Rejected { reason, info });
    }
    if cancel() {
        anyhow::bail!("adaptation cancelled");
    }

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
