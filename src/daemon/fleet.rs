//! The daemon's side of the fleet (issue 33; the offer, its checks and its store are
//! `crate::fleet`).
//!
//! **Offering** (trainer thread, `[fleet] share = true`): when a version this device made
//! from its own samples is promoted with a new label, the label's stored samples are
//! offered to the devices of the model's *family* (the shipped `model.onnx`'s SHA-256): the
//! parts' chunks, then the signed envelope, all retained at QoS 1 under
//! `<prefix>/fleet/<family>/` (`offer/<device>/<label>`, `part/<device>/<label>/<counter>/
//! <part>/<chunk>`); the previous offer's chunks of that label are cleared. `forget` of an
//! offered label publishes a signed retraction in its place.
//!
//! **Receiving** (inbound thread, [`FleetDesk`]): an envelope is opened ([`Trust::open`]:
//! trusted key, `verify_strict`, then the body: origin, family, expiry) and checked against
//! the replay guard; its chunks (which may arrive before it: kept, bounded) are put
//! together and checked against the signed digests; the whole offer is kept on disk
//! ([`OfferStore`]) and then, by the model's policy: `auto` queues an `adopt` job, `ask`
//! waits for `fleet install` (the model's retained `offers` topic and Home Assistant's
//! update entity show it), `never` drops it. Every refusal is counted by kind (status
//! `fleet.refused`) and logged.
//!
//! **Adopting** (trainer thread, [`Fleet::take`] / [`Fleet::settle`]): the offer's samples
//! are checked as the model's own samples would be, the label is imprinted on the live
//! model (`adapt::learner::run_offered`) and judged by this device's gate — its shipped
//! gate set and its own stored samples; a promoted version stores the samples (origin
//! `fleet:<device>:<counter>`) and its card names the offer. The verdict (adopted,
//! rejected with the gate's reason) goes back to the fleet on
//! `<prefix>/fleet/<family>/verdict/<origin>/<label>/<device>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::models::ModelSlot;
use crate::adapt::learner::Offered;
use crate::adapt::schedule::Job;
use crate::capture::now_ms;
use crate::fleet::offer::{Assembly, OFFER_VERSION, Origin, PartKind, seal};
use crate::fleet::{DeviceKey, OfferBody, OfferStore, Refusal, ReplayGuard, StoredOffer, Trust};
use crate::mqtt::Topics;
use crate::mqtt::client::Publisher;
pub use crate::mqtt::payload::{FleetStatus, FleetVerdict, WaitingOffer, WaitingOffers};
use crate::mqtt::topics::{FleetTopic, PartAt};
use crate::registry::package::MODEL_ONNX;
use crate::samples::SampleStore;
use crate::samples::ingest::check_data;
use crate::settings::{FleetPolicy, FleetSettings};

/// Chunks kept before their envelope arrives, in bytes at most (beyond it the oldest
/// offer's chunks are dropped; the broker delivers retained chunks again on the next
/// connect).
pub const LOOSE_BYTES: usize = 16 << 20;

/// The labels this device offered, per model (to clear their chunks and to retract them):
/// `<state_dir>/fleet/published.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Published {
    /// "model label" → (counter, chunks per part).
    offers: BTreeMap<String, (u64, Vec<usize>)>,
}

