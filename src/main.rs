//! `lsskd-edge`: parses the command line, sets up logging, loads settings and calls into
//! the library. Each command's arguments live beside it in `lsskd_edge::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lsskd_edge::commands::{
    self, bench, bench_report, bench_train, eval, export, fewshot, fleet, predict, samples, train,
    validate, versions, viewbench, watch,
};
use lsskd_edge::settings::{Settings, SettingsError, Sources};

#[derive(Parser)]
#[command(
    name = "lsskd-edge",
    version,
    about = "Edge classification daemon (models trained with LSSKD) that learns new labels on the device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a student (LSSKD or a baseline) on a data set and write a model package.
    Train(train::TrainArgs),
    /// Accuracy and confusion matrix of a package's model.onnx (through tract) on a split.
    Eval(eval::EvalArgs),
    /// Top-k labels and scores for image or WAV files.
    Predict(predict::PredictArgs),
    /// N-way K-shot adaptation episodes (imprint + fine-tune + gate) on classes the model
    /// does not know, evaluated through tract.
    FewshotBench {
        // Boxed: its many recipe flags would make every `Command` this large.
        #[command(flatten)]
        args: Box<fewshot::FewshotArgs>,
        #[arg(long)]
        json: bool,
    },
    /// Per-view teaching of a camera view's states: each view of a grouped image data set
    /// taught from a few frames per state through the adaptation core, its other frames
    /// scored.
    ViewBench {
        #[command(flatten)]
        args: viewbench::ViewBenchArgs,
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: every configured pipeline, publishing over MQTT, until SIGTERM/SIGINT.
    Run {
        /// Settings file (default: /etc/lsskd-edge/config.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print predictions, states and status from a broker live (what a device publishes).
    Watch(watch::WatchArgs),
    /// The labelled samples stored on this device.
    Samples {
        #[command(subcommand)]
        command: samples::SamplesCommand,
    },
    /// The stored versions of a model, as the running device reports them.
    Versions(versions::VersionsArgs),
    /// Send labelled samples to a running device over MQTT.
    Sample {
        #[command(subcommand)]
        command: samples::SampleCommand,
    },
    /// Per-frame / per-window latency (features + tract inference) of model packages.
    Bench(bench::BenchArgs),
    /// Time one training step (`lsskd::Trainer::step`) on a fixed synthetic 1×28×28 batch;
    /// `--profile` adds forward / backward time by layer kind.
    BenchTrain {
        #[command(flatten)]
        args: bench_train::BenchTrainArgs,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check settings and every pipeline's model package; exit 2 listing every problem.
    Validate(validate::ValidateArgs),
    /// Print the merged settings (defaults → file → environment) as TOML.
    PrintConfig(validate::PrintConfigArgs),
    /// This device's public key for the fleet (`fleet id`), and the keys it accepts class
    /// offers from (`fleet trust <key>`).
    Fleet(fleet::FleetArgs),
    /// Re-export model.onnx from the package's training state.
    Export(export::ExportArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(lsskd_edge::log_filter(
                std::env::var("RUST_LOG").ok().as_deref(),
            ))
            .unwrap_or_else(|e| {
                eprintln!("RUST_LOG: {e}; logging at info");
                tracing_subscriber::EnvFilter::new(lsskd_edge::log_filter(None))
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Configuration problems exit 2 (like a usage error); everything else 1.
            if e.downcast_ref::<SettingsError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::execute(&args),
        Command::Eval(args) => eval::execute(&args),
        Command::Predict(args) => predict::execute(&args),
        Command::FewshotBench { args, json } => {
            commands::print_report(&fewshot::run(&args)?, json, fewshot::render)
        }
        Command::ViewBench { args, json } => {
            commands::print_report(&viewbench::run(&args)?, json, viewbench::render)
        }
        Command::Run { config } => {
            let sources = Sources::from_process(config);
            let settings = Settings::load(&sources)?;
            for w in lsskd_edge::settings::secret_warnings(&sources, &settings) {
                tracing::warn!("{w}");
            }
            lsskd_edge::daemon::run_until_signal(settings)
        }
        Command::Watch(args) => watch::execute(args),
        Command::Samples { command } => samples::execute(command),
        Command::Sample { command } => samples::execute_send(command),
        Command::Versions(args) => versions::execute(args),
        Command::Bench(args) if args.report => bench_report::execute(&args),
        Command::Bench(args) => bench::execute(&args),
        Command::BenchTrain { args, json } => {
            commands::print_report(&bench_train::run(&args)?, json, bench_train::render)
        }
        Command::Validate(args) => validate::execute(args),
        Command::PrintConfig(args) => validate::print_config(args),
        Command::Fleet(args) => fleet::execute(args),
        Command::Export(args) => export::execute(args),
    }
}
