//! The daemon (`lsskd-edge run`): wiring. [`run`] reads as the order things start in: the
//! MQTT link, the pipelines on their models ([`models`]), the trainer and inbound threads
//! ([`learn`]), going online; it hands them to one owner ([`running`]), then serves (the
//! main loop: status and watchdog ([`status`]), metrics ([`metrics`]), supervision) until
//! the shutdown future completes.
//!
//! Threads and tasks (ARCHITECTURE.md has the full picture):
//! - one OS thread per source (`src-<pipeline>`: camera, microphone or replay) → hand-over
//!   slot (camera/images: keep newest; audio: bounded, drop new, both counted);
//! - one OS thread per pipeline running tract (`infer-<pipeline>`), never a tokio worker;
//! - one OS thread for inbound messages (`inbound`: samples and model commands, which
//!   decode and fsync; [`inbox::Inbox`]) and one for training (`trainer`, low priority);
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

pub mod announce;
pub mod fleet;
pub mod inbox;
pub mod learn;
pub mod leftovers;
pub mod metrics;
pub mod models;
pub mod running;
pub mod status;
pub mod teach;

pub use models::{ModelSlot, load_model};
pub use status::{Runtime, STALL_MS};

use crate::adapt::schedule::{Job, Scheduler};
use crate::mqtt::Topics;
use crate::mqtt::client::{self, Connection, LinkConfig, Publisher};
use crate::parts::Part;
use crate::pipeline::{self, PipelineHandle};
use crate::settings::Settings;
use announce::Announcer;
use fleet::{Fleet, FleetDesk};
use learn::TrainerThread;
use metrics::{AdaptCounters, MetricsProbe, Scrape};
use models::open_model;
use running::{Running, Stops};

/// Time allowed for an orderly shutdown.
pub const GRACE: Duration = Duration::from_secs(10);

