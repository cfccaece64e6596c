//! The daemon (`lsskd-edge run`): wires sources, inference threads and the MQTT task;
//! stops in a fixed order; talks to systemd (sd_notify READY / WATCHDOG / STATUS).
//!
//! Threads and tasks (ARCHITECTURE.md has the full picture):
//! - one OS thread per source (`src-<pipeline>`: camera, microphone or replay) → hand-over
//!   slot (camera/images: keep newest; audio: bounded, drop new, both counted);
//! - one OS thread per pipeline running tract (`infer-<pipeline>`), never a tokio worker;
//! - one OS thread for inbound messages (`inbound`: samples and model commands, which
//!   decode and fsync; [`learn::Inbox`]) and one for training (`trainer`, low priority);
//! - tokio tasks: the MQTT connection (owns the rumqttc event loop), and this main loop
//!   (status/watchdog tick, metrics, supervision of every part, the shutdown future).
//!
//! Shutdown order (when the `shutdown` future given to [`run`] completes; in production
//! SIGTERM/SIGINT, see [`run_until_signal`]): stop sources → inference threads drain and
//! stop → the inbound thread refuses what is queued → the trainer (a fine-tune is
//! cancelled) → `offline` published and the connection closed → exit. Everything within
//! [`GRACE`]; a second signal exits at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub mod learn;
pub mod metrics;
mod running;

use crate::adapt::schedule::{Job, Scheduler};
use crate::capture::now_ms;
use crate::inference::Classifier;
use crate::mqtt::Topics;
use crate::mqtt::client::{self, LinkConfig, Publisher};
use crate::mqtt::payload::{MqttHealth, PipelineHealth, SCHEMA_VERSION, SampleTraffic, Status};
use crate::parts::Part;
use crate::pipeline::worker::LoadedModel;
use crate::pipeline::{self, PipelineHandle};
use crate::registry::ModelPackage;
use crate::registry::versions::Versions;
use crate::samples::SampleStore;
use crate::settings::Settings;
use learn::Trainer;

/// Time allowed for an orderly shutdown.
pub const GRACE: Duration = Duration::from_secs(10);
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

/// Build a ready-to-run model from a package.
pub fn load_model(pkg: &ModelPackage) -> anyhow::Result<LoadedModel> {
    Ok(LoadedModel {
        name: pkg.manifest.name.clone(),
        version: pkg.manifest.version,
        classes: pkg.manifest.classes.clone(),
        preprocess: pkg.manifest.preprocess.clone(),
        classifier: Classifier::load(&pkg.onnx_path())?,
    })
}

/// One live model: its version store, its samples, and the slot its pipelines read from.
pub struct ModelSlot {
    pub versions: Versions,
    pub store: SampleStore,
    pub live: Arc<ArcSwap<LoadedModel>>,
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
            inferences: 0,
            dropped: 0,
            errors: 0,
            mean_latency_ms: 0.0,
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

    /// Home Assistant device discovery (`mqtt::discovery`), `None` when it is off.
    pub fn homeassistant_discovery(&self) -> Option<(String, Vec<u8>)> {
        let pipelines: Vec<&str> = self.pipelines.iter().map(|p| p.name.as_str()).collect();
        let models: Vec<&str> = self.models.keys().map(String::as_str).collect();
        let (topic, body) =
            crate::mqtt::discovery::payload(&self.topics, &self.device, &pipelines, &models)?;
        Some((topic, serde_json::to_vec(&body).ok()?))
    }
}

/// What [`start`] built: running pipelines, pipelines that failed (name, reason), threads.
type Started = (Vec<PipelineHandle>, Vec<(String, String)>, Threads);

/// Started threads, in shutdown order.
struct Threads {
    sources: Vec<Part>,
    workers: Vec<Part>,
}

/// Open (or reuse) the live model of a package folder.
fn open_model(
    models: &mut BTreeMap<String, Arc<ModelSlot>>,
    settings: &Settings,
    shipped: &std::path::Path,
) -> anyhow::Result<String> {
    let pkg = ModelPackage::load(shipped)?;
    let name = pkg.manifest.name.clone();
    if !models.contains_key(&name) {
        let versions = Versions::new(
            &settings.state_dir,
            &name,
            shipped,
            settings.adapt.keep_versions,
        )?;
        let current = versions.open_current()?;
        if let Some(w) = &current.warning {
            tracing::error!(model = %name, "{w}");
        }
        let live = Arc::new(ArcSwap::from_pointee(load_model(&current.package)?));
        let store = SampleStore::open(&settings.state_dir, &name, settings.adapt.sample_quota)?;
        tracing::info!(model = %name, version = current.version, classes = current.package.manifest.classes.len(), "model loaded");
        models.insert(
            name.clone(),
            Arc::new(ModelSlot {
                versions,
                store,
                live,
            }),
        );
    }
    Ok(name)
}

