//! The CLI subcommands as library functions (orchestration: anyhow errors with context).
//! Each module holds its command's arguments (`#[derive(clap::Args)]`), the work as a
//! function returning a report, and an `execute` that does the work and prints it;
//! `src/main.rs` parses arguments and calls `execute`.

use std::path::PathBuf;

use serde::Serialize;

use crate::settings::{MqttSettings, Settings, Sources};

pub mod bench;
pub mod bench_report;
pub mod bench_train;
pub mod eval;
pub mod export;
pub mod fewshot;
pub mod fleet;
pub mod predict;
pub mod samples;
pub mod train;
pub mod validate;
pub mod versions;
pub mod viewbench;
pub mod watch;

/// Where a client helper connects: the settings file's `[mqtt]`, overridden per flag.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Settings file to take the broker, credentials, prefix and device id from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
}

impl BrokerArgs {
    /// The merged settings and their `[mqtt]` with the flags applied.
    pub fn load(self) -> anyhow::Result<(Settings, MqttSettings)> {
        let settings = Settings::load(&Sources::from_process(self.config))?;
        let mut mqtt = settings.mqtt.clone();
        mqtt.host = self.host.unwrap_or(mqtt.host);
        mqtt.port = self.port.unwrap_or(mqtt.port);
        mqtt.username = self.username.unwrap_or(mqtt.username);
        mqtt.password = self.password.unwrap_or(mqtt.password);
        Ok((settings, mqtt))
    }
}

/// Print a report on stdout: one JSON object on a line with `--json`, else its text.
pub fn print_report<R: Serialize + ?Sized>(
    report: &R,
    json: bool,
    render: impl Fn(&R) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", render(report));
    }
    Ok(())
}
