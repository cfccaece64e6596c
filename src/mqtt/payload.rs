//! JSON payloads published and accepted over MQTT (serde, versioned by field `v`).

use serde::{Deserialize, Serialize};

pub use crate::registry::card::Provisional;
use crate::registry::card::{AdaptationInfo, GateMetrics};

/// Schema version written in every outbound payload.
pub const SCHEMA_VERSION: u32 = 1;

/// One label with its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// `<p>/<dev>/<pipeline>/prediction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub v: u32,
    /// Milliseconds since the Unix epoch when the input was captured.
    pub ts: u64,
    pub pipeline: String,
    pub capture_id: u64,
    pub label: String,
    pub score: f32,
    pub top_k: Vec<LabelScore>,
    /// Features + inference, milliseconds.
    pub latency_ms: f64,
    pub model: String,
    pub model_version: u32,
}

/// Health of one pipeline, in the status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineHealth {
    pub name: String,
    /// `running`, `starting`, `connecting` (a stream), or `retrying: <reason>`.
    pub state: String,
    pub model_version: u32,
    /// Which convolutions run its model on this machine: `direct <isa>` (ours: `avx512f`,
    /// `avx+fma`, `neon`, `portable`) or `tract`, whichever timed faster when it loaded.
    #[serde(default)]
    pub kernel: String,
    pub inferences: u64,
    /// Inputs dropped by full hand-over buffers (and audio blocks by the callback queue).
    pub dropped: u64,
    /// Inferences that failed (bad input, model error).
    #[serde(default)]
    pub errors: u64,
    /// Mean features + inference time since start, milliseconds.
    #[serde(default)]
    pub mean_latency_ms: f64,
    /// Times the source failed and was reopened (a camera unplugged, a stream that
    /// stalled or dropped and reconnected).
    #[serde(default)]
    pub restarts: u64,
}

/// `<p>/<dev>/status` when online (retained; the Last Will is the plain string `offline`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub v: u32,
    pub status: String,
    pub version: String,
    pub device: String,
    pub pipelines: Vec<PipelineHealth>,
    /// The broker connection's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttHealth>,
    /// Sample requests answered since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<SampleTraffic>,
    /// The training kernels this machine runs (`ours` or `burn`: whichever timed faster
    /// when the trainer started), once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_kernels: Option<String>,
    /// Class offers to and from the fleet (counts since start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// What the status says of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// This device's public key.
    pub key: String,
    pub trusted: usize,
    /// Offers this device published (retractions included).
    pub offered: u64,
    /// Offers opened, put together and kept.
    pub received: u64,
    pub adopted: u64,
    pub rejected: u64,
    /// Offers waiting for `fleet install` (policy `ask`).
    pub waiting: usize,
    /// Refused offers by reason (`unknown_key`, `bad_signature`, `tampered`, `replayed`,
    /// `expired`, `malformed`, `other_family`).
    pub refused: std::collections::BTreeMap<String, u64>,
}

/// A device's verdict on an offer, retained on the fleet's verdict topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetVerdict {
    pub v: u32,
    pub ts: u64,
    /// This device.
    pub device: String,
    pub model: String,
    pub label: String,
    pub origin: String,
    pub counter: u64,
    /// `adopted`, `rejected`, `waiting`, `skipped`, `refused`, `retracted`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version this device serves after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// This device's gate evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::registry::card::GateMetrics>,
}

/// `<prefix>/<device>/model/<m>/offers` (retained): the version the model serves and the
/// class offers waiting for `fleet install` (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingOffers {
    pub v: u32,
    pub model: String,
    pub version: u32,
    pub offers: Vec<WaitingOffer>,
}

/// An offer waiting for a person, as the model's retained `offers` topic lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingOffer {
    pub id: String,
    pub label: String,
    pub origin: String,
    pub origin_version: u32,
    pub samples: usize,
    /// The origin's own gate evidence.
    pub evidence: serde_json::Value,
}

/// The broker connection, in the status message (counts since start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MqttHealth {
    pub published: u64,
    /// Outgoing messages dropped while the broker was away (oldest first).
    pub dropped_outbox: u64,
    /// Incoming messages that found the daemon's queue full (samples among them were
    /// refused on their ack topic).
    pub dropped_inbound: u64,
    pub reconnects: u64,
}

/// Sample requests, in the status message (counts since start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleTraffic {
    pub stored: u64,
    pub duplicates: u64,
    /// Refused with a reason on the ack topic (bad payload, unknown model, learning
    /// disabled, device busy …).
    pub refused: u64,
}

/// `<p>/<dev>/<pipeline>/state` (retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StableState {
    pub v: u32,
    pub ts: u64,
    pub pipeline: String,
    /// The stable label; empty while nothing known happens (the model's background class).
    pub label: String,
    pub score: f32,
}

/// `<p>/<dev>/scene`: the stable state of every pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub v: u32,
    pub ts: u64,
    pub states: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_has_the_documented_fields() {
        let p = Prediction {
            v: SCHEMA_VERSION,
            ts: 1,
            pipeline: "door".into(),
            capture_id: 7,
            label: "bag".into(),
            score: 0.9,
            top_k: vec![LabelScore {
                label: "bag".into(),
                score: 0.9,
            }],
            latency_ms: 1.5,
            model: "vision".into(),
            model_version: 0,
        };
        let v: serde_json::Value = serde_json::to_value(&p).expect("json");
        for key in [
            "ts",
            "pipeline",
            "capture_id",
            "label",
            "score",
            "top_k",
            "latency_ms",
            "model_version",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["top_k"][0]["label"], "bag");
    }
}