fn start(
    settings: &Settings,
    models: &mut BTreeMap<String, Arc<ModelSlot>>,
    ctx: &pipeline::Context,
) -> anyhow::Result<Started> {
    let mut handles = Vec::new();
    let mut failed = Vec::new();
    let mut threads = Threads {
        sources: Vec::new(),
        workers: Vec::new(),
    };
    for p in &settings.pipeline {
        let model_name = match open_model(models, settings, &settings.model_path(p)) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(pipeline = %p.name, error = %format!("{e:#}"), "pipeline not started");
                failed.push((p.name.clone(), format!("{e:#}")));
                continue;
            }
        };
        let live = models[&model_name].live.clone();
        let started = pipeline::start(p, model_name, live, ctx)?;
        threads.sources.push(started.source);
        threads.workers.push(started.worker);
        handles.push(started.handle);
    }
    Ok((handles, failed, threads))
}

/// Run the daemon until SIGTERM/SIGINT (a second signal exits at once).
pub fn run_until_signal(settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lsskd-tokio")
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            });
        };
        run(settings, shutdown).await
    });
    // Threads left behind at the deadline (reported by `run`) do not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// The daemon: every part started, serving until `shutdown` completes, then stopped in the
/// documented order within [`GRACE`]. A part that dies (the MQTT task, the trainer thread)
/// is fatal: everything is stopped and the error returned (systemd restarts the service).
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let device = settings.device_id();
    let topics = Topics::new(
        &settings.mqtt.topic_prefix,
        &device,
        &settings.mqtt.homeassistant_prefix,
    );
    std::fs::create_dir_all(&settings.state_dir)
        .map_err(|e| anyhow::anyhow!("state_dir {}: {e}", settings.state_dir.display()))?;
    if settings.mqtt.embedded_broker {
        #[cfg(feature = "embedded-broker")]
        crate::mqtt::embedded::start(&settings.mqtt.host, settings.mqtt.port)?;
        #[cfg(not(feature = "embedded-broker"))]
        anyhow::bail!(
            "`mqtt.embedded_broker = true` needs a build with the `embedded-broker` feature"
        );
    }
    let (stops, mqtt_stop) = running::Stops::new();
    let mut subscriptions = vec![
        format!("{}/{}/model/+/cmd", settings.mqtt.topic_prefix, device),
        format!("{}/{}/samples/+/add", settings.mqtt.topic_prefix, device),
    ];
    subscriptions.extend(topics.homeassistant_status());
    let (online_tx, online_rx) = watch::channel(Vec::new());
    let (link, connection) = client::link(LinkConfig {
        settings: settings.mqtt.clone(),
        device: device.clone(),
        topics: topics.clone(),
        subscriptions,
        online: online_rx,
        inbound_capacity: settings.mqtt.inbound_queue,
        overflow_reply: learn::busy_reply(topics.clone()),
    });
    let client::Link {
        publisher,
        inbound: in_rx,
    } = link;
    let mut models = BTreeMap::new();
    let request_policy = pipeline::requests::RequestPolicy {
        margin: settings.adapt.request_margin,
        entropy: settings.adapt.request_entropy,
        per_hour: settings.adapt.requests_per_hour,
        ttl_ms: settings.adapt.request_ttl_secs * 1000,
    };
    let ctx = pipeline::Context {
        publish: settings.publish.clone(),
        capture_ring: settings.adapt.capture_ring,
        capture_ring_bytes: settings.adapt.capture_ring_mb << 20,
        source_max_backoff: Duration::from_secs(settings.mqtt.reconnect_max_secs.max(1)),
        publisher: publisher.clone(),
        topics: topics.clone(),
        scene: Arc::default(),
        stop_sources: stops.sources.clone(),
        stop_workers: stops.workers.clone(),
        // (`requests_per_hour = 0` is checked by the policy itself.)
        request_policy: settings.adapt.enabled.then(|| request_policy.clone()),
        requests: Arc::new(std::sync::Mutex::new(
            pipeline::requests::LabelRequests::new(&device, request_policy),
        )),
    };
    let (pipelines, failed, threads) = start(&settings, &mut models, &ctx)?;
    // The trainer thread (low priority) and the scheduler that feeds it.
    let adapt_counters = Arc::new(metrics::AdaptCounters::default());
    let (scheduler, trainer_thread) = if settings.adapt.enabled {
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<Job>(16);
        let imprint_waiting = Arc::new(AtomicBool::new(false));
        let trainer = Trainer {
            models: models.clone(),
            cfg: settings.adapt.clone(),
            topics: topics.clone(),
            publish: publisher.clone(),
            stop: stops.trainer.clone(),
            imprint_waiting: imprint_waiting.clone(),
            counters: adapt_counters.clone(),
        };
        let part = Part::spawn("trainer", move || trainer.run(jobs_rx))?;
        (
            Some(Scheduler::new(
                settings.adapt.clone(),
                jobs_tx,
                imprint_waiting,
            )),
            Some(part),
        )
    } else {
        (None, None)
    };
    let rt = Runtime {
        device: device.clone(),
        topics: topics.clone(),
        models,
        pipelines,
        failed,
        dead: BTreeMap::new(),
        publisher,
        samples: Arc::default(),
        adapt_counters,
    };
    // The inbound thread: samples and model commands.
    let inbox = learn::Inbox {
        adapt: settings.adapt.clone(),
        topics: topics.clone(),
        models: rt.models.clone(),
        rings: rt
            .pipelines
            .iter()
            .map(|p| (p.name.clone(), p.model.clone(), p.ring.clone()))
            .collect(),
        requests: ctx.requests.clone(),
        publisher: rt.publisher.clone(),
        scheduler,
        samples: rt.samples.clone(),
        discovery: rt.homeassistant_discovery(),
    };
    let inbound_thread = {
        let stop = stops.inbound.clone();
        Part::spawn("inbound", move || inbox.run(in_rx, stop))?
    };
    let mut rt = rt;
    online_tx.send_replace(serde_json::to_vec(&rt.status())?);
    if let Some((topic, body)) = rt.homeassistant_discovery() {
        rt.publish(topic, body, true);
    }
    let mqtt = tokio::spawn(client::run(connection, mqtt_stop));
    tracing::info!(%device, pipelines = rt.pipelines.len(), failed = rt.failed.len(), "daemon running");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&Runtime::status_line(&rt.status())),
    ]);
    let tick_every = sd_notify::watchdog_enabled()
        .map(|d| (d / 2).min(Duration::from_secs(5)))
        .unwrap_or(Duration::from_secs(5));
    let mut tick = tokio::time::interval(tick_every);
    // Metrics (off: an interval that never fires in practice, and is not polled).
    let metrics_every = settings.publish.metrics_interval_secs;
    let mut metrics_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(metrics_every.max(1)),
        Duration::from_secs(metrics_every.max(1)),
    );
    let mut probe = metrics::MetricsProbe::new();
    // Prometheus scrapes: the HTTP task asks this loop for fresh figures.
    let (scrape_tx, mut scrape_rx) = tokio::sync::mpsc::channel(4);
    let mut scrape_probe = metrics::MetricsProbe::new();
    let prometheus =
        metrics::start_prometheus(&settings.publish.prometheus_listen, scrape_tx).await?;
    let mut running = running::Running {
        sources: threads.sources,
        workers: threads.workers,
        inbound: inbound_thread,
        trainer: trainer_thread,
        mqtt: Some(mqtt),
        prometheus,
        stops,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let fatal: Option<anyhow::Error> = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            e = running.mqtt_ended() => break Some(e),
            Some(reply) = scrape_rx.recv() => {
                let m = scrape_probe.sample(&rt.pipelines, &rt.adapt_counters);
                let _ = reply.send(metrics::prometheus_text(&m, &rt.device));
            }
            _ = metrics_tick.tick(), if metrics_every > 0 => {
                let m = probe.sample(&rt.pipelines, &rt.adapt_counters);
                rt.publish(topics.metrics(), serde_json::to_vec(&m)?, false);
            }
            _ = tick.tick() => {
                if let Some(e) = running.fatal() {
                    break Some(e);
                }
                // A panicked pipeline thread: logged once, `failed: …` in the status from
                // then on (its pipeline stalls, so the watchdog is withheld).
                for (pipeline, how) in running.panicked_pipelines() {
                    tracing::error!(%pipeline, "{how}");
                    rt.dead.entry(pipeline).or_insert(how);
                }
                let status = rt.status();
                let line = Runtime::status_line(&status);
                let stalled = rt.stalled();
                if stalled.is_empty() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog, sd_notify::NotifyState::Status(&line)]);
                } else {
                    tracing::warn!(pipelines = ?stalled, "a pipeline thread is stalled; withholding the watchdog ping");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!("stalled: {line}"))]);
                }
                let status = serde_json::to_vec(&status)?;
                online_tx.send_replace(status.clone());
                rt.publish(topics.status(), status, true);
            }
        }
    };
    match &fatal {
        None => tracing::info!("shutting down"),
        Some(e) => tracing::error!(error = %format!("{e:#}"), "stopping after a fatal error"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    running.stop(GRACE).await;
    tracing::info!("stopped");
    fatal.map_or(Ok(()), Err)
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
