//! `lsskd-edge samples list|export` (the device's sample store on disk) and
//! `lsskd-edge sample send` (publish labelled files to a device and wait for its acks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::mqtt::Topics;
use crate::mqtt::client::{self, Outbound};
use crate::samples::SampleStore;
use crate::samples::ingest::{Ack, AddRequest};
use crate::settings::{MqttSettings, Settings, Sources};

use super::BrokerArgs;

/// `lsskd-edge samples …`: the labelled samples stored on this device.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SamplesCommand {
    /// Sample counts per label, per model, as the running daemon reports them (the
    /// `samples` command over MQTT); `--local` reads the store itself (the daemon stopped).
    List {
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        model: Option<String>,
        /// Target device id (default: the settings' device id).
        #[arg(long)]
        device: Option<String>,
        /// Read the sample store on this machine instead of asking the daemon.
        #[arg(long)]
        local: bool,
        /// Seconds to wait for the daemon's answer.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Copy a model's samples to DIR/<split>/<label>/ (a tree `train` reads).
    Export {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "train")]
        split: String,
        dir: PathBuf,
    },
}

/// `lsskd-edge sample …`: send labelled samples to a running device over MQTT.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SampleCommand {
    /// Publish files (or captures the device holds, e.g. the one a label request asked
    /// about) as labelled samples of a model and print the device's acks.
    Send {
        #[arg(long)]
        model: String,
        #[arg(long)]
        label: String,
        #[arg(required_unless_present = "capture_id")]
        files: Vec<PathBuf>,
        /// A capture the device still holds, by id (the `capture_id` of a prediction or of
        /// a label request); repeatable.
        #[arg(long)]
        capture_id: Vec<u64>,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Target device id (default: the settings' device id).
        #[arg(long)]
        device: Option<String>,
        /// Seconds to wait for the acks (and, with `--wait`, for the training outcome).
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// After the acks, wait for the imprint / fine-tune the samples start and print
        /// each outcome (promoted, rejected and why) until nothing is left queued.
        #[arg(long)]
        wait: bool,
    },
}

/// `lsskd-edge samples list|export`: [`list`] or [`export`], printed.
pub fn execute(command: SamplesCommand) -> anyhow::Result<()> {
    match command {
        SamplesCommand::List {
            broker,
            model,
            device,
            local,
            timeout_secs,
            json,
        } => {
            let (settings, mqtt) = broker.load()?;
            let lists = if local {
                list(&settings, model.as_deref())?
            } else {
                let device = device.unwrap_or_else(|| settings.device_id());
                let models = match model {
                    Some(m) => vec![m],
                    None => pipeline_models(&settings),
                };
                let mut lists = BTreeMap::new();
                for m in models {
                    let topics = Topics::new(&settings.mqtt.topic_prefix, &device, "");
                    let answer = ask(
                        &mqtt,
                        &topics,
                        &m,
                        "samples",
                        topics.samples_list(&m),
                        Duration::from_secs(timeout_secs),
                    )?;
                    let reply: crate::mqtt::payload::SamplesReply =
                        serde_json::from_slice(&answer).context("the daemon's answer")?;
                    lists.insert(m, reply.counts);
                }
                lists
            };
            super::print_report(&lists, json, |l| render_list(l, &settings.state_dir))
        }
        SamplesCommand::Export {
            config,
            model,
            split,
            dir,
        } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            let n = export(&settings, &model, &dir, &split)?;
            println!(
                "exported {n} sample(s) of `{model}` to {}",
                dir.join(&split).display()
            );
            Ok(())
        }
    }
}

