//! One on-device adaptation of a model, end to end and synchronous (the daemon runs it on
//! its trainer thread; tests call it directly): pick the stored samples, run the
//! adaptation core (`adapt::core`: imprint, fine-tune unless `imprint_only`, gate), and
//! write the chosen candidate as a new version and promote it.
//!
//! *(choice)* Which samples: every sample of a label with `min_shots` samples trains (new
//! labels are judged by leave-one-out and cross-validation, so none is held back); of the
//! shipped classes, every `holdout_every`-th sample is held back and judged paired.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;

pub use super::core::Phase;
use super::core::{self, Request, ShippedSets};
use super::gate::{Candidate, GateConfig, Verdict, split_holdout};
use super::job::Adapted;
use super::recipe::{ModelKind, Overrides, Recipe};
use crate::features::{ChangeLocator, Raw};
pub use crate::registry::card::AdaptationInfo;
use crate::registry::package::{MODEL_ONNX, REFERENCE_PNG, REPLAY_DIR, TRAIN_STATE};
use crate::registry::versions::{Current, Versions};
use crate::registry::{ModelPackage, replay};
use crate::samples::SampleStore;
use crate::settings::AdaptSettings;

/// Exemplars of each new class added to the new version's replay set.
pub const NEW_CLASS_REPLAY: usize = 5;

/// The result of [`run`].
#[derive(Debug, Clone)]
pub enum Outcome {
    Promoted {
        package: Box<ModelPackage>,
        info: AdaptationInfo,
    },
    Rejected {
        reason: String,
        info: AdaptationInfo,
        /// A view's new reference, promoted with the model unchanged (see
        /// [`keep_reference`]).
        reference: Option<Box<ModelPackage>>,
    },
    /// Nothing to learn from (no usable samples).
    Skipped(String),
}

/// Samples of a label that are not in the sample store: a class offer from another device
/// of the fleet (`daemon::fleet`), learnt as a new label (imprint only) and judged by this
/// device's gate like its own.
#[derive(Debug, Clone)]
pub struct Offered {
    pub label: String,
    pub samples: Vec<Raw>,
    /// Where it came from, for the card (`AdaptationInfo::offer`).
    pub origin: Option<String>,
}

/// The stored samples an adaptation learns from.
struct Picked {
    /// Samples that train, shipped classes first, then new labels, each label's oldest
    /// first (labels in name order).
    support: Vec<(String, Raw)>,
    /// Held-back samples of shipped classes.
    held: Vec<(String, Raw)>,
    /// Stored samples per label (all of them, for the card).
    per_label: BTreeMap<String, usize>,
}

/// Samples of labels with enough shots (the live model's classes any number, new labels
/// `min_shots`), split into training and held-back ones; `Err(reason)` when there is
/// nothing to learn.
fn pick(
    store: &SampleStore,
    live_classes: &[String],
    shipped_classes: &[String],
    cfg: &AdaptSettings,
    imprint_only: bool,
    offered: Option<&Offered>,
) -> anyhow::Result<Result<Picked, String>> {
    let metas = store.list()?;
    let mut by_label: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for meta in &metas {
        by_label
            .entry(meta.label.clone())
            .or_default()
            .push(meta.id.clone());
    }
    let mut per_label: BTreeMap<String, usize> = by_label
        .iter()
        .map(|(l, ids)| (l.clone(), ids.len()))
        .collect();
    by_label.retain(|label, ids| live_classes.contains(label) || ids.len() >= cfg.min_shots);
    if let Some(o) = offered {
        if live_classes.contains(&o.label) || by_label.contains_key(&o.label) {
            return Ok(Err(format!(
                "`{}` is already a label here, taught on this device",
                o.label
            )));
        }
        // Only the offered label is new in this run: other labels waiting for their
        // imprint keep waiting for their own job.
        by_label.retain(|label, _| live_classes.contains(label));
        *per_label.entry(o.label.clone()).or_default() += o.samples.len();
    }
    if by_label.is_empty() && offered.is_none() {
        return Ok(Err(format!("no label has {} samples yet", cfg.min_shots)));
    }
    if imprint_only && offered.is_none() && by_label.keys().all(|l| live_classes.contains(l)) {
        return Ok(Err("no new label to imprint".into()));
    }
    let (shipped, new): (BTreeMap<_, _>, BTreeMap<_, _>) = by_label
        .into_iter()
        .partition(|(l, _)| shipped_classes.contains(l));
    let (mut train_ids, held_ids) = split_holdout(&shipped, cfg.holdout_every, cfg.min_shots);
    for (label, ids) in &new {
        train_ids.extend(ids.iter().map(|id| (label.clone(), id.clone())));
    }
    let by_id: BTreeMap<&str, _> = metas.iter().map(|m| (m.id.as_str(), m)).collect();
    let load = |pairs: &[(String, String)]| {
        let mut out = Vec::new();
        for (label, id) in pairs {
            match store.load(by_id[id.as_str()]) {
                Ok(raw) => out.push((label.clone(), raw)),
                Err(e) => tracing::warn!(error = %e, "stored sample unusable; skipped"),
            }
        }
        out
    };
    let mut support = load(&train_ids);
    if let Some(o) = offered {
        support.extend(o.samples.iter().map(|raw| (o.label.clone(), raw.clone())));
    }
    anyhow::ensure!(!support.is_empty(), "no readable training samples");
    Ok(Ok(Picked {
        support,
        held: load(&held_ids),
        per_label,
    }))
}

