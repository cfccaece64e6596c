//! The checks of merged settings, every problem naming its key. Two kinds, kept apart:
//! each section's own `problems()` (pure: values and their relations, nothing read from
//! the system), and [`Settings::path_problems`] (the files and folders the settings name,
//! looked up on the filesystem). [`Settings::load`] runs both and reports every problem at
//! once; `validate` and the daemon's startup load settings that way.

use std::collections::BTreeSet;

use super::{
    AdaptSettings, MqttSettings, PublishSettings, Settings, SourceSettings, StreamUrl,
    is_topic_level,
};

impl Settings {
    /// Every section's semantic checks (top level, `[adapt]`, `[publish]`, `[mqtt]`, each
    /// `[[pipeline]]`), each naming its key. Pure: the filesystem is not consulted.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.device_id.is_empty() && !is_topic_level(&self.device_id, 64) {
            p.push(format!(
                "`device_id`: `{}` must match [A-Za-z0-9_-]{{1,64}}",
                self.device_id
            ));
        }
        p.extend(self.adapt.problems());
        p.extend(self.publish.problems());
        p.extend(self.mqtt.problems());
        for (i, k) in self.fleet.trusted.iter().enumerate() {
            if let Err(e) = k.parse::<crate::fleet::PublicKey>() {
                p.push(format!("`fleet.trusted[{i}]`: {e}"));
            }
        }
        if self.fleet.offer_days == 0 {
            p.push("`fleet.offer_days`: must be at least 1".into());
        }
        let mut names = BTreeSet::new();
        for (i, pl) in self.pipeline.iter().enumerate() {
            let at = format!("pipeline[{i}]");
            if !is_topic_level(&pl.name, 32) {
                p.push(format!(
                    "`{at}.name`: `{}` must match [A-Za-z0-9_-]{{1,32}}",
                    pl.name
                ));
            } else if !names.insert(pl.name.clone()) {
                p.push(format!(
                    "`{at}.name`: `{}` is used by another pipeline",
                    pl.name
                ));
            }
            p.extend(pl.source.problems(&at));
            if let Some(region) = &pl.region {
                p.extend(region_problem(&at, region, &pl.source));
            }
        }
        p
    }

    /// The paths the settings name, looked up on the filesystem: the TLS files (when TLS
    /// is on), each pipeline's model package and each replay source. Each naming its key.
    pub fn path_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let tls = &self.mqtt.tls;
        if tls.enabled {
            for (key, path) in [
                ("ca_file", &tls.ca_file),
                ("client_cert", &tls.client_cert),
                ("client_key", &tls.client_key),
            ] {
                if let Some(path) = path
                    && !path.is_file()
                {
                    p.push(format!(
                        "`mqtt.tls.{key}`: {} does not exist",
                        path.display()
                    ));
                }
            }
        }
        for (i, pl) in self.pipeline.iter().enumerate() {
            let model = self.model_path(pl);
            if !model.join("manifest.json").is_file() {
                p.push(format!(
                    "`pipeline[{i}].model`: {} is not a model package (no manifest.json)",
                    model.display()
                ));
            }
            if let SourceSettings::ReplayImages { path, .. }
            | SourceSettings::ReplayAudio { path, .. } = &pl.source
                && !self.resolve(path).exists()
            {
                p.push(format!(
                    "`pipeline[{i}].source.path`: {} does not exist",
                    self.resolve(path).display()
                ));
            }
            if let (Some(region), SourceSettings::ReplayImages { path, .. }) =
                (&pl.region, &pl.source)
                && let Some((w, h)) = first_image_size(&self.resolve(path))
                && let Err(e) = region.check(w, h)
            {
                p.push(format!("`pipeline[{i}].region`: {e} (the replay's frames)"));
            }
        }
        p
    }
}

