//! When the daemon learns: the jobs of the trainer thread (`adapt`, `rollback`, `promote`,
//! `forget`), the `model/<m>/cmd` commands that ask for them, the scheduler that asks for
//! an imprint when a label reaches `min_shots` and a fine-tune after `auto_after` new
//! samples, how queued jobs merge, and the trainer's queue ([`TrainerQueue`]), which decides
//! the next job from what arrived and how earlier jobs ended. Pure decisions plus a
//! non-blocking queue; the daemon's trainer thread (`daemon::learn`) runs the jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Instant;

use super::gate::should_adapt;
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
    /// Delete the stored samples of `label` (a label sent by mistake, or a shipped class
    /// under a new name); a label the live model already has stays until a rollback.
    Forget {
        model: String,
        label: String,
    },
    /// Build the label of a class offer kept in the fleet's offer store (`offer`: its id)
    /// on the live model and judge it with this device's gate (`daemon::fleet`).
    Adopt {
        model: String,
        offer: String,
    },
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Adapt {
                imprint_only: true, ..
            } => "imprint",
            Job::Adapt { .. } => "finetune",
            Job::Rollback { .. } => "rollback",
            Job::Promote { .. } => "promote",
            Job::Forget { .. } => "forget",
            Job::Adopt { .. } => "adopt",
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Job::Adapt { model, .. }
            | Job::Rollback { model }
            | Job::Promote { model, .. }
            | Job::Forget { model, .. }
            | Job::Adopt { model, .. } => model,
        }
    }
}

/// A `model/<m>/cmd` payload: `adapt`, `rollback`, `promote <version>` or
/// `forget <label>`.
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
        ["forget", label] if crate::samples::valid_name(label) => Ok(Job::Forget {
            model,
            label: label.to_string(),
        }),
        ["forget", label] => Err(format!(
            "`forget {}`: not a label ([A-Za-z0-9_.-], 1-64 characters)",
            label.chars().take(64).collect::<String>()
        )),
        _ => Err(format!(
            "unknown command `{}` (adapt, rollback, promote <version>, forget <label>, versions, samples, fleet install <offer>, fleet skip <offer>)",
            text.chars().take(64).collect::<String>()
        )),
    }
}

/// Decides when stored samples call for an adaptation (on the inbound thread, which stores the samples).
pub struct Scheduler {
    cfg: AdaptSettings,
    since_last: BTreeMap<String, usize>,
    last_attempt: BTreeMap<String, Instant>,
    /// (model, label) not yet in the live model whose imprint was asked for, with the
    /// label's sample count then.
    imprint_requested: BTreeMap<(String, String), usize>,
    jobs: SyncSender<Job>,
    /// Set when an imprint is queued: a running fine-tune yields to it.
    imprint_waiting: Arc<AtomicBool>,
}

