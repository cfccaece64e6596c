//! `lsskd-edge train`: load a data set, train a student with the chosen method, export the
//! head-free ONNX, evaluate it through tract and write a model package.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use super::eval::{EvalReport, evaluate};
use crate::augment::{AudioAugment, BandLimit, BedMix, Reverb};
use crate::dataset::{self, Dataset, LoadOptions};
use crate::features::change::REFERENCE_FRAMES;
use crate::features::{Modality, Preprocess, Raw};
use crate::inference::write_onnx;
use crate::lsskd::{
    self, ArchConfig, EpochReport, Method, Progress, TrainConfig, TrainData, TrainNet, Trainer,
    TransformMode, TransformSet, checkpoint, export,
};
use crate::registry::package::{
    CheckpointInfo, DataInfo, DeployedInfo, FORMAT, MODEL_ONNX, Manifest, ModelPackage, SetMetrics,
    TRAIN_STATE, now_rfc3339,
};
use crate::registry::replay;
use crate::trainset::{FeatureData, audio_spec_for, image_spec_for};

/// Arguments of `train` (the command line's, defaults included: the one place they are).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Data set folder (IDX pairs or a `<split>/<class>/*` tree).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Validation split, evaluated every epoch and through tract at the end.
    #[arg(long)]
    pub val_split: Option<String>,
    /// ce, pskd, sla or lsskd.
    #[arg(long, default_value = "lsskd")]
    pub method: Method,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Output package folder.
    #[arg(long)]
    pub out: PathBuf,
    /// resnet-xs, resnet-s (default, ≈175k parameters) or resnet-m.
    #[arg(long, default_value = "resnet-s")]
    pub arch: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Comma-separated subset of classes (their order becomes the model's class order).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Wall-clock budget in minutes; the schedule is compressed to fit.
    #[arg(long)]
    pub budget_mins: Option<f64>,
    /// Joint-label transforms per sample: `all` M, or identity + one `sampled`.
    #[arg(long, default_value = "sampled")]
    pub transforms: TransformMode,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Skip unreadable files (counted) instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Use at most this many training samples per class.
    #[arg(long)]
    pub limit_per_class: Option<usize>,
    /// Replay exemplars stored per class in the package.
    #[arg(long, default_value_t = 20)]
    pub replay_per_class: usize,
    /// Gate exemplars stored per class, from the validation split (the promotion gate
    /// judges the shipped classes on them; none without a validation split).
    #[arg(long, default_value_t = super::export::GATE_PER_CLASS)]
    pub gate_per_class: usize,
    /// Package name (default: vision / audio by modality).
    #[arg(long)]
    pub name: Option<String>,
    /// Draw a progress bar on stderr.
    #[arg(skip = true)]
    pub progress_bar: bool,
    /// Continue from this package's training state (same classes; keeps its
    /// preprocessing, architecture and transforms).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Audio: background beds (`*.wav` in this folder, at the clips' sample rate) mixed
    /// under the training clips (`augment::BedMix`: a random 1-s segment, SNR 0–20 dB,
    /// p = 0.8), and the windows of `--background-class`.
    #[arg(long)]
    pub noise_beds: Option<PathBuf>,
    /// Audio: microphone augmentation, a random band limit and reverberation
    /// (`augment::BandLimit`, `augment::Reverb`).
    #[arg(long)]
    pub mic_augment: bool,
    /// Audio: add this class, trained on windows of the beds alone and near-silence (as
    /// many as the average class has), and record it as the package's background (the
    /// pipeline's stable state reports it as nothing). Needs `--noise-beds`.
    #[arg(long)]
    pub background_class: Option<String>,
    /// Images of a grouped data set (`<split>/<view>/<class>/*`): cut every frame to its
    /// view's region of interest, a CSV `group,x,y,width,height` (see `dataset::regions`).
    #[arg(long)]
    pub regions: Option<PathBuf>,
    /// Images: the model's input size `WIDTHxHEIGHT` (default: the first image's size).
    #[arg(long, value_parser = parse_size)]
    pub image_size: Option<(usize, usize)>,
    /// Images of a grouped data set: after the region, cut every frame to the square around
    /// its change from its view's reference, the mean of the view's first five frames of
    /// this class, with the change as a fourth channel: the model takes RGB and change
    /// (`features::ChangeLocator`).
    #[arg(long)]
    pub crop_to_change: Option<String>,
}

