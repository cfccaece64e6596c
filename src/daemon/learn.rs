//! On-device learning in the daemon, the inbound thread and the trainer thread:
//! - [`Inbox`], on the inbound thread: sample ingestion (`samples/<m>/add`: validate,
//!   store, ack; the busy reply when the inbound queue is full) and model commands
//!   (`model/<m>/cmd`), which feed the scheduler (`adapt::schedule`);
//! - the trainer thread: imprint / fine-tune / gate / promote (`adapt::learner`),
//!   rollback, promote-to-version, hot swaps of the live model;
//! - what is published about it (`training/state`, `model/<m>/info`; the payload types
//!   live in `mqtt::payload`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::metrics::AdaptCounters;
use super::models::{ModelSlot, load_model};
use crate::adapt::learner::{self, Forgotten, Outcome, Phase};
use crate::adapt::schedule::{Job, JobEnd, Labels, Scheduler, TrainerQueue, parse_command};
use crate::capture::now_ms;
use crate::capture::ring::CaptureRing;
use crate::mqtt::client::Publisher;
use crate::mqtt::client::{Inbound, Outbound, OverflowReply};
pub use crate::mqtt::payload::{ModelCard, TrainState, TrainingState, Unserved};
use crate::mqtt::payload::{SampleTraffic, SamplesReply, VersionSummary, VersionsReply};
use crate::mqtt::{Topic, Topics, topics};
use crate::pipeline::requests::LabelRequests;
use crate::registry::ModelPackage;
use crate::registry::card::GateMetrics;
use crate::samples::ingest::{self, Ack, Reject, SampleSource};
use crate::settings::AdaptSettings;

/// Sample ingestion and model commands, on their own thread (`inbound`): decoding a
/// sample and the sample store's fsync never hold up the main loop. Fed by the MQTT
/// connection's inbound queue (full: the connection answers [`busy_reply`] itself); the
/// trainer runs the jobs.
pub struct Inbox {
    pub adapt: AdaptSettings,
    pub topics: Topics,
    pub models: BTreeMap<String, Arc<ModelSlot>>,
    /// Capture rings of the running pipelines: (pipeline, model, ring).
    pub rings: Vec<(String, String, Arc<Mutex<CaptureRing>>)>,
    /// The region of interest of each model's pipeline (`[pipeline.region]`): image
    /// samples sent as whole frames are cut to it, as the pipeline cuts its frames.
    pub regions: BTreeMap<String, crate::features::Region>,
    /// Open label requests and their pinned captures.
    pub requests: Arc<Mutex<LabelRequests>>,
    pub publisher: Publisher,
    /// `None` when `adapt.enabled = false`.
    pub scheduler: Option<Scheduler>,
    /// Sample requests answered so far (read by the status).
    pub samples: Arc<Mutex<SampleTraffic>>,
    /// Home Assistant discovery, published again when Home Assistant comes online.
    pub discovery: Option<(String, Vec<u8>)>,
}

impl Inbox {
    /// Handle messages until `stop` is set or the connection's end of the queue is gone;
    /// then refuse what is still queued (each sample gets its ack).
    pub fn run(mut self, rx: Receiver<Inbound>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let refuse = refusal(self.topics.clone(), STOPPING);
        for msg in rx.try_iter() {
            if let Some(r) = refuse(&msg) {
                self.count(|t| t.refused += 1);
                self.publish(r.topic, r.payload, r.retain);
            }
        }
    }

    /// React to a message on a subscribed topic.
    pub fn handle(&mut self, msg: Inbound) {
        if self.topics.homeassistant_status().as_deref() == Some(msg.topic.as_str()) {
            if msg.payload == b"online"
                && let Some((topic, body)) = &self.discovery
            {
                self.publisher.send(topic.clone(), body.clone(), true);
            }
            return;
        }
        match topics::parse(&msg.topic) {
            Some((_, Topic::SamplesAdd { model })) => self.on_sample(model, &msg.payload),
            Some((_, Topic::ModelCmd { model })) => self.on_command(model, &msg.payload),
            _ => tracing::debug!(topic = %msg.topic, "message on an unhandled topic ignored"),
        }
    }

