//! On-device adaptation: scheduling, hold-back and the promotion gate (pure decisions with
//! unit tests); the trainer task builds on them.

pub mod gate;
pub mod job;

pub use gate::{GateConfig, GateMetrics, Verdict, decide};
