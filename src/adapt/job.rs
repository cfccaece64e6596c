//! One adaptation: imprint the new labels of a support set into a package's training
//! model, then a short fine-tune (LSSKD for audio, cross-entropy for images: see
//! [`AdaptConfig::for_modality`]) on the support plus the package's replay exemplars
//! (against forgetting). Shared by the daemon's trainer thread and `fewshot-bench`. Runs on
//! the caller's (dedicated, low-priority) thread; `cancel` is polled between steps.
//!
//! *(choices, LSSKD.md §6, measured in BENCHMARKS.md "Few-shot adaptation")*
//! - Only the last stage and the heads train: the stem and every earlier stage keep their
//!   weights and BatchNorm statistics.
//! - Replay exemplars are anchored to what the model said before adapting: the softmax of
//!   its final head is mixed into their targets, and their embedding is pulled towards the
//!   old one. Both work against forgetting; the new classes are free to move.
//! - Image samples of the user's classes are augmented without mirroring (a mirrored digit
//!   or arrow is not the same class) but with shifts, rotation and zoom; the replay
//!   exemplars keep the augmentation the model was trained with.
//! - A cross-entropy fine-tune leaves the auxiliary heads as imprinted: inference never
//!   uses them, and a later fine-tune of the same recipe does not either.

use serde::{Deserialize, Serialize};

use crate::augment::{AudioAugment, ImageAugment};
use crate::features::{Preprocess, Raw};
use crate::inference::scores::softmax;
use crate::inference::write_onnx;
use crate::lsskd::{
    LsskdError, Method, TrainConfig, TrainNet, Trainer, TransformMode, TransformSet, checkpoint,
    export, imprint,
};
use crate::trainset::FeatureData;

fn lsskd() -> Method {
    Method::Lsskd
}

fn one() -> f32 {
    1.0
}

fn yes() -> bool {
    true
}

/// Settings of a fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptConfig {
    /// 0: imprint only.
    pub epochs: usize,
    /// The fine-tune's loss terms (LSSKD.md §6: an LSSKD fine-tune; `sla` drops the
    /// self-distillation, `ce` the auxiliary heads too).
    #[serde(default = "lsskd")]
    pub method: Method,
    pub batch_size: usize,
    pub lr: f64,
    /// Wall-clock budget of the fine-tune; the schedule is compressed to fit.
    pub budget_secs: Option<u64>,
    /// Stages that train, counted from the output side (with the heads); the stem and the
    /// earlier stages are frozen, weights and BatchNorm statistics.
    pub trained_stages: usize,
    pub transform_mode: TransformMode,
    /// Replay exemplars: weight of the pre-adaptation prediction in their targets.
    pub anchor_weight: f32,
    /// Replay exemplars: weight of the pull of their embedding towards the pre-adaptation one.
    pub anchor_embedding_weight: f32,
    /// Augmentation of the user's image samples (the replay keeps the package's).
    pub sample_augment: ImageAugment,
    /// Augmentation of the user's audio samples (the replay keeps the package's).
    #[serde(default)]
    pub sample_audio_augment: AudioAugment,
    /// Weight of the fine-tuned parameters in the result; the rest is the imprinted
    /// model's (weight-space interpolation of the two, as WiSE-FT does for zero-shot and
    /// fine-tuned models). 1: the fine-tune as trained.
    #[serde(default = "one")]
    pub mix: f32,
    /// With `mix < 1`: whether the classifier head is interpolated too (`false`: the
    /// fine-tuned head is kept whole and only the layers below it are interpolated).
    #[serde(default = "yes")]
    pub mix_head: bool,
    /// Weight of the pull of the new labels' classifier rows towards their imprinted
    /// prototypes while fine-tuning (`Σ ‖ŵ − ŵ_imprint‖²` over unit rows); 0: free.
    #[serde(default)]
    pub row_anchor: f32,
    /// Added to the new labels' logits in the fine-tuned model. A few samples teach a
    /// label as those samples sound; queries unlike them then fall to the shipped classes,
    /// which were trained on many more. 0: none.
    #[serde(default)]
    pub new_label_offset: f32,
    /// With calibration clips ([`Replay::calibrate_on`]): the new labels' offset is raised
    /// from `new_label_offset` towards this as far as the clips allow — the largest offset
    /// at which no clip of a shipped class that the fine-tune gets right at
    /// `new_label_offset` goes to a new label. At or below `new_label_offset` (every
    /// recipe): no calibration, the offset is `new_label_offset`. Measured, not kept
    /// (BENCHMARKS.md "Audio's new words on other accents: two more seeds, and the offset
    /// calibrated per adaptation"): it lifts new words on other accents by 0.6-1.6 points
    /// for 1-1.4 points of the shipped words, and the clips it calibrates on are the
    /// gate's, which then cannot see that cost.
    #[serde(default)]
    pub new_label_offset_max: f32,
    /// Anchor the user's samples' embeddings to what the network made of them before
    /// adapting, as the replay exemplars' are (weight `anchor_embedding_weight`).
    /// Measured, in no recipe (BENCHMARKS.md "Audio's new words on other accents: two more
    /// seeds, and the offset calibrated per adaptation"): within the interval on new words
    /// from other accents, half a point to a point of the shipped words.
    #[serde(default)]
    pub support_anchor: bool,
    pub seed: u64,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            epochs: 15,
            method: Method::Lsskd,
            batch_size: 16,
            lr: 0.02,
            budget_secs: Some(10),
            trained_stages: 1,
            transform_mode: TransformMode::Sampled,
            anchor_weight: 0.5,
            anchor_embedding_weight: 1.0,
            sample_augment: ImageAugment {
                crop_padding: 2,
                hflip: false,
                rotate_deg: 12.0,
                scale: 0.1,
            },
            sample_audio_augment: AudioAugment::default(),
            mix: 1.0,
            mix_head: true,
            row_anchor: 0.0,
            new_label_offset: 0.0,
            new_label_offset_max: 0.0,
            support_anchor: false,
            seed: 0,
        }
    }
}