/// For a model with a `change_reference` class: the view's reference (the mean of the
/// stored samples of that class, or the live version's when there are none), and every
/// picked sample cut to its change from it, as the pipeline will cut frames.
fn cut_to_changes(
    pkg: &ModelPackage,
    picked: &mut Picked,
) -> anyhow::Result<Option<ChangeLocator>> {
    let Some(class) = &pkg.manifest.change_reference else {
        return Ok(None);
    };
    let frames: Vec<_> = picked
        .support
        .iter()
        .chain(&picked.held)
        .filter(|(l, _)| l == class)
        .filter_map(|(_, raw)| match raw {
            Raw::Image(img) => Some(img),
            Raw::Audio(_) => None,
        })
        .collect();
    let locator = if frames.is_empty() {
        pkg.change_locator()?
    } else {
        Some(ChangeLocator::from_references(&frames).with_context(|| {
            format!("the samples of `{class}` cannot make the view's reference")
        })?)
    };
    let Some(locator) = locator else {
        return Ok(None);
    };
    for (label, raw) in picked.support.iter_mut().chain(picked.held.iter_mut()) {
        *raw = locator.cut_raw(raw).with_context(|| {
            format!("a sample of `{label}` does not match the view's reference")
        })?;
    }
    Ok(Some(locator))
}

/// Adapt the live version of `versions` to the samples in `store`.
pub fn run(
    versions: &Versions,
    store: &SampleStore,
    cfg: &AdaptSettings,
    imprint_only: bool,
    seed: u64,
    cancel: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Phase),
) -> anyhow::Result<Outcome> {
    run_with(
        versions,
        store,
        cfg,
        imprint_only,
        None,
        seed,
        cancel,
        progress,
    )
}

/// [`run`] with an offered label besides the stored samples: an imprint of that label
/// alone (the other new labels in the store wait for their own job), judged by this
/// device's gate on its shipped gate set and its own samples.
pub fn run_offered(
    versions: &Versions,
    store: &SampleStore,
    cfg: &AdaptSettings,
    offered: &Offered,
    seed: u64,
    cancel: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Phase),
) -> anyhow::Result<Outcome> {
    run_with(
        versions,
        store,
        cfg,
        true,
        Some(offered),
        seed,
        cancel,
        progress,
    )
}