/// Why [`Scheduler::submit`] did not queue a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the trainer is busy; try again")]
    Busy,
    /// The trainer thread has ended (it panicked or is stopping): nothing will run the job.
    #[error("the trainer has stopped; the daemon is restarting it")]
    TrainerStopped,
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

    /// Queue a job without blocking; `Err` says why it was not (the caller reports it).
    pub fn submit(&mut self, job: Job) -> Result<(), Refused> {
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
        // Raised before the job is sent: the trainer clears it when it takes jobs from the
        // channel, so raised after, it could outlive the job (taken in between) and hold
        // back every later imprint.
        let was = imprint && self.imprint_waiting.swap(true, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                if imprint && !was {
                    self.imprint_waiting.store(false, Ordering::Relaxed);
                }
                match e {
                    TrySendError::Full(_) => Err(Refused::Busy),
                    TrySendError::Disconnected(_) => Err(Refused::TrainerStopped),
                }
            }
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
        // Asked when the label reaches `min_shots`; a later sample asks again (the trainer
        // retries an imprint it rejected only for a label with new samples: the trainer's
        // queue decides), unless an imprint is still waiting to start: that one reads the
        // store when it runs and sees this sample too. A full queue: the next sample asks.
        if known_classes.iter().any(|c| c == label) || label_count < self.cfg.min_shots {
            // Served, or counting again from a `forget`.
            self.imprint_requested.remove(&key);
        } else if label_count >= self.cfg.min_shots
            && self
                .imprint_requested
                .get(&key)
                .is_none_or(|&asked| label_count > asked)
            && !self.imprint_waiting.load(Ordering::Relaxed)
            && self
                .submit(Job::Adapt {
                    model: model.into(),
                    imprint_only: true,
                })
                .is_ok()
        {
            self.imprint_requested.insert(key, label_count);
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
            // A full queue or a stopped trainer: the next sample asks again.
            let _ = self.submit(Job::Adapt {
                model: model.into(),
                imprint_only: false,
            });
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
/// One model's labels as the trainer sees them before a job: the sample store's counts and
/// the live model's classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Stored samples per label.
    pub counts: BTreeMap<String, usize>,
    /// Classes of the live model.
    pub live: BTreeSet<String>,
}

impl Labels {
    /// Labels the live model lacks that have at least `min_shots` samples, with their counts.
    pub fn ready(&self, min_shots: usize) -> BTreeMap<String, usize> {
        self.counts
            .iter()
            .filter(|(l, n)| **n >= min_shots && !self.live.contains(*l))
            .map(|(l, n)| (l.clone(), *n))
            .collect()
    }
}

/// How a job of the trainer ended, as far as its queue is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Promoted,
    Rejected,
    /// An error (unreadable samples, a full disk …).
    Failed,
    /// A fine-tune gave way to an imprint queued while it ran; it runs again after it.
    Yielded,
    /// Nothing to learn (the learner skipped it).
    Nothing,
}

/// What a model's earlier jobs settled, so that the same attempt is not made again before
/// something changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Settled {
    /// Labels an imprint (or a fine-tune, which judges the imprinted candidate too) was
    /// run for and that the live model still lacks, with their sample counts then: not
    /// imprinted again before the count changes.
    imprinted: BTreeMap<String, usize>,
    /// The store's counts when the latest fine-tune ended: no fine-tune of the trainer's
    /// own on the same samples (an `adapt` command or an automatic fine-tune still runs).
    finetuned: Option<BTreeMap<String, usize>>,
}

/// The trainer thread's queue and its decisions, without the training: jobs arrive
/// ([`TrainerQueue::push`]), [`TrainerQueue::next`] picks the next one from the queue and
/// the model's [`Labels`], [`TrainerQueue::finished`] says how it ended. The rules:
/// - queued jobs merge ([`merge`]): per model one imprint, before one fine-tune;
/// - an imprint runs only for a ready label (`min_shots` samples, not in the live model)
///   that no earlier imprint or fine-tune was run for with the same sample count: a
///   rejected imprint is not retried until the label has a new sample, or a command
///   (`rollback`, `promote`, `forget`) changes the model or its samples;
/// - a fine-tune first imprints the ready labels that qualify for an imprint;
/// - a label whose imprint was not promoted (rejected, failed) goes to the fine-tune (with
///   `finetune_weak`, i.e. `auto_after > 0`), which trains on every label with `min_shots`
///   samples, unless a fine-tune already ended on the same samples; a rejected fine-tune
///   is not queued again by the trainer, so its rejection is said once and the trainer
///   waits;
/// - a fine-tune that yielded to an imprint runs again after it.
///
/// So every job the trainer runs follows from an event (a job that arrived, a sample that
/// changed a count) and the trainer ends idle.
#[derive(Debug, Clone)]
pub struct TrainerQueue {
    min_shots: usize,
    finetune_weak: bool,
    queue: Vec<Job>,
    settled: BTreeMap<String, Settled>,
    /// The job [`TrainerQueue::next`] handed out, with its model's labels then.
    running: Option<(Job, Labels)>,
}

fn is_adapt(job: &Job, imprint: bool) -> bool {
    matches!(job, Job::Adapt { imprint_only, .. } if *imprint_only == imprint)
}

impl TrainerQueue {
    /// `finetune_weak`: a label whose imprint is rejected goes to a fine-tune of the
    /// trainer's own (`auto_after > 0`; with 0, fine-tunes run only on the `adapt` command).
    pub fn new(min_shots: usize, finetune_weak: bool) -> Self {
        Self {
            min_shots,
            finetune_weak,
            queue: Vec::new(),
            settled: BTreeMap::new(),
            running: None,
        }
    }