/// A region's problem against its pipeline's source: only camera-like sources have one,
/// and it must lie inside a camera's configured resolution.
fn region_problem(
    at: &str,
    region: &crate::features::Region,
    source: &SourceSettings,
) -> Option<String> {
    match source {
        SourceSettings::Microphone { .. } | SourceSettings::ReplayAudio { .. } => Some(format!(
            "`{at}.region`: a region applies to camera frames, not to an audio source"
        )),
        SourceSettings::Camera { width, height, .. }
        | SourceSettings::Rtsp { width, height, .. }
            if *width > 0 && *height > 0 =>
        {
            region
                .check(*width, *height)
                .err()
                .map(|e| format!("`{at}.region`: {e} (`{at}.source` asks for {width}x{height})"))
        }
        _ => region
            .check(u32::MAX, u32::MAX)
            .err()
            .map(|e| format!("`{at}.region`: {e}")),
    }
}

/// The size of a replay's first frame (`path` a file, or a folder read in name order).
fn first_image_size(path: &std::path::Path) -> Option<(u32, u32)> {
    let file = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| image::ImageFormat::from_path(p).is_ok())
            .collect();
        files.sort();
        files.into_iter().next()?
    } else {
        path.to_path_buf()
    };
    image::image_dimensions(file).ok()
}

impl AdaptSettings {
    /// `[adapt]`'s checks: counts at least 1, fractions within 0..1.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (key, value) in [
            ("max_payload_bytes", self.max_payload_bytes),
            ("sample_quota", self.sample_quota),
            ("capture_ring", self.capture_ring),
            ("capture_ring_mb", self.capture_ring_mb),
            ("min_shots", self.min_shots),
            ("epochs", self.epochs.unwrap_or(1)),
            ("keep_versions", self.keep_versions),
            ("teach_now_count", self.teach_now_count),
        ] {
            if value == 0 {
                p.push(format!("`adapt.{key}`: must be at least 1"));
            }
        }
        if self.holdout_every < 2 {
            p.push(format!(
                "`adapt.holdout_every`: {} must be at least 2",
                self.holdout_every
            ));
        }
        for (key, value) in [
            ("min_new_accuracy", self.min_new_accuracy),
            ("max_old_drop", self.max_old_drop),
            ("max_class_drop", self.max_class_drop),
            ("rename_typicality", self.rename_typicality),
            ("request_margin", self.request_margin as f64),
            ("request_entropy", self.request_entropy as f64),
        ] {
            if !(0.0..=1.0).contains(&value) {
                p.push(format!("`adapt.{key}`: {value} is not within 0..1"));
            }
        }
        if !(0.5..1.0).contains(&self.confidence) {
            p.push(format!(
                "`adapt.confidence`: {} is not within 0.5..1 (e.g. 0.95)",
                self.confidence
            ));
        }
        p
    }
}

impl PublishSettings {
    /// `[publish]`'s checks (the Prometheus endpoint is loopback only).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let pl = &self.prometheus_listen;
        if !pl.is_empty()
            && !pl
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())
        {
            p.push(format!(
                "`publish.prometheus_listen`: `{pl}` is not a loopback address and port (e.g. 127.0.0.1:9464)"
            ));
        }
        if self.debounce_count == 0 {
            p.push("`publish.debounce_count`: must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            p.push(format!(
                "`publish.min_score`: {} is not within 0..1",
                self.min_score
            ));
        }
        if self.top_k == 0 {
            p.push("`publish.top_k`: must be at least 1".into());
        }
        p
    }
}

