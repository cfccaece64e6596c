//! Layered settings: embedded `config/default.toml` → `/etc/lsskd-edge/config.toml` or
//! `--config FILE` → `LSSKD_EDGE__SECTION__KEY` environment variables.
//!
//! Loading reports every problem at once (type errors per section, unknown keys, each
//! section's checks of [`Settings::problems`] (pure) and the filesystem lookups of
//! [`Settings::path_problems`]; both in `check`), each naming its key. Each part of the
//! daemon receives only its own section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod check;
mod stream_url;

pub use stream_url::{StreamUrl, redact};

/// The embedded defaults; they document every key.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
/// Read when `--config` is not given and the file exists.
pub const SYSTEM_CONFIG: &str = "/etc/lsskd-edge/config.toml";
/// Environment prefix; `__` separates levels.
pub const ENV_PREFIX: &str = "LSSKD_EDGE";

/// All settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub device_id: String,
    pub state_dir: PathBuf,
    pub models_dir: PathBuf,
    pub mqtt: MqttSettings,
    pub publish: PublishSettings,
    pub adapt: AdaptSettings,
    pub fleet: FleetSettings,
    pub pipeline: Vec<PipelineSettings>,
}

/// `[fleet]`: class offers between devices of a model family (`daemon::fleet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// Public keys, `ed25519:<base64url>` (`crate::fleet::PublicKey`).
    pub trusted: Vec<String>,
    /// Offer the labels this device learns from its own samples to the fleet.
    pub share: bool,
    /// What an offer from a trusted device does, for models without their own entry.
    pub policy: FleetPolicy,
    /// Per model, in place of `policy`.
    pub policies: BTreeMap<String, FleetPolicy>,
    /// Days an offer stays valid after it is made.
    pub offer_days: u32,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            trusted: Vec::new(),
            share: false,
            policy: FleetPolicy::Ask,
            policies: BTreeMap::new(),
            offer_days: 30,
        }
    }
}

impl FleetSettings {
    /// The policy of `model`.
    pub fn policy_of(&self, model: &str) -> FleetPolicy {
        self.policies.get(model).copied().unwrap_or(self.policy)
    }
}

/// What a device does with a verified offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetPolicy {
    /// Build the candidate and judge it with this device's own gate; adopt it if it passes.
    Auto,
    /// Keep it until a person says `fleet install` (or `fleet skip`).
    Ask,
    /// Refuse it (counted and logged).
    Never,
}

/// `[adapt]`: on-device learning from labelled samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptSettings {
    pub enabled: bool,
    pub max_payload_bytes: usize,
    pub sample_quota: usize,
    pub capture_ring: usize,
    /// Memory the capture ring of one pipeline may hold, MiB (native camera frames are
    /// large); the oldest captures leave first.
    pub capture_ring_mb: usize,
    pub min_shots: usize,
    pub auto_after: usize,
    pub cooldown_secs: u64,
    pub holdout_every: usize,
    pub budget_secs: u64,
    /// Fine-tune epochs; `None`: the model's recipe (`adapt::Recipe::for_model`).
    #[serde(default)]
    pub epochs: Option<usize>,
    pub min_new_accuracy: f64,
    pub max_old_drop: f64,
    /// The largest accuracy drop of any one shipped class whose losses go to a new label.
    pub max_class_drop: f64,
    pub rename_typicality: f64,
    /// Confidence of the gate's one-sided bounds (`adapt::gate::judge`).
    pub confidence: f64,
    pub keep_versions: usize,
    /// Label requests: a prediction is uncertain when the best class leads the second by
    /// less than `request_margin`, or its normalised entropy is above `request_entropy`.
    pub request_margin: f32,
    pub request_entropy: f32,
    /// At most this many requests an hour (0: none).
    pub requests_per_hour: usize,
    /// A request's capture is kept this long for the answer.
    pub request_ttl_secs: u64,
    /// "Teach now" (Home Assistant): the next this many captures of the pipeline are stored
    /// as samples of the label...
    pub teach_now_count: usize,
    /// ...at least this far apart, milliseconds.
    pub teach_now_spacing_ms: u64,
}

