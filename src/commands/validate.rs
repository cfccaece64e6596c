//! `lsskd-edge validate` and `print-config`: check settings, every pipeline's model
//! package and the programs its source needs, reporting every problem at once.

use std::path::PathBuf;

use crate::capture::rtsp;
use crate::registry::ModelPackage;
use crate::settings::{Settings, SettingsError, SourceSettings, Sources};

/// Arguments of `validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// Settings file (default: /etc/lsskd-edge/config.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Arguments of `print-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrintConfigArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `lsskd-edge validate`: [`run`], then the line for settings that passed.
pub fn execute(args: ValidateArgs) -> anyhow::Result<()> {
    let sources = Sources::from_process(args.config);
    let settings = run(&sources)?;
    for w in crate::settings::secret_warnings(&sources, &settings) {
        eprintln!("warning: {w}");
    }
    print!("{}", render(&settings));
    Ok(())
}

/// `lsskd-edge print-config`: the merged settings as TOML.
pub fn print_config(args: PrintConfigArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&Sources::from_process(args.config))?;
    print!("{}", settings.to_toml());
    Ok(())
}

/// The line `validate` prints for settings that passed.
pub fn render(settings: &Settings) -> String {
    format!(
        "settings OK: {} pipeline(s), broker {}:{}{}\n",
        settings.pipeline.len(),
        settings.mqtt.host,
        settings.mqtt.port,
        if settings.mqtt.embedded_broker {
            " (embedded)"
        } else {
            ""
        }
    )
}

/// Load settings, verify each pipeline's model package (hashes, graph vs manifest), and
/// that the programs its source runs are there (ffmpeg for an RTSP stream; the daemon
/// itself starts without them and reports the source as retrying).
pub fn run(sources: &Sources) -> Result<Settings, SettingsError> {
    let settings = Settings::load(sources)?;
    let mut decoder = None;
    let problems: Vec<String> = settings
        .pipeline
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let model = ModelPackage::load(&settings.model_path(p))
                .err()
                .map(|e| format!("`pipeline[{i}].model`: {e}"));
            let source = matches!(p.source, SourceSettings::Rtsp { .. })
                .then(|| {
                    decoder
                        .get_or_insert_with(|| rtsp::decoder_problem(rtsp::FFMPEG))
                        .clone()
                })
                .flatten()
                .map(|e| format!("`pipeline[{i}].source`: {e}"));
            model.into_iter().chain(source)
        })
        .collect();
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(SettingsError { problems })
    }
}