impl MqttSettings {
    /// `[mqtt]`'s checks, `[mqtt.tls]`'s included (its files are looked up by
    /// [`Settings::path_problems`]).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.trim().is_empty() {
            p.push("`mqtt.host`: must not be empty".into());
        }
        if self.port == 0 {
            p.push("`mqtt.port`: must be 1..65535".into());
        }
        if !is_topic_level(&self.topic_prefix, 64) {
            p.push(format!(
                "`mqtt.topic_prefix`: `{}` must match [A-Za-z0-9_-]{{1,64}}",
                self.topic_prefix
            ));
        }
        if !(5..=3600).contains(&self.keep_alive_secs) {
            p.push(format!(
                "`mqtt.keep_alive_secs`: {} is not within 5..3600",
                self.keep_alive_secs
            ));
        }
        for (key, value) in [
            ("reconnect_max_secs", self.reconnect_max_secs),
            ("outbox_capacity", self.outbox_capacity as u64),
            ("inbound_queue", self.inbound_queue as u64),
        ] {
            if value == 0 {
                p.push(format!("`mqtt.{key}`: must be at least 1"));
            }
        }
        if self.username.is_empty() && !self.password.is_empty() {
            p.push("`mqtt.password`: set without `mqtt.username`".into());
        }
        if self.tls.enabled {
            if self.embedded_broker {
                p.push("`mqtt.tls.enabled`: the embedded broker does not serve TLS".into());
            }
            if self.tls.client_cert.is_none() != self.tls.client_key.is_none() {
                p.push(
                    "`mqtt.tls.client_cert` and `mqtt.tls.client_key`: give both or neither".into(),
                );
            }
        }
        p
    }
}

impl SourceSettings {
    /// A pipeline's `source` checks; `at` is its key (`pipeline[i]`). Whether a replay
    /// path exists is [`Settings::path_problems`]'s question.
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        match self {
            SourceSettings::Camera {
                device,
                interval_ms,
                ..
            } => {
                if device.trim().is_empty() {
                    p.push(format!(
                        "`{at}.source.device`: must name a camera index or /dev/videoN"
                    ));
                }
                interval_checks(at, *interval_ms, &mut p);
            }
            SourceSettings::ReplayImages { interval_ms, .. } => {
                interval_checks(at, *interval_ms, &mut p)
            }
            SourceSettings::Rtsp {
                url,
                width,
                height,
                interval_ms,
                timeout_ms,
                ..
            } => {
                stream_checks(at, url, (*width, *height), *timeout_ms, &mut p);
                interval_checks(at, *interval_ms, &mut p);
            }
            SourceSettings::Microphone {
                window_ms, hop_ms, ..
            }
            | SourceSettings::ReplayAudio {
                window_ms, hop_ms, ..
            } => window_checks(at, *window_ms, *hop_ms, &mut p),
        }
        p
    }
}

/// An RTSP source: its address, frame size and stall timeout.
fn stream_checks(
    at: &str,
    url: &StreamUrl,
    (width, height): (u32, u32),
    timeout_ms: u64,
    p: &mut Vec<String>,
) {
    match url.scheme().as_deref() {
        Some("rtsp" | "rtsps") if url.expose().len() > "rtsp://".len() => {}
        _ => p.push(format!(
            "`{at}.source.url`: `{url}` is not an rtsp:// or rtsps:// address \
             (e.g. rtsp://user:password@192.168.1.20:554/stream1)"
        )),
    }
    if (width == 0) != (height == 0) {
        p.push(format!(
            "`{at}.source.width` and `{at}.source.height`: give both (scale to that size) \
             or neither (the stream's own size)"
        ));
    }
    if timeout_ms < MIN_STREAM_TIMEOUT_MS {
        p.push(format!(
            "`{at}.source.timeout_ms`: {timeout_ms} is under {MIN_STREAM_TIMEOUT_MS} \
             (connecting to a camera takes a moment)"
        ));
    }
}

/// The shortest stall timeout: ffmpeg needs about a second to connect and find the
/// stream's format.
const MIN_STREAM_TIMEOUT_MS: u64 = 2_000;

fn interval_checks(at: &str, interval_ms: u64, p: &mut Vec<String>) {
    if interval_ms == 0 {
        p.push(format!("`{at}.source.interval_ms`: must be at least 1"));
    }
}

