//! `lsskd-edge versions`: the stored versions of a model as the running daemon reports
//! them (the `versions` command on `model/<m>/cmd`, answered on `model/<m>/versions`), so
//! nobody needs to open the device's store beside it.

use std::time::Duration;

use anyhow::Context;

use super::BrokerArgs;
use super::samples::ask;
use crate::mqtt::Topics;
use crate::mqtt::payload::VersionsReply;

/// Arguments of `versions`.
#[derive(Debug, Clone, clap::Args)]
pub struct VersionsArgs {
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Target device id (default: the settings' device id).
    #[arg(long)]
    pub device: Option<String>,
    /// Seconds to wait for the daemon's answer.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
}

/// Ask, then print the versions (one line each; `*` marks the live one).
pub fn execute(args: VersionsArgs) -> anyhow::Result<()> {
    let (settings, mqtt) = args.broker.load()?;
    let device = args.device.unwrap_or_else(|| settings.device_id());
    let topics = Topics::new(&settings.mqtt.topic_prefix, &device, "");
    let answer = ask(
        &mqtt,
        &topics,
        &args.model,
        "versions",
        topics.model_versions(&args.model),
        Duration::from_secs(args.timeout_secs),
    )?;
    let reply: VersionsReply = serde_json::from_slice(&answer).context("the daemon's answer")?;
    super::print_report(&reply, args.json, render)
}

/// One line per version.
pub fn render(r: &VersionsReply) -> String {
    let mut out = String::new();
    for v in &r.versions {
        out.push_str(&format!(
            "{} v{}  {}  parent {}  {} classes{}\n",
            if v.live { "*" } else { " " },
            v.version,
            v.created_at,
            v.parent.map_or("-".to_string(), |p| format!("v{p}")),
            v.classes.len(),
            v.made_by
                .as_ref()
                .map_or(String::new(), |m| format!("  made by {m}")),
        ));
    }
    out
}