/// `64x48` → (64, 48).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not WIDTHxHEIGHT (e.g. 64x64)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

/// `lsskd-edge train`: [`run`], then what it wrote.
pub fn execute(args: &TrainArgs) -> anyhow::Result<()> {
    print!("{}", run(args)?.render());
    Ok(())
}

/// What `train` produced.
pub struct TrainOutcome {
    pub package: ModelPackage,
    pub epochs: Vec<EpochReport>,
    pub val: Option<EvalReport>,
    pub seconds: f64,
}

impl TrainOutcome {
    /// What `lsskd-edge train` prints.
    pub fn render(&self) -> String {
        let m = &self.package.manifest;
        let mut out = format!(
            "wrote {} ({} classes, {} deployed parameters, {} with auxiliary heads) in {:.0}s\n",
            self.package.dir.display(),
            m.classes.len(),
            m.deployed.param_count,
            m.deployed.training_param_count,
            self.seconds
        );
        if let Some(v) = &self.val {
            out.push_str(&format!(
                "validation accuracy (tract, {} samples): {:.4}\n",
                v.n, v.accuracy
            ));
        }
        out
    }
}

fn csv_header() -> &'static str {
    "epoch,steps,alpha,lr_end,loss,final_ce,sad,kl,feat,train_accuracy,val_accuracy,seconds,val_seconds"
}

fn csv_line(r: &EpochReport) -> String {
    format!(
        "{},{},{:.4},{:.6},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{},{:.2},{:.2}",
        r.epoch,
        r.steps,
        r.alpha,
        r.lr_end,
        r.loss.total,
        r.loss.final_ce,
        r.loss.sad,
        r.loss.kl,
        r.loss.feat,
        r.train_accuracy,
        r.val_accuracy
            .map(|v| format!("{v:.5}"))
            .unwrap_or_default(),
        r.seconds,
        r.val_seconds
    )
}

/// The joint-label transforms of an image input: rotations need square inputs; non-square
/// images use the flip group.
fn image_transforms(spec: &crate::features::ImageSpec) -> TransformSet {
    if spec.height == spec.width {
        TransformSet::Rot4
    } else {
        TransformSet::Flip4
    }
}

/// Preprocessing and transform group for a data set.
pub fn preprocess_for(ds: &Dataset) -> anyhow::Result<(Preprocess, TransformSet)> {
    let first = ds.items.first().context("empty data set")?;
    Ok(match &first.raw {
        Raw::Image(_) => {
            let spec = image_spec_for(ds)?;
            let set = image_transforms(&spec);
            (Preprocess::Image(spec), set)
        }
        Raw::Audio(_) => (Preprocess::Audio(audio_spec_for(ds)?), TransformSet::Flip4),
    })
}

/// Run `train`: load the data, settle the network's design (from `--init` or the data),
/// train, write the package, then evaluate it through tract.
pub fn run(args: &TrainArgs) -> anyhow::Result<TrainOutcome> {
    let started = Instant::now();
    let data = load_data(args)?;
    let init = args
        .init
        .as_ref()
        .map(|dir| ModelPackage::load(dir).with_context(|| format!("--init {}", dir.display())))
        .transpose()?;
    let design = match &init {
        Some(base) => Design::of_init(base, args, &data.train.classes)?,
        None => Design::for_data(&data.train, args)?,
    };
    info!(
        train = data.train.len(),
        val = data.val.as_ref().map_or(0, Dataset::len),
        classes = data.train.classes.len(),
        method = args.method.name(),
        input_shape = ?design.preprocess.input_shape(),
        "training"
    );
    let trained = train(args, &data, init.as_ref(), &design, started)?;
    let package = write_package(args, &data, init.as_ref(), design, &trained)?;
    let (package, val) = record_validation(package, data.val.as_ref(), args)?;
    Ok(TrainOutcome {
        package,
        epochs: trained.epochs,
        val,
        seconds: trained.seconds,
    })
}

