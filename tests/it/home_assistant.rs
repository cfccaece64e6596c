//! Home Assistant as the teaching UI: the discovery message checked against Home
//! Assistant's own MQTT schemas (`tests/data/ha-mqtt-schema.json`, read from its source by
//! `scripts/ha-mqtt-schema.py`), and every teaching entity driven through mosquitto the way
//! Home Assistant drives it: from the discovery message's own topics, templates and
//! payloads.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::harness::{Daemon, Mosquitto, json, publish, replay_vision_config};
use lsskd_edge::mqtt::Topics;
use lsskd_edge::mqtt::discovery::{self, ModelEntities, PipelineEntities};

fn schema() -> Value {
    let path = crate::common::repo().join("tests/data/ha-mqtt-schema.json");
    json(&std::fs::read_to_string(&path).expect("tests/data/ha-mqtt-schema.json"))
}

/// `obj` with the abbreviated keys of `table` written out, as Home Assistant does.
fn expand(obj: &Map<String, Value>, table: &Value) -> Map<String, Value> {
    obj.iter()
        .map(|(k, v)| {
            let full = table[k.as_str()].as_str().unwrap_or(k);
            (full.to_string(), v.clone())
        })
        .collect()
}

/// Keys of `obj` a schema `{key: required}` does not know, and its required keys missing.
fn check_keys(what: &str, obj: &Map<String, Value>, known: &Value, out: &mut Vec<String>) {
    let known = known.as_object().expect("a key table");
    for k in obj.keys() {
        if !known.contains_key(k) {
            out.push(format!("{what}: unknown key `{k}`"));
        }
    }
    for (k, required) in known {
        if required == true && !obj.contains_key(k) {
            out.push(format!("{what}: required key `{k}` missing"));
        }
    }
}

/// What Home Assistant's device-based discovery would refuse, or silently drop (unknown
/// keys are removed without a word), in `body`.
fn problems(body: &Value, ha: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let top = expand(body.as_object().expect("an object"), &ha["abbreviations"]);
    check_keys("device message", &top, &ha["device_discovery"], &mut out);
    if let Some(dev) = top.get("device").and_then(Value::as_object) {
        let dev = expand(dev, &ha["device_abbreviations"]);
        check_keys("dev", &dev, &ha["device"], &mut out);
        let has_id = ["identifiers", "connections"].iter().any(|k| {
            dev.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
        if !has_id {
            out.push("dev: no identifiers".into());
        }
    }
    if let Some(o) = top.get("origin").and_then(Value::as_object) {
        check_keys(
            "o",
            &expand(o, &ha["origin_abbreviations"]),
            &ha["origin"],
            &mut out,
        );
    }
    let shared: Vec<&str> = ha["shared_options"]
        .as_array()
        .expect("shared options")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cmps = top.get("components").and_then(Value::as_object);
    for (key, c) in cmps.into_iter().flatten() {
        let mut c = expand(c.as_object().expect("a component"), &ha["abbreviations"]);
        let Some(platform) = c
            .remove("platform")
            .and_then(|p| p.as_str().map(String::from))
        else {
            out.push(format!("{key}: no platform"));
            continue;
        };
        let Some(schema) = ha["platforms"].get(&platform) else {
            out.push(format!(
                "{key}: Home Assistant has no MQTT platform `{platform}`"
            ));
            continue;
        };
        // Options the device block shares with every component.
        for s in &shared {
            if let Some(v) = top.get(*s)
                && !c.contains_key(*s)
            {
                c.insert(s.to_string(), v.clone());
            }
        }
        if !c.contains_key("unique_id") {
            out.push(format!("{key}: no unique_id"));
        }
        let mut known = Map::new();
        for (list, required) in [("required", true), ("optional", false)] {
            for k in schema[list].as_array().expect("keys") {
                known.insert(k.as_str().expect("key").into(), Value::Bool(required));
            }
        }
        check_keys(
            &format!("{key} ({platform})"),
            &c,
            &Value::Object(known),
            &mut out,
        );
        if platform == "select" {
            let options = c.get("options").and_then(Value::as_array);
            if !options.is_some_and(|o| !o.is_empty() && o.iter().all(Value::is_string)) {
                out.push(format!(
                    "{key}: options must be a non-empty list of strings"
                ));
            }
        }
    }
    out
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Every key of the discovery message is one Home Assistant knows for that platform, and
/// every key it requires is there; the check itself catches a misspelt or missing key.
#[test]
fn discovery_uses_only_home_assistants_keys_and_gives_every_required_one() {
    let ha = schema();
    let topics = Topics::new("lsskd", "pi4", "homeassistant");
    let (_, body) = discovery::payload(
        &topics,
        "pi4",
        &[PipelineEntities {
            name: "door",
            labels: names(&["bag", "coat"]),
        }],
        &[ModelEntities {
            name: "vision",
            labels: names(&["bag", "coat"]),
            versions: vec![0, 1],
        }],
    )
    .expect("discovery on");
    assert_eq!(problems(&body, &ha), Vec::<String>::new(), "{body}");
    let platforms: BTreeSet<&str> = body["cmps"]
        .as_object()
        .expect("cmps")
        .values()
        .filter_map(|c| c["p"].as_str())
        .collect();
    for p in ["sensor", "event", "select", "text", "button", "image"] {
        assert!(platforms.contains(p), "no {p} entity");
    }

    let mut broken = body.clone();
    broken["cmps"]["door_teach_now"]["payload_pres"] = "teach".into();
    broken["cmps"]["door_teach_label"]
        .as_object_mut()
        .expect("select")
        .remove("options");
    broken["cmps"]["vision_verdict"]["p"] = "sensr".into();
    let found = problems(&broken, &ha);
    for want in [
        "door_teach_now (button): unknown key `payload_pres`",
        "door_teach_label (select): required key `options` missing",
        "vision_verdict: Home Assistant has no MQTT platform `sensr`",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:?}");
    }
}

/// Five 64×64 grey checkerboards (a "parcel": nothing the clothing model knows), slightly
/// different each, for the replay camera.
fn parcel_images(dir: &Path) {
    for i in 0..5u32 {
        let img = image::GrayImage::from_fn(64, 64, |x, y| {
            let cell = 8 + i % 2;
            let on = ((x + i) / cell + y / cell) % 2 == 0;
            image::Luma([if on { 220 } else { 30 + 5 * i as u8 }])
        });
        img.save(dir.join(format!("parcel_{i}.png"))).expect("png");
    }
}

/// A discovery component by key.
fn component<'a>(d: &'a Value, key: &str) -> &'a Value {
    let c = &d["cmps"][key];
    assert!(c.is_object(), "no component `{key}` in {d}");
    c
}