/// The configured pipelines once [`start_pipelines`] ran: those running, those that could
/// not start, and their threads in shutdown order.
struct Pipelines {
    handles: Vec<PipelineHandle>,
    /// Pipeline name and why it did not start.
    failed: Vec<(String, String)>,
    /// Source threads (`src-<pipeline>`), stopped first.
    sources: Vec<Part>,
    /// Inference threads (`infer-<pipeline>`), stopped after the sources.
    workers: Vec<Part>,
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
    prepare(&settings)?;
    let (stops, mqtt_stop) = Stops::new();
    let (online_tx, online_rx) = watch::channel(Vec::new());
    let (link, connection) = client::link(link_config(&settings, &device, &topics, online_rx));
    let client::Link { publisher, inbound } = link;
    let mut models = BTreeMap::new();
    let ctx = pipeline_context(&settings, &device, &topics, &publisher, &stops);
    let pipelines = start_pipelines(&settings, &mut models, &ctx)?;
    let adapt_counters = Arc::new(AdaptCounters::default());
    let announcer = Arc::new(Announcer::new(
        &topics,
        &device,
        pipelines
            .handles
            .iter()
            .map(|p| (p.name.clone(), p.model.clone()))
            .collect(),
        &models,
        &publisher,
    ));
    let fleet = Arc::new(Fleet::open(
        &settings.fleet,
        &settings.state_dir,
        &device,
        &models,
        &topics,
        &publisher,
    )?);
    let mut rt = Runtime {
        device: device.clone(),
        topics: topics.clone(),
        models,
        pipelines: pipelines.handles,
        failed: pipelines.failed,
        dead: BTreeMap::new(),
        publisher,
        samples: Arc::default(),
        adapt_counters,
        announcer,
        fleet,
    };
    let (scheduler, trainer) = start_trainer(&settings, &rt, &stops)?;
    let inbound = start_inbound(&settings, &rt, &ctx, scheduler, inbound, &stops)?;
    let mqtt = go_online(&rt, &online_tx, connection, mqtt_stop)?;
    let mut running = Running {
        sources: pipelines.sources,
        workers: pipelines.workers,
        inbound,
        trainer,
        mqtt: Some(mqtt),
        prometheus: None,
        stops,
    };
    // From here on every error stops the running parts before it is returned.
    // Prometheus scrapes: the HTTP task asks the main loop for fresh figures.
    let (scrape_tx, scrape_rx) = tokio::sync::mpsc::channel(4);
    match metrics::start_prometheus(&settings.publish.prometheus_listen, scrape_tx).await {
        Ok(p) => running.prometheus = p,
        Err(e) => {
            running.stop(GRACE).await;
            return Err(e);
        }
    }
    let fatal = serve(
        &settings,
        &mut running,
        &mut rt,
        &online_tx,
        scrape_rx,
        shutdown,
    )
    .await;
    match &fatal {
        None => tracing::info!("shutting down"),
        Some(e) => tracing::error!(error = %format!("{e:#}"), "stopping after a fatal error"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    running.stop(GRACE).await;
    tracing::info!("stopped");
    fatal.map_or(Ok(()), Err)
}

/// Before any part starts: the state folder exists without the temporaries a killed
/// daemon left ([`leftovers`]), and the embedded broker (when configured) listens.
fn prepare(settings: &Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.state_dir)
        .map_err(|e| anyhow::anyhow!("state_dir {}: {e}", settings.state_dir.display()))?;
    for path in leftovers::remove_temporaries(&settings.state_dir)
        .map_err(|e| anyhow::anyhow!("state_dir {}: {e}", settings.state_dir.display()))?
    {
        tracing::warn!(path = %path.display(), "removed an unfinished write left by an earlier run");
    }
    if settings.mqtt.embedded_broker {
        #[cfg(feature = "embedded-broker")]
        crate::mqtt::embedded::start(&settings.mqtt.host, settings.mqtt.port)?;
        #[cfg(not(feature = "embedded-broker"))]
        anyhow::bail!(
            "`mqtt.embedded_broker = true` needs a build with the `embedded-broker` feature"
        );
    }
    Ok(())
}

/// The MQTT link: the broker, the topics the device subscribes to (model commands,
/// samples, Home Assistant's status), the `online` payload to publish on every connect,
/// and the inbound queue with its "busy" reply when full.
fn link_config(
    settings: &Settings,
    device: &str,
    topics: &Topics,
    online: watch::Receiver<Vec<u8>>,
) -> LinkConfig {
    let prefix = &settings.mqtt.topic_prefix;
    let mut subscriptions = vec![
        format!("{prefix}/{device}/model/+/cmd"),
        format!("{prefix}/{device}/samples/+/add"),
    ];
    subscriptions.extend(topics.teach_commands());
    if !settings.fleet.trusted.is_empty() {
        for family in fleet_families(settings) {
            subscriptions.extend(topics.fleet_subscriptions(&family));
        }
    }
    subscriptions.extend(topics.homeassistant_status());
    LinkConfig {
        settings: settings.mqtt.clone(),
        device: device.to_string(),
        topics: topics.clone(),
        subscriptions,
        online,
        inbound_capacity: settings.mqtt.inbound_queue,
        overflow_reply: inbox::busy_reply(topics.clone()),
    }
}

/// The model families of the configured pipelines (the shipped `model.onnx`'s SHA-256),
/// for the fleet's subscriptions, which are made before the models are opened; a model that
/// cannot be read has none (its pipeline fails to start and says why).
fn fleet_families(settings: &Settings) -> std::collections::BTreeSet<String> {
    settings
        .pipeline
        .iter()
        .filter_map(|p| {
            let onnx = settings
                .model_path(p)
                .join(crate::registry::package::MODEL_ONNX);
            crate::fleet::family_of(&onnx).ok()
        })
        .collect()
}

/// What every pipeline shares: publishing, the capture rings' size, the stop flags of
/// sources and workers, and the label requests.
fn pipeline_context(
    settings: &Settings,
    device: &str,
    topics: &Topics,
    publisher: &Publisher,
    stops: &Stops,
) -> pipeline::Context {
    let request_policy = pipeline::requests::RequestPolicy {
        margin: settings.adapt.request_margin,
        entropy: settings.adapt.request_entropy,
        per_hour: settings.adapt.requests_per_hour,
        ttl_ms: settings.adapt.request_ttl_secs * 1000,
    };
    pipeline::Context {
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
            pipeline::requests::LabelRequests::new(device, request_policy),
        )),
    }
}

/// Open each pipeline's model (into `models`, shared by pipelines on the same package) and
/// start the pipeline; one whose model does not open is recorded as failed, not fatal.
fn start_pipelines(
    settings: &Settings,
    models: &mut BTreeMap<String, Arc<ModelSlot>>,
    ctx: &pipeline::Context,
) -> anyhow::Result<Pipelines> {
    let mut started = Pipelines {
        handles: Vec::new(),
        failed: Vec::new(),
        sources: Vec::new(),
        workers: Vec::new(),
    };
    for p in &settings.pipeline {
        let model_name = match open_model(models, settings, &settings.model_path(p)) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(pipeline = %p.name, error = %format!("{e:#}"), "pipeline not started");
                started.failed.push((p.name.clone(), format!("{e:#}")));
                continue;
            }
        };
        let live = models[&model_name].live.clone();
        let pipeline = pipeline::start(p, model_name, live, ctx)?;
        started.sources.push(pipeline.source);
        started.workers.push(pipeline.worker);
        started.handles.push(pipeline.handle);
    }
    Ok(started)
}

/// With learning on: the trainer thread (low priority) and the scheduler that feeds it
/// jobs; with it off, neither.
fn start_trainer(
    settings: &Settings,
    rt: &Runtime,
    stops: &Stops,
) -> anyhow::Result<(Option<Scheduler>, Option<Part>)> {
    if !settings.adapt.enabled {
        return Ok((None, None));
    }
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<Job>(16);
    let imprint_waiting = Arc::new(AtomicBool::new(false));
    let trainer = TrainerThread {
        models: rt.models.clone(),
        cfg: settings.adapt.clone(),
        topics: rt.topics.clone(),
        publish: rt.publisher.clone(),
        stop: stops.trainer.clone(),
        imprint_waiting: imprint_waiting.clone(),
        counters: rt.adapt_counters.clone(),
        announcer: rt.announcer.clone(),
        fleet: rt.fleet.clone(),
        last_adopted: Default::default(),
    };
    let part = Part::spawn("trainer", move || trainer.run(jobs_rx))?;
    let scheduler = Scheduler::new(settings.adapt.clone(), jobs_tx, imprint_waiting);
    Ok((Some(scheduler), Some(part)))
}

