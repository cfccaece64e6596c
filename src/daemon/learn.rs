//! On-device learning in the daemon: the scheduler (main loop side: when stored samples call
//! for an imprint or a fine-tune; sample ingestion itself is `Runtime::ingest` in the
//! parent module), the trainer thread (imprint / fine-tune / gate / promote, rollback,
//! promote-to-version), hot swaps of the live model, and what is published about it
//! (`training/state`, `model/<m>/info`; the payload types live in `mqtt::payload`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use super::{ModelSlot, load_model};
use crate::adapt::gate::should_adapt;
use crate::adapt::learner::{self, Outcome, Phase};
use crate::capture::now_ms;
use crate::mqtt::Topics;
use crate::mqtt::client::Publisher;
use crate::mqtt::payload::SCHEMA_VERSION;
pub use crate::mqtt::payload::{ModelCard, TrainState, TrainingState};
use crate::registry::ModelPackage;
use crate::settings::AdaptSettings;

/// Work for the trainer thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Learn from the stored samples; `imprint_only`: new labels only, no fine-tune.
    Adapt {
        model: String,
        imprint_only: bool,
    },
    Rollback {
        model: String,
    },
    Promote {
        model: String,
        version: u32,
    },
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::Adapt {
                imprint_only: true, ..
            } => "imprint",
            Job::Adapt { .. } => "finetune",
            Job::Rollback { .. } => "rollback",
            Job::Promote { .. } => "promote",
        }
    }

    fn model(&self) -> &str {
        match self {
            Job::Adapt { model, .. } | Job::Rollback { model } | Job::Promote { model, .. } => {
                model
            }
        }
    }
}

/// A `model/<m>/cmd` payload: `adapt`, `rollback` or `promote <version>`.
pub fn parse_command(model: &str, text: &str) -> Result<Job, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let model = model.to_string();
    match words.as_slice() {
        ["adapt"] => Ok(Job::Adapt {
            model,
            imprint_only: false,
        }),
        ["rollback"] => Ok(Job::Rollback { model }),
        ["promote", v] => v
            .parse()
            .map(|version| Job::Promote { model, version })
            .map_err(|_| format!("`promote {v}`: not a version number")),
        _ => Err(format!(
            "unknown command `{}` (adapt, rollback, promote <version>)",
            text.chars().take(64).collect::<String>()
        )),
    }
}

/// The card of a package plus the store's sample counts.
pub fn model_card(pkg: &ModelPackage, slot: &ModelSlot) -> ModelCard {
    let m = &pkg.manifest;
    ModelCard {
        v: SCHEMA_VERSION,
        model: m.name.clone(),
        version: m.version,
        parent: m.parent,
        created_at: m.created_at.clone(),
        classes: m.classes.clone(),
        adaptation: m.adaptation.clone(),
        samples_per_class: slot.store.counts().unwrap_or_default(),
    }
}

/// Decides when stored samples call for an adaptation (main loop side).
pub struct Scheduler {
    cfg: AdaptSettings,
    since_last: BTreeMap<String, usize>,
    last_attempt: BTreeMap<String, Instant>,
    /// (model, label) whose imprint is queued and not yet in the live model.
    imprint_requested: std::collections::BTreeSet<(String, String)>,
    jobs: SyncSender<Job>,
    /// Set when an imprint is queued: a running fine-tune yields to it.
    imprint_waiting: Arc<AtomicBool>,
}

impl Scheduler {
    pub fn new(
        cfg: AdaptSettings,
        jobs: SyncSender<Job>,
        imprint_waiting: Arc<AtomicBool>,
    ) -> Self {
        Self {
            cfg,
            since_last: BTreeMap::new(),
            last_attempt: BTreeMap::new(),
            imprint_requested: Default::default(),
            jobs,
            imprint_waiting,
        }
    }

