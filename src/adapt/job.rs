//! One adaptation: imprint the new labels of a support set into a package's training
//! model, then a short cross-entropy fine-tune (the [`Recipe`]) on the support plus the
//! package's replay exemplars (against forgetting). Called by the adaptation core
//! (`adapt::core`) for the daemon's learner, `fewshot-bench` and the gate's
//! cross-validation folds alike. Runs on the caller's (dedicated, low-priority) thread;
//! `cancel` is polled between steps.
//!
//! *(choices, LSSKD.md §6, measured in BENCHMARKS.md "Few-shot adaptation")*
//! - Only the last stage and the head train: the stem and every earlier stage keep their
//!   weights and BatchNorm statistics.
//! - Replay exemplars are anchored to what the model said before adapting: the softmax of
//!   its final head is mixed into their targets, and their embedding is pulled towards the
//!   old one. Both work against forgetting; the new classes are free to move.
//! - Image samples of the user's classes are augmented without mirroring (a mirrored digit
//!   or arrow is not the same class) but with shifts, rotation and zoom; the replay
//!   exemplars keep the augmentation the model was trained with.
//! - The cross-entropy fine-tune leaves the auxiliary heads as imprinted: inference never
//!   uses them, and a later fine-tune does not either.

use std::collections::BTreeMap;

use super::recipe::Recipe;
use crate::features::{Preprocess, Raw};
use crate::inference::scores::softmax;
use crate::inference::write_onnx;
use crate::lsskd::{
    LsskdError, Method, TrainConfig, TrainNet, Trainer, TransformMode, TransformSet, checkpoint,
    export, imprint,
};
use crate::trainset::FeatureData;

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
    /// The offset the new labels' logits got in `tuned` ([`Recipe::new_label_offset`]).
    pub new_label_offset: f32,
}

/// The replay exemplars of an adaptation, (class index, raw), with what the network before
/// it makes of them: the centres of imprinting ([`imprint::Centres`]) and each exemplar's
/// anchor (its softmax over the shipped classes and its embedding). Computed once per
/// adaptation and shared by all its fine-tunes, the gate's cross-validation folds included.
pub struct AnchoredReplay<'a> {
    pub items: &'a [(usize, Raw)],
    centres: imprint::Centres,
    /// Per exemplar: (softmax over the classes before adapting, embedding).
    anchors: Vec<(Vec<f32>, Vec<f32>)>,
}

impl<'a> AnchoredReplay<'a> {
    /// `net` is the network the adaptation starts from (the live model's training state).
    pub fn new(
        net: &TrainNet,
        preprocess: &Preprocess,
        set: TransformSet,
        items: &'a [(usize, Raw)],
    ) -> anyhow::Result<AnchoredReplay<'a>> {
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
        Ok(AnchoredReplay {
            items,
            centres,
            anchors,
        })
    }
}

/// The extended class list: `classes`, then the support's labels that are not in it, in
/// order of first appearance (the new classes).
fn extend_classes(classes: &[String], support: &[(String, Raw)]) -> (Vec<String>, Vec<String>) {
    let mut all = classes.to_vec();
    let mut new_classes = Vec::new();
    for (label, _) in support {
        if !all.contains(label) {
            all.push(label.clone());
            new_classes.push(label.clone());
        }
    }
    (all, new_classes)
}

/// Imprint the new classes' samples of `support` into `net` (unchanged when there is no
/// new class).
fn imprint_new(
    net: TrainNet,
    preprocess: &Preprocess,
    set: TransformSet,
    support: &[(String, Raw)],
    first_new: usize,
    all: &[String],
    replay: &AnchoredReplay<'_>,
) -> anyhow::Result<TrainNet> {
    let new_count = all.len() - first_new;
    if new_count == 0 {
        return Ok(net);
    }
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for (label, raw) in support {
        let k = all
            .iter()
            .position(|c| c == label)
            .expect("labels are in `all`");
        if k >= first_new {
            inputs.push(preprocess.tensor(raw)?);
            labels.push(k - first_new);
        }
    }
    let shape = preprocess.input_shape();
    Ok(imprint::imprint(
        net,
        &inputs,
        &labels,
        new_count,
        &replay.centres,
        set,
        shape,
    )?)
}

/// The fine-tune's training set: the support, class-balanced, then the replay exemplars
/// with their anchors. Each support sample is repeated so that a label has about as many
/// items as an average replay class (the augmentation makes the copies differ); otherwise
/// a few shots drown among the exemplars and the new classes lose.
fn training_set<'a>(
    support: &'a [(String, Raw)],
    all: &[String],
    shipped: usize,
    replay: &'a AnchoredReplay<'_>,
    preprocess: &Preprocess,
    recipe: &Recipe,
) -> anyhow::Result<FeatureData<'a>> {
    let mut shots: BTreeMap<&str, usize> = BTreeMap::new();
    for (l, _) in support {
        *shots.entry(l.as_str()).or_default() += 1;
    }
    let index = |l: &str| {
        all.iter()
            .position(|c| c == l)
            .expect("labels are in `all`")
    };
    let per_replay_class = replay.items.len() as f64 / shipped.max(1) as f64;
    let mut items: Vec<(usize, &Raw)> = Vec::new();
    for (l, r) in support {
        let reps = (per_replay_class / shots[l.as_str()] as f64)
            .round()
            .max(1.0) as usize;
        items.extend(std::iter::repeat_n((index(l), r), reps));
    }
    let first_replay = items.len();
    items.extend(replay.items.iter().map(|(i, r)| (*i, r)));
    let mut data = FeatureData::new(items, preprocess, true)?;
    for i in 0..first_replay {
        data.set_image_augment(i, recipe.sample_augment.clone());
        data.set_audio_augment(i, recipe.sample_audio_augment.clone());
    }
    for (k, (probs, embedding)) in replay.anchors.iter().enumerate() {
        data.set_anchor(first_replay + k, probs.clone(), embedding.clone());
    }
    Ok(data)
}

