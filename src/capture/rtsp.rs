//! RTSP IP cameras, read the way Frigate reads them: an `ffmpeg` child process connects,
//! decodes the stream and writes RGB24 frames to its stdout; this module turns each into a
//! `Raw::Image` in the pipeline's keep-newest slot, like the V4L2 camera.
//!
//! The frame size travels with every frame: ffmpeg writes binary PPM (`-f image2pipe -c:v
//! ppm`), i.e. raw RGB24 behind a 15-byte `P6\nW H\n255\n` header. That is more robust than
//! headerless `rawvideo` with a size from `ffprobe`: no second connection to the camera
//! (slow, and some cameras allow one client), and a camera that changes its resolution
//! mid-stream (a setting changed, a sub-stream switched) yields frames of the new size,
//! not misaligned garbage. With `width`/`height` set, ffmpeg scales to that size.
//!
//! `interval_ms` is applied inside ffmpeg (a `select` on arrival time with passthrough
//! timing), so frames that inference would skip are never converted to RGB nor copied
//! through the pipe — on a 1080p camera that is most of the cost after decoding.
//!
//! One source thread owns the child: a reader thread parses frames, another keeps the
//! last lines of ffmpeg's stderr; the source thread watches for a stall (no frame within
//! `timeout`), the end of the stream and `stop`, and in every case kills and reaps the
//! child before returning ([`Reaper`]). A stall or an end is an error, which
//! `capture::source` retries with backoff: that is the reconnect. Everything shown to
//! people (logs, errors, the status) carries the address with its credentials redacted.
//! Needs ffmpeg 5.1 or later (`-fps_mode`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{DynamicImage, RgbImage};

use super::health::SourceHealth;
use super::{Capture, CaptureError, now_ms, slot};
use crate::features::Raw;
use crate::settings::{RtspTransport, StreamUrl};

/// The decoder program, looked up on `PATH`.
pub const FFMPEG: &str = "ffmpeg";

/// Lines of ffmpeg's stderr kept for the error message.
const STDERR_LINES: usize = 6;

/// The largest frame accepted (8K): a corrupt header must not allocate gigabytes.
const MAX_PIXELS: u64 = 7680 * 4320;

/// How often the source thread checks for a stall, an end or `stop`.
const WATCH_STEP: Duration = Duration::from_millis(50);

/// RTSP request, from `[pipeline.source]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspRequest {
    pub url: StreamUrl,
    pub transport: RtspTransport,
    /// Scale to this size; 0 × 0: the stream's own.
    pub width: u32,
    pub height: u32,
    /// Minimum time between two frames handed to inference.
    pub interval_ms: u64,
    /// No frame for this long is a stalled stream.
    pub timeout: Duration,
}

impl RtspRequest {
    /// How the source is named in errors (credentials redacted).
    fn name(&self) -> String {
        format!("rtsp `{}`", self.url)
    }

    /// ffmpeg's arguments (the address with its credentials: for the child only).
    pub fn ffmpeg_args(&self) -> Vec<String> {
        let mut filters = Vec::new();
        if self.interval_ms > 0 {
            // The first frame, then each one at least the interval after the last kept.
            filters.push(format!(
                "select='isnan(prev_selected_t)+gte(t-prev_selected_t,{:.3})'",
                self.interval_ms as f64 / 1000.0
            ));
        }
        if self.width > 0 && self.height > 0 {
            filters.push(format!("scale={}:{}", self.width, self.height));
        }
        let mut args: Vec<String> = [
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            // Find the stream's format within a second (the default 5 s delays every
            // (re)connect); arrival time stamps frames, as cameras' own clocks vary.
            "-analyzeduration",
            "1000000",
            "-use_wallclock_as_timestamps",
            "1",
        ]
        .map(String::from)
        .into();
        if matches!(self.url.scheme().as_deref(), Some("rtsp" | "rtsps")) {
            args.extend(["-rtsp_transport".into(), self.transport.as_str().into()]);
        }
        args.extend(["-i".into(), self.url.expose().into()]);
        args.extend(["-an", "-sn", "-dn"].map(String::from));
        if !filters.is_empty() {
            args.extend(["-vf".into(), filters.join(",")]);
        }
        // Passthrough: the selected frames only, never duplicates to fill a frame rate.
        args.extend(
            [
                "-fps_mode",
                "passthrough",
                "-f",
                "image2pipe",
                "-c:v",
                "ppm",
                "-pix_fmt",
                "rgb24",
                "-",
            ]
            .map(String::from),
        );
        args
    }
}

