//! `lsskd-edge`: parses the command line, sets up logging and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lsskd_edge::adapt::job::AdaptConfig;
use lsskd_edge::commands::{eval, export, fewshot, predict, train, validate};
use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::lsskd::{Method, TransformMode};
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

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Ce,
    Pskd,
    Sla,
    Lsskd,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransformsArg {
    All,
    Sampled,
}

#[derive(Subcommand)]
enum Command {
    /// Train a student (LSSKD or a baseline) on a data set and write a model package.
    Train {
        /// Data set folder (IDX pairs or a `<split>/<class>/*` tree).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        /// Validation split, evaluated every epoch and through tract at the end.
        #[arg(long)]
        val_split: Option<String>,
        #[arg(long, value_enum, default_value = "lsskd")]
        method: MethodArg,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        /// Output package folder.
        #[arg(long)]
        out: PathBuf,
        /// resnet-xs, resnet-s (default, ≈175k parameters) or resnet-m.
        #[arg(long, default_value = "resnet-s")]
        arch: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Comma-separated subset of classes (their order becomes the model's class order).
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<String>>,
        /// Wall-clock budget in minutes; the schedule is compressed to fit.
        #[arg(long)]
        budget_mins: Option<f64>,
        /// Joint-label transforms per sample: all M, or identity + one sampled.
        #[arg(long, value_enum, default_value = "sampled")]
        transforms: TransformsArg,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, default_value_t = 0.05)]
        lr: f64,
        /// Use at most this many training samples per class.
        #[arg(long)]
        limit_per_class: Option<usize>,
        /// Replay exemplars stored per class in the package.
        #[arg(long, default_value_t = 20)]
        replay_per_class: usize,
        /// Package name (default: vision / audio by modality).
        #[arg(long)]
        name: Option<String>,
        /// Skip unreadable files (counted) instead of failing.
        #[arg(long)]
        skip_bad: bool,
        /// Continue from this package's training state (same classes; keeps its
        /// preprocessing, architecture and transforms).
        #[arg(long)]
        init: Option<PathBuf>,
    },
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
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        support_data: PathBuf,
        #[arg(long)]
        support_split: String,
        #[arg(long)]
        query_data: PathBuf,
        #[arg(long)]
        query_split: String,
        #[arg(long, default_value_t = 5)]
        way: usize,
        #[arg(long, default_value_t = 5)]
        shot: usize,
        #[arg(long, default_value_t = 10)]
        episodes: usize,
        /// Data of the model's own classes, to measure forgetting.
        #[arg(long)]
        base_data: Option<PathBuf>,
        #[arg(long)]
        base_split: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 50)]
        queries_per_class: usize,
        #[arg(long, default_value_t = 1000)]
        base_limit: usize,
        /// Fine-tune epochs per episode.
        #[arg(long, default_value_t = 15)]
        epochs: usize,
        /// Fine-tune wall-clock budget per episode, seconds.
        #[arg(long, default_value_t = 50)]
        budget_secs: u64,
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
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
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
        Command::Train {
            data,
            split,
            val_split,
            method,
            epochs,
            out,
            arch,
            seed,
            classes,
            budget_mins,
            transforms,
            batch_size,
            lr,
            limit_per_class,
            replay_per_class,
            name,
            skip_bad,
            init,
        } => {
            let mut args = train::TrainArgs::new(&data, &split, &out);
            args.val_split = val_split;
            args.method = match method {
                MethodArg::Ce => Method::Ce,
                MethodArg::Pskd => Method::Pskd,
                MethodArg::Sla => Method::Sla,
                MethodArg::Lsskd => Method::Lsskd,
            };
            args.epochs = epochs;
            args.arch = arch;
            args.seed = seed;
            args.classes = classes;
            args.budget_mins = budget_mins;
            args.transforms = match transforms {
                TransformsArg::All => TransformMode::All,
                TransformsArg::Sampled => TransformMode::Sampled,
            };
            args.batch_size = batch_size;
            args.lr = lr;
            args.limit_per_class = limit_per_class;
            args.replay_per_class = replay_per_class;
            args.name = name;
            args.skip_bad = skip_bad;
            args.init = init;
            let outcome = train::run(&args)?;
            let m = &outcome.package.manifest;
            println!(
                "wrote {} ({} classes, {} deployed parameters, {} with auxiliary heads) in {:.0}s",
                outcome.package.dir.display(),
                m.classes.len(),
                m.deployed.param_count,
                m.deployed.training_param_count,
                outcome.seconds
            );
            if let Some(v) = outcome.val {
                println!(
                    "validation accuracy (tract, {} samples): {:.4}",
                    v.n, v.accuracy
                );
            }
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
                for p in preds {
                    let labels: Vec<String> = p
                        .top_k
                        .iter()
                        .map(|s| format!("{} {:.3}", s.label, s.score))
                        .collect();
                    println!("{}: {}", p.file.display(), labels.join(", "));
                }
            }
            Ok(())
        }
        Command::FewshotBench {
            model,
            support_data,
            support_split,
            query_data,
            query_split,
            way,
            shot,
            episodes,
            base_data,
            base_split,
            seed,
            queries_per_class,
            base_limit,
            epochs,
            budget_secs,
            json,
        } => {
            let adapt = AdaptConfig {
                epochs,
                budget_secs: Some(budget_secs),
                ..AdaptConfig::default()
            };
            let report = fewshot::run(&fewshot::FewshotArgs {
                model,
                support_data,
                support_split,
                query_data,
                query_split,
                way,
                shot,
                episodes,
                base_data,
                base_split,
                seed,
                queries_per_class,
                base_limit,
                adapt,
            })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}-way {}-shot, {} episodes: novel accuracy {:.4} ± {:.4} (imprint only {:.4} ± {:.4}); base {} → {}; {:.1} s per adaptation; {} promoted; peak RSS {} MiB",
                    report.way,
                    report.shot,
                    report.episodes,
                    report.novel_accuracy,
                    report.novel_ci95,
                    report.imprint_only_novel_accuracy,
                    report.imprint_only_novel_ci95,
                    report
                        .base_accuracy_before
                        .map_or("-".into(), |v| format!("{v:.4}")),
                    report
                        .base_accuracy_after
                        .map_or("-".into(), |v| format!("{v:.4}")),
                    report.seconds_per_episode,
                    report.promoted_episodes,
                    report.peak_rss_mb.map_or("-".into(), |v| format!("{v:.0}")),
                );
            }
            Ok(())
        }
        Command::Validate { config } => {
            let settings = validate::run(&Sources::from_process(config))?;
            println!(
                "settings OK: {} pipeline(s), broker {}:{}{}",
                settings.pipeline.len(),
                settings.mqtt.host,
                settings.mqtt.port,
                if settings.mqtt.embedded_broker {
                    " (embedded)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::PrintConfig { config } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            print!("{}", settings.to_toml());
            Ok(())
        }
        Command::Export {
            model,
            replay_per_class,
        } => {
            let pkg = export::run(&model, replay_per_class)?;
            println!(
                "re-exported {} ({} parameters)",
                pkg.onnx_path().display(),
                pkg.manifest.deployed.param_count
            );
            Ok(())
        }
    }
}