    fn count(&self, f: impl FnOnce(&mut SampleTraffic)) {
        f(&mut self.samples.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        self.publisher.send(topic, payload, retain);
    }

    /// `samples/<model>/add`: every request gets an ack, accepted or refused with a reason.
    fn on_sample(&mut self, model: &str, payload: &[u8]) {
        let model = model.to_string();
        // Learning disabled: refused before anything is parsed or stored.
        let ingested = self
            .scheduler
            .is_some()
            .then(|| self.ingest(&model, payload));
        let ack = match ingested {
            None => Ack {
                id: ingest::peek_id(payload),
                accepted: false,
                reason: "learning is disabled on this device (adapt.enabled = false)".into(),
            },
            Some(Ok((ack, stored_label))) => {
                match stored_label {
                    Some(label) => {
                        self.count(|t| t.stored += 1);
                        self.after_sample(&model, &label);
                    }
                    None => self.count(|t| t.duplicates += 1),
                }
                ack
            }
            Some(Err(reject)) => {
                tracing::info!(%model, reason = %reject, "sample rejected");
                Ack {
                    id: ingest::peek_id(payload),
                    accepted: false,
                    reason: reject.to_string(),
                }
            }
        };
        if !ack.accepted {
            self.count(|t| t.refused += 1);
        }
        if let Ok(body) = serde_json::to_vec(&ack) {
            self.publish(self.topics.samples_ack(&model), body, false);
        }
    }

    /// `model/<model>/cmd`: queued for the trainer, or refused with a reason on
    /// `training/state`.
    fn on_command(&mut self, model: &str, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload).to_string();
        // Questions about what the device holds, answered here (they need no trainer):
        // whoever asks need not open the device's store beside it.
        if let Some(slot) = self.models.get(model) {
            let answer = match text.trim() {
                "versions" => Some((
                    self.topics.model_versions(model),
                    versions_reply(model, slot),
                )),
                "samples" => Some((self.topics.samples_list(model), samples_reply(model, slot))),
                _ => None,
            };
            if let Some((topic, body)) = answer {
                match body {
                    Ok(body) => self.publish(topic, body, false),
                    Err(e) => {
                        tracing::warn!(%model, error = %e, "cannot answer a `{}` command", text.trim())
                    }
                }
                return;
            }
        }
        let result = if !self.models.contains_key(model) {
            Err(format!("unknown model `{model}`"))
        } else {
            parse_command(model, &text)
        };
        let outcome = match (result, self.scheduler.as_mut()) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err("learning is disabled on this device".into()),
            (Ok(job), Some(s)) => s.submit(job).map_err(|r| r.to_string()),
        };
        let mut st = TrainingState::new(model, TrainState::Queued);
        if let Err(reason) = outcome {
            tracing::warn!(%model, %reason, "model command refused");
            st.state = TrainState::Failed;
            st.reason = Some(reason);
        }
        if let Ok(body) = serde_json::to_vec(&st) {
            self.publish(self.topics.training_state(), body, true);
        }
    }

    /// Validate and store one sample request; the ack says what happened.
    fn ingest(&self, model: &str, payload: &[u8]) -> Result<(Ack, Option<String>), Reject> {
        let slot = self
            .models
            .get(model)
            .ok_or_else(|| Reject::UnknownModel(model.into()))?;
        let req = ingest::parse(payload, self.adapt.max_payload_bytes)?;
        let pre = slot.live.load().preprocess.clone();
        let (bytes, ext, origin, capture_id) = match req.source {
            SampleSource::Data { bytes, ext } => {
                let raw = ingest::check_data(&bytes, model, &pre)?;
                let cut = match self.regions.get(model) {
                    Some(region) => ingest::cut_to_region(&raw, region)?,
                    None => None,
                };
                let (bytes, ext) = match cut {
                    Some(cut) => crate::registry::replay::encode(&cut).map_err(Reject::Store)?,
                    None => (bytes, ext),
                };
                (bytes, ext, "mqtt".to_string(), None)
            }
            SampleSource::Capture(id) => {
                let found = self.rings.iter().filter(|(_, m, _)| m == model).find_map(
                    |(pipeline, _, ring)| {
                        let ring = ring.lock().ok()?;
                        ring.get(id).map(|c| (pipeline.clone(), c.raw.clone()))
                    },
                );
                // Not in a ring any more: a capture a label request pinned.
                let found = found.or_else(|| {
                    self.requests
                        .lock()
                        .ok()?
                        .get(model, id, now_ms())
                        .map(|raw| ("request".to_string(), raw))
                });
                let (pipeline, raw) = found.ok_or(Reject::UnknownCapture(id))?;
                ingest::check_raw(&raw, &pre)?;
                let (bytes, ext) = crate::registry::replay::encode(&raw).map_err(Reject::Store)?;
                (bytes, ext, format!("capture:{pipeline}:{id}"), Some(id))
            }
        };
        let outcome = slot
            .store
            .add(&req.id, &req.label, &bytes, ext, &origin)
            .map_err(|e| Reject::Store(e.to_string()))?;
        // An answered label request lets its capture go.
        if let Some(id) = capture_id
            && let Ok(mut r) = self.requests.lock()
        {
            r.answered(model, id);
        }
        Ok(match outcome {
            crate::samples::AddOutcome::Stored { evicted } => {
                if !evicted.is_empty() {
                    tracing::info!(%model, evicted = evicted.len(), "sample quota reached; oldest samples evicted");
                }
                (
                    Ack {
                        id: req.id,
                        accepted: true,
                        reason: "stored".into(),
                    },
                    Some(req.label),
                )
            }
            crate::samples::AddOutcome::Duplicate => (
                Ack {
                    id: req.id,
                    accepted: true,
                    reason: "duplicate".into(),
                },
                None,
            ),
        })
    }

    fn after_sample(&mut self, model: &str, label: &str) {
        let Some(slot) = self.models.get(model) else {
            return;
        };
        let count = slot
            .store
            .counts()
            .ok()
            .and_then(|c| c.get(label).copied())
            .unwrap_or(0);
        let known = slot.live.load().classes.clone();
        if let Some(s) = self.scheduler.as_mut() {
            s.sample_stored(model, label, count, &known);
        }
    }
}