/// The fleet as the daemon's threads share it.
pub struct Fleet {
    pub device: String,
    key: DeviceKey,
    settings: FleetSettings,
    trust: Trust,
    /// Model → family.
    families: BTreeMap<String, String>,
    models: BTreeMap<String, Arc<ModelSlot>>,
    topics: Topics,
    publisher: Publisher,
    state_dir: PathBuf,
    pub offers: OfferStore,
    replay: Mutex<ReplayGuard>,
    published: Mutex<Published>,
    status: Mutex<FleetStatus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A model's family ([`crate::fleet::family_of`] its shipped `model.onnx`).
pub fn family_of(slot: &ModelSlot) -> anyhow::Result<String> {
    Ok(crate::fleet::family_of(
        &slot.versions.path_of(0).join(MODEL_ONNX),
    )?)
}

impl Fleet {
    /// The device's key (made at first start), its trusted keys, its models' families and
    /// its kept offers and counters.
    pub fn open(
        settings: &FleetSettings,
        state_dir: &Path,
        device: &str,
        models: &BTreeMap<String, Arc<ModelSlot>>,
        topics: &Topics,
        publisher: &Publisher,
    ) -> anyhow::Result<Fleet> {
        let key = DeviceKey::load_or_create(state_dir)?;
        let trusted = settings
            .trusted
            .iter()
            .map(|k| k.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut families = BTreeMap::new();
        for (name, slot) in models {
            families.insert(name.clone(), family_of(slot)?);
        }
        let published_path = state_dir.join("fleet").join("published.json");
        // Only used to clear superseded chunks and to retract: an unreadable list costs
        // that, not the start.
        let published = match std::fs::read(&published_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %published_path.display(), error = %e, "unreadable list of this device's offers: starting a new one");
                Published::default()
            }),
            Err(_) => Published::default(),
        };
        let status = FleetStatus {
            key: key.public().to_string(),
            trusted: trusted.len(),
            ..FleetStatus::default()
        };
        tracing::info!(key = %status.key, trusted = status.trusted, share = settings.share, "fleet");
        Ok(Fleet {
            device: device.into(),
            key,
            settings: settings.clone(),
            trust: Trust::new(trusted),
            families,
            models: models.clone(),
            topics: topics.clone(),
            publisher: publisher.clone(),
            state_dir: state_dir.into(),
            offers: OfferStore::open(state_dir)?,
            replay: Mutex::new(ReplayGuard::open(state_dir)?),
            published: Mutex::new(published),
            status: Mutex::new(status),
        })
    }

    /// The topics to subscribe to: every family's offers and parts, when some key is
    /// trusted and some model takes offers.
    pub fn subscriptions(&self) -> Vec<String> {
        if self.settings.trusted.is_empty() {
            return Vec::new();
        }
        self.families
            .iter()
            .filter(|(m, _)| self.settings.policy_of(m) != FleetPolicy::Never)
            .flat_map(|(_, f)| self.topics.fleet_subscriptions(f))
            .collect()
    }

    pub fn status(&self) -> FleetStatus {
        lock(&self.status).clone()
    }

    fn model_of(&self, family: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|(_, f)| f.as_str() == family)
            .map(|(m, _)| m.as_str())
    }

    fn refused(&self, what: &str, r: &Refusal) {
        tracing::warn!(offer = %what, reason = %r, kind = r.kind(), "fleet offer refused");
        *lock(&self.status)
            .refused
            .entry(r.kind().to_string())
            .or_default() += 1;
    }

    /// Publish this device's verdict on `body`.
    pub fn verdict(&self, model: &str, body: &OfferBody, state: &str, detail: Verdict) {
        let v = FleetVerdict {
            v: 1,
            ts: now_ms(),
            device: self.device.clone(),
            model: model.into(),
            label: body.label.clone(),
            origin: body.origin.device.clone(),
            counter: body.counter,
            state: state.into(),
            reason: detail.reason,
            version: detail.version,
            gate: detail.gate,
        };
        tracing::info!(origin = %v.origin, label = %v.label, state, reason = ?v.reason, "fleet verdict");
        let topic = self
            .topics
            .fleet_verdict(&body.family, &body.origin.device, &body.label);
        if let Ok(payload) = serde_json::to_vec(&v) {
            self.publisher.send(topic, payload, true);
        }
    }

    fn record(&self, body: &OfferBody) {
        if let Err(e) = lock(&self.replay).record(body) {
            tracing::error!(error = %e, "the fleet's replay guard could not be written");
        }
    }

    /// Offers of `model` waiting for a person, with the version it serves, on its retained
    /// `offers` topic (Home Assistant's update entity reads it), and the status count.
    pub fn announce_waiting(&self, model: &str) {
        let kept = self.kept();
        let offers: Vec<WaitingOffer> = kept
            .iter()
            .filter(|o| o.model == model)
            .map(|o| WaitingOffer {
                id: o.id.clone(),
                label: o.body.label.clone(),
                origin: o.body.origin.device.clone(),
                origin_version: o.body.origin.version,
                samples: o.body.parts.len(),
                evidence: o.body.evidence.clone(),
            })
            .collect();
        lock(&self.status).waiting = kept
            .iter()
            .filter(|o| self.settings.policy_of(&o.model) == FleetPolicy::Ask)
            .count();
        let version = self.models.get(model).map_or(0, |s| s.live.load().version);
        let waiting = WaitingOffers {
            v: 1,
            model: model.into(),
            version,
            offers,
        };
        if let Ok(body) = serde_json::to_vec(&waiting) {
            self.publisher
                .send(self.topics.model_offers(model), body, true);
        }
    }

    /// The kept offers that still open (a refused one is removed, counted and logged).
    pub fn kept(&self) -> Vec<StoredOffer> {
        let family = |m: &str| self.families.get(m).cloned();
        match self.offers.list(&self.trust, &family, now_ms()) {
            Ok(list) => list
                .into_iter()
                .filter_map(|o| match o {
                    Ok(o) => Some(o),
                    Err((id, r)) => {
                        self.refused(&id, &r);
                        let _ = self.offers.remove(&id);
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "the fleet's kept offers cannot be read");
                Vec::new()
            }
        }
    }

    /// Trainer thread: the kept offer `id` of `model` as samples to learn, each checked as
    /// the model's own samples are; `Err` with the reason to reject it (the offer is then
    /// settled as rejected by the caller).
    pub fn take(
        &self,
        slot: &ModelSlot,
        model: &str,
        id: &str,
    ) -> Result<(StoredOffer, Offered), Box<Untaken>> {
        let Some(offer) = self.kept().into_iter().find(|o| o.id == id) else {
            return Err(Untaken::new(None, format!("offer {id} is no longer kept")));
        };
        let parts = match self.offers.parts(&offer) {
            Ok(Ok(p)) => p,
            Ok(Err(r)) => {
                self.refused(id, &r);
                return Err(Untaken::new(Some(offer), r.to_string()));
            }
            Err(e) => return Err(Untaken::new(Some(offer), e.to_string())),
        };
        let pre = slot.live.load().preprocess.clone();
        let mut samples = Vec::new();
        for (part, bytes) in parts.iter().filter(|(p, _)| p.kind == PartKind::Sample) {
            match check_data(bytes, model, &pre) {
                Ok(raw) => samples.push(raw),
                Err(e) => {
                    let why = format!("sample `{}` of the offer: {e}", part.name);
                    return Err(Untaken::new(Some(offer), why));
                }
            }
        }
        let offered = Offered {
            label: offer.body.label.clone(),
            samples,
            origin: Some(format!(
                "fleet offer {} of `{}` from {} (its version {})",
                offer.body.counter,
                offer.body.label,
                offer.body.origin.device,
                offer.body.origin.version
            )),
        };
        Ok((offer, offered))
    }

    /// Trainer thread: an offer's outcome. Adopted: its samples join the store (origin
    /// `fleet:<device>:<counter>`). Either way the counter is recorded, the kept offer
    /// removed and the verdict published.
    pub fn settle(
        &self,
        model: &str,
        offer: &StoredOffer,
        store: &SampleStore,
        adopted: bool,
        detail: Verdict,
    ) {
        if adopted {
            match self.offers.parts(offer) {
                Ok(Ok(parts)) => {
                    for (i, (part, bytes)) in parts.iter().enumerate() {
                        let ext = part.name.rsplit('.').next().unwrap_or("png");
                        let id = format!(
                            "fleet-{}-{}-{i}",
                            crate::fleet::store::safe(&offer.body.origin.device),
                            offer.body.counter
                        );
                        let origin =
                            format!("fleet:{}:{}", offer.body.origin.device, offer.body.counter);
                        if let Err(e) = store.add(&id, &offer.body.label, bytes, ext, &origin) {
                            tracing::error!(error = %e, "an adopted sample could not be stored");
                        }
                    }
                }
                _ => {
                    tracing::error!(offer = %offer.id, "an adopted offer's parts could not be read back")
                }
            }
        }
        self.record(&offer.body);
        if let Err(e) = self.offers.remove(&offer.id) {
            tracing::error!(error = %e, "a settled offer could not be removed");
        }
        {
            let mut s = lock(&self.status);
            match adopted {
                true => s.adopted += 1,
                false => s.rejected += 1,
            }
        }
        let state = if adopted { "adopted" } else { "rejected" };
        self.verdict(model, &offer.body, state, detail);
        self.announce_waiting(model);
    }

    /// Trainer thread, after a promoted version of this device's own teaching added
    /// `labels`: offer each (with `[fleet] share`).
    pub fn offer_labels(
        &self,
        model: &str,
        labels: &[String],
        version: u32,
        store: &SampleStore,
        evidence: serde_json::Value,
    ) {
        if !self.settings.share {
            return;
        }
        for label in labels {
            if let Err(e) = self.offer_label(model, label, version, store, evidence.clone()) {
                tracing::error!(%model, %label, error = %format!("{e:#}"), "could not offer the label to the fleet");
            }
        }
    }

    fn body(
        &self,
        model: &str,
        label: &str,
        version: u32,
        retract: bool,
    ) -> anyhow::Result<OfferBody> {
        let family = self
            .families
            .get(model)
            .ok_or_else(|| anyhow::anyhow!("no family for model `{model}`"))?;
        let issued_ms = now_ms();
        Ok(OfferBody {
            v: OFFER_VERSION,
            family: family.clone(),
            model: model.into(),
            label: label.into(),
            origin: Origin {
                device: self.device.clone(),
                key: self.key.public().to_string(),
                version,
            },
            counter: crate::fleet::store::next_counter(&self.state_dir)?,
            issued_ms,
            expires_ms: issued_ms + u64::from(self.settings.offer_days) * 86_400_000,
            retract,
            parts: Vec::new(),
            evidence: serde_json::Value::Null,
        })
    }

    fn offer_label(
        &self,
        model: &str,
        label: &str,
        version: u32,
        store: &SampleStore,
        evidence: serde_json::Value,
    ) -> anyhow::Result<()> {
        // Only what this device was taught itself: an adopted label is not offered on.
        let metas: Vec<_> = store
            .list()?
            .into_iter()
            .filter(|m| m.label == label && !m.origin.starts_with("fleet:"))
            .collect();
        if metas.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        for m in &metas {
            parts.push((
                format!("{}.{}", m.id, m.ext),
                PartKind::Sample,
                store.bytes(m)?,
            ));
        }
        let mut body = self.body(model, label, version, false)?;
        body.evidence = evidence;
        let sealed = seal(&self.key, body, &parts);
        self.clear_parts(model, label);
        let b = &sealed.body;
        for (part, chunk, bytes) in sealed.chunks {
            let at = PartAt {
                counter: b.counter,
                part,
                chunk,
            };
            let topic = self.topics.fleet_part(&b.family, &self.device, label, at);
            self.publisher.send(topic, bytes, true);
        }
        let topic = self.topics.fleet_offer(&b.family, &self.device, label);
        self.publisher.send(topic, sealed.envelope, true);
        let chunks = b.parts.iter().map(|p| p.chunks).collect();
        self.remember(model, label, Some((b.counter, chunks)))?;
        lock(&self.status).offered += 1;
        tracing::info!(%model, %label, counter = b.counter, samples = b.parts.len(), bytes = b.parts.iter().map(|p| p.bytes).sum::<usize>(), "label offered to the fleet");
        Ok(())
    }

    /// Trainer thread, after `forget <label>`: a label this device offered is retracted
    /// (a signed offer with `retract` and no parts); its chunks are cleared.
    pub fn retract(&self, model: &str, label: &str) {
        let key = format!("{model} {label}");
        if !lock(&self.published).offers.contains_key(&key) {
            return;
        }
        let run = || -> anyhow::Result<()> {
            let body = self.body(model, label, 0, true)?;
            let sealed = seal(&self.key, body, &[]);
            self.clear_parts(model, label);
            let topic = self
                .topics
                .fleet_offer(&sealed.body.family, &self.device, label);
            self.publisher.send(topic, sealed.envelope, true);
            self.remember(model, label, None)?;
            lock(&self.status).offered += 1;
            tracing::info!(%model, %label, "offer retracted");
            Ok(())
        };
        if let Err(e) = run() {
            tracing::error!(%model, %label, error = %format!("{e:#}"), "could not retract the offer");
        }
    }

    /// Clear the retained chunks of this device's last offer of `label`.
    fn clear_parts(&self, model: &str, label: &str) {
        let key = format!("{model} {label}");
        let Some((counter, chunks)) = lock(&self.published).offers.get(&key).cloned() else {
            return;
        };
        let Some(family) = self.families.get(model) else {
            return;
        };
        for (part, n) in chunks.iter().enumerate() {
            for chunk in 0..*n {
                let at = PartAt {
                    counter,
                    part,
                    chunk,
                };
                let topic = self.topics.fleet_part(family, &self.device, label, at);
                self.publisher.send(topic, Vec::new(), true);
            }
        }
    }

    fn remember(
        &self,
        model: &str,
        label: &str,
        what: Option<(u64, Vec<usize>)>,
    ) -> anyhow::Result<()> {
        let key = format!("{model} {label}");
        let bytes = {
            let mut p = lock(&self.published);
            match what {
                Some(w) => p.offers.insert(key, w),
                None => p.offers.remove(&key),
            };
            serde_json::to_vec(&*p)?
        };
        let dir = self.state_dir.join("fleet");
        let path = dir.join("published.json");
        let fs = crate::durable::StdFs;
        crate::durable::create_dir_all(&fs, &dir)?;
        crate::durable::write_atomic(&fs, &path, &path.with_extension("tmp"), &bytes)?;
        crate::durable::Fs::sync_dir(&fs, &dir)?;
        Ok(())
    }
}

