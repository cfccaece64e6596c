//! Capture: sources of model inputs (camera, RTSP stream, microphone, replay files), the hand-over
//! channels to inference with their full-buffer rules, sliding audio windows and the ring
//! of recent captures.

pub mod camera;
pub mod health;
pub mod microphone;
pub mod replay;
pub mod ring;
pub mod rtsp;
pub mod slot;
pub mod source;
pub mod window;

use crate::features::Raw;

/// One input captured by a pipeline's source.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Increasing per pipeline; labels can refer to it (`capture_id`).
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub raw: Raw,
}

/// A source could not be opened or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {source_name}: {message}")]
    Open {
        source_name: String,
        message: String,
    },
    #[error("{source_name} failed: {message}")]
    Failed {
        source_name: String,
        message: String,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
