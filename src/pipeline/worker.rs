//! The inference thread of one pipeline. It takes captures from its source's hand-over slot, runs the current
//! model (an `ArcSwap` slot, so a promoted model replaces it between two windows without a
//! restart or a dropped window), keeps the capture ring, and hands predictions, stable
//! states and drops to the MQTT outbox without ever blocking on the network.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Debouncer, PublishGate};
use crate::capture::ring::CaptureRing;
use crate::capture::{Capture, slot};
use crate::features::Preprocess;
use crate::inference::Classifier;
use crate::inference::top_k;
use crate::mqtt::payload::{LabelScore, Prediction, SCHEMA_VERSION, StableState};
use crate::settings::PublishSettings;

/// A model ready to run: what the slot holds.
pub struct LoadedModel {
    pub name: String,
    pub version: u32,
    pub classes: Vec<String>,
    pub preprocess: Preprocess,
    pub classifier: Classifier,
}

/// Per-pipeline counters (status message, watchdog).
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub inferences: AtomicU64,
    pub errors: AtomicU64,
    /// Sum of features + inference time, microseconds (mean = sum / inferences).
    pub latency_us_sum: AtomicU64,
    /// Milliseconds since the Unix epoch of the last processed capture or idle tick.
    pub last_progress_ms: AtomicU64,
}

impl PipelineStats {
    /// Mean features + inference time so far, milliseconds (0 before the first).
    pub fn mean_latency_ms(&self) -> f64 {
        let n = self.inferences.load(Ordering::Relaxed);
        if n == 0 {
            0.0
        } else {
            self.latency_us_sum.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
        }
    }
}

/// What the worker emits.
pub enum Output {
    Prediction(Prediction),
    State(StableState),
}

/// Run until `stop`; `emit` must not block (the daemon's `mqtt::client::Publisher` queues
/// into the session's outbox, which keeps the newest messages and drops the oldest).
#[allow(clippy::too_many_arguments)]
pub fn run(
    pipeline: String,
    input: slot::Receiver<Capture>,
    model: Arc<ArcSwap<LoadedModel>>,
    publish: PublishSettings,
    ring: Arc<Mutex<CaptureRing>>,
    stats: Arc<PipelineStats>,
    stop: Arc<AtomicBool>,
    mut emit: impl FnMut(Output),
) {
    let mut gate = PublishGate::new(publish.min_interval_ms, publish.on_change_only);
    let mut debounce = Debouncer::new(publish.debounce_count, publish.min_score);
    loop {
        stats
            .last_progress_ms
            .store(crate::capture::now_ms(), Ordering::Relaxed);
        // Drain what the source handed over; stop once it closed or `stop` is set and idle.
        let capture = match input.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(c)) => c,
            Ok(None) if stop.load(Ordering::Relaxed) => break,
            Ok(None) => continue,
            Err(_) => break,
        };
        let m = model.load();
        let started = Instant::now();
        let result = m
            .preprocess
            .tensor(&capture.raw)
            .map_err(anyhow::Error::from)
            .and_then(|x| Ok(m.classifier.classify(&x)?));
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                if stats.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%pipeline, error = %e, "inference failed (further failures are counted in status)");
                }
                continue;
            }
        };
        let elapsed = started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        stats.inferences.fetch_add(1, Ordering::Relaxed);
        stats
            .latency_us_sum
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let top = top_k(&out.logits, &m.classes, publish.top_k);
        let best = top[0].clone();
        if gate.admit(capture.ts_ms, &best.label) {
            emit(Output::Prediction(Prediction {
                v: SCHEMA_VERSION,
                ts: capture.ts_ms,
                pipeline: pipeline.clone(),
                capture_id: capture.id,
                label: best.label.clone(),
                score: best.score,
                top_k: top
                    .iter()
                    .map(|s| LabelScore {
                        label: s.label.clone(),
                        score: s.score,
                    })
                    .collect(),
                latency_ms,
                model: m.name.clone(),
                model_version: m.version,
            }));
        }
        if let Some(label) = debounce.observe(&best.label, best.score) {
            emit(Output::State(StableState {
                v: SCHEMA_VERSION,
                ts: capture.ts_ms,
                pipeline: pipeline.clone(),
                label,
                score: best.score,
            }));
        }
        if let Ok(mut r) = ring.lock() {
            r.push(capture);
        }
    }
}
