//! On-device adaptation: the recipe (`recipe`), one imprint + fine-tune (`job`), the
//! candidates judged against the live model (`candidates`) by the promotion gate and its
//! statistics (`gate`, `stats`: pure decisions with unit tests), the one adaptation core
//! that runs them in order (`core`), shared by the daemon's learner (`learner`: stored
//! samples → core → new version) and `fewshot-bench`, and the scheduler of the trainer's
//! jobs (`schedule`).

pub mod candidates;
pub mod core;
pub mod gate;
pub mod job;
pub mod learner;
pub mod recipe;
pub mod schedule;
pub mod stats;

pub use gate::{Candidate, Evidence, GateConfig, GateMetrics, Verdict, judge};
pub use recipe::{ModelKind, Overrides, Recipe};