#[allow(clippy::too_many_arguments)]
fn run_with(
    versions: &Versions,
    store: &SampleStore,
    cfg: &AdaptSettings,
    imprint_only: bool,
    offered: Option<&Offered>,
    seed: u64,
    cancel: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Phase),
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    progress(Phase::Preparing);
    let current = versions.open_current()?;
    let pkg = &current.package;
    let m = &pkg.manifest;
    // "New" labels are those learnt on the device (not in the shipped package), whether
    // this run adds them or an earlier imprint did.
    let shipped_pkg = match current.version {
        0 => None,
        _ => ModelPackage::load(&versions.path_of(0)).ok(),
    };
    let shipped_classes = shipped_pkg
        .as_ref()
        .map_or_else(|| m.classes.clone(), |p| p.manifest.classes.clone());
    let mut picked = match pick(
        store,
        &m.classes,
        &shipped_classes,
        cfg,
        imprint_only,
        offered,
    )? {
        Ok(p) => p,
        Err(reason) => return Ok(Outcome::Skipped(reason)),
    };
    let reference = cut_to_changes(pkg, &mut picked)?;
    let sets = ShippedSets::load(pkg, shipped_pkg.as_ref())?;
    let recipe = Recipe::resolve(
        ModelKind::of(m),
        cfg,
        &Overrides::default(),
        imprint_only,
        seed,
    );
    let req = Request {
        live: pkg,
        shipped_classes: &shipped_classes,
        sets: &sets,
        support: &picked.support,
        held_shipped: &picked.held,
        recipe: &recipe,
        gate: &GateConfig::from_settings(cfg),
    };
    let candidates = core::run(&req, cancel, progress)?;
    let judgement = &candidates.judgement;
    let reported = judgement
        .reported()
        .context("no candidate to judge (nothing new to learn)")?;
    let info = AdaptationInfo {
        kind: if imprint_only { "imprint" } else { "finetune" }.into(),
        chosen: match reported.candidate {
            Candidate::Imprinted => "imprinted",
            Candidate::Finetuned => "finetuned",
        }
        .into(),
        new_classes: candidates.adapted.new_classes.clone(),
        samples_per_class: picked.per_label,
        held_back: picked.held.len(),
        gate: reported.gate.clone(),
        seconds: started.elapsed().as_secs_f64(),
        steps: candidates.adapted.steps,
        finetune_rejected: match (&judgement.chosen, &judgement.finetuned) {
            (Some(Candidate::Imprinted), Some(f)) => match &f.verdict {
                Verdict::Reject(r) => Some(r.clone()),
                Verdict::Promote => None,
            },
            _ => None,
        },
        offer: offered.and_then(|o| o.origin.clone()),
    };
    let offer_fails = offered.and_then(|o| offered_label_fails(o, &reported.gate));
    if judgement.chosen.is_none() || offer_fails.is_some() {
        let reason = match (&reported.verdict, offer_fails) {
            (_, Some(r)) => r,
            (Verdict::Reject(r), None) => r.clone(),
            (Verdict::Promote, None) => unreachable!("a passing candidate is chosen"),
        };
        let reference = match &reference {
            Some(locator) => keep_reference(versions, &current, locator, &info)?.map(Box::new),
            None => None,
        };
        return Ok(Outcome::Rejected {
            reason,
            info,
            reference,
        });
    }
    if cancel() {
        anyhow::bail!("adaptation cancelled");
    }
    let package = write_version(
        versions,
        &current,
        &candidates.adapted,
        reported.snapshot.clone(),
        &picked.support,
        reference.as_ref(),
        &info,
    )?;
    Ok(Outcome::Promoted {
        package: Box::new(package),
        info,
    })
}

/// An offered label is also judged on its own, for coherence: refused when none of its
/// samples is recognised as it when left out (leave-one-out, at least 3 samples) — they
/// are not one class on this device, e.g. samples of several classes it knows shuffled
/// under one new name. Weaker evidence is treated as for a label taught here (the gate of
/// the new labels together; a weak label is served provisionally, its card says so).
fn offered_label_fails(
    offered: &Offered,
    gate: &crate::registry::card::GateMetrics,
) -> Option<String> {
    let l = gate.labels.iter().find(|l| l.label == offered.label)?;
    if l.correct > 0 || l.n < 3 {
        return None;
    }
    let taken_for: Vec<String> = l
        .confused_with
        .iter()
        .map(|c| format!("{} ({})", c.label, c.count))
        .collect();
    Some(format!(
        "the offered label `{}` is not one class on this device: none of its {} samples is recognised as it when left out{}",
        l.label,
        l.n,
        if taken_for.is_empty() {
            String::new()
        } else {
            format!(" (taken for {})", taken_for.join(", "))
        }
    ))
}

