//! Pipelines: source → features → tract student → outputs. [`decide`] holds the pure
//! per-pipeline decisions, [`worker`] the inference thread that applies them, and
//! [`start`] starts one pipeline: its source thread, its inference thread and where their
//! outputs go.

pub mod decide;
pub mod requests;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use decide::{Debouncer, PublishGate};

use crate::capture::ring::CaptureRing;
use crate::capture::source::{self, SourceHealth, SourceJob};
use crate::capture::{Capture, now_ms, slot};
use crate::features::Preprocess;
use crate::mqtt::Topics;
use crate::mqtt::client::Publisher;
use crate::mqtt::payload::{PipelineHealth, SCHEMA_VERSION, Scene};
use crate::parts::Part;
use crate::settings::{PipelineSettings, PublishSettings, SourceSettings};
use worker::{LoadedModel, Output, PipelineStats};

/// Audio windows waiting for inference before new ones are dropped.
pub const AUDIO_QUEUE: usize = 8;

/// What every pipeline of a daemon shares.
pub struct Context {
    pub publish: PublishSettings,
    /// Captures kept per pipeline for `capture_id` samples, and the bytes they may hold.
    pub capture_ring: usize,
    pub capture_ring_bytes: usize,
    /// Longest wait between two attempts to reopen a device.
    pub source_max_backoff: Duration,
    pub publisher: Publisher,
    pub topics: Topics,
    /// The stable label of every pipeline (the retained `scene`).
    pub scene: Arc<Mutex<BTreeMap<String, String>>>,
    pub stop_sources: Arc<AtomicBool>,
    pub stop_workers: Arc<AtomicBool>,
    /// When to ask for labels (`None`: never), and the open requests.
    pub request_policy: Option<requests::RequestPolicy>,
    pub requests: Arc<Mutex<requests::LabelRequests>>,
}

/// One running pipeline, as the rest of the daemon sees it.
pub struct PipelineHandle {
    pub name: String,
    pub model: String,
    pub stats: Arc<PipelineStats>,
    pub source: Arc<SourceHealth>,
    pub ring: Arc<Mutex<CaptureRing>>,
    /// `[pipeline.region]`: what the worker cuts every frame to.
    pub region: Option<crate::features::Region>,
    /// A clone of the hand-over sender, for its drop count.
    input: slot::Sender<Capture>,
    live: Arc<ArcSwap<LoadedModel>>,
}

impl PipelineHandle {
    /// The pipeline's line in the status message.
    pub fn health(&self) -> PipelineHealth {
        PipelineHealth {
            name: self.name.clone(),
            state: self.source.get(),
            model_version: self.live.load().version,
            kernel: self.live.load().kernel.clone(),
            inferences: self.stats.inferences.load(Ordering::Relaxed),
            dropped: self.input.dropped() + self.source.dropped_blocks.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            mean_latency_ms: self.stats.mean_latency_ms(),
            restarts: self.source.restarts.load(Ordering::Relaxed),
        }
    }
}

/// A started pipeline: its handle and its two threads (stopped by the caller, sources
/// first).
pub struct Started {
    pub handle: PipelineHandle,
    pub source: Part,
    pub worker: Part,
}

fn model_rate(pre: &Preprocess) -> Option<u32> {
    match pre {
        Preprocess::Audio(a) => Some(a.sample_rate_hz),
        Preprocess::Image(_) => None,
    }
}