/// Why [`Fleet::take`] gave no samples to learn: the kept offer (when it is still there:
/// it is to be settled as rejected) and the reason.
#[derive(Debug)]
pub struct Untaken {
    pub offer: Option<StoredOffer>,
    pub reason: String,
}

impl Untaken {
    fn new(offer: Option<StoredOffer>, reason: String) -> Box<Untaken> {
        Box::new(Untaken { offer, reason })
    }
}

/// What a verdict says besides its state.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub reason: Option<String>,
    pub version: Option<u32>,
    pub gate: Option<crate::registry::card::GateMetrics>,
}

impl Verdict {
    pub fn because(reason: impl Into<String>) -> Verdict {
        Verdict {
            reason: Some(reason.into()),
            ..Verdict::default()
        }
    }
}

/// An offer's place in the fleet: (family, origin device, label).
type OfferKey = (String, String, String);

/// A chunk and where it goes.
type Chunk = (PartAt, Vec<u8>);

/// An offer being put together.
struct Pending {
    model: String,
    envelope: Vec<u8>,
    assembly: Assembly,
}

/// The receiving side, on the inbound thread: offers as their envelope and chunks arrive.
pub struct FleetDesk {
    pub fleet: Arc<Fleet>,
    /// The offer being put together, per (family, device, label).
    pending: BTreeMap<OfferKey, Pending>,
    /// Chunks that arrived before their envelope, per offer and counter.
    loose: BTreeMap<(OfferKey, u64), Vec<Chunk>>,
    loose_bytes: usize,
}

