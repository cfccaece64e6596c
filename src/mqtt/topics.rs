//! The MQTT topic tree (DESIGN.md "MQTT surface"), built in one place.

/// Topic builder for one device: `<prefix>/<device>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    device: String,
    homeassistant_prefix: String,
}

impl Topics {
    pub fn new(prefix: &str, device: &str, homeassistant_prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            device: device.to_string(),
            homeassistant_prefix: homeassistant_prefix.to_string(),
        }
    }

    fn at(&self, rest: &str) -> String {
        format!("{}/{}/{rest}", self.prefix, self.device)
    }

    /// Retained; Last Will `offline`.
    pub fn status(&self) -> String {
        self.at("status")
    }

    pub fn prediction(&self, pipeline: &str) -> String {
        self.at(&format!("{pipeline}/prediction"))
    }

    /// Retained, debounced stable label.
    pub fn state(&self, pipeline: &str) -> String {
        self.at(&format!("{pipeline}/state"))
    }

    /// The latest stable state of every pipeline, on change.
    pub fn scene(&self) -> String {
        self.at("scene")
    }

    pub fn model_info(&self, model: &str) -> String {
        self.at(&format!("model/{model}/info"))
    }

    pub fn model_cmd(&self, model: &str) -> String {
        self.at(&format!("model/{model}/cmd"))
    }

    /// Retained: the class offers of the fleet waiting for `fleet install` (policy `ask`).
    pub fn model_offers(&self, model: &str) -> String {
        self.at(&format!("model/{model}/offers"))
    }

    /// The daemon's answer to the `versions` command (not retained).
    pub fn model_versions(&self, model: &str) -> String {
        self.at(&format!("model/{model}/versions"))
    }

    /// The daemon's answer to the `samples` command (not retained).
    pub fn samples_list(&self, model: &str) -> String {
        self.at(&format!("samples/{model}/list"))
    }

    pub fn samples_add(&self, model: &str) -> String {
        self.at(&format!("samples/{model}/add"))
    }

    pub fn samples_ack(&self, model: &str) -> String {
        self.at(&format!("samples/{model}/ack"))
    }

    pub fn label_request(&self) -> String {
        self.at("label_request")
    }

    /// Retained: the latest request's thumbnail, base64 PNG.
    pub fn label_request_thumbnail(&self) -> String {
        self.at("label_request/thumbnail")
    }

    pub fn metrics(&self) -> String {
        self.at("metrics")
    }

    pub fn training_state(&self) -> String {
        self.at("training/state")
    }

    /// Retained: the last finished trainer job of `model` (its verdict and reason).
    pub fn model_verdict(&self, model: &str) -> String {
        self.at(&format!("model/{model}/verdict"))
    }

    fn teach(&self, scope: TeachScope<'_>, leaf: &str) -> String {
        match scope {
            TeachScope::Request => self.at(&format!("teach/request/{leaf}")),
            TeachScope::Pipeline(p) => self.at(&format!("teach/pipeline/{p}/{leaf}")),
        }
    }

    /// Teaching from Home Assistant: the label picked (a select) or typed (a text) for a
    /// scope.
    pub fn teach_set(&self, scope: TeachScope<'_>) -> String {
        self.teach(scope, "set")
    }

    /// Retained: the label a scope's next answer, "teach now" or correction stores.
    pub fn teach_label(&self, scope: TeachScope<'_>) -> String {
        self.teach(scope, "label")
    }

    /// A scope's buttons: `answer` (the label request), `teach` and `wrong` (a pipeline).
    pub fn teach_press(&self, scope: TeachScope<'_>) -> String {
        self.teach(scope, "press")
    }

    /// Retained: what the last teaching action did (or why it did nothing).
    pub fn teach_status(&self) -> String {
        self.at("teach/status")
    }

    /// What the daemon subscribes to for teaching (the command topics of every scope).
    pub fn teach_commands(&self) -> [String; 4] {
        [
            self.teach_set(TeachScope::Request),
            self.teach_press(TeachScope::Request),
            self.teach_set(TeachScope::Pipeline("+")),
            self.teach_press(TeachScope::Pipeline("+")),
        ]
    }

    /// Wildcard for everything the device publishes.
    pub fn all(&self) -> String {
        self.at("#")
    }

    /// Every prediction of every device under `prefix` (for `watch`).
    pub fn all_predictions(prefix: &str) -> String {
        format!("{prefix}/+/+/prediction")
    }

    /// Home Assistant device discovery.
    pub fn homeassistant_config(&self) -> Option<String> {
        (!self.homeassistant_prefix.is_empty()).then(|| {
            format!(
                "{}/device/{}/config",
                self.homeassistant_prefix, self.device
            )
        })
    }

    fn fleet(&self, family: &str, rest: &str) -> String {
        format!("{}/fleet/{family}/{rest}", self.prefix)
    }

    /// Retained: the signed envelope of `device`'s offer of `label` to the devices of a
    /// model family (the shipped model's digest).
    pub fn fleet_offer(&self, family: &str, device: &str, label: &str) -> String {
        self.fleet(family, &format!("offer/{device}/{label}"))
    }

    /// Retained: chunk `chunk` of part `part` of the offer with counter `counter`.
    pub fn fleet_part(&self, family: &str, device: &str, label: &str, at: PartAt) -> String {
        self.fleet(
            family,
            &format!(
                "part/{device}/{label}/{}/{}/{}",
                at.counter, at.part, at.chunk
            ),
        )
    }

    /// Every chunk this device published for its offers of `label` (to clear them).
    pub fn fleet_parts_of(&self, family: &str, label: &str) -> String {
        self.fleet(family, &format!("part/{}/{label}/#", self.device))
    }

    /// Retained: this device's verdict on `origin`'s offer of `label`.
    pub fn fleet_verdict(&self, family: &str, origin: &str, label: &str) -> String {
        self.fleet(family, &format!("verdict/{origin}/{label}/{}", self.device))
    }

    /// What a device of `family` subscribes to: the offers and their parts.
    pub fn fleet_subscriptions(&self, family: &str) -> [String; 2] {
        [self.fleet(family, "offer/#"), self.fleet(family, "part/#")]
    }

    /// Home Assistant's own status topic (re-announce when it says `online`).
    pub fn homeassistant_status(&self) -> Option<String> {
        (!self.homeassistant_prefix.is_empty())
            .then(|| format!("{}/status", self.homeassistant_prefix))
    }
}

