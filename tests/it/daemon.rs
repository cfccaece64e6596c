//! The daemon against real components: mosquitto with a password file, the shipped models
//! through tract, replay sources, a missing camera, sd_notify over a datagram socket, and
//! the microphone path through cpal and ALSA's file device.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::{
    Daemon, Mosquitto, collect, json, model, mqtt_section, publish, publish_with, samples,
};

const CLASSES: [&str; 10] = [
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

fn vision_pipelines(port: u16) -> String {
    format!(
        r#"device_id = "it"
[[pipeline]]
name = "door"
model = "{}"
[pipeline.source]
kind = "replay_images"
path = "{}"
interval_ms = 150

[[pipeline]]
name = "porch"
model = "{}"
[pipeline.source]
kind = "camera"
device = "/dev/video97"

{}
[publish]
debounce_count = 1
"#,
        model("vision"),
        samples("vision"),
        model("vision"),
        mqtt_section(port)
    )
}

#[test]
fn publishes_predictions_status_and_last_will_with_a_missing_camera_retrying() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut daemon = Daemon::start(
        &vision_pipelines(broker.port),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );

    // Predictions with the documented schema, from the replay pipeline.
    let preds = broker.sub("lsskd/it/door/prediction", 3, Duration::from_secs(30));
    assert_eq!(
        preds.len(),
        3,
        "no predictions; daemon log:\n{}",
        daemon.log()
    );
    for (_, payload) in &preds {
        let p = json(payload);
        for key in [
            "ts",
            "pipeline",
            "capture_id",
            "label",
            "score",
            "top_k",
            "latency_ms",
            "model_version",
        ] {
            assert!(p.get(key).is_some(), "{key} missing in {payload}");
        }
        assert_eq!(p["pipeline"], "door");
        assert!(CLASSES.contains(&p["label"].as_str().expect("label")));
        assert_eq!(p["top_k"].as_array().expect("top_k").len(), 3);
        assert!(p["latency_ms"].as_f64().expect("latency") > 0.0);
    }
    // The replayed files are named by their class and replayed in turn: over three
    // rounds the model names every one of them, and nothing else.
    let files: Vec<String> = std::fs::read_dir(samples("vision"))
        .expect("demo samples")
        .map(|e| {
            let p = e.expect("entry").path();
            p.file_stem().expect("stem").to_string_lossy().into_owned()
        })
        .collect();
    let labelled = broker.sub(
        "lsskd/it/door/prediction",
        3 * files.len(),
        Duration::from_secs(30),
    );
    assert_eq!(labelled.len(), 3 * files.len());
    let said: std::collections::BTreeSet<String> = labelled
        .iter()
        .map(|(_, p)| json(p)["label"].as_str().expect("label").to_string())
        .collect();
    let want: std::collections::BTreeSet<String> = files.into_iter().collect();
    assert_eq!(
        said, want,
        "labels predicted vs the replayed files' classes"
    );

    // Retained status: online, the camera pipeline retrying with a clear reason.
    let status = broker
        .wait_retained("lsskd/it/status", Duration::from_secs(20), |p| {
            p.contains("retrying") && p.contains("\"inferences\"")
        })
        .unwrap_or_else(|| panic!("no status with a retrying camera; log:\n{}", daemon.log()));
    let s = json(&status);
    assert_eq!(s["status"], "online");
    let porch = s["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .find(|p| p["name"] == "porch")
        .expect("porch pipeline in status")
        .clone();
    let state = porch["state"].as_str().expect("state");
    assert!(
        state.contains("/dev/video97"),
        "camera error names the device: {state}"
    );
    // Retained debounced state and the scene.
    let st = broker.sub("lsskd/it/door/state", 1, Duration::from_secs(5));
    assert!(CLASSES.contains(&json(&st[0].1)["label"].as_str().expect("label")));
    let scene = broker.sub("lsskd/it/scene", 1, Duration::from_secs(5));
    assert!(json(&scene[0].1)["states"]["door"].is_string());

    // sd_notify: READY=1, then WATCHDOG=1, on the socket given as NOTIFY_SOCKET.
    let mut seen = String::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(15)
        && !(seen.contains("READY=1") && seen.contains("WATCHDOG=1"))
    {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    }
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(seen.contains("WATCHDOG=1"), "{seen}");
    assert!(seen.contains("STATUS="), "{seen}");

    // SIGKILL: the broker publishes the Last Will, retained.
    daemon.kill9();
    let last = broker.wait_retained("lsskd/it/status", Duration::from_secs(20), |p| {
        p == "offline"
    });
    assert_eq!(last.as_deref(), Some("offline"));
}

#[test]
fn reconnects_after_the_broker_restarts_and_stops_cleanly_on_sigterm() {
    let _cpu = crate::common::cpu_shared();
    let mut broker = Mosquitto::start();
    let mut daemon = Daemon::start(&vision_pipelines(broker.port), &[]);
    assert_eq!(
        broker
            .sub("lsskd/it/door/prediction", 1, Duration::from_secs(30))
            .len(),
        1,
        "log:\n{}",
        daemon.log()
    );
    // The version store of the live model is laid out under state_dir.
    assert!(daemon.state_dir().join("models/vision").is_dir());
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    // Predictions resume on their own, and the status is re-announced (the restarted
    // broker has no persistence, so it only knows what the daemon publishes again).
    let resumed = broker.sub("lsskd/it/door/prediction", 2, Duration::from_secs(40));
    assert_eq!(
        resumed.len(),
        2,
        "no predictions after restart; log:\n{}",
        daemon.log()
    );
    let status = broker.wait_retained("lsskd/it/status", Duration::from_secs(10), |p| {
        p.contains("online")
    });
    assert!(status.is_some());
    assert!(daemon.log().contains("lost the MQTT broker"));

    // SIGTERM: orderly shutdown within the grace period, `offline` published.
    let st = daemon
        .terminate(Duration::from_secs(15))
        .expect("stopped within the grace period");
    assert!(st.success(), "{st:?}; log:\n{}", daemon.log());
    let last = broker.sub("lsskd/it/status", 1, Duration::from_secs(5));
    assert_eq!(last[0].1, "offline");
    assert!(daemon.log().contains("stopped"));
}

#[test]
fn microphone_through_cpal_and_alsa_file_device_recognises_the_keyword() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // A core keyword, 48 kHz s16 mono raw (what the ALSA slave delivers), repeated so the
    // file outlasts every read (ALSA repeats the last period at EOF).
    let clip = samples("audio") + "/yes.wav";
    let raw = dir.path().join("yes.raw");
    let one = dir.path().join("one.raw");
    let ok = std::process::Command::new("sox")
        .arg(&clip)
        .args([
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
        ])
        .arg(&one)
        .status()
        .expect("sox (apt package sox)");
    assert!(ok.success());
    let bytes = std::fs::read(&one).expect("raw");
    std::fs::write(&raw, bytes.repeat(20)).expect("fixture");
    let asound = dir.path().join("asound.conf");
    std::fs::write(
        &asound,
        format!(
            r#"defaults.pcm.minperiodtime 5000
pcm.!default {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm {{ type null }}
            file "/dev/null"
            infile "{}"
            format "raw"
        }}
        format S16_LE
        rate 48000
        channels 1
    }}
}}
"#,
            raw.display()
        ),
    )
    .expect("asound.conf");
    let config = format!(
        r#"device_id = "it"
[[pipeline]]
name = "mic"
model = "{}"
[pipeline.source]
kind = "microphone"
device = "default"
window_ms = 1000
hop_ms = 1000

{}
"#,
        model("audio"),
        mqtt_section(broker.port)
    );
    // ALSA's file device is unpaced: the whole fixture arrives at once and then its last
    // period repeats. The first windows are the clip; subscribe before the daemon starts.
    let sub = broker.sub_background("lsskd/it/mic/prediction", 6, Duration::from_secs(40));
    let daemon = Daemon::start(
        &config,
        &[("ALSA_CONFIG_PATH", asound.to_str().expect("utf-8"))],
    );
    let preds = collect(sub);
    assert_eq!(preds.len(), 6, "log:\n{}", daemon.log());
    let yes = preds
        .iter()
        .filter(|(_, p)| json(p)["label"] == "yes")
        .count();
    assert!(
        yes * 2 > preds.len(),
        "`yes` in {yes} of {} windows: {preds:?}",
        preds.len()
    );
    assert!(daemon.log().contains("microphone streaming"));
}

