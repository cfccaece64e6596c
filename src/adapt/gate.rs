//! Pure decisions of on-device adaptation: which samples are held back for the gate,
//! when to fine-tune, and whether a candidate is promoted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Promotion thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Minimum accuracy of the candidate on held-back samples of new classes.
    pub min_new_accuracy: f64,
    /// Largest allowed drop of old-class accuracy (candidate vs current) on replay /
    /// validation exemplars.
    pub max_old_drop: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_new_accuracy: 0.6,
            max_old_drop: 0.02,
        }
    }
}

/// Measurements on data the candidate did not train on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateMetrics {
    /// Current model on old-class exemplars.
    pub old_before: f64,
    /// Candidate on the same exemplars.
    pub old_after: f64,
    /// Candidate on held-back samples of new classes; `None` when no new class.
    pub new_after: Option<f64>,
    /// Candidate on held-back samples of existing classes that were sent as samples.
    pub labelled_after: Option<f64>,
    /// Current model on those held-back labelled samples of existing classes.
    pub labelled_before: Option<f64>,
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Promote,
    Reject(String),
}

/// Promote only if new classes are learnt well enough, old classes do not suffer beyond
/// the margin, and samples of existing classes are not handled worse than before.
pub fn decide(cfg: &GateConfig, m: &GateMetrics) -> Verdict {
    let drop = m.old_before - m.old_after;
    if drop > cfg.max_old_drop + 1e-12 {
        return Verdict::Reject(format!(
            "old-class accuracy would drop by {:.3} ({:.3} → {:.3}), more than {:.3}",
            drop, m.old_before, m.old_after, cfg.max_old_drop
        ));
    }
    if let Some(new) = m.new_after
        && new < cfg.min_new_accuracy
    {
        return Verdict::Reject(format!(
            "new-class accuracy {new:.3} is below the minimum {:.3}",
            cfg.min_new_accuracy
        ));
    }
    match (m.labelled_before, m.labelled_after) {
        (Some(before), Some(after)) if after < before => Verdict::Reject(format!(
            "held-back samples of existing classes got worse ({before:.3} → {after:.3})"
        )),
        _ if m.new_after.is_none() && m.labelled_after.is_none() => {
            Verdict::Reject("no held-back samples to judge the candidate on".into())
        }
        _ => Verdict::Promote,
    }
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

    fn m(old_before: f64, old_after: f64, new_after: Option<f64>) -> GateMetrics {
        GateMetrics {
            old_before,
            old_after,
            new_after,
            labelled_after: None,
            labelled_before: None,
        }
    }

    #[test]
    fn promotes_when_new_classes_are_learnt_and_old_ones_hold() {
        assert_eq!(
            decide(&GateConfig::default(), &m(0.90, 0.89, Some(0.8))),
            Verdict::Promote
        );
    }

    #[test]
    fn rejects_forgetting_beyond_the_margin() {
        let v = decide(&GateConfig::default(), &m(0.90, 0.85, Some(0.95)));
        assert!(
            matches!(&v, Verdict::Reject(r) if r.contains("old-class accuracy would drop")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_weak_new_classes() {
        let v = decide(&GateConfig::default(), &m(0.90, 0.90, Some(0.3)));
        assert!(
            matches!(&v, Verdict::Reject(r) if r.contains("below the minimum")),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_without_evidence_and_when_known_class_samples_get_worse() {
        assert!(matches!(
            decide(&GateConfig::default(), &m(0.9, 0.9, None)),
            Verdict::Reject(_)
        ));
        let mut x = m(0.9, 0.9, None);
        x.labelled_before = Some(0.8);
        x.labelled_after = Some(0.6);
        assert!(
            matches!(decide(&GateConfig::default(), &x), Verdict::Reject(r) if r.contains("got worse"))
        );
        x.labelled_after = Some(0.9);
        assert_eq!(decide(&GateConfig::default(), &x), Verdict::Promote);
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
