//! `lsskd-edge watch`: subscribe to a broker and print what devices publish, readably —
//! what a user runs to see the device working.

use std::time::Duration;

use crate::mqtt::client::{self, Inbound};
use crate::mqtt::payload::{Prediction, StableState, Status};
use crate::mqtt::topics::{self, Topic};
use crate::settings::MqttSettings;

use super::BrokerArgs;

/// Arguments of `watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Topic prefix (default: the settings' `mqtt.topic_prefix`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only this device id (default: all devices).
    #[arg(long)]
    pub device: Option<String>,
    /// Exit after this many predictions.
    #[arg(long)]
    pub count: Option<usize>,
    /// Exit after this many seconds (status 1 if --count was not reached).
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// Print raw `topic payload` lines.
    #[arg(long)]
    pub raw: bool,
}

/// `lsskd-edge watch`: the flags over the settings' broker and prefix, then [`run`].
pub fn execute(args: WatchArgs) -> anyhow::Result<()> {
    let (settings, mqtt) = args.broker.load()?;
    let opts = WatchOptions {
        prefix: args.prefix.unwrap_or(settings.mqtt.topic_prefix),
        device: args.device,
        count: args.count,
        timeout: args.timeout_secs.map(Duration::from_secs),
        raw: args.raw,
    };
    run(&mqtt, &opts)?;
    Ok(())
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub prefix: String,
    /// Only this device (default: every device under the prefix).
    pub device: Option<String>,
    /// Exit after this many predictions.
    pub count: Option<usize>,
    /// Give up after this long (exit status 1 if `count` was not reached).
    pub timeout: Option<Duration>,
    /// Print the raw JSON payloads, one `topic payload` line each.
    pub raw: bool,
}

/// One readable line for a message (`None`: not worth a line).
pub fn format_message(msg: &Inbound) -> Option<String> {
    let text = String::from_utf8_lossy(&msg.payload);
    let (dev, topic) = topics::parse(&msg.topic)?;
    match topic {
        Topic::Prediction { pipeline } => {
            let p: Prediction = serde_json::from_slice(&msg.payload).ok()?;
            let others: Vec<String> = p
                .top_k
                .iter()
                .skip(1)
                .map(|s| format!("{} {:.2}", s.label, s.score))
                .collect();
            Some(format!(
                "{dev}/{pipeline:<8} {:<14} {:.2}  ({})  {} v{}  {:.1} ms  #{}",
                p.label,
                p.score,
                others.join(", "),
                p.model,
                p.model_version,
                p.latency_ms,
                p.capture_id
            ))
        }
        Topic::TrainingState => Some(format!("{dev} training {text}")),
        Topic::State { pipeline } => {
            let s: StableState = serde_json::from_slice(&msg.payload).ok()?;
            Some(format!("{dev}/{pipeline:<8} state → {}", s.label))
        }
        Topic::Status => match serde_json::from_slice::<Status>(&msg.payload) {
            Ok(s) => {
                let parts: Vec<String> = s
                    .pipelines
                    .iter()
                    .map(|p| format!("{}: {}", p.name, p.state))
                    .collect();
                Some(format!(
                    "{dev} {} (lsskd-edge {}; {})",
                    s.status,
                    s.version,
                    parts.join(", ")
                ))
            }
            Err(_) => Some(format!("{dev} {text}")),
        },
        Topic::Scene => Some(format!("{dev} scene {text}")),
        Topic::ModelInfo { model } => Some(format!("{dev} model {model}: {text}")),
        Topic::SamplesAck { model } => Some(format!("{dev} sample {model}: {text}")),
        Topic::LabelRequest
        | Topic::ModelCmd { .. }
        | Topic::SamplesAdd { .. }
        | Topic::TeachSet { .. }
        | Topic::TeachPress { .. } => None,
    }
}

/// Run until `count` predictions were seen, the timeout passes, or Ctrl-C.
/// Returns the number of predictions seen.
pub fn run(mqtt: &MqttSettings, opts: &WatchOptions) -> anyhow::Result<usize> {
    let dev = opts.device.clone().unwrap_or_else(|| "+".into());
    let filters = vec![format!("{}/{dev}/#", opts.prefix)];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client_id = format!("lsskd-watch-{}", std::process::id());
    let mut seen = 0usize;
    let count = opts.count;
    let raw = opts.raw;
    rt.block_on(async {
        let session = client::session(mqtt, &client_id, &filters, Vec::new(), opts.timeout, |m| {
            if matches!(topics::parse(&m.topic), Some((_, Topic::Prediction { .. }))) {
                seen += 1;
            }
            if raw {
                println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
            } else if let Some(line) = format_message(&m) {
                println!("{line}");
            }
            count.is_none_or(|c| seen < c)
        });
        tokio::select! {
            r = session => r.map(|_| ()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    if let Some(c) = count
        && seen < c
    {
        anyhow::bail!("saw {seen} of {c} predictions before the timeout");
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_line_is_readable() {
        let payload = br#"{"v":1,"ts":1,"pipeline":"door","capture_id":9,"label":"bag","score":0.97,"top_k":[{"label":"bag","score":0.97},{"label":"coat","score":0.02}],"latency_ms":3.14,"model":"vision","model_version":2}"#;
        let line = format_message(&Inbound {
            topic: "lsskd/pi/door/prediction".into(),
            payload: payload.to_vec(),
            retain: false,
        })
        .expect("line");
        assert!(line.contains("pi/door"), "{line}");
        assert!(
            line.contains("bag") && line.contains("0.97") && line.contains("coat 0.02"),
            "{line}"
        );
        assert!(line.contains("v2") && line.contains("3.1 ms"), "{line}");
    }

    #[test]
    fn offline_status_is_shown_verbatim() {
        let line = format_message(&Inbound {
            topic: "lsskd/pi/status".into(),
            payload: b"offline".to_vec(),
            retain: false,
        });
        assert_eq!(line.as_deref(), Some("pi offline"));
    }
}