/// What the inbound thread is to do after a fleet message.
#[derive(Debug, PartialEq)]
pub enum Then {
    Nothing,
    /// Queue this job (an `adopt`, or a `forget` for a retraction).
    Queue(Job),
}

impl FleetDesk {
    pub fn new(fleet: Arc<Fleet>) -> FleetDesk {
        FleetDesk {
            fleet,
            pending: BTreeMap::new(),
            loose: BTreeMap::new(),
            loose_bytes: 0,
        }
    }

    /// At start: the kept offers, each by its model's policy again (`auto`: queued;
    /// `ask`: announced).
    pub fn resume(&self) -> Vec<Job> {
        let fleet = &self.fleet;
        let mut jobs = Vec::new();
        for model in fleet.families.keys() {
            fleet.announce_waiting(model);
        }
        for o in fleet.kept() {
            match fleet.settings.policy_of(&o.model) {
                FleetPolicy::Auto => jobs.push(Job::Adopt {
                    model: o.model.clone(),
                    offer: o.id.clone(),
                }),
                FleetPolicy::Ask => {}
                FleetPolicy::Never => {
                    let _ = fleet.offers.remove(&o.id);
                }
            }
        }
        jobs
    }

    /// A message on a fleet topic.
    pub fn on_message(&mut self, topic: FleetTopic<'_>, payload: &[u8]) -> Then {
        match topic {
            FleetTopic::Offer {
                family,
                device,
                label,
            } => self.on_offer(family, device, label, payload),
            FleetTopic::Part {
                family,
                device,
                label,
                at,
            } => self.on_part(family, device, label, at, payload.to_vec()),
            FleetTopic::Verdict { .. } => Then::Nothing,
        }
    }