    /// A job arrived (a command, or the scheduler's imprint or fine-tune).
    pub fn push(&mut self, job: Job) {
        if is_adapt(&job, false)
            && let Some(s) = self.settled.get_mut(job.model())
        {
            // Asked for: new samples (`auto_after`) or the `adapt` command.
            s.finetuned = None;
        }
        self.queue.push(job);
        self.queue = merge(std::mem::take(&mut self.queue));
    }

    /// Labels of `labels` that an imprint would be run for: ready, and not settled at
    /// their current count.
    fn to_imprint(&self, model: &str, labels: &Labels) -> BTreeMap<String, usize> {
        let settled = self.settled.get(model);
        labels
            .ready(self.min_shots)
            .into_iter()
            .filter(|(l, n)| settled.and_then(|s| s.imprinted.get(l)) != Some(n))
            .collect()
    }

    /// Drop the queued imprints that have nothing to do with each model's labels now (as
    /// [`TrainerQueue::next`] would), so that what is reported as queued will run: an
    /// imprint asked for by a sample that the running imprint already read is not one.
    pub fn prune(&mut self, labels: impl Fn(&str) -> Labels) {
        let queue = std::mem::take(&mut self.queue);
        self.queue = queue
            .into_iter()
            .filter(|job| {
                !is_adapt(job, true)
                    || !self
                        .to_imprint(job.model(), &labels(job.model()))
                        .is_empty()
            })
            .collect();
    }

    /// The next job to run, given each model's labels now (`None`: nothing to do). Jobs
    /// with nothing to do are dropped here; the caller reports the one it gets through
    /// [`TrainerQueue::finished`] before asking again.
    pub fn next(&mut self, labels: impl Fn(&str) -> Labels) -> Option<Job> {
        while !self.queue.is_empty() {
            let job = self.queue.remove(0);
            let model = job.model().to_string();
            let now = labels(&model);
            let job = match job {
                Job::Adapt {
                    imprint_only: true, ..
                } if self.to_imprint(&model, &now).is_empty() => continue,
                Job::Adapt {
                    imprint_only: false,
                    ..
                } if !self.to_imprint(&model, &now).is_empty() => {
                    // A fine-tune starts from a model that knows every label it can.
                    self.queue.insert(0, job);
                    Job::Adapt {
                        model,
                        imprint_only: true,
                    }
                }
                job => job,
            };
            self.running = Some((job.clone(), now));
            return Some(job);
        }
        None
    }

    /// After a job of `model` ended, with its labels `now`: a label that became ready while
    /// the job ran (its samples arrived after the job read the store, and the scheduler's
    /// request for it was folded into the job, which was already waiting) gets an imprint
    /// of its own, so no ready label is left unattempted. Bounded: a label is retried only
    /// at a count not yet attempted.
    pub fn catch_up(&mut self, model: &str, now: &Labels) {
        let queued = self
            .queue
            .iter()
            .any(|j| j.model() == model && is_adapt(j, true));
        if !queued && !self.to_imprint(model, now).is_empty() {
            self.push(Job::Adapt {
                model: model.to_string(),
                imprint_only: true,
            });
        }
    }

    /// How the job [`TrainerQueue::next`] handed out ended.
    pub fn finished(&mut self, end: JobEnd) {
        let Some((job, labels)) = self.running.take() else {
            return;
        };
        let model = job.model().to_string();
        let ready = labels.ready(self.min_shots);
        match (&job, end) {
            (Job::Adapt { .. }, JobEnd::Yielded) => {
                if is_adapt(&job, false) {
                    self.queue.push(job);
                    self.queue = merge(std::mem::take(&mut self.queue));
                }
            }
            (
                Job::Adapt {
                    imprint_only: true, ..
                },
                end,
            ) => {
                let s = self.settled.entry(model.clone()).or_default();
                s.imprinted.extend(ready);
                let weak = end != JobEnd::Promoted;
                let tried = s.finetuned.as_ref() == Some(&labels.counts);
                let queued = self
                    .queue
                    .iter()
                    .any(|j| j.model() == model && is_adapt(j, false));
                if weak && self.finetune_weak && !tried && !queued {
                    self.queue.push(Job::Adapt {
                        model,
                        imprint_only: false,
                    });
                    self.queue = merge(std::mem::take(&mut self.queue));
                }
            }
            (Job::Adapt { .. }, _) => {
                let s = self.settled.entry(model).or_default();
                s.imprinted.extend(ready);
                s.finetuned = Some(labels.counts);
            }
            // The live model or the samples changed: every attempt may be made again.
            (Job::Rollback { .. } | Job::Promote { .. } | Job::Forget { .. }, _)
            | (Job::Adopt { .. }, JobEnd::Promoted) => {
                self.settled.remove(&model);
            }
            (Job::Adopt { .. }, _) => {}
        }
    }

