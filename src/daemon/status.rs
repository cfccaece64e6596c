//! What the main loop reports: the retained status (pipelines, MQTT counters, samples),
//! systemd's `STATUS=` line and the stalled pipelines that withhold the watchdog.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::metrics;
use super::models::ModelSlot;
use crate::capture::now_ms;
use crate::mqtt::Topics;
use crate::mqtt::client::Publisher;
use crate::mqtt::payload::{MqttHealth, PipelineHealth, SCHEMA_VERSION, SampleTraffic, Status};
use crate::pipeline::PipelineHandle;

/// A pipeline thread silent for longer than this withholds the watchdog ping.
pub const STALL_MS: u64 = 10_000;

/// Names of the pipelines (name, last progress in ms since the epoch) silent for
/// [`STALL_MS`] or more at `now_ms`.
fn stalled<'a>(progress: impl Iterator<Item = (&'a str, u64)>, now_ms: u64) -> Vec<String> {
    progress
        .filter(|(_, last)| now_ms.saturating_sub(*last) >= STALL_MS)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// What the main loop reports on: the running pipelines and the counters of the other
/// parts.
pub struct Runtime {
    pub device: String,
    pub topics: Topics,
    pub models: BTreeMap<String, Arc<ModelSlot>>,
    pub pipelines: Vec<PipelineHandle>,
    /// Pipelines that could not start (bad model package …), with the reason.
    pub failed: Vec<(String, String)>,
    /// Pipelines whose thread ended while the daemon ran (a panic), with how.
    pub dead: BTreeMap<String, String>,
    pub publisher: Publisher,
    /// Sample requests answered so far (counted by the inbound thread).
    pub samples: Arc<std::sync::Mutex<SampleTraffic>>,
    /// Adaptation outcomes (counted by the trainer thread).
    pub adapt_counters: Arc<metrics::AdaptCounters>,
    /// Home Assistant discovery.
    pub announcer: Arc<super::announce::Announcer>,
    /// Class offers to and from the fleet.
    pub fleet: Arc<super::fleet::Fleet>,
}

impl Runtime {
    /// Queue a message for the broker without blocking (full: dropped and counted).
    pub fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        self.publisher.send(topic, payload, retain);
    }

    /// The retained `online` status.
    pub fn status(&self) -> Status {
        let mut pipelines: Vec<PipelineHealth> = self
            .pipelines
            .iter()
            .map(|p| {
                let mut h = p.health();
                if let Some(how) = self.dead.get(&p.name) {
                    h.state = format!("failed: {how}");
                }
                h
            })
            .collect();
        pipelines.extend(self.failed.iter().map(|(name, why)| PipelineHealth {
            name: name.clone(),
            state: format!("failed: {why}"),
            model_version: 0,
            kernel: String::new(),
            inferences: 0,
            dropped: 0,
            errors: 0,
            mean_latency_ms: 0.0,
            restarts: 0,
        }));
        let c = self.publisher.counters();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Status {
            v: SCHEMA_VERSION,
            status: "online".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            device: self.device.clone(),
            pipelines,
            mqtt: Some(MqttHealth {
                published: n(&c.published),
                dropped_outbox: n(&c.dropped_outbox),
                dropped_inbound: n(&c.dropped_inbound),
                reconnects: n(&c.reconnects),
            }),
            samples: Some(
                self.samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
            training_kernels: crate::lsskd::kernels::measured().map(|c| c.kernels.clone()),
            fleet: Some(self.fleet.status()),
        }
    }

    /// One line for systemd's `STATUS=`.
    pub fn status_line(status: &Status) -> String {
        let parts: Vec<String> = status
            .pipelines
            .iter()
            .map(|p| format!("{} {} ({} inferences)", p.name, p.state, p.inferences))
            .collect();
        if parts.is_empty() {
            "no pipelines".into()
        } else {
            parts.join("; ")
        }
    }

    /// The pipelines whose inference thread, or whose running source (stuck in a device
    /// call, e.g. a camera read that never returns), has made no progress for
    /// [`STALL_MS`]; while any is stalled, the watchdog ping is withheld (systemd restarts
    /// the service).
    pub fn stalled(&self) -> Vec<String> {
        stalled(
            self.pipelines.iter().map(|p| {
                let inference = p.stats.last_progress_ms.load(Ordering::Relaxed);
                let last = match p.source.alive_at() {
                    Some(source) => inference.min(source),
                    None => inference,
                };
                (p.name.as_str(), last)
            }),
            now_ms(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_silent_for_the_stall_time_withholds_the_watchdog() {
        let now = 1_000_000;
        let quiet = [("camera", now - 200), ("microphone", now - STALL_MS + 1)];
        assert!(stalled(quiet.into_iter(), now).is_empty());
        let hung = [("camera", now - 200), ("microphone", now - STALL_MS)];
        assert_eq!(stalled(hung.into_iter(), now), ["microphone"]);
        // A clock that went backwards is not a stall.
        assert!(stalled([("camera", now + 5_000)].into_iter(), now).is_empty());
    }
}