fn window_checks(at: &str, window_ms: u64, hop_ms: u64, p: &mut Vec<String>) {
    if window_ms == 0 {
        p.push(format!("`{at}.source.window_ms`: must be at least 1"));
    }
    if hop_ms == 0 || hop_ms > window_ms {
        p.push(format!(
            "`{at}.source.hop_ms`: {hop_ms} must be within 1..=window_ms ({window_ms})"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PipelineSettings, Sources};
    use super::*;

    /// The embedded defaults with one replay pipeline and TLS files, all at paths that do
    /// not exist.
    fn settings_naming_missing_paths() -> Settings {
        let mut s = Settings::load(&Sources::default()).expect("the defaults are valid");
        s.models_dir = "/nonexistent/models".into();
        s.mqtt.tls.enabled = true;
        s.mqtt.tls.ca_file = Some("/nonexistent/ca.pem".into());
        s.pipeline.push(PipelineSettings {
            name: "replay".into(),
            model: "vision".into(),
            source: SourceSettings::ReplayImages {
                path: "frames".into(),
                interval_ms: 500,
                looped: true,
            },
            region: None,
        });
        s
    }

    #[test]
    fn section_checks_need_no_filesystem_and_path_checks_name_each_missing_path() {
        let s = settings_naming_missing_paths();
        assert_eq!(s.problems(), Vec::<String>::new(), "pure checks pass");
        let fs = s.path_problems().join("\n");
        for needle in [
            "`mqtt.tls.ca_file`: /nonexistent/ca.pem does not exist",
            "`pipeline[0].model`: /nonexistent/models/vision is not a model package",
            "`pipeline[0].source.path`: /nonexistent/models/frames does not exist",
        ] {
            assert!(fs.contains(needle), "missing {needle} in:\n{fs}");
        }
    }

    #[test]
    fn each_section_reports_its_own_keys() {
        let mut s = settings_naming_missing_paths();
        s.mqtt.inbound_queue = 0;
        s.mqtt.tls.client_cert = Some("/nonexistent/cert.pem".into());
        s.publish.top_k = 0;
        s.adapt.holdout_every = 1;
        s.fleet.trusted = vec![
            crate::fleet::DeviceKey::from_seed([1; 32])
                .public()
                .to_string(),
            "ssh-ed25519 AAAA".into(),
        ];
        s.pipeline[0].source = SourceSettings::ReplayAudio {
            path: "clips".into(),
            window_ms: 100,
            hop_ms: 0,
            looped: true,
        };
        assert_eq!(
            s.mqtt.problems(),
            [
                "`mqtt.inbound_queue`: must be at least 1",
                "`mqtt.tls.client_cert` and `mqtt.tls.client_key`: give both or neither",
            ]
        );
        assert_eq!(
            s.publish.problems(),
            ["`publish.top_k`: must be at least 1"]
        );
        assert_eq!(
            s.adapt.problems(),
            ["`adapt.holdout_every`: 1 must be at least 2"]
        );
        assert_eq!(
            s.pipeline[0].source.problems("pipeline[0]"),
            ["`pipeline[0].source.hop_ms`: 0 must be within 1..=window_ms (100)"]
        );
        let all = s.problems();
        assert!(
            all.contains(&"`fleet.trusted[1]`: `ssh-ed25519 AAAA` is not a device key: it must start with `ed25519:`".to_string()),
            "{all:?}"
        );
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn an_rtsp_source_needs_an_rtsp_address_a_whole_size_and_a_real_timeout() {
        let source = |url: &str, width, height, timeout_ms| SourceSettings::Rtsp {
            url: StreamUrl::new(url),
            transport: Default::default(),
            width,
            height,
            interval_ms: 200,
            timeout_ms,
        };
        let ok = source("rtsp://admin:hunter22@10.0.0.5:554/h264", 320, 240, 10_000);
        assert_eq!(ok.problems("pipeline[0]"), Vec::<String>::new());
        let bad = source("http://admin:hunter22@10.0.0.5/h264", 320, 0, 100);
        let p = bad.problems("pipeline[0]").join("\n");
        for needle in [
            "`pipeline[0].source.url`: `http://***@10.0.0.5/h264` is not an rtsp://",
            "`pipeline[0].source.width` and `pipeline[0].source.height`: give both",
            "`pipeline[0].source.timeout_ms`: 100 is under 2000",
        ] {
            assert!(p.contains(needle), "missing {needle} in:\n{p}");
        }
        assert!(!p.contains("hunter22") && !p.contains("admin"), "{p}");
    }
}