/// The training split (every class present), its class counts, and the validation split.
struct TrainingData {
    train: Dataset,
    /// Training samples per class, in `train.classes` order (the background class last,
    /// with its windows' count; it has no items in `train`).
    counts: Vec<usize>,
    val: Option<Dataset>,
    /// `--noise-beds`: each bed's path and PCM.
    beds: Vec<(PathBuf, Vec<f32>)>,
}

impl TrainingData {
    /// The beds' PCM alone.
    fn bed_pcm(&self) -> Vec<Vec<f32>> {
        self.beds.iter().map(|(_, pcm)| pcm.clone()).collect()
    }
}

fn load_data(args: &TrainArgs) -> anyhow::Result<TrainingData> {
    let opts = LoadOptions {
        classes: args.classes.clone(),
        skip_bad: args.skip_bad,
        limit_per_class: args.limit_per_class,
    };
    let train = dataset::load(&args.data, &args.split, &opts).with_context(|| {
        format!(
            "loading training split `{}` of {}",
            args.split,
            args.data.display()
        )
    })?;
    if train.skipped_bad > 0 {
        tracing::warn!(
            skipped = train.skipped_bad,
            "skipped unreadable training files"
        );
    }
    let mut train = train;
    let regions = args
        .regions
        .as_deref()
        .map(dataset::regions::load)
        .transpose()?;
    let as_model_sees = |ds: &mut Dataset| -> anyhow::Result<()> {
        if let Some(r) = &regions {
            ds.crop_to_regions(r)?;
        }
        if let Some(reference) = &args.crop_to_change {
            ds.crop_to_changes(reference, REFERENCE_FRAMES)?;
        }
        if let Some((w, h)) = args.image_size {
            ds.resize_images(w as u32, h as u32);
        }
        Ok(())
    };
    as_model_sees(&mut train)?;
    let mut counts = train.class_counts();
    if let Some((i, _)) = counts.iter().enumerate().find(|(_, n)| **n == 0) {
        bail!(
            "class `{}` has no training samples in {}",
            train.classes[i],
            args.data.display()
        );
    }
    let beds = load_beds(args, &train)?;
    // The validation split's classes: the loaded ones (it has no background folder).
    let val_classes = train.classes.clone();
    if let Some(name) = &args.background_class {
        if args.noise_beds.is_none() {
            bail!("--background-class needs --noise-beds (its windows are drawn from the beds)");
        }
        if train.classes.contains(name) {
            bail!("--background-class `{name}` is already a class of the data set");
        }
        train.classes.push(name.clone());
        counts.push(counts.iter().sum::<usize>().div_ceil(counts.len()));
    }
    let val = match &args.val_split {
        Some(split) => {
            let vopts = LoadOptions {
                classes: Some(val_classes),
                skip_bad: args.skip_bad,
                limit_per_class: None,
            };
            let mut val = dataset::load(&args.data, split, &vopts).with_context(|| {
                format!(
                    "loading validation split `{split}` of {}",
                    args.data.display()
                )
            })?;
            as_model_sees(&mut val)?;
            Some(val)
        }
        None => None,
    };
    Ok(TrainingData {
        train,
        counts,
        val,
        beds,
    })
}

/// `--noise-beds`' WAV files, checked to be at the training clips' sample rate.
fn load_beds(args: &TrainArgs, train: &Dataset) -> anyhow::Result<Vec<(PathBuf, Vec<f32>)>> {
    let Some(dir) = &args.noise_beds else {
        return Ok(Vec::new());
    };
    let rate = train.items.iter().find_map(|i| match &i.raw {
        Raw::Audio(c) => Some(c.sample_rate_hz),
        Raw::Image(_) => None,
    });
    let Some(rate) = rate else {
        bail!("--noise-beds is for audio data sets");
    };
    let beds =
        dataset::load_wavs(dir).with_context(|| format!("--noise-beds {}", dir.display()))?;
    beds.into_iter()
        .map(|(path, clip)| {
            if clip.sample_rate_hz != rate {
                bail!(
                    "--noise-beds {}: {} Hz, the training clips are {rate} Hz",
                    path.display(),
                    clip.sample_rate_hz
                );
            }
            Ok((path, clip.samples))
        })
        .collect()
}