impl AdaptConfig {
    /// Whether the new labels' offset is calibrated ([`AdaptConfig::new_label_offset_max`]):
    /// only then does the adaptation need [`Replay::calibrate_on`].
    pub fn calibrates(&self) -> bool {
        self.new_label_offset_max > self.new_label_offset
    }

    /// *(choice, measured: BENCHMARKS.md "Few-shot on unseen speakers and real drums" and
    /// "Promoted versions on the full validation split")* The recipe for a model of
    /// `modality`. Audio fine-tunes at a higher learning rate (0.1) and keeps 85 % of the
    /// fine-tune against 15 % of the imprinted model (`mix` 0.85): with one accent's
    /// samples, the plain recipe learnt the new words for that accent only (0.850 on other
    /// accents against 0.927 imprinted); interpolating towards the imprint carries the
    /// imprint's generality over (0.933 at 0.7) but also its habit of taking shipped words
    /// (the imprinted head alone keeps 0.55-0.76 of them): at 0.7 one promoted version in
    /// ten lost 0.025 of the shipped words, more than `max_old_drop`; at 0.85 at most
    /// 0.0125. (The audio recipe costs vision 2 points.)
    ///
    /// Audio's new labels also get an offset added to their logits: on other accents most
    /// of the fine-tune's errors were new words taken for shipped ones (0.058 of 0.066 on
    /// one seed). On digits the errors are among the new labels and an offset buys nothing
    /// (0.885 → 0.886).
    ///
    /// Audio fine-tunes with plain cross-entropy for 30 epochs, with the offset at 1.0
    /// (BENCHMARKS.md "Audio's new words on other accents: a longer fine-tune"). A
    /// cross-entropy step costs about half an `lsskd` one, so 240 steps take 10 s where 120
    /// `lsskd` steps took 7, and the longer schedule wins back what the first epochs take
    /// from the new words on other voices. Over six seeds of cross-accent episodes, new
    /// words went from 0.936 (15 `lsskd` epochs, offset 0.5) to 0.951, every seed at or
    /// above imprinting alone, with the shipped words where they were (0.992 against
    /// 0.993); on two fresh seeds 0.966 and 0.960 against the imprint's 0.953 and 0.949.
    ///
    /// Images fine-tune with plain cross-entropy (`Method::Ce`: no auxiliary heads, half
    /// the step time) and shift the user's samples by up to 4 pixels, rotate them by up to
    /// 20° and scale them by up to 20 % (BENCHMARKS.md "Few-shot vision: the sample
    /// augmentation and the fine-tune's method"): on 5-way 5-shot digits the stronger
    /// augmentation took novel accuracy from 0.882 to 0.910, and cross-entropy kept more of
    /// the shipped classes than the LSSKD fine-tune did (drop 0.009 against 0.012).
    pub fn for_modality(modality: crate::features::Modality) -> AdaptConfig {
        match modality {
            crate::features::Modality::Audio => AdaptConfig {
                method: Method::Ce,
                epochs: 30,
                lr: 0.1,
                mix: 0.85,
                new_label_offset: 1.0,
                ..AdaptConfig::default()
            },
            crate::features::Modality::Image => AdaptConfig {
                method: Method::Ce,
                sample_augment: ImageAugment {
                    crop_padding: 4,
                    rotate_deg: 20.0,
                    scale: 0.2,
                    ..AdaptConfig::default().sample_augment
                },
                ..AdaptConfig::default()
            },
        }
    }
}