/// The fine-tune's training configuration: cross-entropy, the frozen prefix, the anchors.
fn train_config(recipe: &Recipe, set: TransformSet, stages: usize) -> TrainConfig {
    let mut tc = TrainConfig::new(Method::Ce, set);
    tc.epochs = recipe.epochs;
    tc.batch_size = recipe.batch_size;
    tc.lr = recipe.lr;
    tc.time_cap_secs = recipe.budget_secs;
    tc.freeze_early = true;
    tc.frozen_stages = stages.saturating_sub(recipe.trained_stages);
    tc.anchor_weight = recipe.anchor_weight;
    tc.anchor_embedding_weight = recipe.anchor_embedding_weight;
    tc.transform_mode = TransformMode::Sampled;
    tc.seed = recipe.seed;
    tc.warmup_fraction = 0.1;
    tc
}

/// Fine-tune `net` on `data`; the result is mixed with `net` as it started
/// ([`Recipe::mix`]). Returns the network and the steps taken: the recipe's, all of
/// them, or an error when this machine cannot run them within `recipe.budget_secs`.
fn fine_tune(
    net: TrainNet,
    data: &FeatureData<'_>,
    recipe: &Recipe,
    set: TransformSet,
    shape: [usize; 3],
    cancel: &dyn Fn() -> bool,
    on_progress: &mut dyn FnMut(f64),
) -> anyhow::Result<(TrainNet, usize)> {
    let tc = train_config(recipe, set, net.student.stages.len());
    let start = (recipe.mix < 1.0).then(|| net.float_values());
    let mut trainer = Trainer::new(net, tc, shape);
    let mut total = 0usize;
    let mut report = |p: crate::lsskd::Progress<'_>| match p {
        crate::lsskd::Progress::Planned { total_steps, .. } => total = total_steps.max(1),
        crate::lsskd::Progress::Step { step, .. } => {
            on_progress(((step + 1) as f64 / total.max(1) as f64).min(1.0))
        }
        crate::lsskd::Progress::Epoch(_) => {}
    };
    let steps = match trainer.fit(data, None, cancel, &mut report) {
        Ok(reports) => reports.iter().map(|r| r.steps).sum(),
        Err(LsskdError::Cancelled) => anyhow::bail!("adaptation cancelled"),
        Err(e @ LsskdError::TimeCap { .. }) => anyhow::bail!(
            "the fine-tune cannot finish its recipe within adapt.budget_secs on this machine: {e}; raise adapt.budget_secs"
        ),
        Err(e) => return Err(e.into()),
    };
    let net = trainer.into_net();
    let net = match start {
        Some(start) => net.interpolate(&start, recipe.mix),
        None => net,
    };
    Ok((net, steps))
}

/// Imprint then fine-tune. `support` holds (label name, raw) — labels not in `classes` are
/// new classes, appended in order of first appearance; `replay` holds exemplars of the
/// existing classes, prepared from `net` ([`AnchoredReplay::new`]). `recipe.epochs == 0`:
/// imprint only.
#[allow(clippy::too_many_arguments)]
pub fn adapt(
    net: TrainNet,
    classes: &[String],
    preprocess: &Preprocess,
    set: TransformSet,
    support: &[(String, Raw)],
    replay: &AnchoredReplay<'_>,
    recipe: &Recipe,
    cancel: &dyn Fn() -> bool,
    on_progress: &mut dyn FnMut(f64),
) -> anyhow::Result<Adapted> {
    anyhow::ensure!(!support.is_empty(), "no support samples");
    let (all, new_classes) = extend_classes(classes, support);
    let shape = preprocess.input_shape();

    // 1. Imprint: usable at once.
    let imprinted = imprint_new(net, preprocess, set, support, classes.len(), &all, replay)?;
    let snapshot = Snapshot::of(&imprinted, shape)?;
    if !recipe.fine_tunes() {
        return Ok(Adapted {
            imprinted: snapshot,
            tuned: imprinted,
            steps: 0,
            classes: all,
            new_classes,
            new_label_offset: 0.0,
        });
    }

    // 2. Fine-tune on support + replay.
    let data = training_set(support, &all, classes.len(), replay, preprocess, recipe)?;
    let (tuned, steps) = fine_tune(imprinted, &data, recipe, set, shape, cancel, on_progress)?;
    let tuned = offset_labels(tuned, classes.len(), recipe.new_label_offset);
    Ok(Adapted {
        imprinted: snapshot,
        tuned,
        steps,
        classes: all,
        new_classes,
        new_label_offset: recipe.new_label_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsskd::net::ArchConfig;

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
