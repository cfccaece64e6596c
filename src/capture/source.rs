//! One pipeline's source thread: runs the configured source (camera, RTSP stream,
//! microphone, replay), retries it with capped backoff when it fails — a failing source
//! never stops the other pipelines — and reports its state and restarts for the status
//! message.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::camera::{self, CameraRequest};
pub use super::health::SourceHealth;
use super::replay::{ReplayAudio, ReplayImages};
use super::rtsp::{self, RtspRequest};
use super::window::Windower;
use super::{Capture, CaptureError, microphone, now_ms, slot};
use crate::settings::SourceSettings;

/// The first wait before reopening a failed source; it doubles up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// A source that ran this long before failing starts again at [`FIRST_BACKOFF`].
const RAN_WELL: Duration = Duration::from_secs(60);

/// Everything a source thread needs.
pub struct SourceJob {
    pub pipeline: String,
    /// The source with replay paths already resolved.
    pub source: SourceSettings,
    /// The model's audio rate (audio sources) — windows are resampled to it.
    pub sample_rate_hz: Option<u32>,
    pub out: slot::Sender<Capture>,
    pub stop: Arc<AtomicBool>,
    pub health: Arc<SourceHealth>,
    /// Longest wait between two retries.
    pub max_backoff: Duration,
}

/// Sleep `d` in small steps until `stop`; the source is alive meanwhile.
fn sleep_unless_stopped(stop: &AtomicBool, d: Duration, health: &SourceHealth) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !stop.load(Ordering::Relaxed) && !left.is_zero() {
        health.alive();
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    health.alive();
}

/// A replay's clock: frames (or audio hops) due every `interval` from the first, so the
/// time spent sending and the sleeps' overshoot do not add up into a lower rate (a
/// sleep of the interval after each frame ran 3–5 % slow). A source that fell more than
/// an interval behind (a stopped process) starts again from now rather than catching up
/// in a burst.
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    fn new(interval: Duration, now: Instant) -> Self {
        Pacer {
            interval,
            next: now + interval,
        }
    }

    /// How long to wait at `now` for the next item's time; that time moves on by an
    /// interval.
    fn wait(&mut self, now: Instant) -> Duration {
        if now > self.next + self.interval {
            self.next = now;
        }
        let wait = self.next.saturating_duration_since(now);
        self.next += self.interval;
        wait
    }
}

fn replay_images(
    path: &Path,
    interval_ms: u64,
    looped: bool,
    job: &SourceJob,
    next_id: &AtomicU64,
) -> Result<(), CaptureError> {
    let mut src = ReplayImages::open(path, looped)?;
    job.health.set("running");
    let mut pace = Pacer::new(Duration::from_millis(interval_ms), Instant::now());
    while !job.stop.load(Ordering::Relaxed) {
        let Some(raw) = src.next_image() else { break };
        let capture = Capture {
            id: next_id.fetch_add(1, Ordering::Relaxed),
            ts_ms: now_ms(),
            raw,
        };
        if job.out.send(capture).is_err() {
            break;
        }
        sleep_unless_stopped(&job.stop, pace.wait(Instant::now()), &job.health);
    }
    Ok(())
}

fn replay_audio(
    path: &Path,
    window_ms: u64,
    hop_ms: u64,
    looped: bool,
    job: &SourceJob,
    next_id: &AtomicU64,
) -> Result<(), CaptureError> {
    let rate = job.sample_rate_hz.unwrap_or(16_000);
    let mut src = ReplayAudio::open(path, rate, looped)?;
    let mut windows = Windower::from_ms(rate, window_ms, hop_ms);
    let hop = (rate as u64 * hop_ms / 1000).max(1) as usize;
    job.health.set("running");
    let mut pace = Pacer::new(Duration::from_millis(hop_ms), Instant::now());
    while !job.stop.load(Ordering::Relaxed) {
        let chunk = src.next_chunk(hop);
        if chunk.is_empty() {
            break;
        }
        let mut closed = false;
        windows.push(&chunk, |w| {
            let capture = Capture {
                id: next_id.fetch_add(1, Ordering::Relaxed),
                ts_ms: now_ms(),
                raw: src.clip(w),
            };
            closed |= job.out.send(capture).is_err();
        });
        if closed {
            break;
        }
        // Real-time pacing: one hop of audio per hop of wall clock.
        sleep_unless_stopped(&job.stop, pace.wait(Instant::now()), &job.health);
    }
    Ok(())
}