    fn on_offer(&mut self, family: &str, device: &str, label: &str, payload: &[u8]) -> Then {
        let fleet = self.fleet.clone();
        if payload.is_empty() || device == fleet.device {
            return Then::Nothing;
        }
        let Some(model) = fleet.model_of(family).map(str::to_string) else {
            return Then::Nothing;
        };
        let what = format!("{device}/{label}");
        let body = match fleet.trust.open(payload, family, now_ms()) {
            Ok(b) => b,
            Err(r) => {
                fleet.refused(&what, &r);
                return Then::Nothing;
            }
        };
        if body.origin.device != device || body.label != label {
            let r = Refusal::Malformed(format!(
                "published as {what} but signed for {}/{}",
                body.origin.device, body.label
            ));
            fleet.refused(&what, &r);
            return Then::Nothing;
        }
        let fresh = lock(&fleet.replay).check(&body);
        match fresh {
            Err(r) => {
                fleet.refused(&what, &r);
                fleet.verdict(&model, &body, "refused", Verdict::because(r.to_string()));
                return Then::Nothing;
            }
            Ok(false) => return Then::Nothing,
            Ok(true) => {}
        }
        if fleet.offers.contains(&body) {
            return Then::Nothing;
        }
        if body.retract {
            return self.retraction(&model, body);
        }
        let key = (family.to_string(), device.to_string(), label.to_string());
        let mut pending = Pending {
            model,
            envelope: payload.to_vec(),
            assembly: Assembly::new(body.clone()),
        };
        let loose_key = (key.clone(), body.counter);
        for (at, bytes) in self.loose.remove(&loose_key).unwrap_or_default() {
            self.loose_bytes -= bytes.len();
            if let Err(r) = pending.assembly.add(at.part, at.chunk, bytes) {
                fleet.refused(&what, &r);
                return Then::Nothing;
            }
        }
        // Loose chunks of older counters of this offer will never be used.
        let stale: Vec<_> = self
            .loose
            .keys()
            .filter(|(k, counter)| *k == key && *counter < body.counter)
            .cloned()
            .collect();
        for k in stale {
            if let Some(v) = self.loose.remove(&k) {
                self.loose_bytes -= v.iter().map(|(_, b)| b.len()).sum::<usize>();
            }
        }
        self.pending.insert(key.clone(), pending);
        self.try_complete(&key)
    }