/// Why `program` cannot read streams — it does not run, or is older than 5.1 (no
/// `-fps_mode`) — or `None` when it can. For `validate`.
pub fn decoder_problem(program: &str) -> Option<String> {
    let out = match Command::new(program).arg("-version").output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            return Some(format!(
                "`{program} -version` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!(
                "`{program}` was not found on PATH: install the ffmpeg package"
            ));
        }
        Err(e) => return Some(format!("cannot run `{program}`: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "ffmpeg version 5.1.6-0+deb12u1 ..."; a build from git ("N-1234-g…") is trusted.
    let version = text.split_whitespace().nth(2).unwrap_or_default();
    let mut parts = version.split(['.', '-']).map(|n| n.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) < (5, 1) => Some(format!(
            "`{program}` is version {version}; RTSP sources need 5.1 or later"
        )),
        _ => None,
    }
}

/// Kills and reaps the child when dropped, whatever way the source thread leaves: no
/// zombie, no ffmpeg left streaming from the camera.
struct Reaper(Child);

impl Reaper {
    /// The child's exit status: waits up to `grace` for it to exit on its own (an ended
    /// stream), then kills it.
    fn finish(&mut self, grace: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        self.0.wait().ok()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `program` (ffmpeg) on the stream; a missing binary says which package to
/// install.
fn spawn(program: &str, req: &RtspRequest) -> Result<Reaper, CaptureError> {
    Command::new(program)
        .args(req.ffmpeg_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Reaper)
        .map_err(|e| CaptureError::Open {
            source_name: req.name(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("`{program}` was not found on PATH: install the ffmpeg package")
            } else {
                format!("cannot start `{program}`: {e}")
            },
        })
}

/// One token of a PPM header (after skipping whitespace); `None` at a clean end of the
/// stream before the frame began.
fn header_token(r: &mut impl Read, first: bool) -> std::io::Result<Option<String>> {
    let mut token = String::new();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 {
            if first && token.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match byte[0] {
            b if b.is_ascii_whitespace() && token.is_empty() => {}
            b if b.is_ascii_whitespace() => return Ok(Some(token)),
            b if token.len() < 10 => token.push(b as char),
            _ => return Err(invalid("a PPM header field longer than 10 bytes")),
        }
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// Read one binary PPM (P6, 8-bit RGB) frame; `Ok(None)` when the stream ended cleanly
/// between frames.
pub fn read_ppm(r: &mut impl Read) -> std::io::Result<Option<RgbImage>> {
    let Some(magic) = header_token(r, true)? else {
        return Ok(None);
    };
    if magic != "P6" {
        return Err(invalid("not a binary PPM frame (no P6)"));
    }
    let mut number = || -> std::io::Result<u32> {
        header_token(r, false)?
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| invalid("a PPM header field is not a number"))
    };
    let (width, height, max) = (number()?, number()?, number()?);
    if max != 255 {
        return Err(invalid("not an 8-bit PPM frame"));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > MAX_PIXELS {
        return Err(invalid("a PPM frame of no or of an absurd size"));
    }
    let mut data = vec![0u8; pixels as usize * 3];
    r.read_exact(&mut data)?;
    Ok(RgbImage::from_raw(width, height, data))
}

/// Why the reader thread stopped.
enum ReadEnd {
    /// ffmpeg closed its output: the stream ended or ffmpeg failed.
    Ended,
    /// The output was not frames (or ended inside one).
    Bad(String),
    /// The pipeline no longer takes frames.
    Closed,
}

/// What the reader thread shares with the source thread.
struct Progress<'a> {
    out: &'a slot::Sender<Capture>,
    next_id: &'a AtomicU64,
    health: &'a SourceHealth,
    /// When the last frame came (ms since the epoch); the spawn time before the first.
    last_frame_ms: AtomicU64,
    frames: AtomicU64,
}

/// Parse frames from ffmpeg's stdout into the slot until it ends.
fn read_frames(stdout: ChildStdout, p: &Progress, req: &RtspRequest) -> ReadEnd {
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    loop {
        let img = match read_ppm(&mut r) {
            Ok(Some(img)) => img,
            Ok(None) => return ReadEnd::Ended,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return ReadEnd::Ended,
            Err(e) => return ReadEnd::Bad(e.to_string()),
        };
        p.last_frame_ms.store(now_ms(), Ordering::Relaxed);
        if p.frames.fetch_add(1, Ordering::Relaxed) == 0 {
            p.health.set("running");
            tracing::info!(url = %req.url, width = img.width(), height = img.height(), "rtsp streaming");
        }
        let capture = Capture {
            id: p.next_id.fetch_add(1, Ordering::Relaxed),
            ts_ms: now_ms(),
            raw: Raw::Image(DynamicImage::ImageRgb8(img)),
        };
        if p.out.send(capture).is_err() {
            return ReadEnd::Closed;
        }
    }
}

/// Keep the last [`STDERR_LINES`] lines ffmpeg printed (credentials scrubbed).
fn keep_stderr(stderr: ChildStderr, tail: &Mutex<VecDeque<String>>, url: &StreamUrl) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let line = url.scrub(line.trim());
        if line.is_empty() {
            continue;
        }
        tracing::debug!(ffmpeg = %line, "ffmpeg said");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// Why the source thread stopped watching.
enum Watched {
    Stop,
    Stalled,
    ReaderEnded,
}

/// Wait for `stop`, a stall, or the reader's end; the source is alive meanwhile.
fn watch(p: &Progress, reader_done: &AtomicBool, stop: &AtomicBool, timeout: Duration) -> Watched {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Watched::Stop;
        }
        if reader_done.load(Ordering::Relaxed) {
            return Watched::ReaderEnded;
        }
        let silent_ms = now_ms().saturating_sub(p.last_frame_ms.load(Ordering::Relaxed));
        if silent_ms >= timeout.as_millis() as u64 {
            return Watched::Stalled;
        }
        p.health.alive();
        std::thread::sleep(WATCH_STEP);
    }
}

/// Open the stream through ffmpeg and hand frames over until `stop`; returns an error
/// when ffmpeg cannot start, the stream stalls for `timeout`, or it ends (the caller
/// retries with backoff: a reconnect).
pub fn run(
    req: &RtspRequest,
    out: &slot::Sender<Capture>,
    next_id: &AtomicU64,
    health: &SourceHealth,
    stop: &Arc<AtomicBool>,
) -> Result<(), CaptureError> {
    // After a failure the state keeps its reason (`retrying: …`) until frames flow again,
    // and the reconnects of a long outage are not logged at INFO one by one.
    if health.get().starts_with("retrying") {
        tracing::debug!(url = %req.url, "rtsp reconnecting");
    } else {
        health.set("connecting");
        tracing::info!(url = %req.url, transport = req.transport.as_str(), "rtsp connecting");
    }
    let mut child = spawn(FFMPEG, req)?;
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let stderr = child.0.stderr.take().expect("stderr is piped");
    let tail = Mutex::new(VecDeque::new());
    let reader_done = AtomicBool::new(false);
    let progress = Progress {
        out,
        next_id,
        health,
        last_frame_ms: AtomicU64::new(now_ms()),
        frames: AtomicU64::new(0),
    };
    let (watched, end, status) = std::thread::scope(|s| {
        // Owned here, so that even a panic kills the child (closing the pipes the two
        // threads read) before the scope waits for them.
        let mut child = child;
        let reader = s.spawn(|| {
            let end = read_frames(stdout, &progress, req);
            reader_done.store(true, Ordering::Relaxed);
            end
        });
        let stderr_reader = s.spawn(|| keep_stderr(stderr, &tail, &req.url));
        let watched = watch(&progress, &reader_done, stop, req.timeout);
        // Killing the child closes its pipes, which ends both readers.
        let status = child.finish(match watched {
            Watched::ReaderEnded => Duration::from_secs(1),
            _ => Duration::ZERO,
        });
        let end = reader
            .join()
            .unwrap_or(ReadEnd::Bad("the reader panicked".into()));
        let _ = stderr_reader.join();
        (watched, end, status)
    });
    let said = tail
        .into_inner()
        .map(|t| Vec::from(t).join(" | "))
        .unwrap_or_default();
    let frames = progress.frames.load(Ordering::Relaxed);
    let message = match (watched, end) {
        (Watched::Stop, _) | (_, ReadEnd::Closed) => return Ok(()),
        (Watched::Stalled, _) => format!(
            "stalled: no frame for {:.1} s (after {frames} frames)",
            req.timeout.as_secs_f32()
        ),
        (_, ReadEnd::Bad(e)) => format!("ffmpeg's output is not frames: {e}"),
        (_, ReadEnd::Ended) => {
            let status = status.map_or("was killed".into(), |s| s.to_string());
            if frames == 0 {
                format!("ffmpeg exited before the first frame ({status})")
            } else {
                format!("the stream ended after {frames} frames (ffmpeg {status})")
            }
        }
    };
    let message = if said.is_empty() {
        message
    } else {
        format!("{message}; ffmpeg: {said}")
    };
    Err(CaptureError::Failed {
        source_name: req.name(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> RtspRequest {
        RtspRequest {
            url: StreamUrl::new(url),
            transport: RtspTransport::Tcp,
            width: 0,
            height: 0,
            interval_ms: 200,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn ffmpeg_gets_the_address_transport_interval_and_size() {
        let mut req = request("rtsp://u:secret@10.0.0.5/live");
        let args = req.ffmpeg_args().join(" ");
        assert!(args.contains("-rtsp_transport tcp -i rtsp://u:secret@10.0.0.5/live"));
        assert!(args.contains("gte(t-prev_selected_t,0.200)"), "{args}");
        assert!(
            args.ends_with("-f image2pipe -c:v ppm -pix_fmt rgb24 -"),
            "{args}"
        );
        assert!(!args.contains("scale="), "the stream's own size: {args}");
        req.width = 320;
        req.height = 240;
        req.transport = RtspTransport::Udp;
        let args = req.ffmpeg_args().join(" ");
        assert!(args.contains("-rtsp_transport udp"), "{args}");
        assert!(args.contains(",scale=320:240"), "{args}");
        assert_eq!(req.name(), "rtsp `rtsp://***@10.0.0.5/live`");
    }

    #[test]
    fn ppm_frames_are_read_back_to_back_and_a_clean_end_is_none() {
        let mut bytes = Vec::new();
        for (w, h, v) in [(2u32, 1u32, 7u8), (1, 2, 9)] {
            bytes.extend(format!("P6\n{w} {h}\n255\n").as_bytes());
            bytes.extend(std::iter::repeat_n(v, (w * h * 3) as usize));
        }
        let mut r = bytes.as_slice();
        let a = read_ppm(&mut r).expect("read").expect("frame");
        assert_eq!((a.width(), a.height(), a.get_pixel(1, 0).0), (2, 1, [7; 3]));
        let b = read_ppm(&mut r).expect("read").expect("frame");
        assert_eq!((b.width(), b.height()), (1, 2), "its own size");
        assert!(read_ppm(&mut r).expect("clean end").is_none());

        let cut = &bytes[..10];
        let e = read_ppm(&mut &cut[..]).expect_err("ends inside a frame");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let e = read_ppm(&mut &b"P6\n99999 99999\n255\n"[..]).expect_err("absurd size");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(read_ppm(&mut &b"GIF89a..."[..]).is_err());
    }

    #[test]
    fn a_refused_connection_is_an_error_naming_the_address_without_its_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let req = request(&format!("rtsp://admin:hunter22@127.0.0.1:{port}/cam"));
        let (tx, _rx) = slot::latest();
        let health = SourceHealth::default();
        let stop = Arc::new(AtomicBool::new(false));
        let e = run(&req, &tx, &AtomicU64::new(0), &health, &stop)
            .expect_err("nothing listens")
            .to_string();
        assert!(
            e.contains(&format!("rtsp://***@127.0.0.1:{port}/cam")),
            "{e}"
        );
        assert!(e.contains("ffmpeg exited before the first frame"), "{e}");
        assert!(e.contains("ffmpeg: "), "ffmpeg's last words: {e}");
        assert!(!e.contains("hunter22") && !e.contains("admin"), "{e}");
    }

    #[test]
    fn validate_finds_the_installed_ffmpeg_and_names_a_missing_one() {
        assert_eq!(decoder_problem(FFMPEG), None, "ffmpeg (apt package ffmpeg)");
        let p = decoder_problem("lsskd-edge-no-such-ffmpeg").expect("missing");
        assert!(p.contains("install the ffmpeg package"), "{p}");
    }

    #[test]
    fn a_missing_ffmpeg_names_the_package() {
        let req = request("rtsp://admin:hunter22@10.0.0.5/live");
        let Err(e) = spawn("lsskd-edge-no-such-ffmpeg", &req) else {
            panic!("spawned a program that does not exist");
        };
        let e = e.to_string();
        assert!(
            e.contains(
                "`lsskd-edge-no-such-ffmpeg` was not found on PATH: install the ffmpeg package"
            ),
            "{e}"
        );
        assert!(
            e.contains("rtsp://***@10.0.0.5/live") && !e.contains("hunter22"),
            "{e}"
        );
    }
}