impl AdaptSettings {
    /// `[adapt]` of the built-in defaults (config/default.toml).
    pub fn defaults() -> AdaptSettings {
        config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.get::<AdaptSettings>("adapt"))
            .expect("config/default.toml has a valid [adapt]")
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub embedded_broker: bool,
    pub username: String,
    /// The password itself; better kept out of the settings file: see `password_file`.
    pub password: String,
    /// A file holding the password (its first line), e.g. mode 0600 or a systemd credential.
    /// With neither set, the systemd credential `mqtt-password` is used when the service has
    /// one (`LoadCredential=mqtt-password:…`, read from `$CREDENTIALS_DIRECTORY`).
    pub password_file: String,
    pub qos: Qos,
    pub topic_prefix: String,
    pub keep_alive_secs: u64,
    pub reconnect_max_secs: u64,
    pub outbox_capacity: usize,
    /// Messages from the broker (samples, commands) waiting for the daemon; beyond this a
    /// sample is refused on its ack topic ("busy") and counted.
    pub inbound_queue: usize,
    pub homeassistant_prefix: String,
    pub tls: TlsSettings,
}

/// MQTT delivery guarantee of what the daemon publishes and subscribes to. Written as 0, 1
/// or 2 in the file; any other number is refused when the settings load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl TryFrom<u8> for Qos {
    type Error = String;

    fn try_from(level: u8) -> Result<Self, String> {
        match level {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            2 => Ok(Qos::ExactlyOnce),
            n => Err(format!("qos {n} is not 0, 1 or 2")),
        }
    }
}

impl From<Qos> for u8 {
    fn from(q: Qos) -> u8 {
        q as u8
    }
}

/// `[mqtt.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub enabled: bool,
    /// CA bundle to verify the broker with (none: the system's roots).
    #[serde(
        default,
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (both or neither).
    #[serde(
        default,
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_cert: Option<PathBuf>,
    #[serde(
        default,
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key: Option<PathBuf>,
}

/// A path setting whose empty string (the defaults' way of saying "not set") is `None`.
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(PathBuf::from))
}

/// `[publish]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    pub min_interval_ms: u64,
    pub on_change_only: bool,
    pub debounce_count: usize,
    pub min_score: f32,
    pub top_k: usize,
    pub metrics_interval_secs: u64,
    /// A loopback address to serve the metrics on in Prometheus' text format (`GET
    /// /metrics`); empty: off.
    pub prometheus_listen: String,
}

/// One `[[pipeline]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    pub name: String,
    pub model: PathBuf,
    pub source: SourceSettings,
    /// The region of the camera's frame the model looks at (`{ x, y, width, height }` in
    /// the frame's pixels); every frame, sample and label request of the pipeline is cut
    /// to it before the model's own resize. None: the whole frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<crate::features::Region>,
}

/// Camera pixel formats that can be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    Mjpeg,
    Yuyv,
}

fn default_true() -> bool {
    true
}
fn default_window_ms() -> u64 {
    1000
}
fn default_hop_ms() -> u64 {
    250
}
fn default_interval_ms() -> u64 {
    500
}
fn default_device() -> String {
    "default".into()
}
fn default_stream_timeout_ms() -> u64 {
    10_000
}

/// How an RTSP stream's packets travel: interleaved in the TCP connection (the default:
/// it passes NAT and firewalls and loses nothing), or UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

impl RtspTransport {
    /// The value of ffmpeg's `-rtsp_transport`.
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

/// `[pipeline.source]`, selected by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSettings {
    Camera {
        device: String,
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
        #[serde(default)]
        fps: u32,
        #[serde(default)]
        format: Option<CameraFormat>,
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
    },
    Microphone {
        #[serde(default = "default_device")]
        device: String,
        #[serde(default = "default_window_ms")]
        window_ms: u64,
        #[serde(default = "default_hop_ms")]
        hop_ms: u64,
    },
    /// An IP camera's RTSP stream, decoded by an `ffmpeg` child process
    /// (`capture::rtsp`).
    Rtsp {
        /// `rtsp://[user:password@]host[:port]/path`; the credentials are redacted
        /// wherever the address is shown.
        url: StreamUrl,
        #[serde(default)]
        transport: RtspTransport,
        /// Frames are scaled to `width`×`height`; 0 and 0: the stream's own size.
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
        /// Minimum time between two frames handed to inference.
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
        /// No frame for this long (a stalled stream) is a failure: ffmpeg is stopped
        /// and the stream reopened.
        #[serde(default = "default_stream_timeout_ms")]
        timeout_ms: u64,
    },
    ReplayImages {
        path: PathBuf,
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
        #[serde(default = "default_true", rename = "loop")]
        looped: bool,
    },
    ReplayAudio {
        path: PathBuf,
        #[serde(default = "default_window_ms")]
        window_ms: u64,
        #[serde(default = "default_hop_ms")]
        hop_ms: u64,
        #[serde(default = "default_true", rename = "loop")]
        looped: bool,
    },
}

