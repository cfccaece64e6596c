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
use crate::features::{ChangeLocator, FeatureError, Preprocess, Raw, Region};
use crate::inference::Classifier;
use crate::inference::{softmax, top_k_of};
use crate::mqtt::payload::{LabelScore, Prediction, SCHEMA_VERSION, StableState};
use crate::settings::PublishSettings;

/// A model ready to run: what the slot holds.
pub struct LoadedModel {
    pub name: String,
    pub version: u32,
    pub classes: Vec<String>,
    /// The class whose stable state is [`super::decide::NOTHING`] (`Manifest::background`).
    pub background: Option<String>,
    /// The view's reference (`Manifest::change_reference`): frames are cut to their change.
    pub change: Option<ChangeLocator>,
    pub preprocess: Preprocess,
    pub classifier: Classifier,
    /// Which convolutions run it (`inference::Classifier::kernel`), chosen by timing.
    pub kernel: String,
}

impl LoadedModel {
    /// The model's input tensor of `raw` (cut to its change first when the version holds
    /// a reference).
    pub fn input(&self, raw: &Raw) -> Result<Vec<f32>, FeatureError> {
        match &self.change {
            Some(locator) => self.preprocess.tensor(&locator.cut_raw(raw)?),
            None => self.preprocess.tensor(raw),
        }
    }
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
    /// The latest features + inference times, microseconds (for percentiles).
    pub recent_latency_us: Mutex<LatencyWindow>,
}

/// The last [`LatencyWindow::SIZE`] latencies, oldest overwritten first.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    values: Vec<u32>,
    next: usize,
}

impl LatencyWindow {
    pub const SIZE: usize = 512;

    pub fn push(&mut self, us: u32) {
        if self.values.len() < Self::SIZE {
            self.values.push(us);
        } else {
            self.values[self.next] = us;
        }
        self.next = (self.next + 1) % Self::SIZE;
    }

    /// The `q`-quantiles (0..=1, nearest rank) of the window, milliseconds; `None` when
    /// it is empty.
    pub fn quantiles_ms(&self, qs: &[f64]) -> Option<Vec<f64>> {
        if self.values.is_empty() {
            return None;
        }
        let mut v = self.values.clone();
        v.sort_unstable();
        Some(
            qs.iter()
                .map(|q| {
                    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                    v[rank - 1] as f64 / 1000.0
                })
                .collect(),
        )
    }
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
    /// An uncertain prediction ([`super::requests::RequestPolicy::uncertain`]): its capture
    /// and the best guesses, for a label request.
    Uncertain {
        model: String,
        capture: Capture,
        candidates: Vec<crate::inference::Scored>,
    },
}

/// Run until `stop`; `emit` must not block (the daemon's `mqtt::client::Publisher` queues
/// into the session's outbox, which keeps the newest messages and drops the oldest).
#[allow(clippy::too_many_arguments)]
pub fn run(
    pipeline: String,
    input: slot::Receiver<Capture>,
    region: Option<Region>,
    model: Arc<ArcSwap<LoadedModel>>,
    publish: PublishSettings,
    ring: Arc<Mutex<CaptureRing>>,
    stats: Arc<PipelineStats>,
    stop: Arc<AtomicBool>,
    requests: Option<super::requests::RequestPolicy>,
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
        // The region first: the ring, label requests and samples hold what the model saw.
        let capture = match cut(capture, region.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                if stats.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%pipeline, error = %e, "frame does not fit the pipeline's region (further failures are counted in status)");
                }
                continue;
            }
        };
        let m = model.load();
        let started = Instant::now();
        let result = m
            .input(&capture.raw)
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
        if let Ok(mut w) = stats.recent_latency_us.lock() {
            w.push(elapsed.as_micros().min(u32::MAX as u128) as u32);
        }
        let probs = softmax(&out.logits);
        let top = top_k_of(&probs, &m.classes, publish.top_k);
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
        let label = super::decide::state_label(&best.label, m.background.as_deref());
        let stable = debounce.observe(label, best.score);
        if let Some(label) = &stable {
            emit(Output::State(StableState {
                v: SCHEMA_VERSION,
                ts: capture.ts_ms,
                pipeline: pipeline.clone(),
                label: label.clone(),
                score: best.score,
            }));
        }
        if let Some(policy) = &requests
            && policy.uncertain(&probs)
        {
            emit(Output::Uncertain {
                model: m.name.clone(),
                capture: capture.clone(),
                candidates: top.clone(),
            });
        }
        if let Ok(mut r) = ring.lock() {
            if let Some(label) = stable {
                r.set_stable(label, capture.clone());
            }
            r.push(capture);
        }
    }
}

/// `capture` cut to `region` (images only).
fn cut(mut capture: Capture, region: Option<&Region>) -> Result<Capture, FeatureError> {
    if let (Some(r), Raw::Image(img)) = (region, &capture.raw) {
        capture.raw = Raw::Image(r.crop(img)?);
    }
    Ok(capture)
}

#[cfg(test)]
mod tests {
    use super::LatencyWindow;

    #[test]
    fn latency_percentiles_by_nearest_rank_over_the_latest_window() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.quantiles_ms(&[0.5]), None);
        for us in 1..=100 {
            w.push(us * 1000);
        }
        assert_eq!(w.quantiles_ms(&[0.5, 0.95]), Some(vec![50.0, 95.0]));
        // Older values leave the window.
        for _ in 0..LatencyWindow::SIZE {
            w.push(7000);
        }
        assert_eq!(w.quantiles_ms(&[0.5, 0.95]), Some(vec![7.0, 7.0]));
    }
}
