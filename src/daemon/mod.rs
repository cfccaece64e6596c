//! The daemon (`lsskd-edge run`): wiring. [`run`] opens the models ([`models`]), starts
//! the pipelines, the inbound and trainer threads ([`learn`]) and the MQTT task, hands them
//! to one owner ([`running`]), then loops: status and watchdog ([`status`]), metrics
//! ([`metrics`]), supervision, until the shutdown future completes.
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
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub mod learn;
pub mod metrics;
pub mod models;
pub mod running;
pub mod status;

pub use models::{ModelSlot, load_model};
pub use status::{Runtime, STALL_MS};

use crate::adapt::schedule::{Job, Scheduler};
use crate::mqtt::Topics;
use crate::mqtt::client::{self, LinkConfig};
use crate::parts::Part;
use crate::pipeline::{self, PipelineHandle};
use crate::settings::Settings;
use learn::TrainerThread;
use models::open_model;

/// Time allowed for an orderly shutdown.
pub const GRACE: Duration = Duration::from_secs(10);
/// What [`start`] built: running pipelines, pipelines that failed (name, reason), threads.
type Started = (Vec<PipelineHandle>, Vec<(String, String)>, Threads);

/// Started threads, in shutdown order.
struct Threads {
    sources: Vec<Part>,
    workers: Vec<Part>,
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
/// documented order within [`GRACE`]. A part that dies (the MQTT task, the trainer or the
/// inbound thread) is fatal: everything is stopped and the error returned (systemd
/// restarts the service).
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
        let trainer = TrainerThread {
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
    let mut rt = Runtime {
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
    let mut running = running::Running {
        sources: threads.sources,
        workers: threads.workers,
        inbound: inbound_thread,
        trainer: trainer_thread,
        mqtt: Some(mqtt),
        prometheus: None,
        stops,
    };
    // From here on every error stops the running parts before it is returned.
    match metrics::start_prometheus(&settings.publish.prometheus_listen, scrape_tx).await {
        Ok(p) => running.prometheus = p,
        Err(e) => {
            running.stop(GRACE).await;
            return Err(e);
        }
    }
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
                match serde_json::to_vec(&m) {
                    Ok(body) => rt.publish(topics.metrics(), body, false),
                    Err(e) => break Some(e.into()),
                }
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
                match serde_json::to_vec(&status) {
                    Ok(status) => {
                        online_tx.send_replace(status.clone());
                        rt.publish(topics.status(), status, true);
                    }
                    Err(e) => break Some(e.into()),
                }
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