/// Settings could not be loaded; `problems` lists every one, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings ({} problem{}):\n  - {}", problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.join("\n  - "))]
pub struct SettingsError {
    pub problems: Vec<String>,
}

const TOP_LEVEL_KEYS: [&str; 8] = [
    "device_id",
    "state_dir",
    "models_dir",
    "mqtt",
    "publish",
    "adapt",
    "fleet",
    "pipeline",
];

/// Where the layers come from (files to read and environment to use).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`; `None`: [`SYSTEM_CONFIG`] if it exists.
    pub file: Option<PathBuf>,
    /// Environment variables to consider (normally `std::env::vars()`).
    pub env: Vec<(String, String)>,
}

/// systemd's credentials folder of the service (`LoadCredential=`).
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// The systemd credential the MQTT password is read from, when nothing else sets it.
pub const PASSWORD_CREDENTIAL: &str = "mqtt-password";

impl MqttSettings {
    /// Fill `password` from `password_file`, or from the systemd credential
    /// [`PASSWORD_CREDENTIAL`] in `credentials` when neither is set; a problem when both
    /// `password` and `password_file` are set or the file cannot be read.
    fn read_password(&mut self, credentials: Option<&Path>) -> Option<String> {
        let file = match (self.password.is_empty(), self.password_file.is_empty()) {
            (false, false) => {
                return Some(
                    "`mqtt.password_file`: set together with `mqtt.password`; keep one".into(),
                );
            }
            (false, true) => return None,
            (true, false) => PathBuf::from(&self.password_file),
            (true, true) => match credentials.map(|d| d.join(PASSWORD_CREDENTIAL)) {
                Some(c) if c.is_file() => c,
                _ => return None,
            },
        };
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                self.password = text.lines().next().unwrap_or_default().to_string();
                None
            }
            Err(e) => Some(format!(
                "`mqtt.password_file`: cannot read {}: {e}",
                file.display()
            )),
        }
    }
}

/// Whether every user of the machine may read `path` (Unix permission bits).
fn world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then_some(mode)
}

/// Warnings about how the settings keep their secrets (not problems: the daemon runs):
/// an MQTT password written in a settings file, or a password file, that every user of
/// the machine can read.
pub fn secret_warnings(sources: &Sources, settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    let file = sources
        .file
        .clone()
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()));
    if let Some(f) = file
        && let Some(mode) = world_readable(&f)
        && std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("mqtt")?.get("password")?.as_str().map(str::to_owned))
            .is_some_and(|p| !p.is_empty())
    {
        out.push(format!(
            "`mqtt.password` is written in {}, which every user can read (mode {mode:04o}): \
             move it to `mqtt.password_file` (mode 0600) or the systemd credential \
             `{PASSWORD_CREDENTIAL}`, or make the file 0640",
            f.display()
        ));
    }
    let pf = &settings.mqtt.password_file;
    if !pf.is_empty()
        && let Some(mode) = world_readable(Path::new(pf))
    {
        out.push(format!(
            "`mqtt.password_file` {pf} can be read by every user (mode {mode:04o}); make it 0600"
        ));
    }
    out
}

impl Sources {
    /// The process's real sources.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX) || k == CREDENTIALS_ENV)
                .collect(),
        }
    }
}

