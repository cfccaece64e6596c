//! Home Assistant MQTT discovery, device-based (`<ha>/device/<dev>/config`, one retained
//! message for the whole device), which makes Home Assistant the device's teaching UI:
//! - per pipeline: a sensor with the stable label (its score as an attribute), an event
//!   entity fired by each prediction and a "last seen" timestamp; to teach it, a `select`
//!   of its model's labels and a `text` for a new one (either sets the pipeline's label),
//!   a "teach now" button (the next captures become samples of that label) and a "that
//!   was wrong" button (the capture of the last stable state becomes a sample of it);
//! - per model: a sensor with the live version (its classes as an attribute), a sensor
//!   with the last trainer verdict and its reason, a `select` of the stored versions
//!   (picking one promotes it), and buttons for `adapt`, `rollback` and "back to
//!   shipped", all on the model's command topic;
//! - per device: the latest label request (a sensor) and its thumbnail (an `image`), a
//!   `select` of every model's labels and a `text` for a new one, an "answer" button that
//!   stores the request's capture as a sample of that label, and a sensor saying what the
//!   last teaching action did.
//!
//! Selects and texts publish on `teach/<scope>/set` and buttons on `teach/<scope>/press`
//! (`mqtt::Topics::teach_set`), handled by the daemon's inbound thread exactly like
//! `samples/<model>/add`. The selects' options (labels, versions) follow the live models,
//! so the message is sent again when a model changes. Availability comes from the retained
//! status topic (the Last Will says `offline`). Unique ids are built from the device id and
//! the pipeline or model name only, so they are stable across restarts and versions.
//! Re-sent when Home Assistant's birth message (`<ha>/status` = `online`) arrives;
//! `mqtt.homeassistant_prefix = ""` turns discovery off. The keys are checked against
//! Home Assistant's own MQTT schemas (`tests/data/ha-mqtt-schema.json`, extracted from
//! its source by `scripts/ha-mqtt-schema.py`).

use serde_json::{Map, Value, json};

use super::{TeachScope, Topics};

/// What Home Assistant is told about one pipeline.
pub struct PipelineEntities<'a> {
    pub name: &'a str,
    /// The labels its model serves now (the select's options).
    pub labels: Vec<String>,
}

/// What Home Assistant is told about one model.
pub struct ModelEntities<'a> {
    pub name: &'a str,
    /// Its labels now.
    pub labels: Vec<String>,
    /// The versions stored on the device (0: the shipped package), the select's options.
    pub versions: Vec<u32>,
}