#[test]
fn publishes_over_tls_with_a_private_ca() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start_tls();
    let ca = broker.ca_file().expect("tls");
    let config = format!(
        "{}\n[mqtt.tls]\nenabled = true\nca_file = \"{}\"\n",
        vision_pipelines(broker.port),
        ca.display()
    );
    // The certificate names `localhost`; the name is checked.
    let daemon = Daemon::start(&config, &[("LSSKD_EDGE__MQTT__HOST", "localhost")]);
    let preds = broker.sub("lsskd/it/door/prediction", 2, Duration::from_secs(30));
    assert_eq!(
        preds.len(),
        2,
        "no predictions over TLS; log:\n{}",
        daemon.log()
    );
}

/// The README's demo: both pipelines publish through the embedded broker, and the log at
/// the default level stays quiet while clients come and go (no line per prediction, no
/// broker chatter: rumqttd logs an ERROR each time a client leaves unless filtered).
#[test]
fn demo_config_publishes_both_pipelines_through_the_embedded_broker_with_a_quiet_log() {
    let _cpu = crate::common::cpu_shared();
    let port = crate::harness::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lsskd-edge"))
        .args(["run", "--config"])
        .arg(crate::common::repo().join("config/demo.toml"))
        .env("LSSKD_EDGE__MQTT__PORT", port.to_string())
        .env("LSSKD_EDGE__STATE_DIR", dir.path().join("state"))
        // As the systemd unit sets it.
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn demo");
    assert!(crate::harness::wait_for_port(port, Duration::from_secs(20)));
    let sub = |count: &str| {
        std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-t",
                "lsskd/demo/+/prediction",
                "-v",
                "-C",
                count,
                "-W",
                "10",
            ])
            .output()
            .expect("mosquitto_sub")
    };
    let out = sub("12");
    // Two more clients come and go.
    sub("1");
    sub("1");
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lsskd/demo/camera/prediction"), "{text}");
    assert!(text.contains("lsskd/demo/microphone/prediction"), "{text}");
    let log = std::fs::read_to_string(&log).expect("log");
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("prediction"))
        .collect();
    assert!(
        loud.is_empty(),
        "a healthy demo logged:\n{}",
        loud.join("\n")
    );
    assert!(
        log.lines().count() <= 12,
        "more than a dozen lines for a start and three clients:\n{log}"
    );
}

