//! The inbound thread (`inbound`): what arrives from the broker, on its own thread so that
//! decoding a sample and the sample store's fsync never hold up the main loop:
//! - sample ingestion (`samples/<m>/add`: validate, store, ack; the busy reply when the
//!   inbound queue is full);
//! - model commands (`model/<m>/cmd`), which feed the scheduler (`adapt::schedule`) the
//!   trainer thread (`daemon::learn`) runs, and the questions answered here (`versions`,
//!   `samples`);
//! - teaching from Home Assistant's entities (`teach/<scope>/set`, `teach/<scope>/press`;
//!   the state and rules in `daemon::teach`): a `select` or `text` sets the label of a scope
//!   (the device's label request, or one pipeline); the buttons act with it: `answer` (the
//!   newest open label request's capture), `teach` ("teach now": the pipeline's next
//!   `adapt.teach_now_count` captures, at least `adapt.teach_now_spacing_ms` apart) and
//!   `wrong` ("that was wrong": the capture that made the pipeline's stable state) become
//!   samples of it, stored exactly as `samples/<model>/add {capture_id}` stores them; every
//!   action says what it did, or why it did nothing, on the retained `teach/status`;
//! - the fleet's class offers (`<prefix>/fleet/<family>/offer|part/…`: `daemon::fleet`'s
//!   `FleetDesk` opens and keeps them; an offer to adopt or a retraction becomes a trainer
//!   job) and `fleet install|skip` on the model command topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::announce::Announcer;
use super::fleet::{FleetDesk, Then};
use super::models::ModelSlot;
use super::teach::{Burst, TeachDesk, scope_name};
use crate::adapt::schedule::{Job, Scheduler, parse_command};
use crate::capture::now_ms;
use crate::capture::ring::CaptureRing;
use crate::features::Raw;
use crate::mqtt::client::{Inbound, Outbound, OverflowReply, Publisher};
use crate::mqtt::payload::{
    SCHEMA_VERSION, SampleTraffic, SamplesReply, TeachStatus, TrainState, TrainingState,
    VersionSummary, VersionsReply,
};
use crate::mqtt::{TeachScope, Topic, Topics, topics};
use crate::pipeline::requests::LabelRequests;
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
    pub announcer: Arc<Announcer>,
    /// Teaching from Home Assistant's entities (`daemon::teach`).
    pub teach: TeachDesk,
    /// Class offers arriving from the fleet (`daemon::fleet`).
    pub fleet: FleetDesk,
}