/// When the samples of a view's reference class make another reference than the live
/// version's: a new version with the live model unchanged and that reference, promoted.
/// The reference is a measurement of the view, not something learnt (the shipped classes'
/// weights do not move), so it is kept when the gate refuses the teaching — a view whose
/// fine-tune was refused is still seen through its own empty frames.
fn keep_reference(
    versions: &Versions,
    current: &Current,
    locator: &ChangeLocator,
    info: &AdaptationInfo,
) -> anyhow::Result<Option<ModelPackage>> {
    let pkg = &current.package;
    let png = reference_png(locator)?;
    if std::fs::read(pkg.dir.join(REFERENCE_PNG)).ok().as_deref() == Some(png.as_slice()) {
        return Ok(None);
    }
    let read = |rel: &str| {
        let path = pkg.dir.join(rel);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let mut files = version_files(pkg, read(MODEL_ONNX)?, read(TRAIN_STATE)?, None)?;
    set_reference(&mut files, png);
    let mut manifest = pkg.manifest.clone();
    manifest.created_at = crate::registry::package::now_rfc3339();
    manifest.adaptation = Some(AdaptationInfo {
        chosen: "reference".into(),
        new_classes: Vec::new(),
        ..info.clone()
    });
    let staged = versions.stage(manifest, current.version, files)?;
    Ok(Some(versions.promote(staged.manifest.version)?))
}

/// The view's reference frame as the PNG a version stores.
fn reference_png(locator: &ChangeLocator) -> anyhow::Result<Vec<u8>> {
    let frame = Raw::Image(locator.frame().clone());
    Ok(replay::encode(&frame).map_err(anyhow::Error::msg)?.0)
}

/// `png` as the version's reference, in place of the parent's.
fn set_reference(files: &mut Vec<(String, Vec<u8>)>, png: Vec<u8>) {
    files.retain(|(name, _)| name != REFERENCE_PNG);
    files.push((REFERENCE_PNG.to_string(), png));
}

/// The files of a new version made from `pkg`: its model and training state, the
/// parent's view reference, and the parent's replay exemplars (without those of the class
/// `except`).
fn version_files(
    pkg: &ModelPackage,
    onnx: Vec<u8>,
    train_state: Vec<u8>,
    except: Option<&str>,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let replay = format!("{REPLAY_DIR}/");
    let skipped = except.map(|c| format!("{REPLAY_DIR}/{c}/"));
    let mut files = vec![
        (MODEL_ONNX.to_string(), onnx),
        (TRAIN_STATE.to_string(), train_state),
    ];
    for rel in pkg.manifest.files.keys().filter(|k| {
        *k == REFERENCE_PNG
            || (k.starts_with(&replay) && skipped.as_ref().is_none_or(|s| !k.starts_with(s)))
    }) {
        let path = pkg.dir.join(rel);
        files.push((
            rel.clone(),
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        ));
    }
    Ok(files)
}

/// Write the chosen candidate as a new version (model, training state, the parent's replay
/// plus [`NEW_CLASS_REPLAY`] exemplars of each new class) and promote it.
fn write_version(
    versions: &Versions,
    current: &Current,
    adapted: &Adapted,
    snapshot: super::job::Snapshot,
    support: &[(String, Raw)],
    reference: Option<&ChangeLocator>,
    info: &AdaptationInfo,
) -> anyhow::Result<ModelPackage> {
    let pkg = &current.package;
    let m = &pkg.manifest;
    let mut files = version_files(pkg, snapshot.onnx, snapshot.train_state, None)?;
    if let Some(locator) = reference {
        set_reference(&mut files, reference_png(locator)?);
    }
    for class in &adapted.new_classes {
        for (i, (_, raw)) in support
            .iter()
            .filter(|(l, _)| l == class)
            .take(NEW_CLASS_REPLAY)
            .enumerate()
        {
            let (bytes, ext) = replay::encode(raw).map_err(anyhow::Error::msg)?;
            files.push((format!("{REPLAY_DIR}/{class}/{i:03}.{ext}"), bytes));
        }
    }
    let mut manifest = m.clone();
    manifest.classes = adapted.classes.clone();
    manifest.created_at = crate::registry::package::now_rfc3339();
    manifest.deployed.param_count = snapshot.param_count;
    manifest.train_state.logit_offset = snapshot.logit_offset.clone();
    manifest.training_seconds = info.seconds;
    manifest.adaptation = Some(info.clone());
    let staged = versions.stage(manifest, current.version, files)?;
    Ok(versions.promote(staged.manifest.version)?)
}

/// What `forget <label>` did to the live model.
#[derive(Debug)]
pub enum Forgotten {
    /// The live model has no such label.
    NotServed,
    /// A class the model was shipped with: it stays (only `promote 0` or a rollback
    /// changes the shipped classes).
    Shipped,
    /// A new version without the label, promoted.
    Version(Box<ModelPackage>),
}

/// A new version of the live model without `label`, a label learnt on the device: its
/// rows go (`lsskd::imprint::remove_class`) and its replay exemplars with them. Nothing
/// is trained, so every other class scores exactly as before; no gate is needed.
pub fn forget(versions: &Versions, label: &str) -> anyhow::Result<Forgotten> {
    let current = versions.open_current()?;
    let pkg = &current.package;
    let m = &pkg.manifest;
    let Some(class) = m.classes.iter().position(|c| c == label) else {
        return Ok(Forgotten::NotServed);
    };
    let shipped = match current.version {
        0 => m.classes.clone(),
        _ => ModelPackage::load(&versions.path_of(0))?.manifest.classes,
    };
    if shipped.iter().any(|c| c == label) {
        return Ok(Forgotten::Shipped);
    }
    let device = crate::lsskd::training_device(0);
    let net = pkg.load_train_net(&device)?;
    let net = crate::lsskd::imprint::remove_class(net, class, m.train_state.transforms.len())?;
    let snapshot = super::job::Snapshot::of(&net, m.preprocess.input_shape())?;
    let files = version_files(pkg, snapshot.onnx, snapshot.train_state, Some(label))?;
    let mut manifest = m.clone();
    manifest.classes.remove(class);
    manifest.created_at = crate::registry::package::now_rfc3339();
    manifest.deployed.param_count = snapshot.param_count;
    manifest.train_state.logit_offset = snapshot.logit_offset;
    // The parent's adaptation record judged a label this version does not have.
    manifest.adaptation = None;
    let staged = versions.stage(manifest, current.version, files)?;
    Ok(Forgotten::Version(Box::new(
        versions.promote(staged.manifest.version)?,
    )))
}