    /// Kinds of `model`'s queued jobs, in order.
    pub fn queued(&self, model: &str) -> Vec<String> {
        self.queue
            .iter()
            .filter(|j| j.model() == model)
            .map(|j| j.kind().to_string())
            .collect()
    }

    /// Nothing queued and nothing running.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_none()
    }
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
        assert_eq!(
            parse_command("vision", "forget digit_3"),
            Ok(Job::Forget {
                model: "vision".into(),
                label: "digit_3".into()
            })
        );
        assert!(parse_command("vision", "forget ../x").is_err());
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
            capture_ring_mb: 1,
            min_shots: 2,
            auto_after: 4,
            cooldown_secs: 0,
            holdout_every: 5,
            budget_secs: 10,
            epochs: Some(1),
            min_new_accuracy: 0.5,
            max_old_drop: 0.02,
            max_class_drop: 0.05,
            rename_typicality: 0.3,
            confidence: 0.95,
            keep_versions: 3,
            request_margin: 0.1,
            request_entropy: 0.8,
            requests_per_hour: 6,
            request_ttl_secs: 3600,
            teach_now_count: 5,
            teach_now_spacing_ms: 1000,
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
        // Once the trainer has taken the imprint, a new sample asks again (the trainer
        // retries a rejected imprint on new samples only); the same count does not.
        waiting.store(false, Ordering::Relaxed);
        s.sample_stored("vision", "dog", 5, &known);
        assert_eq!(rx.try_recv(), Ok(adapt("vision", true)));
        waiting.store(false, Ordering::Relaxed);
        s.sample_stored("vision", "dog", 5, &known);
        assert!(rx.try_recv().is_err());

        // A full queue is "busy"; a trainer whose end of the queue is gone (its thread
        // died) is "stopped", not "busy" forever.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut s = Scheduler::new(s.cfg.clone(), tx, waiting);
        assert_eq!(s.submit(adapt("vision", false)), Ok(()));
        assert_eq!(s.submit(adapt("vision", false)), Err(Refused::Busy));
        drop(rx);
        assert_eq!(
            s.submit(adapt("vision", false)),
            Err(Refused::TrainerStopped)
        );
    }
    fn labels(counts: &[(&str, usize)], live: &[&str]) -> Labels {
        Labels {
            counts: counts.iter().map(|(l, n)| (l.to_string(), *n)).collect(),
            live: live.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// Labels that became ready while an imprint ran (their requests folded into it) get
    /// an imprint of their own after it; once attempted at their count, nothing more.
    #[test]
    fn labels_ready_after_a_job_read_the_store_get_their_imprint() {
        let mut q = TrainerQueue::new(3, false);
        q.push(adapt("vision", true));
        let at_start = labels(&[("eight", 5), ("seven", 2)], &["cat"]);
        assert_eq!(q.next(|_| at_start.clone()), Some(adapt("vision", true)));
        q.finished(JobEnd::Promoted);
        let now = labels(&[("eight", 5), ("seven", 5)], &["cat", "eight"]);
        q.catch_up("vision", &now);
        assert_eq!(q.next(|_| now.clone()), Some(adapt("vision", true)));
        q.finished(JobEnd::Rejected);
        q.catch_up("vision", &now);
        assert_eq!(q.next(|_| now.clone()), None, "attempted at its count");
    }

    /// The imprint a sample asked for while the running imprint already read that sample
    /// has nothing to do: it is not reported as queued (`sample send --wait` waited for it
    /// until its timeout).
    #[test]
    fn an_imprint_with_nothing_to_do_is_not_reported_as_queued() {
        let mut q = TrainerQueue::new(3, true);
        q.push(adapt("vision", true));
        let all_five = labels(&[("digit_3", 5)], &["shirt"]);
        assert_eq!(q.next(|_| all_five.clone()), Some(adapt("vision", true)));
        // The fifth sample's request arrives while it runs.
        q.push(adapt("vision", true));
        q.finished(JobEnd::Promoted);
        let served = labels(&[("digit_3", 5)], &["shirt", "digit_3"]);
        assert_eq!(q.queued("vision"), vec!["imprint"]);
        q.prune(|_| served.clone());
        assert!(q.queued("vision").is_empty());
        assert!(q.is_idle());
    }

    /// Issue 28: `digit_2`'s imprint is rejected while a fine-tune is queued. The
    /// fine-tune runs next (not the imprint again), and once it is rejected too the trainer
    /// is idle until `digit_2` gets a new sample.
    #[test]
    fn a_rejected_imprint_is_not_retried_and_the_queued_finetune_runs() {
        let mut q = TrainerQueue::new(3, true);
        let now = labels(
            &[("digit_3", 5), ("digit_8", 5), ("digit_2", 5)],
            &["shirt", "digit_3", "digit_8"],
        );
        q.push(adapt("vision", true));
        q.push(adapt("vision", false));
        assert_eq!(q.next(|_| now.clone()), Some(adapt("vision", true)));
        q.finished(JobEnd::Rejected);
        assert_eq!(q.queued("vision"), vec!["finetune"]);
        assert_eq!(q.next(|_| now.clone()), Some(adapt("vision", false)));
        q.finished(JobEnd::Rejected);
        assert!(q.is_idle());
        // The scheduler's next imprint, with nothing new: dropped.
        q.push(adapt("vision", true));
        assert_eq!(q.next(|_| now.clone()), None);
        // A new sample of `digit_2`: the imprint is tried again, and on rejection the
        // fine-tune on the new samples.
        let more = labels(
            &[("digit_3", 5), ("digit_8", 5), ("digit_2", 6)],
            &["shirt", "digit_3", "digit_8"],
        );
        q.push(adapt("vision", true));
        assert_eq!(q.next(|_| more.clone()), Some(adapt("vision", true)));
        q.finished(JobEnd::Rejected);
        assert_eq!(q.next(|_| more.clone()), Some(adapt("vision", false)));
        q.finished(JobEnd::Promoted);
        assert_eq!(q.next(|_| more.clone()), None);
    }

    /// A rejected imprint goes to a fine-tune only when fine-tunes run by themselves
    /// (`auto_after > 0`); the `adapt` command runs one whatever was rejected before; a
    /// fine-tune that yields runs after the imprint.
    #[test]
    fn commands_and_yields_reopen_what_a_rejection_settled() {
        let now = labels(&[("dog", 4)], &["cat"]);
        let mut q = TrainerQueue::new(3, false);
        q.push(adapt("vision", true));
        assert_eq!(q.next(|_| now.clone()), Some(adapt("vision", true)));
        q.finished(JobEnd::Rejected);
        assert!(q.is_idle(), "auto_after = 0: no fine-tune of its own");
        q.push(adapt("vision", false));
        assert_eq!(
            q.next(|_| now.clone()),
            Some(adapt("vision", false)),
            "the imprint of `dog` at 4 samples is not tried again first"
        );
        q.push(adapt("vision", true));
        q.finished(JobEnd::Yielded);
        assert_eq!(q.queued("vision"), vec!["imprint", "finetune"]);
        assert_eq!(
            q.next(|_| now.clone()),
            Some(adapt("vision", false)),
            "nothing new to imprint"
        );
        q.finished(JobEnd::Rejected);
        q.push(adapt("vision", false));
        assert_eq!(
            q.next(|_| now.clone()),
            Some(adapt("vision", false)),
            "asked for again"
        );
        q.finished(JobEnd::Rejected);
        // A rollback changes the live model: the imprint may be tried again.
        q.push(Job::Rollback {
            model: "vision".into(),
        });
        assert!(matches!(
            q.next(|_| now.clone()),
            Some(Job::Rollback { .. })
        ));
        q.finished(JobEnd::Promoted);
        q.push(adapt("vision", true));
        assert_eq!(q.next(|_| now.clone()), Some(adapt("vision", true)));
    }

    /// A labelling session against the trainer's queue, without training: samples,
    /// commands and the scheduler's jobs arrive in a random order, between and during jobs,
    /// and each adaptation ends with a random verdict.
    mod trainer_queue {
        use super::*;
        use proptest::prelude::*;

        const MODELS: [&str; 2] = ["vision", "audio"];
        const LABELS: [&str; 4] = ["a", "b", "c", "d"];
        const MIN_SHOTS: usize = 3;

        #[derive(Debug, Clone)]
        enum Step {
            /// A sample of `LABELS[l]` for `MODELS[m]` (the scheduler asks for an imprint
            /// when the label is new and has `MIN_SHOTS`).
            Sample(usize, usize),
            /// The `adapt` command, or the automatic fine-tune.
            Adapt(usize),
            Rollback(usize),
            Forget(usize, usize),
            /// The trainer runs its next job; `during` arrive while it runs.
            Run(Vec<Step>),
        }

        fn step() -> impl Strategy<Value = Step> {
            let leaf = prop_oneof![
                6 => (0..2usize, 0..4usize).prop_map(|(m, l)| Step::Sample(m, l)),
                1 => (0..2usize).prop_map(Step::Adapt),
                1 => (0..2usize).prop_map(Step::Rollback),
                1 => (0..2usize, 0..4usize).prop_map(|(m, l)| Step::Forget(m, l)),
            ];
            prop_oneof![
                3 => leaf.clone(),
                2 => proptest::collection::vec(leaf, 0..3).prop_map(Step::Run),
            ]
        }

        /// The world the trainer acts on.
        #[derive(Default)]
        struct World {
            counts: BTreeMap<(usize, String), usize>,
            learnt: BTreeSet<(usize, String)>,
            /// Per (model, label), the sample count a job reported it unserved at, or a
            /// command (rollback) reported the model's state at.
            reported: BTreeMap<(usize, String), usize>,
            /// Labels whose latest report is a rollback's.
            by_command: BTreeSet<(usize, String)>,
            /// Per (model, label), the counts it had when a fine-tune ran with it ready.
            finetuned: BTreeSet<(usize, String, usize)>,
            events: usize,
            jobs: usize,
            /// An imprint arrived while a fine-tune ran: it yields.
            imprint_arrived: bool,
        }

        impl World {
            fn labels(&self, model: &str) -> Labels {
                let m = MODELS.iter().position(|x| *x == model).expect("model");
                Labels {
                    counts: self
                        .counts
                        .iter()
                        .filter(|((mm, _), n)| *mm == m && **n > 0)
                        .map(|((_, l), n)| (l.clone(), *n))
                        .collect(),
                    live: std::iter::once("shipped".to_string())
                        .chain(
                            self.learnt
                                .iter()
                                .filter(|(mm, _)| *mm == m)
                                .map(|(_, l)| l.clone()),
                        )
                        .collect(),
                }
            }

            fn event(&mut self, q: &mut TrainerQueue, step: &Step) {
                self.events += 1;
                match step {
                    Step::Sample(m, l) => {
                        let key = (*m, LABELS[*l].to_string());
                        let n = self.counts.entry(key.clone()).or_default();
                        *n += 1;
                        if *n >= MIN_SHOTS && !self.learnt.contains(&key) {
                            q.push(adapt(MODELS[*m], true));
                            self.imprint_arrived = true;
                        }
                    }
                    Step::Adapt(m) => q.push(adapt(MODELS[*m], false)),
                    Step::Rollback(m) => q.push(Job::Rollback {
                        model: MODELS[*m].into(),
                    }),
                    Step::Forget(m, l) => q.push(Job::Forget {
                        model: MODELS[*m].into(),
                        label: LABELS[*l].into(),
                    }),
                    Step::Run(_) => unreachable!("not an event"),
                }
            }

            /// Run the next job, if any, with `during` arriving while it runs; `false`
            /// when the queue had nothing to run.
            fn run(&mut self, q: &mut TrainerQueue, during: &[Step], verdict: u8) -> bool {
                let Some(job) = q.next(|m| self.labels(m)) else {
                    for e in during {
                        self.event(q, e);
                    }
                    return false;
                };
                self.jobs += 1;
                let m = MODELS
                    .iter()
                    .position(|x| *x == job.model())
                    .expect("model");
                let before = self.labels(job.model());
                let ready = before.ready(MIN_SHOTS);
                self.imprint_arrived = false;
                for e in during {
                    self.event(q, e);
                }
                let end = match &job {
                    Job::Adapt { imprint_only, .. } => {
                        if !imprint_only {
                            for (l, n) in &ready {
                                self.finetuned.insert((m, l.clone(), *n));
                            }
                        }
                        if !imprint_only && self.imprint_arrived {
                            JobEnd::Yielded
                        } else {
                            match verdict % 4 {
                                0 => JobEnd::Promoted,
                                1 => JobEnd::Rejected,
                                2 => JobEnd::Failed,
                                _ => JobEnd::Nothing,
                            }
                        }
                    }
                    Job::Rollback { .. } => {
                        // Back to the shipped model: its state is the report.
                        self.learnt.retain(|(mm, _)| *mm != m);
                        for ((mm, l), n) in &self.counts {
                            if *mm == m {
                                self.reported.insert((m, l.clone()), *n);
                                self.by_command.insert((m, l.clone()));
                            }
                        }
                        JobEnd::Promoted
                    }
                    Job::Forget { label, .. } => {
                        self.counts.remove(&(m, label.clone()));
                        JobEnd::Nothing
                    }
                    Job::Promote { .. } => JobEnd::Promoted,
                    Job::Adopt { .. } => unreachable!("the model makes no fleet jobs"),
                };
                if matches!(job, Job::Adapt { .. }) {
                    for (l, n) in &ready {
                        match end {
                            JobEnd::Promoted => {
                                self.learnt.insert((m, l.clone()));
                            }
                            JobEnd::Yielded => {}
                            _ => {
                                self.reported.insert((m, l.clone()), *n);
                                self.by_command.remove(&(m, l.clone()));
                            }
                        }
                    }
                }
                q.finished(end);
                true
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The trainer's jobs are bounded by the events, it ends idle, and every label
            /// with `min_shots` samples ends served, or reported at its current count (after
            /// a fine-tune with it, when a rejected imprint goes to the fine-tune).
            #[test]
            fn every_label_ends_served_or_reported_and_the_trainer_idle(
                steps in proptest::collection::vec(step(), 0..60),
                verdicts in proptest::collection::vec(any::<u8>(), 1..16),
                finetune_weak in any::<bool>(),
            ) {
                let mut q = TrainerQueue::new(MIN_SHOTS, finetune_weak);
                let mut w = World::default();
                let mut verdict = verdicts.iter().cycle();
                for s in &steps {
                    match s {
                        Step::Run(during) => {
                            w.run(&mut q, during, *verdict.next().expect("cycle"));
                        }
                        e => w.event(&mut q, e),
                    }
                }
                // No more events: the trainer drains its queue and stops.
                let mut drained = 0;
                while w.run(&mut q, &[], *verdict.next().expect("cycle")) {
                    drained += 1;
                    prop_assert!(drained <= 3 * w.events + 3, "no end: {} jobs after {} events", w.jobs, w.events);
                }
                prop_assert!(q.is_idle());
                prop_assert!(q.next(|m| w.labels(m)).is_none());
                prop_assert!(w.jobs <= 3 * w.events, "{} jobs for {} events", w.jobs, w.events);
                for ((m, l), n) in &w.counts {
                    let key = (*m, l.clone());
                    if *n < MIN_SHOTS || w.learnt.contains(&key) {
                        continue;
                    }
                    prop_assert_eq!(
                        w.reported.get(&key), Some(n),
                        "`{}` of {} ({} samples) neither served nor reported", l, MODELS[*m], n
                    );
                    // A label left unserved by a job (not by a rollback) went to a
                    // fine-tune when rejected imprints go to one.
                    if finetune_weak && !w.by_command.contains(&key) {
                        prop_assert!(
                            w.finetuned.contains(&(*m, l.clone(), *n)),
                            "`{}` of {} ({} samples) never went to a fine-tune", l, MODELS[*m], n
                        );
                    }
                }
            }
        }
    }
}
