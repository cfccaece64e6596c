//! The model card's record of how an adapted version was made and judged (manifest
//! `adaptation`): what `adapt` fills in and the registry stores with the version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Change of one shipped class on the old-class set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassChange {
    pub class: String,
    pub n: usize,
    /// Right before, wrong after.
    pub losses: usize,
    /// Wrong before, right after.
    pub gains: usize,
    /// The label most of its losses went to, when one took at least half of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
    /// Lower one-sided bound of this class's accuracy drop at the gate's confidence.
    #[serde(default)]
    pub drop_lower: f64,
}

fn judged_by_default() -> bool {
    true
}

/// Shipped classes, before vs after on the same images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippedClasses {
    /// `gate` or `replay` (see `adapt::gate::Evidence::shipped_source`).
    pub set: String,
    /// Whether this evidence may reject: not for a model of one view taught with held-back
    /// frames of it (`adapt::gate::Evidence::per_view`), where those judge.
    #[serde(default = "judged_by_default")]
    pub judged: bool,
    pub n: usize,
    pub losses: usize,
    pub gains: usize,
    /// Accuracy drop (before − after), with its one-sided bounds at `confidence`.
    pub drop: f64,
    pub drop_lower: f64,
    pub drop_upper: f64,
    /// Shipped classes that lost more than they gained, worst first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst: Vec<ClassChange>,
}

/// How often a label's held-out samples were taken for another label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    pub label: String,
    pub count: usize,
}

/// Estimated accuracy of one new label, with its bounds at `confidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEstimate {
    pub label: String,
    /// Held-out predictions of this label's samples.
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub lower: f64,
    pub upper: f64,
    /// What its misclassified samples were taken for, most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confused_with: Vec<Confusion>,
}

/// Measurements on data the candidate did not train on. The first five fields are the
/// point estimates of earlier versions of this card (kept for readers of those); the rest
/// carry the evidence and the uncertainty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateMetrics {
    /// Live model on the old-class set.
    pub old_before: f64,
    /// Candidate on the same images.
    pub old_after: f64,
    /// Estimated new-class accuracy (see `new_method`); `None` when no new class.
    pub new_after: Option<f64>,
    /// Candidate on held-back samples of shipped classes that were sent as samples.
    pub labelled_after: Option<f64>,
    /// Live model on those held-back samples.
    pub labelled_before: Option<f64>,
    /// Confidence of every bound below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<ShippedClasses>,
    /// Bounds of `new_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_lower: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_upper: Option<f64>,
    /// Held-out predictions behind `new_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_n: Option<usize>,
    /// How the new-class estimate was obtained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_method: Option<String>,
    /// Per new label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<LabelEstimate>,
    /// Exact one-sided McNemar p-value of "the held-back samples of shipped classes got
    /// worse".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_p: Option<f64>,
    /// What to do next, for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

/// What an adapted version records about how it was made (manifest `adaptation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptationInfo {
    /// `imprint` (new labels only, no fine-tune) or `finetune`.
    pub kind: String,
    /// The candidate that was judged best and kept: `imprinted` or `finetuned`; or
    /// `reference` when the gate refused the teaching and only the view's new reference
    /// was kept, the model unchanged (`adapt::learner`).
    pub chosen: String,
    pub new_classes: Vec<String>,
    /// Stored samples per label when it was made.
    pub samples_per_class: BTreeMap<String, usize>,
    /// Samples held back from training (samples of shipped classes only).
    pub held_back: usize,
    pub gate: GateMetrics,
    pub seconds: f64,
    /// Fine-tune steps run (0: an imprint): always the whole recipe's.
    #[serde(default)]
    pub steps: usize,
    /// Why the fine-tuned candidate was not kept, when the imprinted one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune_rejected: Option<String>,
    /// The fleet's class offer this version adopted (origin device, its version, the
    /// offer's counter), when it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
}

/// A label a version serves on weak evidence: its held-out accuracy (`gate.labels`) is
/// below the gate's `min_new_accuracy`. The version was promoted on the new labels'
/// accuracy together (and an imprint is refused only on evidence that it fails), so one
/// label can pass with few or none of its samples recognised; the card says so instead of
/// serving it as if it were reliable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provisional {
    pub label: String,
    /// Its held-out samples recognised, of `n`.
    pub correct: usize,
    pub n: usize,
    pub accuracy: f64,
    /// What the misclassified samples were taken for, most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confused_with: Vec<Confusion>,
    /// What to send.
    pub send: String,
}

impl AdaptationInfo {
    /// The labels of this adaptation whose estimate is below `min_new_accuracy`.
    pub fn provisional(&self, min_new_accuracy: f64) -> Vec<Provisional> {
        self.gate
            .labels
            .iter()
            .filter(|l| l.accuracy < min_new_accuracy)
            .map(|l| {
                let more = 3.max(l.n / 2);
                let mut send = format!("send {more} more samples of `{}`", l.label);
                if let Some(c) = l.confused_with.first() {
                    send.push_str(&format!(
                        " that show what tells it from `{}` ({} of its {} held-out samples were taken for it)",
                        c.label, c.count, l.n
                    ));
                }
                Provisional {
                    label: l.label.clone(),
                    correct: l.correct,
                    n: l.n,
                    accuracy: l.accuracy,
                    confused_with: l.confused_with.clone(),
                    send,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(label: &str, correct: usize, n: usize, confused: Option<&str>) -> LabelEstimate {
        LabelEstimate {
            label: label.into(),
            n,
            correct,
            accuracy: correct as f64 / n as f64,
            lower: 0.0,
            upper: 1.0,
            confused_with: confused
                .map(|c| {
                    vec![Confusion {
                        label: c.into(),
                        count: n - correct,
                    }]
                })
                .unwrap_or_default(),
        }
    }

    /// Issue 28: `digit_8` scored 0 of 5 and its imprint was promoted with `digit_3`'s.
    #[test]
    fn a_label_below_min_new_accuracy_is_provisional_with_its_evidence() {
        let info = AdaptationInfo {
            kind: "imprint".into(),
            chosen: "imprinted".into(),
            new_classes: vec!["digit_3".into(), "digit_8".into()],
            samples_per_class: BTreeMap::new(),
            held_back: 0,
            gate: GateMetrics {
                old_before: 0.9,
                old_after: 0.9,
                new_after: Some(0.5),
                labelled_after: None,
                labelled_before: None,
                confidence: Some(0.95),
                old: None,
                new_lower: None,
                new_upper: None,
                new_n: Some(10),
                new_method: None,
                labels: vec![
                    estimate("digit_3", 5, 5, None),
                    estimate("digit_8", 0, 5, Some("digit_3")),
                ],
                labelled_p: None,
                advice: vec![],
            },
            seconds: 1.0,
            steps: 0,
            finetune_rejected: None,
            offer: None,
        };
        let p = info.provisional(0.6);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].label.as_str(), p[0].correct, p[0].n),
            ("digit_8", 0, 5)
        );
        assert!(
            p[0].send.contains("send 3 more samples of `digit_8`"),
            "{}",
            p[0].send
        );
        assert!(p[0].send.contains("`digit_3`"), "{}", p[0].send);
        assert!(info.provisional(0.0).is_empty());

        // Cards written before the steps were recorded still read.
        let mut json = serde_json::to_value(&info).expect("json");
        json.as_object_mut().expect("object").remove("steps");
        let old: AdaptationInfo = serde_json::from_value(json).expect("an older card");
        assert_eq!(old.steps, 0);
    }
}