/// The inbound thread: samples and model commands from the broker.
fn start_inbound(
    settings: &Settings,
    rt: &Runtime,
    ctx: &pipeline::Context,
    scheduler: Option<Scheduler>,
    inbound: std::sync::mpsc::Receiver<client::Inbound>,
    stops: &Stops,
) -> anyhow::Result<Part> {
    let inbox = inbox::Inbox {
        adapt: settings.adapt.clone(),
        topics: rt.topics.clone(),
        models: rt.models.clone(),
        rings: rt
            .pipelines
            .iter()
            .map(|p| (p.name.clone(), p.model.clone(), p.ring.clone()))
            .collect(),
        regions: rt
            .pipelines
            .iter()
            .filter_map(|p| Some((p.model.clone(), p.region?)))
            .collect(),
        requests: ctx.requests.clone(),
        publisher: rt.publisher.clone(),
        scheduler,
        samples: rt.samples.clone(),
        announcer: rt.announcer.clone(),
        teach: Default::default(),
        fleet: FleetDesk::new(rt.fleet.clone()),
    };
    let stop = stops.inbound.clone();
    Ok(Part::spawn("inbound", move || inbox.run(inbound, stop))?)
}

/// Every part is up: the first status becomes the `online` payload, Home Assistant's
/// discovery is queued, the MQTT task starts (it publishes both once connected) and
/// systemd hears that the service is ready.
fn go_online(
    rt: &Runtime,
    online_tx: &watch::Sender<Vec<u8>>,
    connection: Connection,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    online_tx.send_replace(serde_json::to_vec(&rt.status())?);
    rt.announcer.announce(true);
    let mqtt = tokio::spawn(client::run(connection, stop));
    tracing::info!(device = %rt.device, pipelines = rt.pipelines.len(), failed = rt.failed.len(), "daemon running");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&Runtime::status_line(&rt.status())),
    ]);
    Ok(mqtt)
}

/// The main loop until `shutdown` completes (`None`) or something is fatal (the error): a
/// status and watchdog tick, metrics, Prometheus scrapes, supervision of every part.
async fn serve(
    settings: &Settings,
    running: &mut Running,
    rt: &mut Runtime,
    online_tx: &watch::Sender<Vec<u8>>,
    mut scrape_rx: tokio::sync::mpsc::Receiver<Scrape>,
    shutdown: impl Future<Output = ()>,
) -> Option<anyhow::Error> {
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
    let mut probe = MetricsProbe::new();
    let mut scrape_probe = MetricsProbe::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return None,
            e = running.mqtt_ended() => return Some(e),
            Some(reply) = scrape_rx.recv() => {
                let m = scrape_probe.sample(&rt.pipelines, &rt.adapt_counters);
                let _ = reply.send(metrics::prometheus_text(&m, &rt.device));
            }
            _ = metrics_tick.tick(), if metrics_every > 0 => {
                let m = probe.sample(&rt.pipelines, &rt.adapt_counters);
                match serde_json::to_vec(&m) {
                    Ok(body) => rt.publish(rt.topics.metrics(), body, false),
                    Err(e) => return Some(e.into()),
                }
            }
            _ = tick.tick() => {
                if let Some(e) = supervise(running, rt, online_tx) {
                    return Some(e);
                }
            }
        }
    }
}

/// One status tick: a part whose end is fatal ends the loop (its error); a panicked
/// pipeline is marked dead; the status is published (and becomes the `online` payload)
/// and the watchdog pinged unless a pipeline is stalled.
fn supervise(
    running: &mut Running,
    rt: &mut Runtime,
    online_tx: &watch::Sender<Vec<u8>>,
) -> Option<anyhow::Error> {
    if let Some(e) = running.fatal() {
        return Some(e);
    }
    // A panicked pipeline thread: logged once, `failed: …` in the status from then on (its
    // pipeline stalls, so the watchdog is withheld).
    for (pipeline, how) in running.panicked_pipelines() {
        tracing::error!(%pipeline, "{how}");
        rt.dead.entry(pipeline).or_insert(how);
    }
    let status = rt.status();
    let line = Runtime::status_line(&status);
    let stalled = rt.stalled();
    if stalled.is_empty() {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Watchdog,
            sd_notify::NotifyState::Status(&line),
        ]);
    } else {
        tracing::warn!(pipelines = ?stalled, "a pipeline thread is stalled; withholding the watchdog ping");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!("stalled: {line}"))]);
    }
    match serde_json::to_vec(&status) {
        Ok(status) => {
            online_tx.send_replace(status.clone());
            rt.publish(rt.topics.status(), status, true);
            None
        }
        Err(e) => Some(e.into()),
    }
}