impl Inbox {
    /// Handle messages until `stop` is set or the connection's end of the queue is gone;
    /// then refuse what is still queued (each sample gets its ack).
    pub fn run(mut self, rx: Receiver<Inbound>, stop: Arc<AtomicBool>) {
        for job in self.fleet.resume() {
            self.queue_fleet_job(job);
        }
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.teach_tick();
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
            if msg.payload == b"online" {
                self.announcer.announce(true);
            }
            return;
        }
        if let Some(t) = topics::parse_fleet(&msg.topic) {
            if let Then::Queue(job) = self.fleet.on_message(t, &msg.payload) {
                self.queue_fleet_job(job);
            }
            return;
        }
        match topics::parse(&msg.topic) {
            Some((_, Topic::SamplesAdd { model })) => self.on_sample(model, &msg.payload),
            Some((_, Topic::ModelCmd { model })) => self.on_command(model, &msg.payload),
            Some((_, Topic::TeachSet { scope })) => self.on_teach_set(scope, &msg.payload),
            Some((_, Topic::TeachPress { scope })) => self.on_teach_press(scope, &msg.payload),
            _ => tracing::debug!(topic = %msg.topic, "message on an unhandled topic ignored"),
        }
    }

    /// A job the fleet asked for (an offer to adopt, a retracted label to forget).
    pub(super) fn queue_fleet_job(&mut self, job: Job) {
        let model = job.model().to_string();
        let refused = match self.scheduler.as_mut() {
            None => Some("learning is disabled on this device".to_string()),
            Some(s) => s.submit(job).err().map(|r| r.to_string()),
        };
        if let Some(reason) = refused {
            // Kept on disk: queued again at the next start.
            tracing::warn!(%model, %reason, "a fleet job was not queued");
        }
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut SampleTraffic)) {
        f(&mut self.samples.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(super) fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
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
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut said = None;
        // The job to queue; `Ok(None)`: the command was done here.
        let result: Result<Option<Job>, String> = if !self.models.contains_key(model) {
            Err(format!("unknown model `{model}`"))
        } else if words.first() == Some(&"fleet") {
            // `fleet install|skip [offer]`: a skip is done here; an install is an `adopt` job.
            self.fleet.command(model, &words[1..]).map(|(msg, job)| {
                said = Some(msg);
                job
            })
        } else {
            parse_command(model, &text).map(Some)
        };
        let done_here = matches!(result, Ok(None));
        let outcome = match (result, self.scheduler.as_mut()) {
            (Err(e), _) => Err(e),
            (Ok(None), _) => Ok(()),
            (Ok(Some(_)), None) => Err("learning is disabled on this device".into()),
            (Ok(Some(job)), Some(s)) => s.submit(job).map_err(|r| r.to_string()),
        };
        let mut st = TrainingState::new(model, TrainState::Queued);
        st.reason = said;
        if let Err(reason) = outcome {
            tracing::warn!(%model, %reason, "model command refused");
            st.state = TrainState::Failed;
            st.reason = Some(reason);
        } else if done_here {
            st.state = TrainState::Idle;
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
        let (bytes, ext) = match req.source {
            SampleSource::Data { bytes, ext } => {
                let pre = slot.live.load().preprocess.clone();
                let raw = ingest::check_data(&bytes, model, &pre)?;
                let cut = match self.regions.get(model) {
                    Some(region) => ingest::cut_to_region(&raw, region)?,
                    None => None,
                };
                match cut {
                    Some(cut) => crate::registry::replay::encode(&cut).map_err(Reject::Store)?,
                    None => (bytes, ext),
                }
            }
            SampleSource::Capture(id) => {
                return self.store_capture(model, &req.id, &req.label, id, None);
            }
        };
        self.store(slot, &req.id, &req.label, &bytes, ext, "mqtt")
    }

    /// The capture `id` of one of `model`'s pipelines, with where it was found: still in a
    /// pipeline's ring (or the one that made its stable state), or pinned by a label
    /// request.
    fn find_capture(&self, model: &str, id: u64) -> Option<(String, Raw)> {
        let found =
            self.rings
                .iter()
                .filter(|(_, m, _)| m == model)
                .find_map(|(pipeline, _, ring)| {
                    let ring = ring.lock().ok()?;
                    ring.get(id).map(|c| (pipeline.clone(), c.raw.clone()))
                });
        found.or_else(|| {
            self.requests
                .lock()
                .ok()?
                .get(model, id, now_ms())
                .map(|raw| ("request".to_string(), raw))
        })
    }

    /// Store capture `id` of `model` as a sample `sample_id` of `label` (its origin
    /// `capture:<pipeline>:<id>` unless given); an answered label request lets the capture
    /// go.
    pub(super) fn store_capture(
        &self,
        model: &str,
        sample_id: &str,
        label: &str,
        id: u64,
        origin: Option<&str>,
    ) -> Result<(Ack, Option<String>), Reject> {
        let slot = self
            .models
            .get(model)
            .ok_or_else(|| Reject::UnknownModel(model.into()))?;
        let (pipeline, raw) = self
            .find_capture(model, id)
            .ok_or(Reject::UnknownCapture(id))?;
        ingest::check_raw(&raw, &slot.live.load().preprocess)?;
        let (bytes, ext) = crate::registry::replay::encode(&raw).map_err(Reject::Store)?;
        let origin = origin.map_or_else(|| format!("capture:{pipeline}:{id}"), str::to_string);
        let stored = self.store(slot, sample_id, label, &bytes, ext, &origin)?;
        if let Ok(mut r) = self.requests.lock() {
            r.answered(model, id);
        }
        Ok(stored)
    }

    /// Put one encoded sample into `slot`'s store; the ack, and the label when it is new.
    fn store(
        &self,
        slot: &ModelSlot,
        id: &str,
        label: &str,
        bytes: &[u8],
        ext: &str,
        origin: &str,
    ) -> Result<(Ack, Option<String>), Reject> {
        let outcome = slot
            .store
            .add(id, label, bytes, ext, origin)
            .map_err(|e| Reject::Store(e.to_string()))?;
        let ack = |reason: &str| Ack {
            id: id.to_string(),
            accepted: true,
            reason: reason.into(),
        };
        Ok(match outcome {
            crate::samples::AddOutcome::Stored { evicted } => {
                if !evicted.is_empty() {
                    tracing::info!(
                        evicted = evicted.len(),
                        "sample quota reached; oldest samples evicted"
                    );
                }
                (ack("stored"), Some(label.to_string()))
            }
            crate::samples::AddOutcome::Duplicate => (ack("duplicate"), None),
        })
    }

    pub(super) fn after_sample(&mut self, model: &str, label: &str) {
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

impl Inbox {
    /// A `select` or `text` set `scope`'s label.
    pub(super) fn on_teach_set(&mut self, scope: TeachScope<'_>, payload: &[u8]) {
        let label = String::from_utf8_lossy(payload).trim().to_string();
        if !crate::samples::valid_name(&label) {
            let shown: String = label.chars().take(64).collect();
            return self.teach_said(
                scope,
                Err(format!(
                    "`{shown}` is not a label: letters, digits, `_`, `.` and `-`, 1 to 64 of them"
                )),
            );
        }
        if let TeachScope::Pipeline(p) = scope
            && let Err(e) = self.pipeline(p)
        {
            return self.teach_said(scope, Err(e));
        }
        self.publish(
            self.topics.teach_label(scope),
            label.clone().into_bytes(),
            true,
        );
        let what = match scope {
            TeachScope::Request => "the label request's answer".to_string(),
            TeachScope::Pipeline(p) => format!("{p}'s buttons teach now and that was wrong"),
        };
        let msg = format!("label `{label}` picked for {what}");
        self.teach.set_label(scope, label);
        self.teach_said(scope, Ok(msg));
    }

    /// A button of `scope` was pressed.
    pub(super) fn on_teach_press(&mut self, scope: TeachScope<'_>, payload: &[u8]) {
        let press = String::from_utf8_lossy(payload).trim().to_string();
        let said = match (scope, press.as_str()) {
            (_, _) if self.scheduler.is_none() => {
                Err("learning is disabled on this device (adapt.enabled = false)".into())
            }
            (TeachScope::Request, "answer") => self.answer(),
            (TeachScope::Pipeline(p), "teach") => self.teach_now(p),
            (TeachScope::Pipeline(p), "wrong") => self.correct(p),
            _ => Err(format!(
                "unknown press `{}` (request: answer; a pipeline: teach, wrong)",
                press.chars().take(32).collect::<String>()
            )),
        };
        self.teach_said(scope, said);
    }

    /// Pipeline `p`'s model and capture ring, or why there is none.
    fn pipeline(&self, p: &str) -> Result<(String, Arc<Mutex<CaptureRing>>), String> {
        self.rings
            .iter()
            .find(|(name, _, _)| name == p)
            .map(|(_, m, r)| (m.clone(), r.clone()))
            .ok_or_else(|| format!("no pipeline `{p}` on this device"))
    }

    fn picked(&self, scope: TeachScope<'_>) -> Result<String, String> {
        self.teach.label(scope).map(str::to_string).ok_or_else(|| {
            "pick a label (or type a new one) first, then press the button again".into()
        })
    }

    /// `answer`: the newest open label request's capture, as a sample of the picked label.
    fn answer(&mut self) -> Result<String, String> {
        let label = self.picked(TeachScope::Request)?;
        let open = self
            .requests
            .lock()
            .ok()
            .and_then(|mut r| r.latest(now_ms()));
        let (model, id) = open.ok_or("no open label request (answered, or expired) to answer")?;
        let stored = self.teach_store(&model, &label, id, &format!("ha-request-{id}"), None)?;
        Ok(format!(
            "the label request's capture {id} ({model}) {stored} as `{label}`"
        ))
    }

    /// "Teach now": the pipeline's next captures become samples of its label.
    fn teach_now(&mut self, p: &str) -> Result<String, String> {
        let label = self.picked(TeachScope::Pipeline(p))?;
        let (_, ring) = self.pipeline(p)?;
        if let Some(b) = self.teach.burst_on(p) {
            return Err(format!(
                "already storing captures of {p} as `{}` ({} to go)",
                b.label, b.left
            ));
        }
        let newest = ring.lock().ok().and_then(|r| r.latest().map(|c| c.id));
        let count = self.adapt.teach_now_count;
        self.teach.start(Burst::new(
            p,
            &label,
            count,
            self.adapt.teach_now_spacing_ms,
            newest,
            now_ms(),
        ));
        Ok(format!(
            "storing the next {count} captures of {p} as `{label}`"
        ))
    }

    /// "That was wrong": the capture that made the pipeline's stable state becomes a
    /// sample of the label it should have said.
    fn correct(&mut self, p: &str) -> Result<String, String> {
        let label = self.picked(TeachScope::Pipeline(p))?;
        let (model, ring) = self.pipeline(p)?;
        let stable = ring
            .lock()
            .ok()
            .and_then(|r| r.stable().map(|(l, c)| (l.to_string(), c.id)));
        let (said, id) = stable.ok_or_else(|| format!("{p} has no stable state yet"))?;
        let said = if said.is_empty() {
            "nothing"
        } else {
            said.as_str()
        };
        if said == label {
            return Err(format!(
                "{p} said `{label}`: pick the label it should have said"
            ));
        }
        let origin = format!("correction:{p}:{id}:not-{said}");
        let stored = self.teach_store(
            &model,
            &label,
            id,
            &format!("ha-wrong-{p}-{id}"),
            Some(&origin),
        )?;
        Ok(format!(
            "{p} said `{said}`; the capture ({id}) {stored} as `{label}`"
        ))
    }

    /// Store a capture through the same path as `samples/<model>/add {capture_id}`:
    /// `stored` or `was already stored`.
    fn teach_store(
        &mut self,
        model: &str,
        label: &str,
        id: u64,
        sample_id: &str,
        origin: Option<&str>,
    ) -> Result<&'static str, String> {
        match self.store_capture(model, sample_id, label, id, origin) {
            Ok((_, Some(label))) => {
                self.count(|t| t.stored += 1);
                self.after_sample(model, &label);
                Ok("stored")
            }
            Ok((_, None)) => {
                self.count(|t| t.duplicates += 1);
                Ok("was already stored")
            }
            Err(e) => {
                self.count(|t| t.refused += 1);
                Err(e.to_string())
            }
        }
    }

    /// Take the captures the "teach now" bursts are due (called on every turn of the
    /// inbound loop).
    pub(super) fn teach_tick(&mut self) {
        let mut bursts = self.teach.take_bursts();
        if bursts.is_empty() {
            return;
        }
        let now = now_ms();
        for b in &mut bursts {
            let Ok((model, ring)) = self.pipeline(&b.pipeline) else {
                continue;
            };
            let newest = ring.lock().ok().and_then(|r| r.latest().map(|c| c.id));
            let Some(id) = b.due(now, newest) else {
                continue;
            };
            let pipeline = b.pipeline.clone();
            let scope = TeachScope::Pipeline(&pipeline);
            let sample_id = format!("ha-teach-{pipeline}-{id}");
            match self.teach_store(&model, &b.label, id, &sample_id, None) {
                Ok(stored) => {
                    b.took(id, stored == "stored", now);
                    let msg = format!(
                        "{}: capture {id} {stored} as `{}` ({} to go)",
                        b.pipeline, b.label, b.left
                    );
                    self.teach_said(scope, Ok(msg));
                }
                Err(e) => {
                    b.left = 0;
                    self.teach_said(
                        scope,
                        Err(format!("{}: teach now stopped: {e}", b.pipeline)),
                    );
                }
            }
        }
        bursts.retain(|b| {
            let scope = TeachScope::Pipeline(&b.pipeline);
            if b.done() {
                self.teach_said(
                    scope,
                    Ok(format!(
                        "{}: {} captures stored as `{}`",
                        b.pipeline, b.stored, b.label
                    )),
                );
                false
            } else if b.timed_out(now) {
                self.teach_said(
                    scope,
                    Err(format!(
                        "{}: only {} captures stored as `{}`: the pipeline made no new captures (is its source running?)",
                        b.pipeline, b.stored, b.label
                    )),
                );
                false
            } else {
                true
            }
        });
        self.teach.put_back(bursts);
    }

    /// Say on `teach/status` what an action did (`Ok`) or why it did nothing (`Err`).
    fn teach_said(&self, scope: TeachScope<'_>, said: Result<String, String>) {
        let (ok, message) = match said {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        if ok {
            tracing::info!(scope = %scope_name(scope), %message, "teaching");
        } else {
            tracing::warn!(scope = %scope_name(scope), %message, "teaching refused");
        }
        let status = TeachStatus {
            v: SCHEMA_VERSION,
            ts: now_ms(),
            scope: scope_name(scope),
            ok,
            message,
        };
        if let Ok(body) = serde_json::to_vec(&status) {
            self.publish(self.topics.teach_status(), body, true);
        }
    }
}
