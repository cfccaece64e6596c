//! Pipelines: source → features → tract student → outputs. This module holds the pure
//! per-pipeline decisions; the runtime wiring builds on them.

pub mod decide;

pub use decide::{Debouncer, PublishGate};