/// Start pipeline `p` on the live model `live` (named `model`): the source thread
/// (`src-<name>`) feeding a hand-over slot (camera and images: keep the newest; audio:
/// bounded, drop new), and the inference thread (`infer-<name>`) publishing predictions,
/// stable states and the scene.
pub fn start(
    p: &PipelineSettings,
    model: String,
    live: Arc<ArcSwap<LoadedModel>>,
    ctx: &Context,
) -> std::io::Result<Started> {
    let pre = live.load().preprocess.clone();
    let (tx, rx) = match p.source {
        SourceSettings::Camera { .. }
        | SourceSettings::Rtsp { .. }
        | SourceSettings::ReplayImages { .. } => slot::latest(),
        _ => slot::bounded(AUDIO_QUEUE),
    };
    let health = Arc::new(SourceHealth::default());
    let job = SourceJob {
        pipeline: p.name.clone(),
        // Replay paths were resolved when the settings were loaded.
        source: p.source.clone(),
        sample_rate_hz: model_rate(&pre),
        out: tx.clone(),
        stop: ctx.stop_sources.clone(),
        health: health.clone(),
        max_backoff: ctx.source_max_backoff,
    };
    let source = Part::spawn(&format!("src-{}", p.name), move || source::run(job))?;
    let stats = Arc::new(PipelineStats::default());
    stats.last_progress_ms.store(now_ms(), Ordering::Relaxed);
    let ring = Arc::new(Mutex::new(CaptureRing::new(
        ctx.capture_ring,
        ctx.capture_ring_bytes,
    )));
    let (name, publish, stop) = (
        p.name.clone(),
        ctx.publish.clone(),
        ctx.stop_workers.clone(),
    );
    let (stats_w, ring_w, live_w) = (stats.clone(), ring.clone(), live.clone());
    let (publisher, topics, scene) = (ctx.publisher.clone(), ctx.topics.clone(), ctx.scene.clone());
    let (policy, requests) = (ctx.request_policy.clone(), ctx.requests.clone());
    let region = p.region;
    let worker = Part::spawn(&format!("infer-{}", p.name), move || {
        worker::run(
            name.clone(),
            rx,
            region,
            live_w,
            publish,
            ring_w,
            stats_w,
            stop,
            policy,
            |o| route(o, &name, &publisher, &topics, &scene, &requests),
        )
    })?;
    Ok(Started {
        handle: PipelineHandle {
            name: p.name.clone(),
            model,
            stats,
            source: health,
            ring,
            region: p.region,
            input: tx,
            live,
        },
        source,
        worker,
    })
}

/// Where a pipeline's outputs go: predictions (not retained), its stable state and the
/// scene of all pipelines (both retained), label requests (within their budget; the
/// thumbnail also retained on its own topic, for Home Assistant's image entity).
fn route(
    o: Output,
    name: &str,
    publisher: &Publisher,
    topics: &Topics,
    scene: &Mutex<BTreeMap<String, String>>,
    requests: &Mutex<requests::LabelRequests>,
) {
    match o {
        Output::Uncertain {
            model,
            capture,
            candidates,
        } => {
            let asked = requests.lock().unwrap_or_else(|e| e.into_inner()).request(
                name,
                &model,
                &capture,
                &candidates,
                now_ms(),
            );
            if let Some(r) = asked {
                tracing::info!(pipeline = %name, capture_id = r.capture_id, guess = %r.candidates.first().map_or("", |c| c.label.as_str()), "label requested");
                if let Some(t) = &r.thumbnail {
                    publisher.send(
                        topics.label_request_thumbnail(),
                        t.clone().into_bytes(),
                        true,
                    );
                }
                if let Ok(body) = serde_json::to_vec(&r) {
                    publisher.send(topics.label_request(), body, false);
                }
            }
        }
        Output::Prediction(pred) => {
            tracing::debug!(target: crate::PREDICTIONS_LOG, pipeline = %name, label = %pred.label, score = format!("{:.2}", pred.score), latency_ms = format!("{:.1}", pred.latency_ms), "prediction");
            if let Ok(body) = serde_json::to_vec(&pred) {
                publisher.send(topics.prediction(name), body, false);
            }
        }
        Output::State(st) => {
            tracing::debug!(target: crate::PREDICTIONS_LOG, pipeline = %name, label = %st.label, "stable state");
            let ts = st.ts;
            let label = st.label.clone();
            if let Ok(body) = serde_json::to_vec(&st) {
                publisher.send(topics.state(name), body, true);
            }
            let scene = {
                let mut map = scene.lock().unwrap_or_else(|e| e.into_inner());
                map.insert(name.to_string(), label);
                Scene {
                    v: SCHEMA_VERSION,
                    ts,
                    states: map.clone(),
                }
            };
            if let Ok(body) = serde_json::to_vec(&scene) {
                publisher.send(topics.scene(), body, true);
            }
        }
    }
}