/// The audio augmentation `train` uses: the defaults, plus bed mixing with `--noise-beds`
/// and the band limit and reverberation with `--mic-augment`; none for images.
fn audio_augment(args: &TrainArgs, preprocess: &Preprocess) -> Option<AudioAugment> {
    match preprocess.modality() {
        Modality::Image => None,
        Modality::Audio => Some(AudioAugment {
            beds: args.noise_beds.as_ref().map(|_| BedMix::default()),
            band_limit: args.mic_augment.then(BandLimit::default),
            reverb: args.mic_augment.then(Reverb::default),
            ..AudioAugment::default()
        }),
    }
}

/// What the network is built from: the preprocessing, the joint-label transform group and
/// the architecture.
struct Design {
    preprocess: Preprocess,
    transforms: TransformSet,
    arch: ArchConfig,
}

impl Design {
    /// `--init`'s design, after checking it can continue on these classes with this method.
    fn of_init(base: &ModelPackage, args: &TrainArgs, classes: &[String]) -> anyhow::Result<Self> {
        let m = &base.manifest;
        if m.classes != classes {
            bail!(
                "--init {}: its classes {:?} differ from the data set's {:?}",
                base.dir.display(),
                m.classes,
                classes
            );
        }
        if m.train_state.aux_heads != args.method.aux_heads() {
            bail!(
                "--init {}: its training state {} auxiliary heads, method {} needs the other kind",
                base.dir.display(),
                if m.train_state.aux_heads {
                    "has"
                } else {
                    "has no"
                },
                args.method.name()
            );
        }
        Ok(Design {
            preprocess: m.preprocess.clone(),
            transforms: m.train_state.transforms,
            arch: m.arch.clone(),
        })
    }

    /// A fresh design: preprocessing fitted to the data, `--arch`'s preset.
    fn for_data(ds: &Dataset, args: &TrainArgs) -> anyhow::Result<Self> {
        let (mut preprocess, mut transforms) = preprocess_for(ds)?;
        if let (Preprocess::Image(spec), Some((width, height))) = (&mut preprocess, args.image_size)
        {
            spec.width = width;
            spec.height = height;
            transforms = image_transforms(spec);
        }
        let arch =
            ArchConfig::preset(&args.arch, preprocess.input_shape()[0]).with_context(|| {
                format!(
                    "unknown --arch `{}` (resnet-xs, resnet-s, resnet-m)",
                    args.arch
                )
            })?;
        Ok(Design {
            preprocess,
            transforms,
            arch,
        })
    }
}

/// The trained network and how it was trained.
struct Trained {
    net: TrainNet,
    cfg: TrainConfig,
    epochs: Vec<EpochReport>,
    /// Parameters of the training network, auxiliary heads included.
    training_param_count: usize,
    /// Since `train` started, data loading included.
    seconds: f64,
}

