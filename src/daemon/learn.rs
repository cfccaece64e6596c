//! On-device learning in the daemon, the trainer thread (fed by the scheduler on the
//! inbound thread, `daemon::inbox`):
//! - imprint / fine-tune / gate / promote (`adapt::learner`), rollback, promote-to-version,
//!   `forget`, hot swaps of the live model;
//! - what is published about it (`training/state`, `model/<m>/verdict`, `model/<m>/info`,
//!   Home Assistant's discovery again; the payload types live in `mqtt::payload`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::announce::Announcer;
use super::fleet::{Fleet, Untaken, Verdict};
use super::metrics::AdaptCounters;
use super::models::{ModelSlot, load_model};
use crate::adapt::learner::{self, Forgotten, Offered, Outcome, Phase};
use crate::adapt::schedule::{Job, JobEnd, Labels, TrainerQueue};
use crate::capture::now_ms;
use crate::mqtt::Topics;
use crate::mqtt::client::Publisher;
pub use crate::mqtt::payload::{ModelCard, TrainState, TrainingState, Unserved};
use crate::registry::ModelPackage;
use crate::registry::card::GateMetrics;
use crate::settings::AdaptSettings;

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
    /// Home Assistant discovery, sent again when a model changes.
    pub announcer: Arc<Announcer>,
    /// Class offers to and from the fleet (`daemon::fleet`).
    pub fleet: Arc<Fleet>,
    /// Samples of the offer the last `adopt` job learnt from.
    pub last_adopted: std::cell::Cell<usize>,
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

