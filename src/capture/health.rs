//! A source's state for `status`, shared by the source thread and whatever drives the
//! device (the microphone's callback counts its dropped blocks here).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// What a source is doing, for `status` (`starting`, `running`, `retrying: …`, `stopped`).
#[derive(Debug, Default)]
pub struct SourceHealth {
    state: Mutex<String>,
    /// Times the source failed and was reopened.
    pub restarts: AtomicU64,
    /// Audio blocks dropped before windowing (callback queue full).
    pub dropped_blocks: Arc<AtomicU64>,
}

impl SourceHealth {
    pub fn set(&self, s: impl Into<String>) {
        if let Ok(mut g) = self.state.lock() {
            *g = s.into();
        }
    }

    pub fn get(&self) -> String {
        self.state
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| "unknown".into())
    }
}
