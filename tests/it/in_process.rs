//! The daemon run in this process (`lsskd_edge::daemon::run`) with an injected shutdown,
//! against mosquitto: it serves, then stops in order when the test says so — no signal,
//! no child process.

use std::time::Duration;

use lsskd_edge::settings::{Settings, Sources};

use crate::harness::{Mosquitto, json, replay_vision_config, samples};

#[test]
fn the_daemon_serves_in_process_and_stops_on_an_injected_shutdown() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "state_dir = \"{}\"\n{}",
            dir.path().join("state").display(),
            replay_vision_config("door", &samples("vision"), broker.port)
        ),
    )
    .expect("config");
    let settings = Settings::load(&Sources {
        file: Some(conf),
        env: Vec::new(),
    })
    .expect("settings");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = rt.spawn(lsskd_edge::daemon::run(settings, async {
        let _ = stop_rx.await;
    }));
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