/// Whom a teaching entity of Home Assistant speaks for: the device's label request, or
/// one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TeachScope<'a> {
    Request,
    Pipeline(&'a str),
}

/// What a topic of the tree is, parsed back (the inverse of the builders of [`Topics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    Status,
    Prediction { pipeline: &'a str },
    State { pipeline: &'a str },
    Scene,
    TrainingState,
    LabelRequest,
    ModelInfo { model: &'a str },
    ModelCmd { model: &'a str },
    SamplesAdd { model: &'a str },
    SamplesAck { model: &'a str },
    TeachSet { scope: TeachScope<'a> },
    TeachPress { scope: TeachScope<'a> },
}

/// Where a chunk sits in an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartAt {
    pub counter: u64,
    pub part: usize,
    pub chunk: usize,
}

/// A fleet topic `<prefix>/fleet/<family>/…` (one-level prefix), parsed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetTopic<'a> {
    Offer {
        family: &'a str,
        device: &'a str,
        label: &'a str,
    },
    Part {
        family: &'a str,
        device: &'a str,
        label: &'a str,
        at: PartAt,
    },
    Verdict {
        family: &'a str,
        origin: &'a str,
        label: &'a str,
        device: &'a str,
    },
}

/// A fleet topic parsed; `None` for anything else (numbers that do not parse included).
pub fn parse_fleet(topic: &str) -> Option<FleetTopic<'_>> {
    let levels: Vec<&str> = topic.split('/').collect();
    Some(match levels.as_slice() {
        [_, "fleet", family, "offer", device, label] => FleetTopic::Offer {
            family,
            device,
            label,
        },
        [
            _,
            "fleet",
            family,
            "part",
            device,
            label,
            counter,
            part,
            chunk,
        ] => FleetTopic::Part {
            family,
            device,
            label,
            at: PartAt {
                counter: counter.parse().ok()?,
                part: part.parse().ok()?,
                chunk: chunk.parse().ok()?,
            },
        },
        [_, "fleet", family, "verdict", origin, label, device] => FleetTopic::Verdict {
            family,
            origin,
            label,
            device,
        },
        _ => return None,
    })
}

/// A device topic `<prefix>/<device>/…` (one-level prefix) parsed into its device and kind;
/// `None` for anything else. `training/state` wins over a pipeline named `training`.
pub fn parse(topic: &str) -> Option<(&str, Topic<'_>)> {
    let levels: Vec<&str> = topic.split('/').collect();
    let kind = match levels.as_slice() {
        [_, _, "status"] => Topic::Status,
        [_, _, "scene"] => Topic::Scene,
        [_, _, "label_request"] => Topic::LabelRequest,
        [_, _, "training", "state"] => Topic::TrainingState,
        [_, _, pipeline, "prediction"] => Topic::Prediction { pipeline },
        [_, _, pipeline, "state"] => Topic::State { pipeline },
        [_, _, "model", model, "info"] => Topic::ModelInfo { model },
        [_, _, "model", model, "cmd"] => Topic::ModelCmd { model },
        [_, _, "samples", model, "add"] => Topic::SamplesAdd { model },
        [_, _, "samples", model, "ack"] => Topic::SamplesAck { model },
        [_, _, "teach", "request", "set"] => Topic::TeachSet {
            scope: TeachScope::Request,
        },
        [_, _, "teach", "request", "press"] => Topic::TeachPress {
            scope: TeachScope::Request,
        },
        [_, _, "teach", "pipeline", p, "set"] => Topic::TeachSet {
            scope: TeachScope::Pipeline(p),
        },
        [_, _, "teach", "pipeline", p, "press"] => Topic::TeachPress {
            scope: TeachScope::Pipeline(p),
        },
        _ => return None,
    };
    Some((levels[1], kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_topic_parses_back() {
        let t = Topics::new("lsskd", "pi4", "homeassistant");
        let cases = [
            (t.status(), Topic::Status),
            (t.prediction("door"), Topic::Prediction { pipeline: "door" }),
            (t.state("door"), Topic::State { pipeline: "door" }),
            (t.scene(), Topic::Scene),
            (t.training_state(), Topic::TrainingState),
            (t.label_request(), Topic::LabelRequest),
            (t.model_info("vision"), Topic::ModelInfo { model: "vision" }),
            (t.model_cmd("vision"), Topic::ModelCmd { model: "vision" }),
            (t.samples_add("audio"), Topic::SamplesAdd { model: "audio" }),
            (t.samples_ack("audio"), Topic::SamplesAck { model: "audio" }),
            (
                t.teach_set(TeachScope::Request),
                Topic::TeachSet {
                    scope: TeachScope::Request,
                },
            ),
            (
                t.teach_press(TeachScope::Pipeline("door")),
                Topic::TeachPress {
                    scope: TeachScope::Pipeline("door"),
                },
            ),
        ];
        for (topic, want) in cases {
            assert_eq!(parse(&topic), Some(("pi4", want)), "{topic}");
        }
        for other in [
            "lsskd/pi4",
            "lsskd/pi4/a/b/c/d",
            "homeassistant/status",
            "x/y/model/m/z",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn fleet_topics_parse_back_and_sit_beside_the_devices() {
        let t = Topics::new("lsskd", "garden", "homeassistant");
        let at = PartAt {
            counter: 7,
            part: 2,
            chunk: 0,
        };
        assert_eq!(
            t.fleet_offer("f00d", "porch", "cat"),
            "lsskd/fleet/f00d/offer/porch/cat"
        );
        assert_eq!(
            parse_fleet(&t.fleet_part("f00d", "porch", "cat", at)),
            Some(FleetTopic::Part {
                family: "f00d",
                device: "porch",
                label: "cat",
                at
            })
        );
        assert_eq!(
            parse_fleet(&t.fleet_verdict("f00d", "porch", "cat")),
            Some(FleetTopic::Verdict {
                family: "f00d",
                origin: "porch",
                label: "cat",
                device: "garden"
            })
        );
        assert_eq!(
            t.fleet_parts_of("f00d", "cat"),
            "lsskd/fleet/f00d/part/garden/cat/#"
        );
        assert_eq!(parse_fleet("lsskd/fleet/f/part/d/l/x/0/0"), None);
        assert_eq!(parse(&t.fleet_offer("f00d", "porch", "cat")), None);
    }

    #[test]
    fn topics_follow_the_design() {
        let t = Topics::new("lsskd", "pi4", "homeassistant");
        assert_eq!(t.status(), "lsskd/pi4/status");
        assert_eq!(t.prediction("door"), "lsskd/pi4/door/prediction");
        assert_eq!(t.state("door"), "lsskd/pi4/door/state");
        assert_eq!(t.scene(), "lsskd/pi4/scene");
        assert_eq!(t.model_info("vision"), "lsskd/pi4/model/vision/info");
        assert_eq!(t.samples_ack("audio"), "lsskd/pi4/samples/audio/ack");
        assert_eq!(
            t.homeassistant_config().as_deref(),
            Some("homeassistant/device/pi4/config")
        );
        assert_eq!(Topics::new("p", "d", "").homeassistant_config(), None);
        assert_eq!(Topics::all_predictions("lsskd"), "lsskd/+/+/prediction");
        assert_eq!(
            t.teach_label(TeachScope::Pipeline("door")),
            "lsskd/pi4/teach/pipeline/door/label"
        );
        assert_eq!(t.model_verdict("vision"), "lsskd/pi4/model/vision/verdict");
    }
}