/// Home Assistant discovery on mosquitto: one retained device message whose components all
/// have unique ids and the daemon's own state and command topics; a button press over MQTT
/// makes the daemon act; the message is re-announced after `homeassistant/status online`.
#[test]
fn home_assistant_discovery_is_valid_its_buttons_work_and_it_is_reannounced() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let config = format!(
        "{}\n[adapt]\nauto_after = 0\n",
        vision_pipelines(broker.port)
    );
    let prometheus = format!("127.0.0.1:{}", crate::harness::free_port());
    let daemon = Daemon::start(
        &config,
        &[
            ("LSSKD_EDGE__MQTT__HOMEASSISTANT_PREFIX", "homeassistant"),
            ("LSSKD_EDGE__PUBLISH__METRICS_INTERVAL_SECS", "1"),
            ("LSSKD_EDGE__PUBLISH__PROMETHEUS_LISTEN", &prometheus),
        ],
    );
    let topic = "homeassistant/device/it/config";
    let found = broker
        .wait_retained(topic, Duration::from_secs(20), |p| !p.is_empty())
        .unwrap_or_else(|| panic!("no discovery message; log:\n{}", daemon.log()));
    let d = json(&found);
    assert_eq!(d["availability_topic"], "lsskd/it/status");
    let cmps = d["cmps"].as_object().expect("cmps");
    let mut ids: Vec<&str> = cmps
        .values()
        .map(|c| c["unique_id"].as_str().expect("unique_id"))
        .collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "unique ids repeat: {d}");
    // Two pipelines (label, prediction event, last seen; teaching: a select, a text, two
    // buttons), one model (version, verdict, version select, the fleet's class offer,
    // four buttons), the device's label request, its image, its select, text and answer
    // button, and the teaching status (tests/it/home_assistant.rs drives them).
    assert_eq!(n, 2 * 7 + 8 + 6, "{d}");
    for (key, field, want) in [
        ("door_label", "state_topic", "lsskd/it/door/state"),
        (
            "porch_prediction",
            "state_topic",
            "lsskd/it/porch/prediction",
        ),
        (
            "vision_version",
            "state_topic",
            "lsskd/it/model/vision/info",
        ),
        ("vision_adapt", "command_topic", "lsskd/it/model/vision/cmd"),
        (
            "vision_rollback",
            "command_topic",
            "lsskd/it/model/vision/cmd",
        ),
    ] {
        assert_eq!(cmps[key][field], want, "{key}: {d}");
    }
    // The state topics carry what the templates read.
    let state = broker
        .wait_retained("lsskd/it/door/state", Duration::from_secs(20), |p| {
            !p.is_empty()
        })
        .expect("door state");
    assert!(json(&state)["label"].is_string() && json(&state)["score"].is_number());
    let info = broker
        .wait_retained("lsskd/it/model/vision/info", Duration::from_secs(10), |p| {
            !p.is_empty()
        })
        .expect("model card");
    assert_eq!(json(&info)["version"], 0);

    // Pressing `rollback`: the daemon acts on it (version 0 has no parent: refused, with
    // the reason on training/state).
    let button = &cmps["vision_rollback"];
    assert!(publish(
        broker.port,
        button["command_topic"].as_str().expect("topic"),
        button["payload_press"].as_str().expect("payload")
    ));
    let st = broker
        .wait_retained("lsskd/it/training/state", Duration::from_secs(15), |p| {
            p.contains("\"failed\"") || p.contains("rolled_back")
        })
        .unwrap_or_else(|| panic!("the button did nothing; log:\n{}", daemon.log()));
    assert_eq!(json(&st)["model"], "vision", "{st}");

    // Home Assistant restarts: its birth message brings the discovery back.
    assert!(publish_with(broker.port, topic, "", &["-r"]));
    assert!(
        broker.sub(topic, 1, Duration::from_secs(1)).is_empty(),
        "cleared"
    );
    assert!(publish(broker.port, "homeassistant/status", "online"));
    let again = broker.wait_retained(topic, Duration::from_secs(10), |p| !p.is_empty());
    assert_eq!(again.map(|p| json(&p)), Some(d), "log:\n{}", daemon.log());

    // Metrics, every second here: per pipeline frames, drops, errors and latency
    // percentiles; adaptations; RSS and CPU.
    let m = broker.sub("lsskd/it/metrics", 2, Duration::from_secs(10));
    assert_eq!(m.len(), 2, "log:\n{}", daemon.log());
    let m = json(&m[1].1);
    let door = &m["pipelines"][0];
    assert_eq!(door["name"], "door", "{m}");
    assert!(door["frames"].as_u64().expect("frames") > 0, "{m}");
    let (p50, p95) = (
        door["latency_p50_ms"].as_f64().expect("p50"),
        door["latency_p95_ms"].as_f64().expect("p95"),
    );
    assert!(p50 > 0.0 && p95 >= p50, "{m}");
    assert_eq!(m["pipelines"][1]["frames"], 0, "the camera is missing: {m}");
    assert!(m["pipelines"][1]["latency_p50_ms"].is_null(), "{m}");
    assert!(m["rss_mib"].as_f64().expect("rss") > 5.0, "{m}");
    let cpu = m["cpu_percent"].as_f64().expect("cpu");
    assert!(cpu > 0.0 && cpu < 250.0, "{m}");
    assert!(m["adaptations"]["run"].is_u64(), "{m}");

    // The same figures for Prometheus, on the loopback address.
    let text = http_get(&prometheus, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("# TYPE lsskd_frames_total counter")
            && text.contains("lsskd_frames_total{device=\"it\",pipeline=\"door\"}")
            && text.contains("quantile=\"0.95\"")
            && text.contains("lsskd_resident_memory_bytes{device=\"it\"}"),
        "{text}"
    );
    assert!(http_get(&prometheus, "/nope").starts_with("HTTP/1.1 404"));
}

/// A plain HTTP/1.1 GET; the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}