/// A label typed into a `text` entity: what `samples::valid_name` accepts.
pub const LABEL_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// The discovery topic and payload, or `None` when discovery is off.
pub fn payload(
    topics: &Topics,
    device: &str,
    pipelines: &[PipelineEntities<'_>],
    models: &[ModelEntities<'_>],
) -> Option<(String, Value)> {
    let topic = topics.homeassistant_config()?;
    let mut cmps = Map::new();
    let mut add = |key: String, platform: &str, name: String, mut fields: Value| {
        fields["p"] = json!(platform);
        fields["name"] = json!(name);
        fields["unique_id"] = json!(format!("lsskd_{device}_{key}"));
        cmps.insert(key, fields);
    };
    for p in pipelines {
        pipeline_entities(&mut add, topics, p);
    }
    for m in models {
        model_entities(&mut add, topics, m);
    }
    let mut every_label: Vec<String> = models.iter().flat_map(|m| m.labels.clone()).collect();
    every_label.sort();
    every_label.dedup();
    request_entities(&mut add, topics, &every_label);
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

/// Adds one component: its key, platform, name and the rest of its fields.
type Add<'f> = dyn FnMut(String, &str, String, Value) + 'f;

/// A `select` of `labels` and a `text` for a new label, both setting `scope`'s label.
fn label_entities(
    add: &mut Add<'_>,
    topics: &Topics,
    key: &str,
    scope: TeachScope<'_>,
    // The select's name; the text's is the same with "new" before its last "label".
    name: &str,
    labels: &[String],
) {
    add(
        format!("{key}_teach_label"),
        "select",
        name.to_string(),
        json!({
            "command_topic": topics.teach_set(scope),
            "options": labels,
            "entity_category": "config",
            "icon": "mdi:tag-outline",
        }),
    );
    add(
        format!("{key}_teach_new_label"),
        "text",
        match name.rfind("label") {
            Some(i) => format!("{}new {}", &name[..i], &name[i..]),
            None => format!("{name} (new)"),
        },
        json!({
            "command_topic": topics.teach_set(scope),
            "state_topic": topics.teach_label(scope),
            "pattern": LABEL_PATTERN,
            "max": 64,
            "entity_category": "config",
            "icon": "mdi:tag-plus-outline",
        }),
    );
}

fn button(add: &mut Add<'_>, key: String, name: String, topic: String, press: &str, icon: &str) {
    add(
        key,
        "button",
        name,
        json!({"command_topic": topic, "payload_press": press, "icon": icon}),
    );
}

fn pipeline_entities(add: &mut Add<'_>, topics: &Topics, p: &PipelineEntities<'_>) {
    let name = p.name;
    add(
        format!("{name}_label"),
        "sensor",
        format!("{name} label"),
        json!({
            "state_topic": topics.state(name),
            "value_template": "{{ value_json.label }}",
            "json_attributes_topic": topics.state(name),
            "json_attributes_template": "{{ {'score': value_json.score} | tojson }}",
            "icon": "mdi:label-outline",
        }),
    );
    add(
        format!("{name}_prediction"),
        "event",
        format!("{name} prediction"),
        json!({
            "state_topic": topics.prediction(name),
            "event_types": ["prediction"],
            "value_template": "{{ {'event_type': 'prediction', 'label': value_json.label, 'score': value_json.score, 'capture_id': value_json.capture_id} | tojson }}",
        }),
    );
    add(
        format!("{name}_last_seen"),
        "sensor",
        format!("{name} last seen"),
        json!({
            "device_class": "timestamp",
            "state_topic": topics.prediction(name),
            "value_template": "{{ (value_json.ts / 1000) | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false) }}",
            "entity_category": "diagnostic",
        }),
    );
    let scope = TeachScope::Pipeline(name);
    // "door label" is the stable-state sensor's name: these are "door label to teach" and
    // "door new label to teach".
    label_entities(
        add,
        topics,
        name,
        scope,
        &format!("{name} label to teach"),
        &p.labels,
    );
    button(
        add,
        format!("{name}_teach_now"),
        format!("{name} teach now"),
        topics.teach_press(scope),
        "teach",
        "mdi:school-outline",
    );
    button(
        add,
        format!("{name}_wrong"),
        format!("{name} that was wrong"),
        topics.teach_press(scope),
        "wrong",
        "mdi:close-octagon-outline",
    );
}

fn model_entities(add: &mut Add<'_>, topics: &Topics, m: &ModelEntities<'_>) {
    let name = m.name;
    add(
        format!("{name}_version"),
        "sensor",
        format!("{name} model version"),
        json!({
            "state_topic": topics.model_info(name),
            "value_template": "{{ value_json.version }}",
            "json_attributes_topic": topics.model_info(name),
            "json_attributes_template": "{{ {'classes': value_json.classes, 'parent': value_json.parent, 'samples_per_class': value_json.samples_per_class, 'provisional': value_json.provisional} | tojson }}",
            "entity_category": "diagnostic",
        }),
    );
    add(
        format!("{name}_verdict"),
        "sensor",
        format!("{name} last verdict"),
        json!({
            "state_topic": topics.model_verdict(name),
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": topics.model_verdict(name),
            "json_attributes_template": "{{ {'kind': value_json.kind, 'reason': value_json.reason, 'version': value_json.version, 'unserved': value_json.unserved} | tojson }}",
            "icon": "mdi:scale-balance",
        }),
    );
    add(
        format!("{name}_versions"),
        "select",
        format!("{name} serve version"),
        json!({
            "command_topic": topics.model_cmd(name),
            "command_template": "promote {{ value }}",
            "options": m.versions.iter().map(u32::to_string).collect::<Vec<_>>(),
            "state_topic": topics.model_info(name),
            "value_template": "{{ value_json.version }}",
            "entity_category": "config",
            "icon": "mdi:history",
        }),
    );
    // The fleet's class offers waiting for a person (policy `ask`): "update available" with
    // the oldest one; install = `fleet install` (it is judged by this device's gate).
    add(
        format!("{name}_fleet_offer"),
        "update",
        format!("{name} class offer"),
        json!({
            "state_topic": topics.model_offers(name),
            "value_template": concat!(
                "{% set o = value_json.offers %}",
                "{{ {'installed_version': 'v' ~ value_json.version, ",
                "'latest_version': ('`' ~ o[0].label ~ '` from ' ~ o[0].origin) if o else 'v' ~ value_json.version, ",
                "'title': ('new class `' ~ o[0].label ~ '` from `' ~ o[0].origin ~ '`') if o else 'no class offer', ",
                "'release_summary': (o | length) ~ ' offer(s) waiting; installing one teaches it here only if the gate of this device passes'} | tojson }}"
            ),
            "command_topic": topics.model_cmd(name),
            "payload_install": "fleet install",
            "icon": "mdi:account-group",
        }),
    );
    let cmd = topics.model_cmd(name);
    button(
        add,
        format!("{name}_fleet_skip"),
        format!("{name} skip class offer"),
        cmd.clone(),
        "fleet skip",
        "mdi:close-circle-outline",
    );
    button(
        add,
        format!("{name}_adapt"),
        format!("{name} adapt"),
        cmd.clone(),
        "adapt",
        "mdi:school",
    );
    button(
        add,
        format!("{name}_rollback"),
        format!("{name} rollback"),
        cmd.clone(),
        "rollback",
        "mdi:undo",
    );
    button(
        add,
        format!("{name}_shipped"),
        format!("{name} back to shipped"),
        cmd,
        "promote 0",
        "mdi:restore",
    );
}

fn request_entities(add: &mut Add<'_>, topics: &Topics, labels: &[String]) {
    // The latest label request (its guesses and capture id as attributes) and its
    // thumbnail.
    add(
        "label_request".into(),
        "sensor",
        "label request".into(),
        json!({
            "state_topic": topics.label_request(),
            "value_template": "{{ value_json.candidates[0].label if value_json.candidates else 'unknown' }}",
            "json_attributes_topic": topics.label_request(),
            "json_attributes_template": "{{ {'request_id': value_json.request_id, 'pipeline': value_json.pipeline, 'model': value_json.model, 'capture_id': value_json.capture_id, 'candidates': value_json.candidates, 'expires': value_json.expires} | tojson }}",
            "icon": "mdi:help-circle-outline",
        }),
    );
    add(
        "label_request_image".into(),
        "image",
        "label request image".into(),
        json!({
            "image_topic": topics.label_request_thumbnail(),
            "image_encoding": "b64",
            "content_type": "image/png",
        }),
    );
    label_entities(
        add,
        topics,
        "request",
        TeachScope::Request,
        "label request label",
        labels,
    );
    button(
        add,
        "request_answer".into(),
        "label request answer".into(),
        topics.teach_press(TeachScope::Request),
        "answer",
        "mdi:check-bold",
    );
    add(
        "teach_status".into(),
        "sensor",
        "teaching".into(),
        json!({
            "state_topic": topics.teach_status(),
            "value_template": "{{ value_json.message[:255] }}",
            "json_attributes_topic": topics.teach_status(),
            "json_attributes_template": "{{ {'ok': value_json.ok, 'scope': value_json.scope, 'ts': value_json.ts} | tojson }}",
            "icon": "mdi:school-outline",
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn sample() -> (String, Value) {
        let t = Topics::new("lsskd", "pi4", "homeassistant");
        let pipelines = [
            PipelineEntities {
                name: "door",
                labels: labels(&["bag", "coat"]),
            },
            PipelineEntities {
                name: "kitchen",
                labels: labels(&["yes", "no"]),
            },
        ];
        let models = [
            ModelEntities {
                name: "vision",
                labels: labels(&["bag", "coat"]),
                versions: vec![0, 3],
            },
            ModelEntities {
                name: "audio",
                labels: labels(&["yes", "no", "bag"]),
                versions: vec![0],
            },
        ];
        payload(&t, "pi4", &pipelines, &models).expect("on")
    }

    #[test]
    fn every_component_has_a_stable_unique_id_and_the_daemons_topics() {
        let (topic, body) = sample();
        assert_eq!(topic, "homeassistant/device/pi4/config");
        let cmps = body["cmps"].as_object().expect("cmps");
        assert_eq!(cmps.len(), 2 * 7 + 2 * 8 + 6);
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
        assert_eq!(cmps["vision_shipped"]["payload_press"], "promote 0");
        // The fleet's class offers: an update entity whose install is `fleet install`.
        assert_eq!(cmps["vision_fleet_offer"]["p"], "update");
        assert_eq!(
            cmps["vision_fleet_offer"]["state_topic"],
            "lsskd/pi4/model/vision/offers"
        );
        assert_eq!(
            cmps["vision_fleet_offer"]["payload_install"],
            "fleet install"
        );
        assert_eq!(body["availability_topic"], "lsskd/pi4/status");
        // Teaching: a pipeline's select and text set its label, its buttons press.
        assert_eq!(cmps["door_teach_label"]["options"], json!(["bag", "coat"]));
        // No two entities of the device share a name (the stable-state sensor is "door label").
        let mut names: Vec<&str> = cmps
            .values()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "names repeat: {names:?}");
        assert_eq!(
            cmps["door_teach_new_label"]["name"],
            "door new label to teach"
        );
        assert_eq!(
            cmps["request_teach_new_label"]["name"],
            "label request new label"
        );
        assert_eq!(
            cmps["door_teach_new_label"]["command_topic"],
            "lsskd/pi4/teach/pipeline/door/set"
        );
        assert_eq!(
            cmps["door_wrong"]["command_topic"],
            "lsskd/pi4/teach/pipeline/door/press"
        );
        assert_eq!(cmps["door_teach_now"]["payload_press"], "teach");
        // The request's labels are every model's, once each; versions are strings.
        assert_eq!(
            cmps["request_teach_label"]["options"],
            json!(["bag", "coat", "no", "yes"])
        );
        assert_eq!(cmps["vision_versions"]["options"], json!(["0", "3"]));
        assert_eq!(
            cmps["vision_versions"]["command_template"],
            "promote {{ value }}"
        );
        // The same names give the same ids (across restarts and versions).
        assert_eq!(sample().1, body);
        assert!(payload(&Topics::new("lsskd", "pi4", ""), "pi4", &[], &[]).is_none());
    }
}
