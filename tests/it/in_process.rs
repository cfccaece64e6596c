//! The daemon run in this process (`lsskd_edge::daemon::run`) with an injected shutdown,
//! against mosquitto: it serves, then stops in order when the test says so — no signal,
//! no child process.

use std::time::Duration;

use lsskd_edge::settings::{Settings, Sources};

use crate::harness::{Mosquitto, json, replay_vision_config, samples};

/// Settings of device `it` with the `door` replay pipeline on `port`, state under `dir`.
fn door_settings(dir: &std::path::Path, port: u16) -> Settings {
    door_settings_and(dir, port, "")
}

/// [`door_settings`] plus `more` (TOML appended to the file).
fn door_settings_and(dir: &std::path::Path, port: u16, more: &str) -> Settings {
    let conf = dir.join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "state_dir = \"{}\"\n{}\n{more}",
            dir.join("state").display(),
            replay_vision_config("door", &samples("vision"), port)
        ),
    )
    .expect("config");
    Settings::load(&Sources {
        file: Some(conf),
        env: Vec::new(),
    })
    .expect("settings")
}

/// `daemon::run` on a 2-worker runtime of its own, until the returned sender is used.
fn spawn_daemon(
    settings: Settings,
) -> (
    tokio::runtime::Runtime,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = rt.spawn(lsskd_edge::daemon::run(settings, async {
        let _ = stop_rx.await;
    }));
    (rt, stop_tx, daemon)
}

#[test]
fn the_daemon_serves_in_process_and_stops_on_an_injected_shutdown() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, stop_tx, daemon) = spawn_daemon(door_settings(dir.path(), broker.port));
    let preds = broker.sub("lsskd/it/door/prediction", 2, Duration::from_secs(30));
    assert_eq!(preds.len(), 2, "no predictions from the in-process daemon");
    assert_eq!(json(&preds[0].1)["pipeline"], "door");
    let status = broker
        .wait_retained("lsskd/it/status", Duration::from_secs(20), |p| {
            serde_json::from_str::<serde_json::Value>(p)
                .is_ok_and(|s| s["mqtt"]["published"].as_u64().unwrap_or(0) > 0)
        })
        .expect("a status with the connection's counters");
    let s = json(&status);
    assert_eq!(s["status"], "online");
    assert!(
        s["mqtt"]["published"].as_u64().expect("published") > 0,
        "{s}"
    );

    // The injected shutdown: `run` returns Ok, within the grace period, and the retained
    // status says `offline`.
    stop_tx.send(()).expect("daemon waiting");
    let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), daemon).await });
    let result = ended
        .expect("stopped within the grace period")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    let offline = broker.wait_retained("lsskd/it/status", Duration::from_secs(10), |p| {
        p == "offline"
    });
    assert!(offline.is_some(), "retained status after the shutdown");
}

/// A log writer the test can read back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

/// The daemon on a paused clock: an hour without its broker passes in about a second of
/// real time. It keeps serving and retrying at the capped backoff (`reconnect_max_secs` =
/// 2: about one attempt every 2 s — not a busy loop, not given up), its 5 s status tick
/// keeps running, and when the broker comes back it connects and publishes its retained
/// status; an injected shutdown then stops it within the grace period.
#[test]
fn an_hour_without_the_broker_on_a_paused_clock_then_it_reconnects() {
    let _cpu = crate::common::cpu_shared();
    let mut broker = Mosquitto::start();
    broker.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = door_settings(dir.path(), broker.port);
    // Every task of a current-thread runtime runs on this thread: the thread's log
    // subscriber sees the MQTT task.
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("lsskd_edge::mqtt=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = rt.spawn(lsskd_edge::daemon::run(settings, async {
        let _ = stop_rx.await;
    }));
    let hour = Duration::from_secs(3600);
    let real = std::time::Instant::now();
    rt.block_on(async { tokio::time::sleep(hour).await });
    let real_secs = real.elapsed().as_secs_f64();
    assert!(!daemon.is_finished(), "an absent broker is not fatal");
    let attempts = log.text().matches("MQTT broker unreachable").count();
    // Backoff 1 s, then 2 s (the cap): 1 + 1800 attempts (a refused connection on
    // loopback takes no virtual time).
    assert!(
        (1750..=1805).contains(&attempts),
        "{attempts} attempts in an hour (real {real_secs:.1} s)"
    );

    // The broker returns; on a real clock again, the daemon connects within a few
    // seconds and publishes its retained `online` status.
    rt.block_on(async { tokio::time::resume() });
    broker.restart();
    let port = broker.port;
    let status = rt
        .block_on(async {
            tokio::task::spawn_blocking(move || {
                let seen = broker.wait_retained("lsskd/it/status", Duration::from_secs(20), |p| {
                    serde_json::from_str::<serde_json::Value>(p)
                        .is_ok_and(|s| s["status"] == "online")
                });
                (broker, seen)
            })
            .await
        })
        .expect("waiter");
    let (broker, seen) = status;
    let s = json(&seen.unwrap_or_else(|| {
        panic!(
            "no online status after the broker came back on {port}:\n{}",
            log.text()
        )
    }));
    assert!(
        s["pipelines"][0]["inferences"]
            .as_u64()
            .expect("inferences")
            > 0,
        "{s}"
    );

    stop_tx.send(()).expect("daemon waiting");
    let ended = rt.block_on(async {
        tokio::time::timeout(lsskd_edge::daemon::GRACE + Duration::from_secs(5), daemon).await
    });
    let result = ended
        .expect("stopped within the grace period")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    drop(broker);
}

/// A source stuck in a device call (here: opening a FIFO nobody writes, as a camera stuck
/// in `frame()`) does not hold the shutdown past its deadline (issue 11: threads were
/// joined inside `spawn_blocking`, and the runtime's drop waited for them forever). `run`
/// returns within the grace period, and the other pipeline served until then.
#[test]
fn a_source_stuck_in_a_device_call_does_not_hold_the_shutdown() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("stuck.wav");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let settings = door_settings_and(
        dir.path(),
        broker.port,
        &format!(
            "[[pipeline]]\nname = \"stuck\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"replay_audio\"\npath = \"{}\"\n",
            crate::harness::model("audio"),
            fifo.display()
        ),
    );
    let (rt, stop_tx, daemon) = spawn_daemon(settings);
    let preds = broker.sub("lsskd/it/door/prediction", 1, Duration::from_secs(30));
    assert_eq!(preds.len(), 1, "the other pipeline serves");
    let asked = std::time::Instant::now();
    stop_tx.send(()).expect("daemon waiting");
    let ended = rt.block_on(async {
        tokio::time::timeout(lsskd_edge::daemon::GRACE + Duration::from_secs(3), daemon).await
    });
    let took = asked.elapsed();
    let result = ended
        .unwrap_or_else(|_| panic!("still stopping after {took:?}"))
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    let offline = broker.wait_retained("lsskd/it/status", Duration::from_secs(10), |p| {
        p == "offline"
    });
    assert!(
        offline.is_some(),
        "offline published although a thread was left behind"
    );
    rt.shutdown_timeout(Duration::from_millis(200));
    // Let the stuck thread go: a writer opens the FIFO and closes it (end of file).
    // Non-blocking: with no reader left the open fails instead of waiting for one.
    use std::os::unix::fs::OpenOptionsExt;
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo),
    );
}