/// Build the network (fresh, or `--init`'s checkpoint) and fit it, logging each epoch to
/// `<out>/train-log.csv`.
fn train(
    args: &TrainArgs,
    data: &TrainingData,
    init: Option<&ModelPackage>,
    design: &Design,
    started: Instant,
) -> anyhow::Result<Trained> {
    let mut cfg = TrainConfig::new(args.method, design.transforms);
    cfg.transform_mode = args.transforms;
    cfg.epochs = args.epochs;
    cfg.batch_size = args.batch_size;
    cfg.lr = args.lr;
    cfg.seed = args.seed;
    cfg.budget_secs = args.budget_mins.map(|m| (m * 60.0) as u64);

    let mut train_data = FeatureData::from_dataset(&data.train, &design.preprocess, true)?;
    if let Some(a) = audio_augment(args, &design.preprocess) {
        train_data.set_room(a, data.bed_pcm());
    }
    if args.background_class.is_some() {
        let label = data.train.classes.len() - 1;
        train_data.add_background(label, data.counts[label]);
    }
    let val_data = data
        .val
        .as_ref()
        .map(|v| FeatureData::from_dataset(v, &design.preprocess, false))
        .transpose()?;

    let device = lsskd::training_device(args.seed);
    let classes = data.train.classes.len();
    let net = match init {
        Some(base) => checkpoint::load(
            &design.arch,
            classes,
            design.transforms.len(),
            args.method.aux_heads(),
            &base.train_state_path(),
            &device,
        )?,
        None => TrainNet::new(
            &design.arch,
            classes,
            design.transforms.len(),
            args.method.aux_heads(),
            &device,
        ),
    };
    let training_param_count = net.param_count();
    let mut trainer = Trainer::new(net, cfg.clone(), design.preprocess.input_shape());
    let epochs = fit(
        &mut trainer,
        &train_data,
        val_data.as_ref().map(|v| v as &dyn TrainData),
        args,
    )?;
    Ok(Trained {
        net: trainer.into_net(),
        cfg,
        epochs,
        training_param_count,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `trainer.fit` with a progress bar on stderr (or, with no terminal, a log line now and
/// then), each epoch logged and appended to `<out>/train-log.csv`.
fn fit(
    trainer: &mut Trainer,
    train_data: &dyn TrainData,
    val_data: Option<&dyn TrainData>,
    args: &TrainArgs,
) -> anyhow::Result<Vec<EpochReport>> {
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let log_path = args.out.join("train-log.csv");
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    writeln!(log, "{}", csv_header())?;

    let bar = if args.progress_bar {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    let mut log_err = None;
    let epochs = trainer.fit(train_data, val_data, &|| false, &mut |p| match p {
        Progress::Planned {
            total_steps,
            epochs,
        } => {
            bar.set_length(total_steps as u64);
            bar.set_message(format!("{epochs} epochs"));
        }
        Progress::Step { step, loss } => {
            bar.set_position(step as u64);
            if step.is_multiple_of(10) {
                bar.set_message(format!("loss {loss:.3}"));
            }
            // No terminal (service logs, CI): a log line now and then instead of a bar.
            if bar.is_hidden() && step.is_multiple_of(100) {
                info!(
                    step,
                    total = bar.length().unwrap_or(0),
                    loss,
                    "training progress"
                );
            }
        }
        Progress::Epoch(r) => {
            let line = epoch_line(r);
            if bar.is_hidden() {
                info!("{line}");
            } else {
                bar.println(&line);
            }
            if let Err(e) = writeln!(log, "{}", csv_line(r)) {
                log_err = Some(e);
            }
        }
    })?;
    bar.finish_and_clear();
    if let Some(e) = log_err {
        return Err(e).with_context(|| format!("writing {}", log_path.display()));
    }
    Ok(epochs)
}

/// The line each epoch prints (or logs).
fn epoch_line(r: &EpochReport) -> String {
    format!(
        "epoch {:>3}  loss {:.4} (final {:.3} sad {:.3} kl {:.3} feat {:.3})  train acc {:.4}  val acc {}  {:.0}s",
        r.epoch,
        r.loss.total,
        r.loss.final_ce,
        r.loss.sad,
        r.loss.kl,
        r.loss.feat,
        r.train_accuracy,
        r.val_accuracy
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into()),
        r.seconds
    )
}

/// The package: ONNX of the student only, the full training checkpoint, replay exemplars,
/// the gate set (validation exemplars, never trained on) and the manifest.
fn write_package(
    args: &TrainArgs,
    data: &TrainingData,
    init: Option<&ModelPackage>,
    design: Design,
    trained: &Trained,
) -> anyhow::Result<ModelPackage> {
    let classes = &data.train.classes;
    let deployed = export::deployed(&trained.net.student, design.preprocess.input_shape())?;
    let state_tmp = args.out.join(".train-state.tmp");
    checkpoint::save(&trained.net, &state_tmp)?;
    let state = fs::read(&state_tmp).with_context(|| format!("reading {}", state_tmp.display()))?;
    fs::remove_file(&state_tmp).ok();
    let background = background_replay(args, data, &design.preprocess);
    let replay_items: Vec<(usize, &Raw)> = data
        .train
        .items
        .iter()
        .map(|i| (i.label, &i.raw))
        .chain(background.iter().map(|(l, r)| (*l, r)))
        .collect();
    let mut files = vec![
        (MODEL_ONNX.to_string(), write_onnx(&deployed)),
        (TRAIN_STATE.to_string(), state),
    ];
    files.extend(
        replay::select(&replay_items, classes, args.replay_per_class)
            .map_err(anyhow::Error::msg)?,
    );
    if let Some(v) = &data.val {
        let val_items: Vec<(usize, &Raw)> = v.items.iter().map(|i| (i.label, &i.raw)).collect();
        files.extend(super::export::select_gate(
            classes,
            &val_items,
            &[],
            &Default::default(),
            args.gate_per_class,
        )?);
    }

    let manifest = Manifest {
        format: FORMAT,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| match design.preprocess.modality() {
                Modality::Image => "vision".into(),
                Modality::Audio => "audio".into(),
            }),
        version: 0,
        parent: None,
        created_at: now_rfc3339(),
        classes: classes.clone(),
        background: args.background_class.clone(),
        change_reference: args.crop_to_change.clone(),
        preprocess: design.preprocess.clone(),
        arch: design.arch,
        method: trained.cfg.clone(),
        train_state: CheckpointInfo {
            file: TRAIN_STATE.into(),
            aux_heads: args.method.aux_heads(),
            transforms: design.transforms,
            logit_offset: Vec::new(),
        },
        training_data: Some(DataInfo {
            data: args.data.display().to_string(),
            split: args.split.clone(),
            samples_per_class: classes.iter().cloned().zip(data.counts.clone()).collect(),
            init: init.map(|b| b.dir.display().to_string()),
            audio_augment: audio_augment(args, &design.preprocess),
            noise_beds: data
                .beds
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect(),
        }),
        training_seconds: trained.seconds,
        metrics: Vec::new(),
        deployed: DeployedInfo {
            param_count: deployed.param_count(),
            training_param_count: trained.training_param_count,
            auxiliary_heads_exported: false,
            embedding_dim: deployed.embedding_dim(),
        },
        adaptation: None,
        files: Default::default(),
    };
    Ok(ModelPackage::write(&args.out, manifest, files)?)
}

/// Replay exemplars of `--background-class`: fixed windows of the beds (seeded by
/// `--seed`), so that fine-tunes on the device keep the class.
fn background_replay(
    args: &TrainArgs,
    data: &TrainingData,
    preprocess: &Preprocess,
) -> Vec<(usize, Raw)> {
    let (Some(_), Preprocess::Audio(spec)) = (&args.background_class, preprocess) else {
        return Vec::new();
    };
    let label = data.train.classes.len() - 1;
    let beds = data.bed_pcm();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(args.seed);
    (0..args.replay_per_class)
        .map(|_| {
            let samples = BedMix::default().background(&beds, spec.clip_samples, &mut rng);
            (
                label,
                Raw::Audio(crate::features::Clip {
                    samples,
                    sample_rate_hz: spec.sample_rate_hz,
                }),
            )
        })
        .collect()
}

/// Validation metrics through the deployed path (tract), recorded in the manifest.
fn record_validation(
    package: ModelPackage,
    val: Option<&Dataset>,
    args: &TrainArgs,
) -> anyhow::Result<(ModelPackage, Option<EvalReport>)> {
    let Some(v) = val else {
        return Ok((package, None));
    };
    let report = evaluate(&package, v)?;
    let mut manifest = package.manifest.clone();
    manifest.metrics.push(SetMetrics {
        set: format!(
            "{}:{}",
            args.data.display(),
            args.val_split.as_deref().unwrap_or("")
        ),
        accuracy: report.accuracy,
        n: report.n,
        per_class: report.per_class.clone(),
    });
    let package = rewrite_manifest(&package, manifest)?;
    Ok((package, Some(report)))
}

/// Replace a package's manifest (file hashes unchanged) and re-verify.
pub fn rewrite_manifest(
    pkg: &ModelPackage,
    mut manifest: Manifest,
) -> anyhow::Result<ModelPackage> {
    manifest.files = pkg.manifest.files.clone();
    let path = pkg.dir.join(crate::registry::package::MANIFEST);
    let tmp = pkg.dir.join(".manifest.json.tmp");
    crate::registry::package::write_synced(&tmp, &serde_json::to_vec_pretty(&manifest)?)?;
    fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(ModelPackage::load(&pkg.dir)?)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn an_input_size_is_width_x_height() {
        assert_eq!(parse_size("64x48"), Ok((64, 48)));
        assert_eq!(parse_size("96X72"), Ok((96, 72)));
        for bad in ["64", "0x64", "ax4", "64x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
