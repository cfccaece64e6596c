//! Home Assistant MQTT discovery, device-based (`<ha>/device/<dev>/config`, one retained
//! message for the whole device): per pipeline a sensor with the stable label (its score
//! as an attribute), an event entity fired by each prediction and a "last seen" timestamp;
//! per model a sensor with the live version (its classes as an attribute) and buttons for
//! `adapt` and `rollback`, which publish on the model's command topic; per device the
//! latest label request and its thumbnail (an image entity). Availability comes
//! from the retained status topic (the Last Will says `offline`). Unique ids are built from
//! the device id and the pipeline or model name only, so they are stable across restarts
//! and versions. Re-sent when Home Assistant's birth message (`<ha>/status` = `online`)
//! arrives; `mqtt.homeassistant_prefix = ""` turns discovery off.

use serde_json::{Value, json};

use super::Topics;

/// The discovery topic and payload, or `None` when discovery is off.
pub fn payload(
    topics: &Topics,
    device: &str,
    pipelines: &[&str],
    models: &[&str],
) -> Option<(String, Value)> {
    let topic = topics.homeassistant_config()?;
    let id = |what: &str| format!("lsskd_{device}_{what}");
    let mut cmps = serde_json::Map::new();
    for p in pipelines {
        cmps.insert(
            format!("{p}_label"),
            json!({
                "p": "sensor",
                "name": format!("{p} label"),
                "unique_id": id(&format!("{p}_label")),
                "state_topic": topics.state(p),
                "value_template": "{{ value_json.label }}",
                "json_attributes_topic": topics.state(p),
                "json_attributes_template": "{{ {'score': value_json.score} | tojson }}",
                "icon": "mdi:label-outline",
            }),
        );
        cmps.insert(
            format!("{p}_prediction"),
            json!({
                "p": "event",
                "name": format!("{p} prediction"),
                "unique_id": id(&format!("{p}_prediction")),
                "state_topic": topics.prediction(p),
                "event_types": ["prediction"],
                "value_template": "{{ {'event_type': 'prediction', 'label': value_json.label, 'score': value_json.score, 'capture_id': value_json.capture_id} | tojson }}",
            }),
        );
        cmps.insert(
            format!("{p}_last_seen"),
            json!({
                "p": "sensor",
                "name": format!("{p} last seen"),
                "unique_id": id(&format!("{p}_last_seen")),
                "device_class": "timestamp",
                "state_topic": topics.prediction(p),
                "value_template": "{{ (value_json.ts / 1000) | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false) }}",
                "entity_category": "diagnostic",
            }),
        );
    }
    for m in models {
        cmps.insert(
            format!("{m}_version"),
            json!({
                "p": "sensor",
                "name": format!("{m} model version"),
                "unique_id": id(&format!("{m}_version")),
                "state_topic": topics.model_info(m),
                "value_template": "{{ value_json.version }}",
                "json_attributes_topic": topics.model_info(m),
                "json_attributes_template": "{{ {'classes': value_json.classes, 'parent': value_json.parent, 'samples_per_class': value_json.samples_per_class} | tojson }}",
                "entity_category": "diagnostic",
            }),
        );
        for (cmd, icon) in [("adapt", "mdi:school"), ("rollback", "mdi:undo")] {
            cmps.insert(
                format!("{m}_{cmd}"),
                json!({
                    "p": "button",
                    "name": format!("{m} {cmd}"),
                    "unique_id": id(&format!("{m}_{cmd}")),
                    "command_topic": topics.model_cmd(m),
                    "payload_press": cmd,
                    "icon": icon,
                }),
            );
        }
    }
    // The device's label requests: the latest one (its guesses and capture id as
    // attributes) and its thumbnail.
    cmps.insert(
        "label_request".into(),
        json!({
            "p": "sensor",
            "name": "label request",
            "unique_id": id("label_request"),
            "state_topic": topics.label_request(),
            "value_template": "{{ value_json.candidates[0].label if value_json.candidates else 'unknown' }}",
            "json_attributes_topic": topics.label_request(),
            "json_attributes_template": "{{ {'request_id': value_json.request_id, 'pipeline': value_json.pipeline, 'model': value_json.model, 'capture_id': value_json.capture_id, 'candidates': value_json.candidates, 'expires': value_json.expires} | tojson }}",
            "icon": "mdi:help-circle-outline",
        }),
    );
    cmps.insert(
        "label_request_image".into(),
        json!({
            "p": "image",
            "name": "label request image",
            "unique_id": id("label_request_image"),
            "image_topic": topics.label_request_thumbnail(),
            "image_encoding": "b64",
            "content_type": "image/png",
        }),
    );
    let body = json!({
        "dev": {
            "ids": [format!("lsskd_{device}")],
            "name": format!("lsskd-edge {device}"),
            "mf": "lsskd-edge",
            "sw": env!("CARGO_PKG_VERSION"),
        },
        "o": {"name": "lsskd-edge", "sw": env!("CARGO_PKG_VERSION")},
        "availability_topic": topics.status(),
        "availability_template": "{{ 'offline' if value == 'offline' else 'online' }}",
        "cmps": cmps,
    });
    Some((topic, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_has_a_stable_unique_id_and_the_daemons_topics() {
        let t = Topics::new("lsskd", "pi4", "homeassistant");
        let (topic, body) =
            payload(&t, "pi4", &["door", "kitchen"], &["vision", "audio"]).expect("on");
        assert_eq!(topic, "homeassistant/device/pi4/config");
        let cmps = body["cmps"].as_object().expect("cmps");
        assert_eq!(cmps.len(), 2 * 3 + 2 * 3 + 2);
        let mut ids: Vec<&str> = cmps
            .values()
            .map(|c| c["unique_id"].as_str().expect("id"))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), cmps.len(), "unique ids repeat");
        assert_eq!(cmps["door_label"]["state_topic"], "lsskd/pi4/door/state");
        assert_eq!(cmps["kitchen_prediction"]["p"], "event");
        assert_eq!(
            cmps["vision_adapt"]["command_topic"],
            "lsskd/pi4/model/vision/cmd"
        );
        assert_eq!(cmps["audio_rollback"]["payload_press"], "rollback");
        assert_eq!(body["availability_topic"], "lsskd/pi4/status");
        // The same names give the same ids (across restarts and versions).
        let (_, again) =
            payload(&t, "pi4", &["door", "kitchen"], &["vision", "audio"]).expect("on");
        assert_eq!(body, again);
        assert!(payload(&Topics::new("lsskd", "pi4", ""), "pi4", &["door"], &[]).is_none());
    }
}