impl Settings {
    /// Merge the layers and check everything, each section ([`Settings::problems`]) and
    /// the paths the settings name ([`Settings::path_problems`]); all problems at once.
    pub fn load(sources: &Sources) -> Result<Settings, SettingsError> {
        let (merged, file) = merge(sources)?;
        let mut problems = unknown_keys(&merged);
        let Some(mut settings) = sections(&merged, &mut problems) else {
            return Err(SettingsError { problems });
        };
        if settings.models_dir.as_os_str().is_empty()
            && let Some(dir) = file.as_ref().and_then(|f| f.parent())
        {
            settings.models_dir = dir.to_path_buf();
        }
        problems.extend(settings.problems());
        problems.extend(settings.path_problems());
        let credentials = sources
            .env
            .iter()
            .find(|(k, _)| k == CREDENTIALS_ENV)
            .map(|(_, v)| PathBuf::from(v));
        problems.extend(settings.mqtt.read_password(credentials.as_deref()));
        if problems.is_empty() {
            Ok(settings.resolved())
        } else {
            Err(SettingsError { problems })
        }
    }

    /// Resolved once: an empty `device_id` becomes the host's name, and model and replay
    /// paths become absolute (so resolving them again changes nothing).
    fn resolved(mut self) -> Settings {
        self.device_id = self.device_id();
        let absolute = |s: &Settings, p: &Path| {
            let p = s.resolve(p);
            std::path::absolute(&p).unwrap_or(p)
        };
        let mut pipelines = std::mem::take(&mut self.pipeline);
        for pl in &mut pipelines {
            pl.model = absolute(&self, &pl.model);
            if let SourceSettings::ReplayImages { path, .. }
            | SourceSettings::ReplayAudio { path, .. } = &mut pl.source
            {
                *path = absolute(&self, path);
            }
        }
        self.pipeline = pipelines;
        self
    }

    /// A path relative to `models_dir` (absolute paths unchanged).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() || self.models_dir.as_os_str().is_empty() {
            path.to_path_buf()
        } else {
            self.models_dir.join(path)
        }
    }

    /// The model package folder of a pipeline.
    pub fn model_path(&self, pipeline: &PipelineSettings) -> PathBuf {
        self.resolve(&pipeline.model)
    }

    /// `device_id`, or the hostname when empty ([`Settings::load`] resolves it once, so
    /// loaded settings never ask the system again).
    pub fn device_id(&self) -> String {
        if self.device_id.is_empty() {
            let host = gethostname::gethostname().to_string_lossy().to_string();
            let clean: String = host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect();
            if clean.is_empty() {
                "lsskd-edge".into()
            } else {
                clean
            }
        } else {
            self.device_id.clone()
        }
    }

    /// The merged settings as TOML (passwords and stream credentials masked).
    pub fn to_toml(&self) -> String {
        let mut masked = self.clone();
        if !masked.mqtt.password_file.is_empty() {
            // Read from the file; the file is what the settings say.
            masked.mqtt.password.clear();
        } else if !masked.mqtt.password.is_empty() {
            masked.mqtt.password = "********".into();
        }
        for pl in &mut masked.pipeline {
            if let SourceSettings::Rtsp { url, .. } = &mut pl.source {
                *url = StreamUrl::new(url.to_string());
            }
        }
        toml::to_string_pretty(&masked)
            .unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// The layers merged: embedded defaults, the settings file (`--config`, or
/// [`SYSTEM_CONFIG`] when it exists; returned too), the environment.
fn merge(sources: &Sources) -> Result<(config::Config, Option<PathBuf>), SettingsError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    let file = match &sources.file {
        Some(f) => Some(f.clone()),
        None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
    };
    if let Some(f) = &file {
        if !f.exists() {
            return Err(SettingsError {
                problems: vec![format!("{}: configuration file not found", f.display())],
            });
        }
        builder =
            builder.add_source(config::File::from(f.as_path()).format(config::FileFormat::Toml));
    }
    let env: config::Map<String, String> = sources.env.iter().cloned().collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let merged = builder.build().map_err(|e| SettingsError {
        problems: vec![match &file {
            Some(f) => format!("{}: {e}", f.display()),
            None => e.to_string(),
        }],
    })?;
    Ok((merged, file))
}

/// Top-level keys that are no setting.
fn unknown_keys(merged: &config::Config) -> Vec<String> {
    let Ok(table) = merged
        .clone()
        .try_deserialize::<config::Map<String, config::Value>>()
    else {
        return Vec::new();
    };
    let known: BTreeSet<&str> = TOP_LEVEL_KEYS.into_iter().collect();
    table
        .keys()
        .filter(|key| !known.contains(key.as_str()))
        .map(|key| format!("`{key}`: unknown setting"))
        .collect()
}

