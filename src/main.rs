//! `lsskd-edge`: parses the command line, sets up logging and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lsskd_edge::commands::{
    bench, bench_train, eval, export, fewshot, predict, samples, train, validate, watch,
};
use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::registry::ModelPackage;
use lsskd_edge::settings::{Settings, SettingsError, Sources};

#[derive(Parser)]
#[command(
    name = "lsskd-edge",
    version,
    about = "Edge classification daemon with on-device LSSKD few-shot learning"
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
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        split: String,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        skip_bad: bool,
    },
    /// Top-k labels and scores for image or WAV files.
    Predict {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// N-way K-shot adaptation episodes (imprint + fine-tune + gate) on classes the model
    /// does not know, evaluated through tract.
    FewshotBench {
        // Boxed: its many recipe flags would make every `Command` this large.
        #[command(flatten)]
        args: Box<fewshot::FewshotArgs>,
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
    Watch {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Topic prefix (default: the settings' `mqtt.topic_prefix`).
        #[arg(long)]
        prefix: Option<String>,
        /// Only this device id (default: all devices).
        #[arg(long)]
        device: Option<String>,
        /// Exit after this many predictions.
        #[arg(long)]
        count: Option<usize>,
        /// Exit after this many seconds (status 1 if --count was not reached).
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Print raw `topic payload` lines.
        #[arg(long)]
        raw: bool,
    },
    /// The labelled samples stored on this device.
    Samples {
        #[command(subcommand)]
        command: SamplesCommand,
    },
    /// Send labelled samples to a running device over MQTT.
    Sample {
        #[command(subcommand)]
        command: SampleCommand,
    },
    /// Per-frame / per-window latency (features + tract inference) of model packages.
    Bench {
        /// Model package folder(s).
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        #[arg(long, default_value_t = 500)]
        iterations: usize,
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Then time tract's plan node by node (grouped by ONNX node, with GFLOP/s of the
        /// convolutions against a single-thread matrix product's).
        #[arg(long)]
        profile: bool,
        /// One JSON object per model, one per line.
        #[arg(long)]
        json: bool,
    },
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
    Validate {
        /// Settings file (default: /etc/lsskd-edge/config.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the merged settings (defaults → file → environment) as TOML.
    PrintConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Re-export model.onnx from the package's training state.
    Export {
        #[arg(long)]
        model: PathBuf,
        /// Keep only the first N replay exemplars of each class.
        #[arg(long)]
        replay_per_class: Option<usize>,
        /// Instead of re-exporting: add (or replace) the package's gate set, validation
        /// exemplars of every class from this data set that the promotion gate judges the
        /// shipped classes on. Nothing else in the package changes.
        #[arg(long)]
        gate_data: Option<PathBuf>,
        /// Split the gate set comes from (the first N of each class).
        #[arg(long, default_value = "val")]
        gate_split: String,
        /// Split that fills classes with fewer validation items (replay exemplars skipped).
        #[arg(long)]
        gate_fill_split: Option<String>,
        #[arg(long, default_value_t = export::GATE_PER_CLASS)]
        gate_per_class: usize,
    },
}

/// Where a client helper connects: the settings file's `[mqtt]`, overridden per flag.
#[derive(clap::Args)]
struct BrokerArgs {
    /// Settings file to take the broker, credentials, prefix and device id from.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
}

impl BrokerArgs {
    /// The merged settings and their `[mqtt]` with the flags applied.
    fn load(self) -> anyhow::Result<(Settings, lsskd_edge::settings::MqttSettings)> {
        let settings = Settings::load(&Sources::from_process(self.config))?;
        let mut mqtt = settings.mqtt.clone();
        mqtt.host = self.host.unwrap_or(mqtt.host);
        mqtt.port = self.port.unwrap_or(mqtt.port);
        mqtt.username = self.username.unwrap_or(mqtt.username);
        mqtt.password = self.password.unwrap_or(mqtt.password);
        Ok((settings, mqtt))
    }
}

#[derive(Subcommand)]
enum SamplesCommand {
    /// Sample counts per label, per model.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        model: Option<String>,
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

#[derive(Subcommand)]
enum SampleCommand {
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
        Command::Train(args) => {
            print!("{}", train::run(&args)?.render());
            Ok(())
        }
        Command::Eval {
            model,
            data,
            split,
            json,
            skip_bad,
        } => {
            let pkg = ModelPackage::load(&model)?;
            let opts = LoadOptions {
                skip_bad,
                ..LoadOptions::default()
            };
            let ds = dataset::load(&data, &split, &opts)
                .with_context(|| format!("loading split `{split}` of {}", data.display()))?;
            let report = eval::evaluate(&pkg, &ds)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", eval::render(&report));
            }
            Ok(())
        }
        Command::Predict {
            model,
            top_k,
            json,
            files,
        } => {
            let preds = predict::run(&model, &files, top_k)?;
            if json {
                println!("{}", serde_json::to_string(&preds)?);
            } else {
                print!("{}", predict::render(&preds));
            }
            Ok(())
        }
        Command::FewshotBench { args, json } => {
            let report = fewshot::run(&args)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", fewshot::render(&report));
            }
            Ok(())
        }
        Command::Run { config } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            lsskd_edge::daemon::run_until_signal(settings)
        }
        Command::Watch {
            broker,
            prefix,
            device,
            count,
            timeout_secs,
            raw,
        } => {
            let (settings, mqtt) = broker.load()?;
            let opts = watch::WatchOptions {
                prefix: prefix.unwrap_or(settings.mqtt.topic_prefix.clone()),
                device,
                count,
                timeout: timeout_secs.map(std::time::Duration::from_secs),
                raw,
            };
            watch::run(&mqtt, &opts)?;
            Ok(())
        }
        Command::Samples {
            command:
                SamplesCommand::List {
                    config,
                    model,
                    json,
                },
        } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            let lists = samples::list(&settings, model.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&lists)?);
            } else {
                print!("{}", samples::render_list(&lists, &settings.state_dir));
            }
            Ok(())
        }
        Command::Samples {
            command:
                SamplesCommand::Export {
                    config,
                    model,
                    split,
                    dir,
                },
        } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            let n = samples::export(&settings, &model, &dir, &split)?;
            println!(
                "exported {n} sample(s) of `{model}` to {}",
                dir.join(&split).display()
            );
            Ok(())
        }
        Command::Sample {
            command:
                SampleCommand::Send {
                    model,
                    label,
                    files,
                    capture_id,
                    broker,
                    device,
                    timeout_secs,
                    wait,
                },
        } => {
            let items: Vec<samples::SendItem> = files
                .into_iter()
                .map(samples::SendItem::File)
                .chain(capture_id.into_iter().map(samples::SendItem::Capture))
                .collect();
            let (settings, mqtt) = broker.load()?;
            let device = device.unwrap_or_else(|| settings.device_id());
            let sent = samples::send(
                &mqtt,
                &settings.mqtt.topic_prefix,
                &device,
                &model,
                &label,
                &items,
                std::time::Duration::from_secs(timeout_secs),
                wait.then(|| std::time::Duration::from_secs(5)),
            )?;
            let (text, refused) =
                samples::render_sent(&items, &sent, wait, &settings.adapt, timeout_secs);
            print!("{text}");
            anyhow::ensure!(refused == 0, "{refused} sample(s) rejected");
            Ok(())
        }
        Command::Bench {
            models,
            iterations,
            warmup,
            profile,
            json,
        } => {
            for m in &models {
                let r = bench::run(m, iterations, warmup, profile)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    print!("{}", bench::render(&r));
                }
            }
            Ok(())
        }
        Command::BenchTrain { args, json } => {
            let report = bench_train::run(&args)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", bench_train::render(&report));
            }
            Ok(())
        }
        Command::Validate { config } => {
            let settings = validate::run(&Sources::from_process(config))?;
            print!("{}", validate::render(&settings));
            Ok(())
        }
        Command::PrintConfig { config } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            print!("{}", settings.to_toml());
            Ok(())
        }
        Command::Export {
            model,
            replay_per_class: None,
            gate_data: Some(data),
            gate_split,
            gate_fill_split,
            gate_per_class,
        } => {
            let pkg = export::add_gate(
                &model,
                &export::GateSource {
                    data,
                    split: gate_split,
                    fill_split: gate_fill_split,
                    per_class: gate_per_class,
                },
            )?;
            print!("{}", export::render_gate(&pkg));
            Ok(())
        }
        Command::Export {
            gate_data: Some(_), ..
        } => anyhow::bail!("--gate-data adds a gate set only; run --replay-per-class separately"),
        Command::Export {
            model,
            replay_per_class,
            ..
        } => {
            let pkg = export::run(&model, replay_per_class)?;
            print!("{}", export::render(&pkg));
            Ok(())
        }
    }
}