    /// Queue a job without blocking; `false` when the queue is full (the caller reports it).
    pub fn submit(&mut self, job: Job) -> bool {
        if matches!(
            job,
            Job::Adapt {
                imprint_only: false,
                ..
            }
        ) {
            self.since_last.insert(job.model().to_string(), 0);
            self.last_attempt
                .insert(job.model().to_string(), Instant::now());
        }
        let imprint = matches!(
            job,
            Job::Adapt {
                imprint_only: true,
                ..
            }
        );
        match self.jobs.try_send(job) {
            Ok(()) => {
                if imprint {
                    self.imprint_waiting.store(true, Ordering::Relaxed);
                }
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// A new sample of `label` was stored for `model`, which now has `label_count` of them.
    pub fn sample_stored(
        &mut self,
        model: &str,
        label: &str,
        label_count: usize,
        known_classes: &[String],
    ) {
        let n = self.since_last.entry(model.to_string()).or_default();
        *n += 1;
        let new_samples = *n;
        let key = (model.to_string(), label.to_string());
        if known_classes.iter().any(|c| c == label) {
            self.imprint_requested.remove(&key);
        } else if label_count >= self.cfg.min_shots
            && !self.imprint_requested.contains(&key)
            && self.submit(Job::Adapt {
                model: model.into(),
                imprint_only: true,
            })
        {
            // Asked once; a later sample asks again only if the queue was full.
            self.imprint_requested.insert(key);
        }
        if self.cfg.auto_after > 0
            && should_adapt(
                new_samples,
                self.cfg.auto_after,
                self.last_attempt
                    .get(model)
                    .map(|t| t.elapsed().as_millis() as u64),
                self.cfg.cooldown_secs * 1000,
            )
        {
            self.submit(Job::Adapt {
                model: model.into(),
                imprint_only: false,
            });
        }
    }
}

/// Everything the trainer thread needs.
pub struct Trainer {
    pub models: BTreeMap<String, Arc<ModelSlot>>,
    pub cfg: AdaptSettings,
    pub topics: Topics,
    pub publish: Publisher,
    pub stop: Arc<AtomicBool>,
    /// Shared with the [`Scheduler`]: an imprint is waiting.
    pub imprint_waiting: Arc<AtomicBool>,
}

/// How a job ended.
enum Ran {
    Done(Box<TrainingState>),
    /// A fine-tune gave way to a queued imprint; it runs again after it.
    Yielded,
    /// Nothing to do (an imprint with no new label left).
    Nothing,
}

/// Labels of `slot`'s samples with at least `min_shots` samples that the live model does
/// not know yet.
fn labels_to_imprint(slot: &ModelSlot, min_shots: usize) -> Vec<String> {
    let live = slot.live.load();
    slot.store
        .counts()
        .unwrap_or_default()
        .into_iter()
        .filter(|(l, n)| *n >= min_shots && !live.classes.contains(l))
        .map(|(l, _)| l)
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

impl Trainer {
    fn state(&self, st: &TrainingState) {
        if let Ok(body) = serde_json::to_vec(st) {
            self.publish.send(self.topics.training_state(), body, true);
        }
    }

    /// Publish the live version's card.
    pub fn publish_card(&self, slot: &ModelSlot) {
        match slot.versions.open_current() {
            Ok(current) => {
                let card = model_card(&current.package, slot);
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

    fn run_job(&self, job: &Job, seed: u64) -> anyhow::Result<Ran> {
        let model = job.model();
        let slot = self
            .models
            .get(model)
            .ok_or_else(|| anyhow::anyhow!("unknown model `{model}`"))?;
        match job {
            Job::Adapt { imprint_only, .. } => {
                let kind = job.kind();
                if *imprint_only {
                    self.imprint_waiting.store(false, Ordering::Relaxed);
                    if labels_to_imprint(slot, self.cfg.min_shots).is_empty() {
                        return Ok(Ran::Nothing);
                    }
                }
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
                    Outcome::Rejected { reason, info } => {
                        tracing::info!(%model, %reason, "candidate rejected");
                        st = TrainingState::new(model, TrainState::Rejected);
                        st.reason = Some(reason);
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

    /// The trainer thread: one job at a time until `stop`. Queued jobs are merged (per
    /// model one imprint, then one fine-tune); a fine-tune first imprints the labels that
    /// are ready, and gives way to an imprint queued while it runs (it is run again after
    /// it), so every label is served within seconds of its `min_shots`-th sample and no
    /// fine-tune, promoted or not, takes a label away.
    pub fn run(self, jobs: Receiver<Job>) {
        lower_priority();
        let mut seed = now_ms();
        for slot in self.models.values() {
            self.publish_card(slot);
        }
        let mut queue: Vec<Job> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if queue.is_empty() {
                match jobs.recv_timeout(Duration::from_millis(200)) {
                    Ok(j) => queue.push(j),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            queue.extend(jobs.try_iter());
            queue = merge(std::mem::take(&mut queue));
            let mut job = queue.remove(0);
            // A fine-tune starts from a model that knows every ready label.
            if let Job::Adapt {
                model,
                imprint_only: false,
            } = &job
                && let Some(slot) = self.models.get(model)
                && !labels_to_imprint(slot, self.cfg.min_shots).is_empty()
            {
                let imprint = Job::Adapt {
                    model: model.clone(),
                    imprint_only: true,
                };
                queue.insert(0, std::mem::replace(&mut job, imprint));
            }
            seed = seed.wrapping_add(1);
            tracing::info!(?job, "trainer job");
            let mut st = match self.run_job(&job, seed) {
                Ok(Ran::Done(st)) => *st,
                Ok(Ran::Nothing) => continue,
                Ok(Ran::Yielded) => {
                    tracing::info!(
                        ?job,
                        "fine-tune paused for an imprint; it runs again after it"
                    );
                    queue.push(job.clone());
                    let mut st = TrainingState::new(job.model(), TrainState::Queued);
                    st.kind = Some(job.kind().into());
                    st.reason = Some("paused for an imprint of a new label".into());
                    st
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(?job, error = %msg, "trainer job failed");
                    let mut st = TrainingState::new(job.model(), TrainState::Failed);
                    st.reason = Some(msg);
                    st
                }
            };
            queue.extend(jobs.try_iter());
            queue = merge(std::mem::take(&mut queue));
            st.queued = queue
                .iter()
                .filter(|j| j.model() == job.model())
                .map(|j| j.kind().to_string())
                .collect();
            self.state(&st);
        }
    }
}

/// Merge queued jobs: per model at most one imprint and one fine-tune, the imprint first
/// (it is quick and makes new labels usable); commands keep their order.
pub fn merge(jobs: Vec<Job>) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    for job in jobs {
        if let Job::Adapt {
            model,
            imprint_only,
        } = &job
        {
            let same = |j: &Job, imprint: bool| matches!(j, Job::Adapt { model: m, imprint_only: i } if m == model && *i == imprint);
            if out.iter().any(|j| same(j, *imprint_only)) {
                continue;
            }
            if *imprint_only && let Some(at) = out.iter().position(|j| same(j, false)) {
                out.insert(at, job);
                continue;
            }
        }
        out.push(job);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapt(m: &str, imprint_only: bool) -> Job {
        Job::Adapt {
            model: m.into(),
            imprint_only,
        }
    }

    #[test]
    fn commands_parse_with_clear_errors() {
        assert_eq!(parse_command("vision", "adapt"), Ok(adapt("vision", false)));
        assert_eq!(
            parse_command("vision", " promote 3 "),
            Ok(Job::Promote {
                model: "vision".into(),
                version: 3
            })
        );
        assert!(
            parse_command("vision", "promote x")
                .unwrap_err()
                .contains("not a version")
        );
        assert!(
            parse_command("vision", "reboot")
                .unwrap_err()
                .contains("unknown command")
        );
    }

    #[test]
    fn queued_adaptations_merge_and_an_imprint_goes_first() {
        let merged = merge(vec![
            adapt("vision", false),
            Job::Rollback {
                model: "audio".into(),
            },
            adapt("vision", true),
            adapt("vision", false),
            adapt("vision", true),
            adapt("audio", true),
        ]);
        assert_eq!(
            merged,
            vec![
                adapt("vision", true),
                adapt("vision", false),
                Job::Rollback {
                    model: "audio".into()
                },
                adapt("audio", true),
            ]
        );
    }

    #[test]
    fn scheduler_imprints_at_min_shots_and_finetunes_after_enough_samples() {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let cfg = AdaptSettings {
            enabled: true,
            max_payload_bytes: 1 << 20,
            sample_quota: 100,
            capture_ring: 8,
            min_shots: 2,
            auto_after: 4,
            cooldown_secs: 0,
            holdout_every: 5,
            budget_secs: 10,
            epochs: 1,
            min_new_accuracy: 0.5,
            max_old_drop: 0.02,
            max_class_drop: 0.05,
            confidence: 0.95,
            keep_versions: 3,
        };
        let waiting = Arc::new(AtomicBool::new(false));
        let mut s = Scheduler::new(cfg, tx, waiting.clone());
        let known = vec!["cat".to_string()];
        s.sample_stored("vision", "dog", 1, &known);
        assert!(rx.try_recv().is_err());
        s.sample_stored("vision", "dog", 2, &known);
        assert_eq!(rx.try_recv(), Ok(adapt("vision", true)));
        assert!(
            waiting.load(Ordering::Relaxed),
            "a running fine-tune yields"
        );
        s.sample_stored("vision", "cat", 5, &known);
        s.sample_stored("vision", "dog", 3, &known);
        assert_eq!(
            rx.try_recv(),
            Ok(adapt("vision", false)),
            "the imprint of `dog` is not asked for twice"
        );
        s.sample_stored("vision", "dog", 4, &known);
        assert!(rx.try_recv().is_err(), "counter restarts after a fine-tune");
    }
}