/// Each section deserialized; `None` when any failed (every failure in `problems`).
fn sections(merged: &config::Config, problems: &mut Vec<String>) -> Option<Settings> {
    fn get<T: serde::de::DeserializeOwned>(
        c: &config::Config,
        key: &str,
        problems: &mut Vec<String>,
    ) -> Option<T> {
        c.get::<T>(key)
            .map_err(|e| problems.push(format!("`{key}`: {e}")))
            .ok()
    }
    let device_id = get::<String>(merged, "device_id", problems);
    let state_dir = get::<PathBuf>(merged, "state_dir", problems);
    let models_dir = get::<PathBuf>(merged, "models_dir", problems);
    let mqtt = get::<MqttSettings>(merged, "mqtt", problems);
    let publish = get::<PublishSettings>(merged, "publish", problems);
    let adapt = get::<AdaptSettings>(merged, "adapt", problems);
    let fleet = get::<FleetSettings>(merged, "fleet", problems);
    let pipeline = pipelines(merged, problems);
    Some(Settings {
        device_id: device_id?,
        state_dir: state_dir?,
        models_dir: models_dir?,
        mqtt: mqtt?,
        publish: publish?,
        adapt: adapt?,
        fleet: fleet?,
        pipeline: pipeline?,
    })
}

/// Every `[[pipeline]]` deserialized; `None` when any failed (each failure in `problems`).
fn pipelines(merged: &config::Config, problems: &mut Vec<String>) -> Option<Vec<PipelineSettings>> {
    let values = match merged.get::<Vec<config::Value>>("pipeline") {
        Ok(values) => values,
        Err(e) => {
            problems.push(format!("`pipeline`: {e}"));
            return None;
        }
    };
    let mut list = Some(Vec::new());
    for (i, v) in values.into_iter().enumerate() {
        match v.try_deserialize::<PipelineSettings>() {
            Ok(p) => {
                if let Some(list) = list.as_mut() {
                    list.push(p)
                }
            }
            Err(e) => {
                problems.push(format!("`pipeline[{i}]`: {e}"));
                list = None;
            }
        }
    }
    list
}

