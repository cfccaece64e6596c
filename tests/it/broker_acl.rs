//! The example locked-down broker (`config/mosquitto/lsskd-edge.acl`) on mosquitto: the
//! device (user = its id) publishes its predictions; a user without the trainer role can
//! read them but can neither teach it (its sample never reaches the device, nothing is
//! stored), nor forge its predictions, nor read what it was taught with or asked about
//! (samples, label requests and their thumbnails), nor teach it through Home Assistant's
//! entities; the `trainer` user can teach it and read those, and the `homeassistant` user
//! can teach through the entities.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::repo;
use crate::harness::{Daemon, Mosquitto, json, model, samples};

const DEVICE_PW: &str = "device-pw";
const TRAINER_PW: &str = "trainer-pw";
const VIEWER_PW: &str = "viewer-pw";
const HA_PW: &str = "homeassistant-pw";

fn pub_as(port: u16, user: &str, password: &str, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", user, "-P", password, "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok, "mosquitto_pub as {user}");
}

/// `mosquitto_sub` as `user`: up to `count` messages on `topic` within `timeout`.
fn sub_as(
    port: u16,
    user: &str,
    password: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> std::process::Child {
    let child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", user, "-P", password, "-t", topic, "-v"])
        .args(["-C", &count.to_string()])
        .args(["-W", &timeout.as_secs().max(1).to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn sample(id: &str) -> String {
    let png = std::fs::read_dir(samples("vision"))
        .expect("vision samples")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "png"))
        .expect("a PNG");
    let bytes = std::fs::read(png).expect("png");
    use base64::Engine;
    format!(
        r#"{{"id":"{id}","label":"parcel","data":"{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn stored(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("samples/vision"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn only_the_trainer_can_teach_the_device_through_the_example_acl() {
    let _cpu = crate::common::cpu_shared();
    let acl = repo().join("config/mosquitto/lsskd-edge.acl");
    let broker = Mosquitto::start_with_acl(
        &acl,
        &[
            ("it", DEVICE_PW),
            ("trainer", TRAINER_PW),
            ("viewer", VIEWER_PW),
            ("homeassistant", HA_PW),
        ],
    );
    // The device logs in with its password in a file of its own (`mqtt.password_file`),
    // not in the settings.
    let secrets = tempfile::tempdir().expect("tempdir");
    let password_file = secrets.path().join("mqtt-password");
    std::fs::write(&password_file, format!("{DEVICE_PW}\n")).expect("password file");
    let config = format!(
        "device_id = \"it\"\n[[pipeline]]\nname = \"door\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"replay_images\"\npath = \"{}\"\ninterval_ms = 100\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"it\"\npassword_file = \"{}\"\nreconnect_max_secs = 2\nhomeassistant_prefix = \"\"\n[adapt]\nauto_after = 0\n[publish]\ndebounce_count = 1\n",
        model("vision"),
        samples("vision"),
        broker.port,
        password_file.display()
    );
    let daemon = Daemon::start(&config, &[]);
    // The device may publish its predictions, and a home's user may read them.
    let preds = sub_as(
        broker.port,
        "viewer",
        VIEWER_PW,
        "lsskd/it/door/prediction",
        1,
        Duration::from_secs(30),
    );
    let preds = crate::harness::collect(preds);
    assert_eq!(preds.len(), 1, "log:\n{}", daemon.log());

    // A viewer cannot teach: mosquitto drops the sample, the device never sees it.
    let acks = sub_as(
        broker.port,
        "trainer",
        TRAINER_PW,
        "lsskd/it/samples/vision/ack",
        1,
        Duration::from_secs(4),
    );
    pub_as(
        broker.port,
        "viewer",
        VIEWER_PW,
        "lsskd/it/samples/vision/add",
        &sample("from-viewer"),
    );
    pub_as(
        broker.port,
        "viewer",
        VIEWER_PW,
        "lsskd/it/model/vision/cmd",
        "rollback",
    );
    let got = crate::harness::collect(acks);
    assert!(
        got.is_empty(),
        "the viewer's sample reached the device: {got:?}"
    );
    assert!(
        stored(&daemon.state_dir()).is_empty(),
        "stored: {:?}",
        stored(&daemon.state_dir())
    );
    // Nor forge the device's predictions.
    let forged = broker.sub_background("lsskd/it/door/prediction", 50, Duration::from_secs(2));
    pub_as(
        broker.port,
        "viewer",
        VIEWER_PW,
        "lsskd/it/door/prediction",
        "{\"label\":\"forged\"}",
    );
    let seen = crate::harness::collect(forged);
    assert!(
        !seen.is_empty() && seen.iter().all(|(_, p)| !p.contains("forged")),
        "{seen:?}"
    );

    // The trainer can, and a home's user sees neither the sample nor its ack.
    let acks = sub_as(
        broker.port,
        "trainer",
        TRAINER_PW,
        "lsskd/it/samples/vision/ack",
        1,
        Duration::from_secs(15),
    );
    let peeking = sub_as(
        broker.port,
        "viewer",
        VIEWER_PW,
        "lsskd/it/samples/#",
        1,
        Duration::from_secs(6),
    );
    pub_as(
        broker.port,
        "trainer",
        TRAINER_PW,
        "lsskd/it/samples/vision/add",
        &sample("from-trainer"),
    );
    let got = crate::harness::collect(acks);
    assert_eq!(got.len(), 1, "log:\n{}", daemon.log());
    let ack = json(&got[0].1);
    assert_eq!(
        (ack["id"].as_str(), ack["accepted"].as_bool()),
        (Some("from-trainer"), Some(true)),
        "{ack}"
    );
    assert_eq!(stored(&daemon.state_dir()).len(), 1);
    let peeked = crate::harness::collect(peeking);
    assert!(
        peeked.is_empty(),
        "a home's user read the samples: {peeked:?}"
    );

    // Label requests carry a capture of the home: only the device writes them, only the
    // admin roles read them. (Published by the device's own login, retained, as the
    // daemon publishes a request's thumbnail.)
    pub_retained_as(
        broker.port,
        "it",
        DEVICE_PW,
        "lsskd/it/label_request/thumbnail",
        "{\"request_id\":\"r1\",\"thumbnail\":\"iVBORw0KGgo=\"}",
    );
    let viewer = sub_as(
        broker.port,
        "viewer",
        VIEWER_PW,
        "lsskd/it/label_request/#",
        1,
        Duration::from_secs(3),
    );
    let trainer = sub_as(
        broker.port,
        "trainer",
        TRAINER_PW,
        "lsskd/it/label_request/#",
        1,
        Duration::from_secs(10),
    );
    let (viewer, trainer) = (
        crate::harness::collect(viewer),
        crate::harness::collect(trainer),
    );
    assert!(
        viewer.is_empty(),
        "a home's user read a thumbnail: {viewer:?}"
    );
    assert_eq!(trainer.len(), 1, "the trainer reads label requests");

    // Teaching through Home Assistant's entities: a home's user cannot (the label and the
    // press never reach the device), Home Assistant's login can.
    let (set, press) = (
        "lsskd/it/teach/pipeline/door/set",
        "lsskd/it/teach/pipeline/door/press",
    );
    let status = sub_as(
        broker.port,
        "homeassistant",
        HA_PW,
        "lsskd/it/teach/status",
        1,
        Duration::from_secs(4),
    );
    pub_as(broker.port, "viewer", VIEWER_PW, set, "parcel");
    pub_as(broker.port, "viewer", VIEWER_PW, press, "wrong");
    let got = crate::harness::collect(status);
    assert!(got.is_empty(), "a home's user taught the device: {got:?}");
    assert_eq!(stored(&daemon.state_dir()).len(), 1);
    let status = sub_as(
        broker.port,
        "homeassistant",
        HA_PW,
        "lsskd/it/teach/status",
        2,
        Duration::from_secs(15),
    );
    pub_as(broker.port, "homeassistant", HA_PW, set, "parcel");
    pub_as(broker.port, "homeassistant", HA_PW, press, "wrong");
    let got = crate::harness::collect(status);
    assert!(
        got.last()
            .is_some_and(|(_, p)| p.contains("stored as `parcel`")),
        "{got:?}; log:\n{}",
        daemon.log()
    );
    assert_eq!(stored(&daemon.state_dir()).len(), 2);
}

fn pub_retained_as(port: u16, user: &str, password: &str, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-u", user, "-P", password, "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok, "mosquitto_pub as {user}");
}