/// `net` with `offset` added to the logits of its classes from `first` on (the
/// adaptation's new labels); earlier offsets stay.
pub(crate) fn offset_labels(mut net: TrainNet, first: usize, offset: f32) -> TrainNet {
    let c = &mut net.student.classifier;
    let classes = c.classes();
    if offset == 0.0 || first >= classes || !c.is_cosine() {
        return net;
    }
    c.offset.resize(classes, 0.0);
    for o in &mut c.offset[first..] {
        *o = offset;
    }
    net
}

/// A model frozen in bytes: what is deployed (`model.onnx`) and what training continues
/// from (the burnpack training state). Taken before anything trains further: clones of a
/// burn module share their BatchNorm running statistics, so a kept `TrainNet` clone would
/// silently follow the fine-tune.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub onnx: Vec<u8>,
    pub train_state: Vec<u8>,
    /// Parameters of the deployed graph.
    pub param_count: usize,
    /// The classifier's logit offsets (kept in the manifest, not the training state).
    pub logit_offset: Vec<f32>,
}

impl Snapshot {
    pub fn of(net: &TrainNet, shape: [usize; 3]) -> anyhow::Result<Snapshot> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let deployed = export::deployed(&net.student, shape)?;
        let tmp = std::env::temp_dir().join(format!(
            "lsskd-snapshot-{}-{}.bpk",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        checkpoint::save(net, &tmp)?;
        let train_state = std::fs::read(&tmp);
        let _ = std::fs::remove_file(&tmp);
        Ok(Snapshot {
            onnx: write_onnx(&deployed),
            train_state: train_state?,
            param_count: deployed.param_count(),
            logit_offset: net.student.classifier.offset.clone(),
        })
    }
}

/// The outcome: the imprint-only model (snapshot), the fine-tuned one, and the extended
/// class list.
pub struct Adapted {
    pub imprinted: Snapshot,
    pub tuned: TrainNet,
    /// Fine-tune steps taken (0: imprint only).
    pub steps: usize,
    pub classes: Vec<String>,
    pub new_classes: Vec<String>,
    /// The offset the new labels' logits got in `tuned` ([`AdaptConfig::new_label_offset`],
    /// calibrated where [`AdaptConfig::new_label_offset_max`] says so).
    pub new_label_offset: f32,
}

/// The replay exemplars of an adaptation, (class index, raw), with what the network before
/// it makes of them: the centres of imprinting ([`imprint::Centres`]) and each exemplar's
/// anchor (its softmax over the old classes and its embedding). Computed once per
/// adaptation and shared by all its fine-tunes, the gate's cross-validation folds included.
pub struct Replay<'a> {
    pub items: &'a [(usize, Raw)],
    centres: imprint::Centres,
    /// Per exemplar: (softmax over the old classes, embedding).
    anchors: Vec<(Vec<f32>, Vec<f32>)>,
    /// Held-out clips of the shipped classes, (class index, input), that calibrate the new
    /// labels' offset ([`AdaptConfig::new_label_offset_max`]).
    calibration: Vec<(usize, Vec<f32>)>,
}

