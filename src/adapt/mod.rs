//! On-device adaptation: scheduling, hold-back and the promotion gate (pure decisions with
//! unit tests), one adaptation (`job`), and one end-to-end run with gate and promotion
//! (`learner`), which the daemon's trainer thread executes.

pub mod gate;
pub mod job;
pub mod learner;
pub mod schedule;
pub mod stats;

pub use gate::{Candidate, Evidence, GateConfig, GateMetrics, Verdict, judge};
