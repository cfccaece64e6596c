//! An IP camera on loopback: GStreamer's RTSP server (`scripts/rtsp-server.py`, Debian
//! packages that `scripts/setup.sh` installs) streams a scene timeline as H.264 behind
//! basic auth; the daemon reads it through ffmpeg as it would any RTSP camera, publishes
//! predictions, reports the stream retrying (with its restart count) while the server
//! hangs (a stall) or is gone (refused), reconnects when it is back, stops its ffmpeg
//! children on SIGTERM, and never shows the credentials of the URL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{data_root, repo};
use crate::harness::{Daemon, Mosquitto, free_port, json, model, mqtt_section, wait_for_port};

/// The camera's account; in the URL the password is percent-encoded.
const USER: &str = "cam";
const PASSWORD: &str = "p@ss:w0rd";
const PASSWORD_IN_URL: &str = "p%40ss%3Aw0rd";

/// 90 frames of a table under changing light, 320×240 JPEG.
fn timeline() -> PathBuf {
    data_root().join("scene-states/val/va01_table/timeline")
}

/// `scripts/rtsp-server.py` as a child process on a fixed port; killed on drop.
struct RtspServer {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RtspServer {
    fn start(port: u16) -> RtspServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = RtspServer {
            port,
            child: None,
            log: dir.path().join("server.log"),
            _dir: dir,
        };
        s.spawn();
        s
    }