/// `lsskd-edge sample send`: [`send`] the files and captures, print the acks (and with
/// `--wait` the outcomes); an error when the device refused any.
pub fn execute_send(command: SampleCommand) -> anyhow::Result<()> {
    let SampleCommand::Send {
        model,
        label,
        files,
        capture_id,
        broker,
        device,
        timeout_secs,
        wait,
    } = command;
    let items: Vec<SendItem> = files
        .into_iter()
        .map(SendItem::File)
        .chain(capture_id.into_iter().map(SendItem::Capture))
        .collect();
    let (settings, mqtt) = broker.load()?;
    let device = device.unwrap_or_else(|| settings.device_id());
    let sent = send(
        &mqtt,
        &settings.mqtt.topic_prefix,
        &device,
        &model,
        &label,
        &items,
        Duration::from_secs(timeout_secs),
        wait.then(|| Duration::from_secs(5)),
    )?;
    let (text, refused) = render_sent(&items, &sent, wait, &settings.adapt, timeout_secs);
    print!("{text}");
    anyhow::ensure!(refused == 0, "{refused} sample(s) rejected");
    Ok(())
}

/// The models the settings' pipelines run, by the name the daemon knows them by (their
/// manifest's `name`; the folder's name when the manifest cannot be read).
pub fn pipeline_models(settings: &Settings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in &settings.pipeline {
        let dir = settings.model_path(p);
        let name = crate::registry::package::Manifest::read(&dir)
            .map(|m| m.name)
            .ok()
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Ask the running daemon a question on `model/<model>/cmd` (`versions`, `samples`) and
/// return its answer on `reply`, the first within `timeout`.
pub fn ask(
    mqtt: &MqttSettings,
    topics: &Topics,
    model: &str,
    command: &str,
    reply: String,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client_id = format!("lsskd-ask-{}", std::process::id());
    let question = Outbound {
        topic: topics.model_cmd(model),
        payload: command.as_bytes().to_vec(),
        retain: false,
    };
    let mut answer = None;
    rt.block_on(client::session(
        mqtt,
        &client_id,
        std::slice::from_ref(&reply),
        vec![question],
        Some(timeout),
        |m| {
            if m.topic == reply {
                answer = Some(m.payload);
            }
            answer.is_none()
        },
    ))?;
    answer.with_context(|| {
        format!("no answer to `{command}` about model `{model}` within {timeout:?} (is the daemon running, with that model?)")
    })
}

/// Models that have a sample folder under `state_dir`.
pub fn models(state_dir: &Path) -> anyhow::Result<Vec<String>> {
    let root = state_dir.join("samples");
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    Ok(out)
}

/// Sample counts per label of each model (or of `model`).
pub fn list(
    settings: &Settings,
    model: Option<&str>,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, usize>>> {
    let names = match model {
        Some(m) => vec![m.to_string()],
        None => models(&settings.state_dir)?,
    };
    let mut out = BTreeMap::new();
    for name in names {
        let store = SampleStore::open(&settings.state_dir, &name, settings.adapt.sample_quota)?;
        out.insert(name, store.counts()?);
    }
    Ok(out)
}

/// Copy a model's samples to `dir/<split>/<label>/…` (a tree `train` and `eval` read).
pub fn export(settings: &Settings, model: &str, dir: &Path, split: &str) -> anyhow::Result<usize> {
    let store = SampleStore::open(&settings.state_dir, model, settings.adapt.sample_quota)?;
    Ok(store.export(dir, split)?)
}

/// A stable id for a file: its stem and the start of its hash (a retry sends the same id,
/// so the device stores it once).
pub fn sample_id(path: &Path, bytes: &[u8]) -> String {
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let hash = hex::encode(&Sha256::digest(bytes)[..6]);
    format!("{stem}-{hash}")
}

/// What `sample send` saw: the acks in file order and, when it waited for the training
/// outcome, every `training/state` of the model published meanwhile (JSON), in order.
#[derive(Debug, Default)]
pub struct Sent {
    pub acks: Vec<Ack>,
    pub states: Vec<serde_json::Value>,
    /// A final state with nothing left queued arrived (or nothing was started).
    pub settled: bool,
}

/// What `samples list` prints: per model, its total and its labels' counts.
pub fn render_list(lists: &BTreeMap<String, BTreeMap<String, usize>>, state_dir: &Path) -> String {
    if lists.is_empty() {
        return format!("no samples under {}\n", state_dir.display());
    }
    let mut out = String::new();
    for (model, counts) in lists {
        let total: usize = counts.values().sum();
        out.push_str(&format!("{model}: {total} sample(s)\n"));
        for (label, n) in counts {
            out.push_str(&format!("  {label:<24} {n}\n"));
        }
    }
    out
}

/// What `sample send` prints, and how many samples were refused: each item's ack, then
/// (with `--wait`) what training did with them and what to do next.
pub fn render_sent(
    items: &[SendItem],
    sent: &Sent,
    waited: bool,
    adapt: &crate::settings::AdaptSettings,
    timeout_secs: u64,
) -> (String, usize) {
    let mut out = String::new();
    let mut refused = 0;
    for (item, ack) in items.iter().zip(&sent.acks) {
        refused += usize::from(!ack.accepted);
        out.push_str(&format!(
            "{}: {} ({})\n",
            item,
            if ack.accepted { "accepted" } else { "REJECTED" },
            ack.reason
        ));
    }
    for st in &sent.states {
        out.push_str(&describe_state(st));
        out.push('\n');
    }
    if waited && sent.states.is_empty() {
        out.push_str(&format!(
            "no training started: a new label is imprinted at {} samples, a fine-tune follows {} new samples\n",
            adapt.min_shots, adapt.auto_after
        ));
    } else if !sent.settled {
        out.push_str(&format!(
            "training still running after {timeout_secs} s (see `lsskd-edge watch`)\n"
        ));
    }
    (out, refused)
}

/// A `training/state` that ends a job (as opposed to `queued`, `training`, `gating`).
fn is_final(state: &serde_json::Value) -> bool {
    matches!(
        state["state"].as_str(),
        Some("promoted" | "rejected" | "failed" | "idle" | "rolled_back")
    )
}

/// One line for a `training/state` payload: what happened and what to do.
pub fn describe_state(st: &serde_json::Value) -> String {
    let mut line = format!(
        "{}: {}",
        st["model"].as_str().unwrap_or("?"),
        st["state"].as_str().unwrap_or("?")
    );
    if let Some(kind) = st["kind"].as_str() {
        line += &format!(" ({kind})");
    }
    if let Some(v) = st["version"].as_u64() {
        line += &format!(", version {v}");
    }
    if let Some(s) = st["seconds"].as_f64() {
        line += &format!(", {s:.1} s");
    }
    if let Some(r) = st["reason"].as_str() {
        line += &format!(": {r}");
    }
    if let Some(q) = st["queued"].as_array().filter(|q| !q.is_empty()) {
        let q: Vec<&str> = q.iter().filter_map(|k| k.as_str()).collect();
        line += &format!(" [next: {}]", q.join(", "));
    }
    line
}

/// How long `send --wait` watches a settled `training/state` for a job that follows.
pub const SETTLE_GRACE: Duration = Duration::from_secs(3);

/// What one sample is made of: a file, or a capture the device still holds (a recent one,
/// or one a label request asked about).
#[derive(Debug, Clone, PartialEq)]
pub enum SendItem {
    File(PathBuf),
    Capture(u64),
}

impl std::fmt::Display for SendItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendItem::File(p) => write!(f, "{}", p.display()),
            SendItem::Capture(id) => write!(f, "capture {id}"),
        }
    }
}