fn topic(c: &Value, field: &str) -> String {
    c[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {c}"))
        .to_string()
}

/// Home Assistant presses a button: its `payload_press` on its `command_topic`.
fn press(port: u16, button: &Value) {
    assert!(publish(
        port,
        &topic(button, "command_topic"),
        &topic(button, "payload_press")
    ));
}

/// Home Assistant sets a select or a text: the value through its `command_template`.
fn set(port: u16, entity: &Value, value: &str) {
    let payload = match entity["command_template"].as_str() {
        Some(t) => t.replace("{{ value }}", value),
        None => value.to_string(),
    };
    assert!(publish(port, &topic(entity, "command_topic"), &payload));
}

/// The label request is answered, and a wrong prediction corrected, from Home Assistant's
/// entities alone: a new label typed into the request's text and answered, a known label
/// picked in its select and answered, the same new label typed for the pipeline and
/// "that was wrong" pressed, then "teach now". The samples are stored (the daemon's
/// `samples` answer counts them) and used: the new label is imprinted and served, the
/// discovery message is sent again with it among the pipeline's labels and the new
/// version among the versions. Then the pipeline's select, the model's adapt button (a
/// fine-tune's verdict on the verdict sensor), the version select and "back to shipped"
/// (the live version changes).
#[test]
fn home_assistant_answers_a_request_corrects_a_prediction_and_teaches_through_its_entities() {
    let _cpu = crate::common::cpu_shared();
    let ha = schema();
    let broker = Mosquitto::start();
    let images = tempfile::tempdir().expect("tmp");
    parcel_images(images.path());
    let config = format!(
        "{}\n[adapt]\nauto_after = 0\nrequest_margin = 1.0\nrequests_per_hour = 2\nteach_now_count = 3\nteach_now_spacing_ms = 300\n[publish]\ndebounce_count = 1\n",
        replay_vision_config("door", &images.path().display().to_string(), broker.port),
    );
    // Label requests are not retained: listen before the device starts.
    let requests = broker.sub_background("lsskd/it/label_request", 2, Duration::from_secs(40));
    let daemon = Daemon::start(
        &config,
        &[("LSSKD_EDGE__MQTT__HOMEASSISTANT_PREFIX", "homeassistant")],
    );
    let log = || daemon.log();
    let config_topic = "homeassistant/device/it/config";
    let d = json(
        &broker
            .wait_retained(config_topic, Duration::from_secs(20), |p| !p.is_empty())
            .unwrap_or_else(|| panic!("no discovery; log:\n{}", log())),
    );
    assert_eq!(problems(&d, &ha), Vec::<String>::new(), "{d}");
    let status_topic = topic(component(&d, "teach_status"), "state_topic");
    // Waits for the teaching status whose message contains `want`; returns it.
    let said = |want: &str| {
        let s = broker
            .wait_retained(&status_topic, Duration::from_secs(20), |p| p.contains(want))
            .unwrap_or_else(|| panic!("no teaching status with `{want}`; log:\n{}", log()));
        json(&s)
    };

    // The device asks twice (every prediction is uncertain here, two an hour).
    let asked = crate::harness::collect(requests);
    assert_eq!(asked.len(), 2, "log:\n{}", log());
    set(
        broker.port,
        component(&d, "request_teach_new_label"),
        "parcel",
    );
    assert_eq!(said("label `parcel` picked")["ok"], true);
    press(broker.port, component(&d, "request_answer"));
    assert_eq!(said("stored as `parcel`")["scope"], "request");
    let shipped = component(&d, "request_teach_label")["options"][0]
        .as_str()
        .expect("an option")
        .to_string();
    set(broker.port, component(&d, "request_teach_label"), &shipped);
    said(&format!("label `{shipped}` picked"));
    press(broker.port, component(&d, "request_answer"));
    said(&format!("stored as `{shipped}`"));
    press(broker.port, component(&d, "request_answer"));
    assert_eq!(said("no open label request")["ok"], false);

    // "That was wrong" on the pipeline: the capture of its stable state, as `parcel`.
    broker
        .wait_retained("lsskd/it/door/state", Duration::from_secs(20), |p| {
            !p.is_empty()
        })
        .expect("a stable state");
    set(broker.port, component(&d, "door_teach_new_label"), "parcel");
    said("picked for door's buttons");
    press(broker.port, component(&d, "door_wrong"));
    let wrong = said("the capture (");
    assert_eq!(wrong["ok"], true, "{wrong}");
    // "Teach now": three more captures of the pipeline.
    press(broker.port, component(&d, "door_teach_now"));
    said("door: 3 captures stored as `parcel`");

    // Stored: the daemon's own count.
    let cmd = "lsskd/it/model/vision/cmd";
    let list = broker.sub_background("lsskd/it/samples/vision/list", 1, Duration::from_secs(10));
    assert!(publish(broker.port, cmd, "samples"));
    let counts = crate::harness::collect(list);
    let counts = json(
        &counts
            .first()
            .unwrap_or_else(|| panic!("no list; log:\n{}", log()))
            .1,
    );
    assert_eq!(counts["counts"]["parcel"], 5, "{counts}");
    assert_eq!(counts["counts"][shipped.as_str()], 1, "{counts}");

    // Used: `parcel` imprinted and served; the verdict sensor says so.
    let verdict = component(&d, "vision_verdict");
    let v = broker
        .wait_retained(
            &topic(verdict, "state_topic"),
            Duration::from_secs(60),
            |p| p.contains("\"promoted\""),
        )
        .unwrap_or_else(|| panic!("no promotion; log:\n{}", log()));
    assert_eq!(json(&v)["kind"], "imprint", "{v}");
    let card_topic = topic(component(&d, "vision_version"), "state_topic");
    let card = broker
        .wait_retained(&card_topic, Duration::from_secs(20), |p| {
            p.contains("\"parcel\"")
        })
        .unwrap_or_else(|| panic!("`parcel` not served; log:\n{}", log()));
    let version = json(&card)["version"].as_u64().expect("version");
    assert!(version >= 1, "{card}");

    // The discovery message follows: the new label and version are options now.
    let again = json(
        &broker
            .wait_retained(config_topic, Duration::from_secs(20), |p| {
                p.contains("\"parcel\"")
            })
            .unwrap_or_else(|| panic!("discovery not re-sent; log:\n{}", log())),
    );
    assert_eq!(problems(&again, &ha), Vec::<String>::new());
    let options = |key: &str| -> Vec<String> {
        component(&again, key)["options"]
            .as_array()
            .expect("options")
            .iter()
            .map(|o| o.as_str().expect("string").to_string())
            .collect()
    };
    assert!(options("door_teach_label").contains(&"parcel".to_string()));
    assert!(options("vision_versions").contains(&version.to_string()));

    // The pipeline's select (its options now hold `parcel`) and the model's adapt button:
    // a fine-tune, judged by the gate, its verdict on the sensor.
    set(broker.port, component(&again, "door_teach_label"), "parcel");
    said("label `parcel` picked for door's");
    press(broker.port, component(&again, "vision_adapt"));
    let v = broker
        .wait_retained(
            &topic(verdict, "state_topic"),
            Duration::from_secs(120),
            |p| p.contains("\"finetune\""),
        )
        .unwrap_or_else(|| panic!("no fine-tune verdict; log:\n{}", log()));
    let state = json(&v)["state"].as_str().expect("state").to_string();
    assert!(state == "promoted" || state == "rejected", "{v}");

    // The version select and "back to shipped".
    let serve = component(&again, "vision_versions");
    let serving = |want: u64| {
        broker
            .wait_retained(&card_topic, Duration::from_secs(20), |p| {
                json(p)["version"] == want
            })
            .unwrap_or_else(|| panic!("version {want} not served; log:\n{}", log()));
    };
    set(broker.port, serve, "0");
    serving(0);
    set(broker.port, serve, &version.to_string());
    serving(version);
    press(broker.port, component(&again, "vision_shipped"));
    serving(0);
}