    fn on_part(
        &mut self,
        family: &str,
        device: &str,
        label: &str,
        at: PartAt,
        bytes: Vec<u8>,
    ) -> Then {
        if bytes.is_empty() || device == self.fleet.device {
            return Then::Nothing;
        }
        let key = (family.to_string(), device.to_string(), label.to_string());
        match self.pending.get_mut(&key) {
            Some(p) if p.assembly.body.counter == at.counter => {
                if let Err(r) = p.assembly.add(at.part, at.chunk, bytes) {
                    self.fleet.refused(&format!("{device}/{label}"), &r);
                    self.pending.remove(&key);
                    return Then::Nothing;
                }
                self.try_complete(&key)
            }
            Some(p) if p.assembly.body.counter > at.counter => Then::Nothing,
            _ => {
                if self.fleet.model_of(family).is_none()
                    || bytes.len() > crate::fleet::offer::MAX_CHUNK
                {
                    return Then::Nothing;
                }
                self.loose_bytes += bytes.len();
                self.loose
                    .entry((key, at.counter))
                    .or_default()
                    .push((at, bytes));
                while self.loose_bytes > LOOSE_BYTES {
                    let Some(first) = self.loose.keys().next().cloned() else {
                        break;
                    };
                    if let Some(v) = self.loose.remove(&first) {
                        self.loose_bytes -= v.iter().map(|(_, b)| b.len()).sum::<usize>();
                    }
                }
                Then::Nothing
            }
        }
    }