/// The answer to `versions`: every stored version of `model` (manifests only, not
/// verified: a listing, not a load), the shipped package as version 0.
fn versions_reply(model: &str, slot: &ModelSlot) -> anyhow::Result<Vec<u8>> {
    let live = slot.live.load().version;
    let mut versions = Vec::new();
    for v in std::iter::once(0).chain(slot.versions.on_disk()?) {
        let dir = slot.versions.path_of(v);
        let m = match crate::registry::package::Manifest::read(&dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(version = v, error = %e, "unreadable manifest; left out of the listing");
                continue;
            }
        };
        versions.push(VersionSummary {
            version: v,
            parent: m.parent,
            created_at: m.created_at,
            classes: m.classes,
            made_by: m.adaptation.map(|a| format!("{} ({})", a.kind, a.chosen)),
            live: v == live,
        });
    }
    Ok(serde_json::to_vec(&VersionsReply {
        model: model.into(),
        live,
        versions,
    })?)
}

/// The answer to `samples`: the stored samples per label.
fn samples_reply(model: &str, slot: &ModelSlot) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&SamplesReply {
        model: model.into(),
        counts: slot.store.counts()?,
    })?)
}

/// Why a sample that found the inbound queue full is refused.
pub const BUSY: &str =
    "the device is busy (its queue of incoming messages is full); send the sample again";

/// Why a sample still queued at shutdown is refused.
pub const STOPPING: &str = "the device is shutting down; send the sample again";

/// What the daemon answers on a sample's ack topic when its inbound queue is full.
pub(super) fn busy_reply(topics: Topics) -> OverflowReply {
    refusal(topics, BUSY)
}

