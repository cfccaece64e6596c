//! When the daemon learns: the jobs of the trainer thread (`adapt`, `rollback`, `promote`),
//! the `model/<m>/cmd` commands that ask for them, the scheduler that asks for an imprint
//! when a label reaches `min_shots` and a fine-tune after `auto_after` new samples, and how
//! queued jobs merge. Pure decisions plus a non-blocking queue; the daemon's trainer thread
//! (`daemon::learn`) runs the jobs.

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
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Job::Adapt { model, .. }
            | Job::Rollback { model }
            | Job::Promote { model, .. }
            | Job::Forget { model, .. } => model,
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
            "unknown command `{}` (adapt, rollback, promote <version>, forget <label>)",
            text.chars().take(64).collect::<String>()
        )),
    }
}

/// Decides when stored samples call for an adaptation (main loop side).
pub struct Scheduler {
    cfg: AdaptSettings,
    since_last: BTreeMap<String, usize>,
    last_attempt: BTreeMap<String, Instant>,
    /// (model, label) whose imprint is queued and not yet in the live model.
    imprint_requested: BTreeSet<(String, String)>,
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
        match self.jobs.try_send(job) {
            Ok(()) => {
                if imprint {
                    self.imprint_waiting.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Refused::Busy),
            Err(TrySendError::Disconnected(_)) => Err(Refused::TrainerStopped),
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
            && self
                .submit(Job::Adapt {
                    model: model.into(),
                    imprint_only: true,
                })
                .is_ok()
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
}