/// `[A-Za-z0-9_-]{1,max}`: safe as one MQTT topic level.
pub fn is_topic_level(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        toml: Option<&str>,
        env: &[(&str, &str)],
    ) -> (Result<Settings, SettingsError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = toml.map(|t| {
            let f = dir.path().join("config.toml");
            std::fs::write(&f, t).expect("write");
            f
        });
        let sources = Sources {
            file,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        (Settings::load(&sources), dir)
    }

    fn fake_package(dir: &Path, name: &str) {
        std::fs::create_dir_all(dir.join(name)).expect("mkdir");
        std::fs::write(dir.join(name).join("manifest.json"), "{}").expect("write");
    }

    #[test]
    fn embedded_defaults_load_and_validate() {
        let (s, _d) = load(None, &[]);
        let s = s.expect("defaults are valid");
        assert_eq!(s.mqtt.port, 1883);
        assert_eq!(s.mqtt.topic_prefix, "lsskd");
        assert!(s.pipeline.is_empty());
        assert!(!s.device_id().is_empty());
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let (s, _d) = load(
            Some("[mqtt]\nport = 2000\nqos = 0\n"),
            &[("LSSKD_EDGE__MQTT__PORT", "18830")],
        );
        let s = s.expect("valid");
        assert_eq!(s.mqtt.port, 18830, "env wins");
        assert_eq!(s.mqtt.qos, Qos::AtMostOnce, "file wins over defaults");
        assert_eq!(s.mqtt.keep_alive_secs, 30, "defaults fill the rest");
    }

    #[test]
    fn fine_tune_epochs_default_to_the_recipe_and_an_override_must_train() {
        let (s, _d) = load(None, &[]);
        assert_eq!(
            s.expect("defaults").adapt.epochs,
            None,
            "each model's recipe"
        );
        let (s, _d) = load(Some("[adapt]\nepochs = 4\n"), &[]);
        assert_eq!(s.expect("valid").adapt.epochs, Some(4));
        let (s, _d) = load(Some("[adapt]\nepochs = 0\n"), &[]);
        let text = s.expect_err("0 epochs").to_string();
        assert!(
            text.contains("`adapt.epochs`: must be at least 1"),
            "{text}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let toml = r#"
device_id = "bad/id"
colour = "blue"
[mqtt]
topic_prefix = "a#b"
[publish]
min_score = 2.0
[[pipeline]]
name = "cam"
model = "missing-model"
[pipeline.source]
kind = "replay_audio"
path = "nowhere"
window_ms = 100
hop_ms = 200
[[pipeline]]
name = "cam"
model = "missing-model"
[pipeline.source]
kind = "microphone"
"#;
        let (s, _d) = load(Some(toml), &[]);
        let err = s.expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "`device_id`",
            "`colour`: unknown setting",
            "`mqtt.topic_prefix`",
            "`publish.min_score`",
            "`pipeline[0].model`",
            "`pipeline[0].source.path`",
            "`pipeline[0].source.hop_ms`",
            "`pipeline[1].name`: `cam` is used by another pipeline",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        assert!(err.problems.len() >= 9);
    }

    #[test]
    fn type_errors_in_several_sections_are_all_reported() {
        let toml =
            "[mqtt]\nport = \"lots\"\n[publish]\ntop_k = \"three\"\n[[pipeline]]\nname = \"x\"\n";
        let (s, _d) = load(Some(toml), &[]);
        let err = s.expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("`mqtt`") && text.contains("`publish`") && text.contains("`pipeline[0]`"),
            "{text}"
        );
    }

    #[test]
    fn the_prometheus_endpoint_is_loopback_only() {
        let (s, _d) = load(
            Some("[publish]\nprometheus_listen = \"0.0.0.0:9464\"\n"),
            &[],
        );
        let text = s.expect_err("not loopback").to_string();
        assert!(text.contains("`publish.prometheus_listen`"), "{text}");
        let (s, _d) = load(
            Some("[publish]\nprometheus_listen = \"127.0.0.1:9464\"\n"),
            &[],
        );
        assert_eq!(
            s.expect("loopback").publish.prometheus_listen,
            "127.0.0.1:9464"
        );
    }

    #[test]
    fn an_out_of_range_qos_is_refused_not_taken_for_exactly_once() {
        let (s, _d) = load(Some("[mqtt]\nqos = 7\n"), &[]);
        let text = s.expect_err("qos 7").to_string();
        assert!(
            text.contains("`mqtt`") && text.contains("qos 7 is not 0, 1 or 2"),
            "{text}"
        );
        let (s, _d) = load(Some("[mqtt]\nqos = 2\n"), &[]);
        assert_eq!(s.expect("qos 2").mqtt.qos, Qos::ExactlyOnce);
    }

    #[test]
    fn relative_model_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_package(dir.path(), "vision");
        std::fs::create_dir_all(dir.path().join("frames")).expect("mkdir");
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[[pipeline]]\nname = \"cam\"\nmodel = \"vision\"\n[pipeline.source]\nkind = \"replay_images\"\npath = \"frames\"\n",
        )
        .expect("write");
        let s = Settings::load(&Sources {
            file: Some(f),
            env: vec![],
        })
        .expect("valid");
        assert_eq!(s.model_path(&s.pipeline[0]), dir.path().join("vision"));
        assert!(matches!(
            s.pipeline[0].source,
            SourceSettings::ReplayImages {
                interval_ms: 500,
                looped: true,
                ..
            }
        ));
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Settings::load(&Sources {
            file: Some("/nope/config.toml".into()),
            env: vec![],
        })
        .expect_err("missing");
        assert!(err.to_string().contains("/nope/config.toml"));
    }

    #[test]
    fn print_config_masks_the_password() {
        let (s, _d) = load(
            Some("[mqtt]\nusername = \"u\"\npassword = \"secret\"\n"),
            &[],
        );
        let text = s.expect("valid").to_toml();
        assert!(!text.contains("secret") && text.contains("********"));
    }

    #[test]
    fn an_rtsp_source_loads_with_defaults_and_print_config_hides_its_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_package(dir.path(), "vision");
        let pipeline = |extra: &str| {
            format!(
                "models_dir = \"{}\"\n[[pipeline]]\nname = \"gate\"\nmodel = \"vision\"\n\
                 [pipeline.source]\nkind = \"rtsp\"\n\
                 url = \"rtsp://admin:hunter22@10.0.0.5:554/h264\"\n{extra}",
                dir.path().display()
            )
        };
        let (s, _d) = load(Some(&pipeline("")), &[]);
        let s = s.expect("valid");
        let SourceSettings::Rtsp {
            url,
            transport,
            width,
            interval_ms,
            timeout_ms,
            ..
        } = &s.pipeline[0].source
        else {
            panic!("not rtsp: {:?}", s.pipeline[0].source);
        };
        assert_eq!(url.expose(), "rtsp://admin:hunter22@10.0.0.5:554/h264");
        assert_eq!(
            (*transport, *width, *interval_ms, *timeout_ms),
            (RtspTransport::Tcp, 0, 500, 10_000)
        );
        let shown = format!("{}\n{:?}", s.to_toml(), s.pipeline[0]);
        assert!(
            !shown.contains("hunter22") && !shown.contains("admin"),
            "{shown}"
        );
        assert!(shown.contains("rtsp://***@10.0.0.5:554/h264"), "{shown}");

        let (s, _d) = load(Some(&pipeline("transport = \"quic\"\n")), &[]);
        let text = s.expect_err("unknown transport").to_string();
        assert!(
            text.contains("`pipeline[0]`") && text.contains("quic") && !text.contains("hunter22"),
            "{text}"
        );
    }

    #[test]
    fn the_password_comes_from_its_file_or_the_systemd_credential() {
        let secrets = tempfile::tempdir().expect("tempdir");
        let file = secrets.path().join("pw");
        std::fs::write(&file, "from-file\nignored\n").expect("write");
        let toml = format!(
            "[mqtt]\nusername = \"u\"\npassword_file = \"{}\"\n",
            file.display()
        );
        let (s, _d) = load(Some(&toml), &[]);
        let s = s.expect("valid");
        assert_eq!(s.mqtt.password, "from-file", "its first line");
        assert!(!s.to_toml().contains("from-file"), "not printed");

        // Neither set: the service's credential `mqtt-password`, when it has one.
        std::fs::write(secrets.path().join(PASSWORD_CREDENTIAL), "from-systemd").expect("w");
        let creds = secrets.path().to_string_lossy().to_string();
        let (s, _d) = load(
            Some("[mqtt]\nusername = \"u\"\n"),
            &[(CREDENTIALS_ENV, &creds)],
        );
        assert_eq!(s.expect("valid").mqtt.password, "from-systemd");
        let (s, _d) = load(
            Some("[mqtt]\nusername = \"u\"\npassword = \"inline\"\n"),
            &[(CREDENTIALS_ENV, &creds)],
        );
        assert_eq!(s.expect("valid").mqtt.password, "inline", "set: kept");

        // Both, or a file that is not there: a problem naming the key.
        let both = format!("{toml}password = \"x\"\n");
        let err = load(Some(&both), &[]).0.expect_err("both set");
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("`mqtt.password_file`")),
            "{err:?}"
        );
        let (err, _d) = load(
            Some("[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n"),
            &[],
        );
        let err = err.expect_err("missing file");
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("`mqtt.password_file`: cannot read /nonexistent/pw")),
            "{err:?}"
        );
    }

    #[test]
    fn a_password_in_a_settings_file_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("config.toml");
        std::fs::write(&f, "[mqtt]\nusername = \"u\"\npassword = \"secret\"\n").expect("w");
        let sources = Sources {
            file: Some(f.clone()),
            env: Vec::new(),
        };
        let mode = |m: u32| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        mode(0o644);
        let settings = Settings::load(&sources).expect("valid");
        let w = secret_warnings(&sources, &settings);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("every user can read (mode 0644)"), "{w:?}");
        mode(0o640);
        assert!(secret_warnings(&sources, &settings).is_empty());
        // No password in the file: nothing to warn about, whatever its mode.
        std::fs::write(&f, "[mqtt]\nusername = \"u\"\n").expect("w");
        mode(0o644);
        assert!(secret_warnings(&sources, &settings).is_empty());
    }
}