/// A refusal with `reason` on the ack topic of a sample request (other messages: none).
fn refusal(topics: Topics, reason: &'static str) -> OverflowReply {
    Box::new(move |msg: &Inbound| match topics::parse(&msg.topic) {
        Some((_, Topic::SamplesAdd { model })) => {
            let ack = Ack {
                id: ingest::peek_id(&msg.payload),
                accepted: false,
                reason: reason.into(),
            };
            Some(Outbound {
                topic: topics.samples_ack(model),
                payload: serde_json::to_vec(&ack).ok()?,
                retain: false,
            })
        }
        _ => None,
    })
}

/// Everything the trainer thread needs.
pub struct TrainerThread {
    pub models: BTreeMap<String, Arc<ModelSlot>>,
    pub cfg: AdaptSettings,
    pub topics: Topics,
    pub publish: Publisher,
    pub stop: Arc<AtomicBool>,
    /// Shared with the [`Scheduler`]: an imprint is waiting.
    pub imprint_waiting: Arc<AtomicBool>,
    /// Adaptation outcomes, for the metrics.
    pub counters: Arc<AdaptCounters>,
}

/// How a job ended.
enum Ran {
    Done(Box<TrainingState>),
    /// A fine-tune gave way to a queued imprint; it runs again after it.
    Yielded,
}

/// What the trainer sees of `slot`'s labels: the store's counts and the live classes.
fn labels_of(slot: &ModelSlot) -> Labels {
    Labels {
        counts: slot.store.counts().unwrap_or_default(),
        live: slot.live.load().classes.iter().cloned().collect(),
    }
}

/// Labels with `min_shots` samples that the live model lacks after a job, each with what
/// to send for it: the gate's advice that names it, when the job was judged.
fn unserved(labels: &Labels, min_shots: usize, gate: Option<&GateMetrics>) -> Vec<Unserved> {
    labels
        .ready(min_shots)
        .into_iter()
        .map(|(label, samples)| {
            let named = format!("`{label}`");
            let send = gate
                .map(|g| {
                    g.advice
                        .iter()
                        .filter(|a| a.contains(&named))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|s| !s.is_empty());
            Unserved {
                label,
                samples,
                send,
            }
        })
        .collect()
}

/// Lower this thread's CPU priority (Linux: per thread) so inference keeps its latency.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; `0` names the calling thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if rc != 0 {
        tracing::debug!("could not lower the trainer thread's priority");
    }
}

impl TrainerThread {
    fn state(&self, st: &TrainingState) {
        if let Ok(body) = serde_json::to_vec(st) {
            self.publish.send(self.topics.training_state(), body, true);
        }
    }