fn run_once(job: &SourceJob, next_id: &Arc<AtomicU64>) -> Result<(), CaptureError> {
    match &job.source {
        SourceSettings::ReplayImages {
            path,
            interval_ms,
            looped,
        } => replay_images(path, *interval_ms, *looped, job, next_id),
        SourceSettings::ReplayAudio {
            path,
            window_ms,
            hop_ms,
            looped,
        } => replay_audio(path, *window_ms, *hop_ms, *looped, job, next_id),
        SourceSettings::Camera {
            device,
            width,
            height,
            fps,
            format,
            interval_ms,
        } => {
            let req = CameraRequest {
                device: device.clone(),
                width: *width,
                height: *height,
                fps: *fps,
                format: *format,
                interval_ms: *interval_ms,
            };
            job.health.set("running");
            camera::run(&req, &job.out, next_id, &job.health, &job.stop)
        }
        SourceSettings::Rtsp {
            url,
            transport,
            width,
            height,
            interval_ms,
            timeout_ms,
        } => {
            let req = RtspRequest {
                url: url.clone(),
                transport: *transport,
                width: *width,
                height: *height,
                interval_ms: *interval_ms,
                timeout: Duration::from_millis(*timeout_ms),
            };
            rtsp::run(&req, &job.out, next_id, &job.health, &job.stop)
        }
        SourceSettings::Microphone {
            device,
            window_ms,
            hop_ms,
        } => microphone::run(
            &microphone::MicRequest {
                device: device.clone(),
                model_rate_hz: job.sample_rate_hz.unwrap_or(16_000),
                window_ms: *window_ms,
                hop_ms: *hop_ms,
            },
            &job.out,
            next_id,
            &job.health,
            &job.stop,
        ),
    }
}

/// Run the source until it ends (a replay without `loop`) or `stop`; failures are logged,
/// reported in `health`, and retried with doubling backoff up to `max_backoff`.
pub fn run(job: SourceJob) {
    let next_id = Arc::new(AtomicU64::new(now_ms()));
    let mut backoff = FIRST_BACKOFF;
    job.health.set("starting");
    job.health.alive();
    while !job.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match run_once(&job, &next_id) {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() >= RAN_WELL {
                    // A source that ran for a while (a camera stream that dropped after
                    // hours) is reopened quickly, not after the last outage's backoff.
                    backoff = FIRST_BACKOFF;
                }
                job.health.restarts.fetch_add(1, Ordering::Relaxed);
                job.health.set(format!("retrying: {e}"));
                tracing::warn!(pipeline = %job.pipeline, error = %e, retry_in = ?backoff, "source failed; retrying");
                sleep_unless_stopped(&job.stop, backoff, &job.health);
                backoff = (backoff * 2).min(job.max_backoff);
            }
        }
    }
    job.health.set("stopped");
    job.health.ended();
    job.out.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_keeps_its_rate_whatever_each_frame_costs() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut pace = Pacer::new(ms(200), start);
        // Each frame takes 7 ms to send and each sleep overshoots by 3 ms.
        let mut now = start;
        for _ in 0..50 {
            now += ms(7);
            now += pace.wait(now) + ms(3);
        }
        // 50 frames in 50 intervals (+ the last overshoot), not 50 × 210 ms.
        assert_eq!(now - start, ms(50 * 200 + 3));
    }

    #[test]
    fn a_replay_far_behind_starts_again_instead_of_bursting() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut pace = Pacer::new(ms(100), start);
        let late = start + ms(1000);
        assert_eq!(pace.wait(late), Duration::ZERO, "the overdue frame at once");
        assert_eq!(
            pace.wait(late),
            ms(100),
            "then one interval later, not a burst"
        );
    }
}
