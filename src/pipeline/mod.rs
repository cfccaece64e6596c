//! Pipelines: source → features → tract student → outputs. [`decide`] holds the pure
//! per-pipeline decisions, [`worker`] the inference thread that applies them.

pub mod decide;
pub mod worker;

pub use decide::{Debouncer, PublishGate};