    /// Start (again, on the same port).
    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("server log");
        // Debian's interpreter: the GObject bindings (python3-gi) live there.
        let child = Command::new("/usr/bin/python3")
            .arg(repo().join("scripts/rtsp-server.py"))
            .arg(timeline())
            .arg(self.port.to_string())
            .args(["--fps", "5", "--user", USER, "--password", PASSWORD])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/bin/python3 (apt packages python3-gi, gir1.2-gst-rtsp-server-1.0)");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(15)),
            "the RTSP server did not listen on {} (scripts/setup.sh installs python3-gi, \
             gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base/-good/-ugly):\n{}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// `kill -SIG` the server (`STOP`: it hangs, its connections open; `CONT`).
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{sig} {pid}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!(
            "rtsp://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{}/cam",
            self.port
        )
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two pipelines on the one stream: `gate` at the stream's own size, `small` scaled by
/// ffmpeg to 160×120.
fn config(url: &str, mqtt_port: u16) -> String {
    let source = |extra: &str| {
        format!(
            "[pipeline.source]\nkind = \"rtsp\"\nurl = \"{url}\"\ninterval_ms = 200\ntimeout_ms = 3000\n{extra}"
        )
    };
    format!(
        "device_id = \"it\"\n\
         [[pipeline]]\nname = \"gate\"\nmodel = \"{m}\"\n{}\n\
         [[pipeline]]\nname = \"small\"\nmodel = \"{m}\"\n{}\n{}",
        source(""),
        source("width = 160\nheight = 120\n"),
        mqtt_section(mqtt_port),
        m = model("vision"),
    )
}

/// The retained status once every pipeline's entry satisfies `pred`.
fn wait_status(
    broker: &Mosquitto,
    daemon: &Daemon,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let found = broker.wait_retained("lsskd/it/status", Duration::from_secs(25), |p| {
        p.starts_with('{')
            && json(p)["pipelines"]
                .as_array()
                .is_some_and(|ps| ps.len() == 2 && ps.iter().all(&pred))
    });
    let status = found.unwrap_or_else(|| panic!("no status with {what}; log:\n{}", daemon.log()));
    json(&status)
}

/// `text` without ANSI colour codes (the daemon's log is coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The ffmpeg processes whose parent is `pid`.
fn ffmpeg_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid …
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if comm.ends_with("(ffmpeg") && ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[test]
fn rtsp_camera_streams_predictions_reports_retrying_and_reconnects() {
    let _cpu = crate::common::cpu_shared();
    let started = Instant::now();
    let ffmpeg = Command::new("ffmpeg").arg("-version").output();
    assert!(
        ffmpeg.is_ok_and(|o| o.status.success()),
        "ffmpeg (apt package ffmpeg; scripts/setup.sh installs it)"
    );
    let broker = Mosquitto::start();
    let mut server = RtspServer::start(free_port());
    let mut daemon = Daemon::start(&config(&server.url(), broker.port), &[]);

    // Frames of the stream's size (and the scaled one) become predictions.
    let preds = broker.sub("lsskd/it/gate/prediction", 3, Duration::from_secs(20));
    assert_eq!(preds.len(), 3, "no predictions; log:\n{}", daemon.log());
    assert_eq!(json(&preds[0].1)["pipeline"], "gate");
    let small = broker.sub("lsskd/it/small/prediction", 1, Duration::from_secs(10));
    assert_eq!(
        small.len(),
        1,
        "no scaled predictions; log:\n{}",
        daemon.log()
    );
    let log = plain(&daemon.log());
    for size in ["width=320 height=240", "width=160 height=120"] {
        assert!(
            log.lines()
                .any(|l| l.contains("rtsp streaming") && l.contains(size)),
            "no stream of {size}; log:\n{log}"
        );
    }
    wait_status(&broker, &daemon, "both streams running", |p| {
        p["state"] == "running" && p["restarts"] == 0
    });

    // The camera hangs (its process stopped, the connection open and silent): the stream
    // stalls, and after `timeout_ms` it is reopened — and keeps retrying while it hangs.
    server.signal("STOP");
    let stalled = wait_status(&broker, &daemon, "both streams stalled", |p| {
        p["state"].as_str().is_some_and(|s| {
            s.starts_with("retrying: ") && s.contains("stalled: no frame for 3.0 s")
        }) && p["restarts"].as_u64().is_some_and(|n| n >= 1)
    });
    eprintln!("a hung camera: {}", stalled["pipelines"][0]["state"]);
    server.signal("CONT");
    let resumed = wait_status(&broker, &daemon, "both streams resumed", |p| {
        p["state"] == "running"
    });
    let restarts =
        |s: &serde_json::Value| s["pipelines"][0]["restarts"].as_u64().expect("restarts");
    assert!(restarts(&resumed) >= 1);

    // The camera goes away: the stream ends, is retried, and says so.
    server.stop();
    let down = wait_status(&broker, &daemon, "both streams retrying", |p| {
        p["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("retrying: "))
    });
    let state = down["pipelines"][0]["state"].as_str().expect("state");
    let shown = format!("rtsp://***@127.0.0.1:{}/cam", server.port);
    assert!(state.contains(&shown), "names the camera: {state}");
    assert!(restarts(&down) > restarts(&resumed), "counted: {down}");
    eprintln!("a camera gone: {state}");

    // It comes back on the same address: frames resume.
    server.spawn();
    let up = wait_status(&broker, &daemon, "both streams reconnected", |p| {
        p["state"] == "running"
    });
    assert!(restarts(&up) >= restarts(&down));
    let preds = broker.sub("lsskd/it/gate/prediction", 2, Duration::from_secs(10));
    assert_eq!(preds.len(), 2, "no predictions after the reconnect");

    // The credentials are nowhere people look.
    let log = daemon.log();
    for text in [
        &log,
        &stalled.to_string(),
        &down.to_string(),
        &up.to_string(),
    ] {
        for secret in [PASSWORD, PASSWORD_IN_URL, "//cam:"] {
            assert!(!text.contains(secret), "`{secret}` shown in:\n{text}");
        }
    }

    // SIGTERM: each pipeline's ffmpeg is stopped and reaped before the daemon exits.
    let children = ffmpeg_children(daemon.child.id());
    assert_eq!(children.len(), 2, "one ffmpeg per pipeline: {children:?}");
    let exit = daemon.terminate(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|s| s.success()),
        "{exit:?}; log:\n{}",
        daemon.log()
    );
    for pid in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "ffmpeg {pid} outlived the daemon"
        );
    }
    eprintln!("rtsp test took {:.1} s", started.elapsed().as_secs_f32());
}