    /// A whole offer: checked against its digests, kept, and handed to its policy.
    fn try_complete(&mut self, key: &(String, String, String)) -> Then {
        let Some(p) = self.pending.get(key) else {
            return Then::Nothing;
        };
        let Some(parts) = p.assembly.parts() else {
            return Then::Nothing;
        };
        let p = self.pending.remove(key).expect("present");
        let fleet = &self.fleet;
        let body = &p.assembly.body;
        let what = format!("{}/{}", body.origin.device, body.label);
        let parts = match parts {
            Ok(parts) => parts,
            Err(r) => {
                fleet.refused(&what, &r);
                fleet.verdict(&p.model, body, "refused", Verdict::because(r.to_string()));
                return Then::Nothing;
            }
        };
        let kept = match fleet.offers.save(&p.model, &p.envelope, body, &parts) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "a fleet offer could not be kept");
                return Then::Nothing;
            }
        };
        lock(&fleet.status).received += 1;
        tracing::info!(offer = %kept.id, model = %p.model, samples = parts.len(), "fleet offer received");
        self.by_policy(kept)
    }

    fn by_policy(&self, kept: StoredOffer) -> Then {
        let fleet = &self.fleet;
        match fleet.settings.policy_of(&kept.model) {
            FleetPolicy::Auto => Then::Queue(Job::Adopt {
                model: kept.model,
                offer: kept.id,
            }),
            FleetPolicy::Ask => {
                fleet.verdict(
                    &kept.model,
                    &kept.body,
                    "waiting",
                    Verdict::because("policy `ask`: waiting for `fleet install` on this device"),
                );
                fleet.announce_waiting(&kept.model);
                Then::Nothing
            }
            FleetPolicy::Never => {
                let _ = fleet.offers.remove(&kept.id);
                Then::Nothing
            }
        }
    }

    /// A retraction: a label this device adopted from that origin is forgotten (its
    /// samples deleted and a version without it served); otherwise nothing changes.
    fn retraction(&self, model: &str, body: OfferBody) -> Then {
        let fleet = &self.fleet;
        fleet.record(&body);
        let origin = format!("fleet:{}:", body.origin.device);
        let adopted = fleet.models.get(model).is_some_and(|slot| {
            slot.store.list().is_ok_and(|metas| {
                metas
                    .iter()
                    .any(|m| m.label == body.label && m.origin.starts_with(&origin))
            })
        });
        if !adopted {
            return Then::Nothing;
        }
        fleet.verdict(
            model,
            &body,
            "retracted",
            Verdict::because(format!(
                "{} retracted it: forgotten here",
                body.origin.device
            )),
        );
        Then::Queue(Job::Forget {
            model: model.into(),
            label: body.label.clone(),
        })
    }

    /// `fleet install [id]` / `fleet skip [id]` on a model's command topic: the named kept
    /// offer, or the oldest one of the model. `Ok`: what was done, and the job to queue.
    pub fn command(&self, model: &str, words: &[&str]) -> Result<(String, Option<Job>), String> {
        let fleet = &self.fleet;
        let (verb, id) = match words {
            [verb] => (*verb, None),
            [verb, id] => (*verb, Some(*id)),
            _ => return Err("`fleet install [offer]` or `fleet skip [offer]`".into()),
        };
        let kept = fleet.kept();
        let offer = kept
            .iter()
            .find(|o| o.model == model && id.is_none_or(|id| o.id == id))
            .ok_or_else(|| match id {
                Some(id) => format!("no offer `{id}` waits for model `{model}`"),
                None => format!("no offer waits for model `{model}`"),
            })?;
        match verb {
            "install" => Ok((
                format!(
                    "offer {} queued: its label is judged by this device's gate",
                    offer.id
                ),
                Some(Job::Adopt {
                    model: model.into(),
                    offer: offer.id.clone(),
                }),
            )),
            "skip" => {
                fleet.record(&offer.body);
                fleet.offers.remove(&offer.id).map_err(|e| e.to_string())?;
                fleet.verdict(
                    model,
                    &offer.body,
                    "skipped",
                    Verdict::because("skipped by a person"),
                );
                fleet.announce_waiting(model);
                Ok((format!("offer {} skipped", offer.id), None))
            }
            other => Err(format!("`fleet {other}`: install or skip")),
        }
    }
}