impl<'a> Replay<'a> {
    /// `net` is the network the adaptation starts from (the live model's training state).
    pub fn new(
        net: &TrainNet,
        preprocess: &Preprocess,
        set: TransformSet,
        items: &'a [(usize, Raw)],
    ) -> anyhow::Result<Replay<'a>> {
        let shape = preprocess.input_shape();
        let inputs = items
            .iter()
            .map(|(_, raw)| preprocess.tensor(raw))
            .collect::<Result<Vec<_>, _>>()?;
        // One pass of the network over the exemplars gives both.
        let (centres, before) = imprint::Centres::of(net, &inputs, set, shape)?;
        let anchors = before
            .logits
            .iter()
            .map(|l| softmax(l))
            .zip(before.embeddings)
            .collect();
        Ok(Replay {
            items,
            centres,
            anchors,
            calibration: Vec::new(),
        })
    }

    /// Calibrate the new labels' offset on `clips` (class index, raw) of the shipped
    /// classes, held out of training: the daemon's gate set.
    pub fn calibrate_on(
        mut self,
        preprocess: &Preprocess,
        clips: &[(usize, &Raw)],
    ) -> anyhow::Result<Replay<'a>> {
        self.calibration = clips
            .iter()
            .map(|(l, raw)| Ok((*l, preprocess.tensor(raw)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(self)
    }
}

/// *(measured, in no recipe: BENCHMARKS.md "Audio's new words on other accents: two more
/// seeds, and the offset calibrated per adaptation")* The largest offset in `[floor, cap]` for the new
/// labels (classes from `first` on) at which no calibration clip that is right at `floor`
/// goes to a new label. `logits` are the clips' logits without the new labels' offset; a clip
/// stays right while its class's logit exceeds every new label's plus the offset. With
/// `n` clips, the offset so chosen takes, in expectation, at most `1/(n+1)` of unseen
/// clips that were right (the smallest of `n + 1` exchangeable margins).
pub(crate) fn calibrated_offset(
    logits: &[(usize, Vec<f32>)],
    first: usize,
    floor: f32,
    cap: f32,
) -> f32 {
    let mut offset = cap;
    for (class, l) in logits {
        if first >= l.len() || *class >= first {
            continue;
        }
        let best_new = l[first..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let best_old = l[..first]
            .iter()
            .enumerate()
            .filter(|(c, _)| c != class)
            .map(|(_, v)| *v)
            .fold(f32::NEG_INFINITY, f32::max);
        let right_at_floor = l[*class] > best_old && l[*class] > best_new + floor;
        if right_at_floor {
            // Just below the offset at which this clip would go to a new label.
            offset = offset.min((l[*class] - best_new) * (1.0 - 1e-4));
        }
    }
    offset.max(floor)
}

/// Imprint then fine-tune. `support` holds (label name, raw) — labels not in `classes` are
/// new classes, appended in order of first appearance; `replay` holds exemplars of the
/// existing classes, prepared from `net` ([`Replay::new`]).
#[allow(clippy::too_many_arguments)]
pub fn adapt(
    net: TrainNet,
    classes: &[String],
    preprocess: &Preprocess,
    set: TransformSet,
    support: &[(String, Raw)],
    replay: &Replay<'_>,
    cfg: &AdaptConfig,
    cancel: &dyn Fn() -> bool,
    on_progress: &mut dyn FnMut(f64),
) -> anyhow::Result<Adapted> {
    anyhow::ensure!(!support.is_empty(), "no support samples");
    let mut all = classes.to_vec();
    let mut new_classes = Vec::new();
    for (label, _) in support {
        if !all.contains(label) {
            all.push(label.clone());
            new_classes.push(label.clone());
        }
    }
    let shape = preprocess.input_shape();
    let index = |l: &str| {
        all.iter()
            .position(|c| c == l)
            .expect("every support label is in `all`")
    };

    // 1. Imprint: usable at once.
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for (label, raw) in support.iter().filter(|(l, _)| new_classes.contains(l)) {
        inputs.push(preprocess.tensor(raw)?);
        labels.push(index(label) - classes.len());
    }
    let imprinted = if new_classes.is_empty() {
        net
    } else {
        imprint::imprint(
            net,
            &inputs,
            &labels,
            new_classes.len(),
            &replay.centres,
            set,
            shape,
        )?
    };

    let snapshot = Snapshot::of(&imprinted, shape)?;
    if cfg.epochs == 0 {
        return Ok(Adapted {
            imprinted: snapshot,
            tuned: imprinted,
            steps: 0,
            classes: all,
            new_classes,
            new_label_offset: 0.0,
        });
    }

    // 2. Fine-tune on support + replay, epoch-0 targets one-hot, sampled transforms.
    // Class-balanced: each support sample is repeated so that a label has about as many
    // items as an average replay class (the augmentation makes the copies differ);
    // otherwise a few shots drown among the exemplars and the new classes lose.
    let mut shots: std::collections::BTreeMap<&str, usize> = Default::default();
    for (l, _) in support {
        *shots.entry(l.as_str()).or_default() += 1;
    }
    let per_replay_class = replay.items.len() as f64 / classes.len().max(1) as f64;
    let mut items: Vec<(usize, &Raw)> = Vec::new();
    // Per item of the support: its sample's index in `support`.
    let mut sample_of = Vec::new();
    for (k, (l, r)) in support.iter().enumerate() {
        let reps = (per_replay_class / shots[l.as_str()] as f64)
            .round()
            .max(1.0) as usize;
        items.extend(std::iter::repeat_n((index(l), r), reps));
        sample_of.extend(std::iter::repeat_n(k, reps));
    }
    let first_replay = items.len();
    // Optionally the support's embeddings before adapting (imprinting changes no
    // embedding), to anchor the user's samples as the replay is anchored.
    let support_anchors = if cfg.support_anchor {
        let inputs = support
            .iter()
            .map(|(_, raw)| preprocess.tensor(raw))
            .collect::<Result<Vec<_>, _>>()?;
        crate::lsskd::infer::forward_batch(&imprinted.student, &inputs, shape)?.embeddings
    } else {
        Vec::new()
    };
    items.extend(replay.items.iter().map(|(i, r)| (*i, r)));
    let mut data = FeatureData::new(items, preprocess, true)?;
    for i in 0..first_replay {
        data.set_image_augment(i, cfg.sample_augment.clone());
        data.set_audio_augment(i, cfg.sample_audio_augment.clone());
    }
    // Anchors: the replay exemplars as the model saw them before adapting.
    for (k, (probs, embedding)) in replay.anchors.iter().enumerate() {
        data.set_anchor(first_replay + k, probs.clone(), embedding.clone());
    }
    if !support_anchors.is_empty() {
        // The target stays the sample's label (its one-hot as the anchor's "prediction").
        for (i, &k) in sample_of.iter().enumerate() {
            let mut probs = vec![0.0; all.len()];
            probs[index(&support[k].0)] = 1.0;
            data.set_anchor(i, probs, support_anchors[k].clone());
        }
    }
    let mut tc = TrainConfig::new(cfg.method, set);
    tc.epochs = cfg.epochs;
    tc.batch_size = cfg.batch_size;
    tc.lr = cfg.lr;
    tc.budget_secs = cfg.budget_secs;
    tc.freeze_early = true;
    tc.frozen_stages = imprinted
        .student
        .stages
        .len()
        .saturating_sub(cfg.trained_stages);
    tc.anchor_weight = cfg.anchor_weight;
    tc.anchor_embedding_weight = cfg.anchor_embedding_weight;
    tc.transform_mode = cfg.transform_mode;
    tc.seed = cfg.seed;
    tc.warmup_fraction = 0.1;
    let start = (cfg.mix < 1.0).then(|| imprinted.float_values());
    let mut trainer = Trainer::new(imprinted, tc, shape);
    let mut total = 0usize;
    let mut report = |p: crate::lsskd::Progress<'_>| match p {
        crate::lsskd::Progress::Planned { total_steps, .. } => {
            if total > 0 {
                tracing::debug!(
                    from = total,
                    to = total_steps,
                    "fine-tune schedule refitted to the budget"
                );
            }
            total = total_steps.max(1);
        }
        crate::lsskd::Progress::Step { step, .. } => {
            on_progress(((step + 1) as f64 / total.max(1) as f64).min(1.0))
        }
        crate::lsskd::Progress::Epoch(_) => {}
    };
    let steps = match trainer.fit(&data, None, cancel, &mut report) {
        Ok(reports) => reports.iter().map(|r| r.steps).sum(),
        Err(LsskdError::Cancelled) => anyhow::bail!("adaptation cancelled"),
        Err(e) => return Err(e.into()),
    };
    let tuned = match start {
        Some(start) => {
            let net = trainer.into_net();
            let head = (!cfg.mix_head).then(|| net.student.classifier.clone());
            let mut mixed = net.interpolate(&start, cfg.mix);
            if let Some(head) = head {
                mixed.student.classifier = head;
            }
            mixed
        }
        None => trainer.into_net(),
    };
    let offset = if cfg.calibrates()
        && !replay.calibration.is_empty()
        && !new_classes.is_empty()
        && tuned.student.classifier.is_cosine()
    {
        let inputs: Vec<Vec<f32>> = replay.calibration.iter().map(|(_, x)| x.clone()).collect();
        let out = crate::lsskd::infer::forward_batch(&tuned.student, &inputs, shape)?;
        let logits: Vec<(usize, Vec<f32>)> = replay
            .calibration
            .iter()
            .map(|(c, _)| *c)
            .zip(out.logits)
            .collect();
        calibrated_offset(
            &logits,
            classes.len(),
            cfg.new_label_offset,
            cfg.new_label_offset_max,
        )
    } else {
        cfg.new_label_offset
    };
    let tuned = offset_labels(tuned, classes.len(), offset);
    Ok(Adapted {
        imprinted: snapshot,
        tuned,
        steps,
        classes: all,
        new_classes,
        new_label_offset: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsskd::net::ArchConfig;

    #[test]
    fn the_calibrated_offset_stops_before_the_first_clip_it_would_take() {
        // Classes 0-1 shipped, 2-3 new. Margins of the right clips over the best new
        // label: 2.0, 1.2, 3.0; the wrong clip and the clip a new label already takes at
        // the floor do not limit it.
        let logits = vec![
            (0, vec![5.0, 1.0, 3.0, 2.0]),
            (1, vec![0.0, 4.0, 2.8, 1.0]),
            (0, vec![4.0, 0.0, 1.0, 0.5]),
            (1, vec![5.0, 4.0, 0.0, 0.0]),
            (0, vec![3.0, 0.0, 2.8, 0.0]),
        ];
        let offset = calibrated_offset(&logits, 2, 0.5, 2.5);
        assert!(offset < 1.2 && offset > 1.19, "{offset}");
        // Every clip stays right at the calibrated offset.
        for (class, l) in &logits[..3] {
            let shifted: Vec<f32> = l
                .iter()
                .enumerate()
                .map(|(c, v)| if c >= 2 { v + offset } else { *v })
                .collect();
            assert_eq!(crate::inference::argmax(&shifted), *class);
        }
        assert_eq!(calibrated_offset(&logits, 2, 0.5, 1.0), 1.0, "capped");
        // From a floor of 1.5 the clip with margin 1.2 is a new label's already.
        let offset = calibrated_offset(&logits, 2, 1.5, 2.5);
        assert!(offset < 2.0 && offset > 1.99, "{offset}");
        assert_eq!(calibrated_offset(&[], 2, 0.5, 2.5), 2.5, "no clip: the cap");
    }

    #[test]
    fn new_labels_get_the_offset_and_earlier_ones_keep_theirs() {
        let arch = ArchConfig::preset("resnet-xs", 1).expect("preset");
        let device = crate::lsskd::training_device(0);
        let net = TrainNet::new(&arch, 4, 4, false, &device);
        let net = offset_labels(net, 4, 0.5);
        assert!(net.student.classifier.offset.is_empty(), "no new label");
        let net = offset_labels(net, 2, 0.0);
        assert!(net.student.classifier.offset.is_empty(), "offset 0: none");
        let mut net = offset_labels(net, 2, 0.5);
        assert_eq!(net.student.classifier.offset, vec![0.0, 0.0, 0.5, 0.5]);
        net.student.classifier.offset[2] = 0.25;
        let net = offset_labels(net, 3, 1.0);
        assert_eq!(net.student.classifier.offset, vec![0.0, 0.0, 0.25, 1.0]);
    }
}