/// Give the heap a job freed back to the system. A fine-tune's working set (tens of MiB of
/// tensors, freed when it ends) otherwise stays in glibc's arenas, and the resident size of
/// a daemon that has trained stays at its training peak (the soak's RSS check saw +6 % in
/// five minutes). Other C libraries return large blocks themselves.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of the heap.
    unsafe {
        libc::malloc_trim(0);
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
        let name = model.name.clone();
        slot.live.store(Arc::new(model));
        self.publish_card(slot);
        self.fleet.announce_waiting(&name);
        self.announcer.announce(false);
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
        self.fleet.retract(model, label);
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

    /// An imprint or fine-tune: the learner, its progress on `training/state`, and the
    /// outcome (a promoted version swapped in, a rejection with its reason).
    fn adapt(
        &self,
        slot: &ModelSlot,
        job: &Job,
        imprint_only: bool,
        offered: Option<&Offered>,
        seed: u64,
    ) -> anyhow::Result<Ran> {
        let model = job.model();
        let kind = job.kind();
        let stop = self.stop.clone();
        let waiting = self.imprint_waiting.clone();
        let finetune = !imprint_only;
        let mut last_progress = 0.0f64;
        // When the training phase began (its first progress report), and the
        // fraction it reported then.
        let mut first_step: Option<(std::time::Instant, f64)> = None;
        let cancel =
            move || stop.load(Ordering::Relaxed) || (finetune && waiting.load(Ordering::Relaxed));
        let mut progress = |phase| {
            // Published at most every 10 % of the fine-tune.
            let (state, fraction) = match phase {
                Phase::Preparing => (TrainState::Training, Some(0.0)),
                Phase::Training(f) => (TrainState::Training, Some(f)),
                Phase::Gating => (TrainState::Gating, None),
            };
            if let Phase::Training(f) = phase {
                first_step.get_or_insert_with(|| (std::time::Instant::now(), f));
            }
            if let Some(f) = fraction {
                if f > 0.0 && f < 1.0 && f - last_progress < 0.1 {
                    return;
                }
                last_progress = f;
            }
            let mut st = TrainingState::new(model, state);
            st.kind = Some(kind.into());
            st.progress = fraction;
            // The training's expected length, from its speed since it began.
            st.expected_secs = match (first_step, fraction) {
                (Some((at, f0)), Some(f)) if f > f0 => Some(at.elapsed().as_secs_f64() / (f - f0)),
                _ => None,
            };
            self.state(&st);
        };
        let outcome = match offered {
            None => learner::run(
                &slot.versions,
                &slot.store,
                &self.cfg,
                imprint_only,
                seed,
                &cancel,
                &mut progress,
            ),
            Some(o) => learner::run_offered(
                &slot.versions,
                &slot.store,
                &self.cfg,
                o,
                seed,
                &cancel,
                &mut progress,
            ),
        };
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
        let mut st = self.outcome_state(slot, model, outcome, offered.is_some())?;
        st.kind = Some(kind.into());
        Ok(Ran::Done(Box::new(st)))
    }

    /// What an adaptation's outcome did: a promoted version swapped in (and, from this
    /// device's own samples, its new labels offered to the fleet), a rejection with its
    /// reason (a view's new reference swapped in), or nothing to learn.
    fn outcome_state(
        &self,
        slot: &ModelSlot,
        model: &str,
        outcome: Outcome,
        offered: bool,
    ) -> anyhow::Result<TrainingState> {
        let mut st;
        match outcome {
            Outcome::Promoted { package, info } => {
                self.swap(slot, &package)?;
                if !offered {
                    let evidence = serde_json::to_value(&info.gate).unwrap_or_default();
                    self.fleet.offer_labels(
                        model,
                        &info.new_classes,
                        package.manifest.version,
                        &slot.store,
                        evidence,
                    );
                }
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
        Ok(st)
    }

    /// Adopted offers' samples count towards `auto_after` as a person's samples do (the
    /// scheduler counts those): once a model has `auto_after` of them since its last
    /// fine-tune, a fine-tune follows, as it did on the device that was taught.
    fn finetune_after_adoptions(
        &self,
        job: &Job,
        end: JobEnd,
        adopted: &mut BTreeMap<String, usize>,
    ) -> Option<Job> {
        let model = job.model().to_string();
        match job {
            Job::Adapt {
                imprint_only: false,
                ..
            } if end != JobEnd::Yielded => {
                adopted.remove(&model);
            }
            Job::Adopt { .. } if end == JobEnd::Promoted => {
                *adopted.entry(model.clone()).or_default() += self.last_adopted.get();
            }
            _ => {}
        }
        let due = self.cfg.auto_after > 0
            && adopted
                .get(&model)
                .is_some_and(|&n| n >= self.cfg.auto_after);
        due.then(|| {
            adopted.remove(&model);
            Job::Adapt {
                model,
                imprint_only: false,
            }
        })
    }

    /// A class offer of the fleet: its label imprinted on the live model and judged by
    /// this device's gate; the verdict goes back to the fleet ([`Fleet::settle`]).
    fn adopt(&self, slot: &ModelSlot, job: &Job, id: &str, seed: u64) -> anyhow::Result<Ran> {
        let model = job.model();
        let (offer, offered) = match self.fleet.take(slot, model, id) {
            Ok(taken) => taken,
            Err(untaken) => {
                let Untaken { offer, reason } = *untaken;
                if let Some(offer) = offer {
                    let detail = Verdict::because(reason.clone());
                    self.fleet.settle(model, &offer, &slot.store, false, detail);
                }
                let mut st = TrainingState::new(model, TrainState::Rejected);
                st.kind = Some(job.kind().into());
                st.reason = Some(reason);
                return Ok(Ran::Done(Box::new(st)));
            }
        };
        self.last_adopted.set(offered.samples.len());
        let ran = self.adapt(slot, job, true, Some(&offered), seed);
        let st = match &ran {
            Ok(Ran::Done(st)) => st.as_ref().clone(),
            Ok(Ran::Yielded) => unreachable!("an imprint does not yield"),
            // Failed (an error, not the gate): kept, tried again at the next start.
            Err(_) => return ran,
        };
        let adopted = st.state == TrainState::Promoted;
        let detail = Verdict {
            reason: st.reason.clone(),
            version: Some(slot.live.load().version),
            gate: st.gate.clone(),
        };
        self.fleet
            .settle(model, &offer, &slot.store, adopted, detail);
        if adopted {
            self.publish_card(slot);
        }
        ran
    }

    fn run_job(&self, job: &Job, seed: u64) -> anyhow::Result<Ran> {
        let model = job.model();
        let slot = self
            .models
            .get(model)
            .ok_or_else(|| anyhow::anyhow!("unknown model `{model}`"))?;
        match job {
            Job::Adapt { imprint_only, .. } => self.adapt(slot, job, *imprint_only, None, seed),
            Job::Adopt { offer, .. } => self.adopt(slot, job, offer, seed),
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
        // Which training kernels this machine runs, timed now (at this thread's priority),
        // not in the first fine-tune; `status` reports it.
        let k = crate::lsskd::kernels::choice();
        tracing::info!(
            "training kernels: {} (a layer: ours {:.2} ms, burn's {:.2} ms)",
            k.kernels,
            k.ours_ms,
            k.burn_ms
        );
        let mut seed = now_ms();
        for slot in self.models.values() {
            self.publish_card(slot);
        }
        let mut queue = TrainerQueue::new(self.cfg.min_shots, self.cfg.auto_after > 0);
        // Samples adopted from the fleet per model since its last fine-tune.
        let mut adopted: BTreeMap<String, usize> = BTreeMap::new();
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
            release_freed_memory();
            if end != JobEnd::Yielded
                && let Some(slot) = self.models.get(job.model())
            {
                queue.catch_up(job.model(), &labels_of(slot));
            }
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
            // Drained as at the top, the flag first: an imprint asked for while this job ran
            // is in the queue now (and may be pruned below: the flag must not outlive it, or
            // the scheduler would ask for no imprint again).
            self.imprint_waiting.store(false, Ordering::Relaxed);
            jobs.try_iter().for_each(|j| queue.push(j));
            if let Some(j) = self.finetune_after_adoptions(&job, end, &mut adopted) {
                queue.push(j);
            }
            queue.prune(|model| {
                self.models
                    .get(model)
                    .map(|slot| labels_of(slot))
                    .unwrap_or_default()
            });
            st.queued = queue.queued(job.model());
            if let Some(slot) = self.models.get(job.model())
                && end != JobEnd::Yielded
            {
                st.unserved = unserved(&labels_of(slot), self.cfg.min_shots, st.gate.as_ref());
            }
            self.state(&st);
            if end != JobEnd::Yielded
                && let Ok(body) = serde_json::to_vec(&st)
            {
                self.publish
                    .send(self.topics.model_verdict(job.model()), body, true);
            }
        }
    }
}