/// What the trainer is doing about a model (`training/state`'s `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainState {
    Idle,
    Queued,
    Training,
    Gating,
    Promoted,
    Rejected,
    RolledBack,
    Failed,
}

/// `<p>/<dev>/training/state` (retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub v: u32,
    pub ts: u64,
    pub model: String,
    pub state: TrainState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Fraction of the fine-tune done (0..1), while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// While training: the seconds the fine-tune is expected to take in all, from its speed
    /// on this machine so far (`ts` + the rest is when it should end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Kinds of the jobs of this model still waiting (`imprint`, `finetune`, …), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<String>,
    /// After a job: labels with `min_shots` samples that the live model still lacks. With
    /// nothing `queued` the trainer waits for new samples or a command; `reason` says why
    /// they were refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unserved: Vec<Unserved>,
}

/// A label with enough samples that the live model does not serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unserved {
    pub label: String,
    pub samples: usize,
    /// What to send for it (the gate's advice that names it), when it was judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
}

impl TrainingState {
    pub fn new(model: &str, state: TrainState) -> Self {
        Self {
            v: SCHEMA_VERSION,
            ts: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            model: model.into(),
            state,
            kind: None,
            progress: None,
            expected_secs: None,
            version: None,
            reason: None,
            gate: None,
            seconds: None,
            queued: Vec::new(),
            unserved: Vec::new(),
        }
    }
}

/// One stored version of a model, in the daemon's answer to `versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: u32,
    pub parent: Option<u32>,
    pub created_at: String,
    pub classes: Vec<String>,
    /// How it was made: `imprint`, `finetune` (with the candidate chosen), or none (the
    /// shipped package, a `forget`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub made_by: Option<String>,
    /// Whether it is the one serving now.
    pub live: bool,
}

/// `<p>/<dev>/model/<m>/versions`: the daemon's answer to the `versions` command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionsReply {
    pub model: String,
    pub live: u32,
    pub versions: Vec<VersionSummary>,
}

/// `<p>/<dev>/samples/<m>/list`: the daemon's answer to the `samples` command, per label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplesReply {
    pub model: String,
    pub counts: std::collections::BTreeMap<String, usize>,
}

/// The model card on `<p>/<dev>/model/<m>/info` (retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub v: u32,
    pub model: String,
    pub version: u32,
    pub parent: Option<u32>,
    pub created_at: String,
    pub classes: Vec<String>,
    pub adaptation: Option<AdaptationInfo>,
    pub samples_per_class: std::collections::BTreeMap<String, usize>,
    /// Served labels the device cannot yet be relied on to recognise: their held-out
    /// accuracy when this version was judged is below `adapt.min_new_accuracy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisional: Vec<Provisional>,
}

impl ModelCard {
    /// The card of a package, with the sample store's counts per label; labels whose
    /// estimate is below `min_new_accuracy` are listed as provisional.
    pub fn of(
        pkg: &crate::registry::ModelPackage,
        samples_per_class: std::collections::BTreeMap<String, usize>,
        min_new_accuracy: f64,
    ) -> ModelCard {
        let m = &pkg.manifest;
        let provisional = m
            .adaptation
            .as_ref()
            .map(|a| a.provisional(min_new_accuracy))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| m.classes.contains(&p.label))
            .collect();
        ModelCard {
            v: SCHEMA_VERSION,
            model: m.name.clone(),
            version: m.version,
            parent: m.parent,
            created_at: m.created_at.clone(),
            classes: m.classes.clone(),
            adaptation: m.adaptation.clone(),
            samples_per_class,
            provisional,
        }
    }
}

/// `<p>/<dev>/metrics` (every `publish.metrics_interval_secs`, not retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub v: u32,
    pub ts: u64,
    /// Seconds the CPU figure is measured over (since the previous message).
    pub interval_secs: f64,
    pub pipelines: Vec<PipelineMetrics>,
    pub adaptations: AdaptationCounts,
    /// Resident memory of the process, MiB.
    pub rss_mib: f64,
    /// CPU time of the process over the interval, in % of one core.
    pub cpu_percent: f64,
}

/// One pipeline's line in [`Metrics`]; counters since the daemon started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineMetrics {
    pub name: String,
    pub frames: u64,
    pub dropped: u64,
    pub errors: u64,
    /// Features + inference over the latest 512 frames, milliseconds.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

/// Adaptations since the daemon started (imprints and fine-tunes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdaptationCounts {
    pub run: u64,
    pub promoted: u64,
    pub rejected: u64,
    pub failed: u64,
}

/// `<p>/<dev>/teach/status` (retained): what the last teaching action from Home
/// Assistant (a label picked, an answer, "teach now", "that was wrong") did, or why it did
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeachStatus {
    pub v: u32,
    pub ts: u64,
    /// `request` (the label request's entities) or the pipeline's name.
    pub scope: String,
    pub ok: bool,
    pub message: String,
}

/// `<p>/<dev>/label_request`: the device asks for the label of an uncertain capture. The
/// answer is a `samples/<model>/add` with this `capture_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRequest {
    pub v: u32,
    pub ts: u64,
    pub request_id: String,
    pub pipeline: String,
    pub model: String,
    pub capture_id: u64,
    /// The model's best guesses.
    pub candidates: Vec<LabelScore>,
    /// Milliseconds since the Unix epoch after which the capture is let go.
    pub expires: u64,
    /// Images: a PNG thumbnail (at most 160×160), base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
    /// Audio: the clip as a WAV file, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
}