/// Publish `files` labelled `label` to `<prefix>/<device>/samples/<model>/add` and wait for
/// every ack; with `wait`, also for the outcome of the training they start (until a final
/// `training/state` with nothing queued that no other job follows within
/// [`SETTLE_GRACE`], or `quiet` without any once acked). `timeout` bounds the whole.
#[allow(clippy::too_many_arguments)]
pub fn send(
    mqtt: &MqttSettings,
    prefix: &str,
    device: &str,
    model: &str,
    label: &str,
    items: &[SendItem],
    timeout: Duration,
    wait: Option<Duration>,
) -> anyhow::Result<Sent> {
    let topics = Topics::new(prefix, device, "");
    let mut requests = Vec::new();
    let mut ids = Vec::new();
    for item in items {
        let req = match item {
            SendItem::File(f) => {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                AddRequest {
                    id: sample_id(f, &bytes),
                    label: label.to_string(),
                    data: Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                    capture_id: None,
                }
            }
            SendItem::Capture(c) => AddRequest {
                id: format!("capture-{c}-{label}").chars().take(64).collect(),
                label: label.to_string(),
                data: None,
                capture_id: Some(*c),
            },
        };
        let id = req.id.clone();
        requests.push(Outbound {
            topic: topics.samples_add(model),
            payload: serde_json::to_vec(&req)?,
            retain: false,
        });
        ids.push(id);
    }
    let mut waiting: BTreeSet<String> = ids.iter().cloned().collect();
    let mut acks: BTreeMap<String, Ack> = BTreeMap::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client_id = format!("lsskd-sample-{}", std::process::id());
    let mut filters = vec![topics.samples_ack(model)];
    let state_topic = topics.training_state();
    if wait.is_some() {
        // The device's status (every tick) keeps the quiet-period check running.
        filters.push(state_topic.clone());
        filters.push(topics.status());
    }
    let mut states: Vec<serde_json::Value> = Vec::new();
    let mut settled: Option<std::time::Instant> = None;
    let mut acked_at: Option<std::time::Instant> = None;
    let quiet = wait.unwrap_or_default();
    let done = rt.block_on(client::session(
        mqtt,
        &client_id,
        &filters,
        requests,
        Some(timeout),
        |m| {
            if m.topic == state_topic {
                // A retained state is an earlier job's: its outcome is stale, but a job
                // still running (or queued) is one these samples wait for.
                if let Ok(st) = serde_json::from_slice::<serde_json::Value>(&m.payload)
                    && !(m.retain && is_final(&st))
                    && st["model"].as_str() == Some(model)
                {
                    let idle =
                        is_final(&st) && st["queued"].as_array().is_none_or(|q| q.is_empty());
                    settled = idle.then(std::time::Instant::now);
                    states.push(st);
                }
            } else if let Ok(ack) = serde_json::from_slice::<Ack>(&m.payload)
                && waiting.remove(&ack.id)
            {
                acks.insert(ack.id.clone(), ack);
            }
            if !waiting.is_empty() {
                return true;
            }
            let acked = *acked_at.get_or_insert_with(std::time::Instant::now);
            if wait.is_none() {
                return false;
            }
            // A job's end can be followed at once by the next (an imprint by the
            // fine-tune its samples also call for): settled only when none follows.
            if let Some(t) = settled {
                return t.elapsed() < SETTLE_GRACE;
            }
            // Nothing started within `quiet` of the last ack: nothing will.
            !(states.is_empty() && acked.elapsed() >= quiet)
        },
    ))?;
    if !waiting.is_empty() {
        anyhow::bail!(
            "no ack from device `{device}` for {} of {} sample(s) within {timeout:?} (is the daemon running, with model `{model}`?)",
            waiting.len(),
            ids.len()
        );
    }
    let _ = done;
    Ok(Sent {
        acks: ids.iter().filter_map(|id| acks.remove(id)).collect(),
        states,
        settled: settled.is_some() || wait.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_ids_are_stable_and_valid_names() {
        let a = sample_id(Path::new("/x/my photo.png"), b"abc");
        assert_eq!(a, sample_id(Path::new("/y/my photo.png"), b"abc"));
        assert_ne!(a, sample_id(Path::new("/x/my photo.png"), b"abd"));
        assert!(crate::samples::valid_name(&a), "{a}");
        assert!(a.starts_with("my_photo-"));
    }
}
