//! A source's state for `status`, shared by the source thread and whatever drives the
//! device (the microphone's callback counts its dropped blocks here).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a source is doing, for `status` (`starting`, `running`, `retrying: …`, `stopped`).
#[derive(Debug, Default)]
pub struct SourceHealth {
    state: Mutex<String>,
    /// Times the source failed and was reopened.
    pub restarts: AtomicU64,
    /// Audio blocks dropped before windowing (callback queue full).
    pub dropped_blocks: Arc<AtomicU64>,
    /// When the source thread last showed it was not stuck (a frame or audio block came,
    /// or it was pacing or backing off), ms since the epoch; 0 once it stopped.
    last_alive_ms: AtomicU64,
}

impl SourceHealth {
    pub fn set(&self, s: impl Into<String>) {
        if let Ok(mut g) = self.state.lock() {
            *g = s.into();
        }
    }

    /// The source thread is not stuck (see [`SourceHealth::alive_at`]).
    pub fn alive(&self) {
        self.last_alive_ms
            .store(super::now_ms().max(1), Ordering::Relaxed);
    }

    /// The source ended (a replay without `loop`, or the daemon stopping it): its silence
    /// from now on is not a hang.
    pub fn ended(&self) {
        self.last_alive_ms.store(0, Ordering::Relaxed);
    }

    /// When the running source last showed life, ms since the epoch; `None` before it
    /// started and after it ended. A source stuck in a device call (a camera read that
    /// never returns) stops updating it.
    pub fn alive_at(&self) -> Option<u64> {
        Some(self.last_alive_ms.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    pub fn get(&self) -> String {
        self.state
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_timed_only_while_it_runs() {
        let h = SourceHealth::default();
        assert_eq!(h.alive_at(), None, "not started");
        h.alive();
        let t = h.alive_at().expect("running");
        assert!(t > 0);
        h.ended();
        assert_eq!(h.alive_at(), None, "ended: its silence is no hang");
    }
}