    /// Publish the live version's card.
    pub fn publish_card(&self, slot: &ModelSlot) {
        match slot.versions.open_current() {
            Ok(current) => {
                let card = ModelCard::of(
                    &current.package,
                    slot.store.counts().unwrap_or_default(),
                    self.cfg.min_new_accuracy,
                );
                if let Ok(body) = serde_json::to_vec(&card) {
                    self.publish
                        .send(self.topics.model_info(&card.model), body, true);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the live model for its card"),
        }
    }

    fn swap(&self, slot: &ModelSlot, pkg: &ModelPackage) -> anyhow::Result<()> {
        let model = load_model(pkg)?;
        tracing::info!(model = %model.name, version = model.version, classes = model.classes.len(), "live model swapped");
        slot.live.store(Arc::new(model));
        self.publish_card(slot);
        Ok(())
    }

    /// `forget <label>`: delete its samples and, for a label learnt on the device, serve a
    /// version without it ([`learner::forget`]).
    fn forget(&self, slot: &ModelSlot, model: &str, label: &str) -> anyhow::Result<Ran> {
        let mut n = 0;
        for meta in slot.store.list()?.iter().filter(|m| m.label == label) {
            slot.store.remove(&meta.id)?;
            n += 1;
        }
        tracing::info!(%model, %label, samples = n, "label's samples deleted");
        let mut st = TrainingState::new(model, TrainState::Idle);
        st.kind = Some("forget".into());
        st.reason = Some(match learner::forget(&slot.versions, label)? {
            Forgotten::NotServed => format!("{n} samples of `{label}` deleted"),
            Forgotten::Shipped => format!(
                "{n} samples of `{label}` deleted; `{label}` is a shipped class and stays in the model (`promote 0` serves the shipped model)"
            ),
            Forgotten::Version(pkg) => {
                self.swap(slot, &pkg)?;
                st.state = TrainState::Promoted;
                st.version = Some(pkg.manifest.version);
                tracing::info!(%model, %label, version = pkg.manifest.version, "label forgotten");
                format!(
                    "{n} samples of `{label}` deleted; version {} serves without `{label}`",
                    pkg.manifest.version
                )
            }
        });
        self.publish_card(slot);
        Ok(Ran::Done(Box::new(st)))
    }

    fn run_job(&self, job: &Job, seed: u64) -> anyhow::Result<Ran> {
        let model = job.model();
        let slot = self
            .models
            .get(model)
            .ok_or_else(|| anyhow::anyhow!("unknown model `{model}`"))?;
        match job {
            Job::Adapt { imprint_only, .. } => {
                let kind = job.kind();
                let stop = self.stop.clone();
                let waiting = self.imprint_waiting.clone();
                let finetune = !*imprint_only;
                let mut last_progress = 0.0f64;
                let outcome = learner::run(
                    &slot.versions,
                    &slot.store,
                    &self.cfg,
                    *imprint_only,
                    seed,
                    &move || {
                        stop.load(Ordering::Relaxed)
                            || (finetune && waiting.load(Ordering::Relaxed))
                    },
                    &mut |phase| {
                        // Published at most every 10 % of the fine-tune.
                        let (state, fraction) = match phase {
                            Phase::Preparing => (TrainState::Training, Some(0.0)),
                            Phase::Training(f) => (TrainState::Training, Some(f)),
                            Phase::Gating => (TrainState::Gating, None),
                        };
                        if let Some(f) = fraction {
                            if f > 0.0 && f < 1.0 && f - last_progress < 0.1 {
                                return;
                            }
                            last_progress = f;
                        }
                        let mut st = TrainingState::new(model, state);
                        st.kind = Some(kind.into());
                        st.progress = fraction;
                        self.state(&st);
                    },
                );
                let outcome = match outcome {
                    Err(_)
                        if finetune
                            && !self.stop.load(Ordering::Relaxed)
                            && self.imprint_waiting.load(Ordering::Relaxed) =>
                    {
                        return Ok(Ran::Yielded);
                    }
                    o => o?,
                };
                let mut st;
                match outcome {
                    Outcome::Promoted { package, info } => {
                        self.swap(slot, &package)?;
                        st = TrainingState::new(model, TrainState::Promoted);
                        st.version = Some(package.manifest.version);
                        st.gate = Some(info.gate);
                        st.seconds = Some(info.seconds);
                    }
                    Outcome::Rejected {
                        reason,
                        info,
                        reference,
                    } => {
                        tracing::info!(%model, %reason, "candidate rejected");
                        st = TrainingState::new(model, TrainState::Rejected);
                        st.reason = Some(match reference {
                            Some(package) => {
                                self.swap(slot, &package)?;
                                st.version = Some(package.manifest.version);
                                format!(
                                    "{reason}; the view's new reference is served with the model unchanged as version {}",
                                    package.manifest.version
                                )
                            }
                            None => reason,
                        });
                        st.gate = Some(info.gate);
                        st.seconds = Some(info.seconds);
                    }
                    Outcome::Skipped(reason) => {
                        st = TrainingState::new(model, TrainState::Idle);
                        st.reason = Some(reason);
                    }
                }
                st.kind = Some(kind.into());
                Ok(Ran::Done(Box::new(st)))
            }
            Job::Rollback { .. } => {
                let pkg = slot.versions.rollback()?;
                self.swap(slot, &pkg)?;
                let mut st = TrainingState::new(model, TrainState::RolledBack);
                st.version = Some(pkg.manifest.version);
                Ok(Ran::Done(Box::new(st)))
            }
            Job::Forget { label, .. } => self.forget(slot, model, label),
            Job::Promote { version, .. } => {
                let pkg = slot.versions.promote(*version)?;
                self.swap(slot, &pkg)?;
                let mut st = TrainingState::new(model, TrainState::Promoted);
                st.version = Some(pkg.manifest.version);
                st.kind = Some("command".into());
                Ok(Ran::Done(Box::new(st)))
            }
        }
    }

    /// The trainer thread: one job at a time until `stop`. What runs next is decided by
    /// [`TrainerQueue`] (merged jobs, per model an imprint before a fine-tune; a rejected
    /// imprint not retried before its label has a new sample or a command changes the
    /// model; such a label goes to the fine-tune; a fine-tune's rejection said once); this
    /// loop only runs the jobs. A running fine-tune gives way to an imprint queued while it
    /// runs (it is run again after it), so every label is served within seconds of its
    /// `min_shots`-th sample, or reported with a reason, and the trainer ends idle.
    pub fn run(self, jobs: Receiver<Job>) {
        lower_priority();
        let mut seed = now_ms();
        for slot in self.models.values() {
            self.publish_card(slot);
        }
        let mut queue = TrainerQueue::new(self.cfg.min_shots, self.cfg.auto_after > 0);
        while !self.stop.load(Ordering::Relaxed) {
            if queue.is_idle() {
                match jobs.recv_timeout(Duration::from_millis(200)) {
                    Ok(j) => queue.push(j),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Cleared before the queue is drained: an imprint queued after this point sets
            // it again and the next fine-tune gives way to it; one queued before is in the
            // queue, ahead of any fine-tune.
            self.imprint_waiting.store(false, Ordering::Relaxed);
            jobs.try_iter().for_each(|j| queue.push(j));
            let Some(job) = queue.next(|model| {
                self.models
                    .get(model)
                    .map(|slot| labels_of(slot))
                    .unwrap_or_default()
            }) else {
                continue;
            };
            seed = seed.wrapping_add(1);
            tracing::info!(?job, "trainer job");
            let (end, st) = match self.run_job(&job, seed) {
                Ok(Ran::Done(st)) => {
                    let end = match st.state {
                        TrainState::Promoted | TrainState::RolledBack => JobEnd::Promoted,
                        TrainState::Rejected => JobEnd::Rejected,
                        TrainState::Failed => JobEnd::Failed,
                        _ => JobEnd::Nothing,
                    };
                    (end, *st)
                }
                Ok(Ran::Yielded) => {
                    tracing::info!(
                        ?job,
                        "fine-tune paused for an imprint; it runs again after it"
                    );
                    let mut st = TrainingState::new(job.model(), TrainState::Queued);
                    st.kind = Some(job.kind().into());
                    st.reason = Some("paused for an imprint of a new label".into());
                    (JobEnd::Yielded, st)
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(?job, error = %msg, "trainer job failed");
                    let mut st = TrainingState::new(job.model(), TrainState::Failed);
                    st.reason = Some(msg);
                    (JobEnd::Failed, st)
                }
            };
            queue.finished(end);
            let mut st = st;
            if matches!(job, Job::Adapt { .. }) && end != JobEnd::Yielded {
                let c = &self.counters;
                c.run.fetch_add(1, Ordering::Relaxed);
                match end {
                    JobEnd::Promoted => c.promoted.fetch_add(1, Ordering::Relaxed),
                    JobEnd::Rejected => c.rejected.fetch_add(1, Ordering::Relaxed),
                    JobEnd::Failed => c.failed.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
            tracing::info!(kind = %job.kind(), model = %job.model(), state = ?st.state, "trainer job ended");
            jobs.try_iter().for_each(|j| queue.push(j));
            st.queued = queue.queued(job.model());
            if let Some(slot) = self.models.get(job.model())
                && end != JobEnd::Yielded
            {
                st.unserved = unserved(&labels_of(slot), self.cfg.min_shots, st.gate.as_ref());
            }
            self.state(&st);
        }
    }
}
