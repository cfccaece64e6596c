//! LSSKD training on real data slices, export parity burn ↔ tract, checkpoint round trip.

use lsskd_edge::commands::train::preprocess_for;
use lsskd_edge::dataset::{self, Dataset, LoadOptions};
use lsskd_edge::inference::{Classifier, inspect, write_onnx};
use lsskd_edge::lsskd::{
    self, ArchConfig, Method, SoftStore, TrainConfig, TrainData, TrainNet, Trainer, TransformMode,
    checkpoint, export, imprint::Centres, infer,
};
use lsskd_edge::trainset::FeatureData;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::{fashion, kws};

fn slice(
    dir: &std::path::Path,
    split: &str,
    classes: Option<Vec<String>>,
    per_class: usize,
) -> Dataset {
    dataset::load(
        dir,
        split,
        &LoadOptions {
            classes,
            limit_per_class: Some(per_class),
            ..LoadOptions::default()
        },
    )
    .expect("shared data set loads")
}

/// Train `steps` full-batch LSSKD steps; returns the trainer and the loss of each step.
fn train_steps(ds: &Dataset, steps: usize, mode: TransformMode) -> (Trainer, Vec<f32>, [usize; 3]) {
    let (pre, set) = preprocess_for(ds).expect("preprocessing");
    let data = FeatureData::from_dataset(ds, &pre, false).expect("features");
    let shape = pre.input_shape();
    let mut arch = ArchConfig::preset("resnet-xs", shape[0]).expect("preset");
    if shape[1] != shape[2] {
        // Spectrograms train with a strided stem, as `train` does; parity covers it.
        arch.stem_stride = 2;
    }
    let device = lsskd::training_device(3);
    let net = TrainNet::new(&arch, ds.classes.len(), set.len(), true, &device);
    let mut cfg = TrainConfig::new(Method::Lsskd, set);
    cfg.transform_mode = mode;
    let mut trainer = Trainer::new(net, cfg, shape);
    let mut store = SoftStore::new(data.len(), ds.classes.len(), 3, set.len());
    let batch: Vec<usize> = (0..data.len()).collect();
    let mut rng = StdRng::seed_from_u64(0);
    let losses = (0..steps)
        .map(|s| {
            // α grows as in training so the soft-target path runs too.
            let alpha = 0.8 * s as f32 / steps as f32;
            let stats = trainer
                .step(&batch, &data, alpha, 0.05, Some(&mut store), &mut rng)
                .expect("step");
            let p = &stats.parts;
            for v in [p.total, p.final_ce, p.sad, p.kl, p.feat] {
                assert!(v.is_finite() && v >= 0.0, "loss term {v} in {p:?}");
            }
            assert!(
                p.sad > 0.0 && p.feat > 0.0,
                "auxiliary terms are active: {p:?}"
            );
            p.total
        })
        .collect();
    (trainer, losses, shape)
}

#[test]
fn a_few_lsskd_steps_reduce_the_loss_on_real_images() {
    let _cpu = crate::common::cpu_shared();
    let ds = slice(&fashion(), "val", None, 6);
    let (_, losses, _) = train_steps(&ds, 12, TransformMode::All);
    let (first, last) = (losses[0], *losses.last().expect("steps ran"));
    assert!(last < 0.75 * first, "loss {first} → {last}: {losses:?}");
}

fn assert_parity(ds: &Dataset, trainer: &Trainer, shape: [usize; 3]) {
    assert_student_parity(ds, &trainer.net().student, shape);
}

fn assert_student_parity(
    ds: &Dataset,
    student: &lsskd_edge::lsskd::net::Student,
    shape: [usize; 3],
) {
    let (pre, _) = preprocess_for(ds).expect("preprocessing");
    let data = FeatureData::from_dataset(ds, &pre, false).expect("features");
    let inputs: Vec<Vec<f32>> = (0..data.len().min(24))
        .map(|i| data.input(i, None))
        .collect();
    let burn_out = infer::forward_batch(student, &inputs, shape).expect("burn forward");
    let deployed = export::deployed(student, shape).expect("export");
    let onnx = write_onnx(&deployed);
    let summary = inspect(&onnx).expect("inspect");
    assert_eq!(summary.param_count, deployed.param_count());
    assert!(summary.node_names.iter().all(|n| !n.contains("aux")));
    let tract = Classifier::from_bytes(&onnx).expect("tract loads our ONNX");
    let mut max_diff = 0f32;
    for (i, x) in inputs.iter().enumerate() {
        let out = tract.classify(x).expect("tract run");
        for (a, b) in out.logits.iter().zip(&burn_out.logits[i]) {
            max_diff = max_diff.max((a - b).abs());
        }
        for (a, b) in out.embedding.iter().zip(&burn_out.embeddings[i]) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    assert!(max_diff <= 1e-4, "burn vs tract max abs diff {max_diff}");
}

#[test]
fn exported_vision_student_matches_burn_within_1e4() {
    let _cpu = crate::common::cpu_shared();
    let ds = slice(&fashion(), "val", None, 4);
    let (trainer, _, shape) = train_steps(&ds, 3, TransformMode::Sampled);
    assert_parity(&ds, &trainer, shape);
}

#[test]
fn exported_audio_student_matches_burn_within_1e4() {
    let _cpu = crate::common::cpu_shared();
    let classes = ["yes", "no", "up", "down"].map(String::from).to_vec();
    let ds = slice(&kws(), "val", Some(classes), 3);
    let (trainer, _, shape) = train_steps(&ds, 3, TransformMode::Sampled);
    assert_eq!(shape, [1, 49, 40]);
    assert_parity(&ds, &trainer, shape);
}

#[test]
fn logit_offsets_are_exported_and_kept_by_imprinting() {
    let _cpu = crate::common::cpu_shared();
    let classes = ["yes", "no", "up", "down"].map(String::from).to_vec();
    let ds = slice(&kws(), "val", Some(classes), 2);
    let (trainer, _, shape) = train_steps(&ds, 1, TransformMode::Sampled);
    let mut net = trainer.into_net();
    net.student.classifier.offset = vec![0.0, 0.0, 0.5, 1.5];
    assert_student_parity(&ds, &net.student, shape);
    // Imprinting a class keeps the earlier offsets; the new row gets none.
    let (pre, set) = preprocess_for(&ds).expect("preprocessing");
    let data = FeatureData::from_dataset(&ds, &pre, false).expect("features");
    let inputs: Vec<Vec<f32>> = (0..2).map(|i| data.input(i, None)).collect();
    let net = lsskd::imprint::imprint(net, &inputs, &[0, 0], 1, &Centres::default(), set, shape)
        .expect("imprint");
    assert_eq!(net.student.classifier.offset, vec![0.0, 0.0, 0.5, 1.5, 0.0]);
    assert_student_parity(&ds, &net.student, shape);
    // An offset that does not cover every class is an error naming both counts.
    let mut head = net.student.classifier.clone();
    head.offset.pop();
    let err = lsskd::export::head(&head).expect_err("4 offsets for 5 classes");
    assert!(err.to_string().contains("5 classes but 4"), "{err}");
}

#[test]
fn training_state_round_trips_through_a_checkpoint() {
    let _cpu = crate::common::cpu_shared();
    let ds = slice(&fashion(), "val", None, 2);
    let (trainer, _, shape) = train_steps(&ds, 2, TransformMode::Sampled);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.bpk");
    let net = trainer.net();
    checkpoint::save(net, &path).expect("save");
    let arch = ArchConfig::preset("resnet-xs", 1).expect("preset");
    let loaded = checkpoint::load(&arch, 10, 4, true, &path, &lsskd::cpu_device()).expect("load");
    assert_eq!(loaded.param_count(), net.param_count());
    let x: Vec<Vec<f32>> = (0..3).map(|i| vec![0.1 * i as f32; 784]).collect();
    let a = infer::forward_batch(&net.student, &x, shape).expect("forward");
    let b = infer::forward_batch(&loaded.student, &x, shape).expect("forward");
    assert_eq!(
        a.logits, b.logits,
        "BatchNorm statistics and weights survive the round trip"
    );
    // A state of the wrong shape is a clear error, not a panic.
    let wrong = ArchConfig::preset("resnet-s", 1).expect("preset");
    let err = checkpoint::load(&wrong, 10, 4, true, &path, &lsskd::cpu_device())
        .expect_err("shape mismatch");
    assert!(err.to_string().contains("state.bpk"), "{err}");
}

#[test]
fn imprinting_adds_usable_classes_without_touching_old_logits() {
    let _cpu = crate::common::cpu_shared();
    let base_classes: Vec<String> = ["t-shirt_top", "trouser", "pullover", "dress", "coat"]
        .map(String::from)
        .to_vec();
    let novel: Vec<String> = ["sandal", "shirt", "sneaker", "bag", "ankle_boot"]
        .map(String::from)
        .to_vec();
    let base = slice(&fashion(), "val", Some(base_classes), 8);
    let (trainer, _, shape) = train_steps(&base, 6, TransformMode::Sampled);
    let novel_ds = slice(&fashion(), "val", Some(novel), 5);
    // The base model's preprocessing applies to everything it sees.
    let (pre, set) = preprocess_for(&base).expect("preprocessing");
    let support = FeatureData::from_dataset(&novel_ds, &pre, false).expect("features");
    let base_data = FeatureData::from_dataset(&base, &pre, false).expect("features");
    let reference: Vec<Vec<f32>> = (0..base_data.len())
        .map(|i| base_data.input(i, None))
        .collect();
    let inputs: Vec<Vec<f32>> = (0..support.len()).map(|i| support.input(i, None)).collect();
    let labels: Vec<usize> = (0..support.len()).map(|i| support.label(i)).collect();

    let before = infer::forward_batch(&trainer.net().student, &inputs, shape).expect("forward");
    // Plain imprinting (no reference) vs centred imprinting: how many base samples keep
    // their own class?
    let kept = |net: &lsskd::TrainNet| {
        let out = infer::forward_batch(&net.student, &reference, shape).expect("forward");
        out.logits
            .iter()
            .enumerate()
            .filter(|(i, l)| lsskd_edge::inference::argmax(l) == base_data.label(*i))
            .count()
    };
    let plain = lsskd::imprint::imprint(
        trainer.net().clone(),
        &inputs,
        &labels,
        5,
        &Centres::default(),
        set,
        shape,
    )
    .expect("imprint");
    let (centres, _) = Centres::of(trainer.net(), &reference, set, shape).expect("centres");
    let net = lsskd::imprint::imprint(
        trainer.into_net(),
        &inputs,
        &labels,
        5,
        &centres,
        set,
        shape,
    )
    .expect("imprint");
    let (kept_plain, kept_centred) = (kept(&plain), kept(&net));
    println!(
        "base samples kept: plain {kept_plain}, centred {kept_centred} of {}",
        reference.len()
    );
    assert!(
        kept_centred > kept_plain,
        "centring keeps old classes: {kept_centred} vs {kept_plain}"
    );
    assert_eq!(net.classes(), 10);
    for head in &net.aux {
        assert_eq!(
            head.classifier.classes(),
            10 * 4,
            "M rows per new class in every auxiliary head"
        );
    }
    let after = infer::forward_batch(&net.student, &inputs, shape).expect("forward");
    for (b, a) in before.logits.iter().zip(&after.logits) {
        assert_eq!(&a[..5], &b[..], "old-class logits are unchanged");
    }
    // On this barely trained model the plain prototypes win every support sample for
    // their new class (and every base sample too, which centring prevents).
    let plain_out = infer::forward_batch(&plain.student, &inputs, shape).expect("forward");
    let hits = plain_out
        .logits
        .iter()
        .zip(&labels)
        .filter(|(l, y)| lsskd_edge::inference::argmax(l) == 5 + **y)
        .count();
    assert!(
        hits * 2 > labels.len(),
        "{hits}/{} support samples classified as their new class (plain imprinting)",
        labels.len()
    );
    // Still exportable: the deployed graph grows by the new rows only.
    let deployed = export::deployed(&net.student, shape).expect("export");
    assert_eq!(deployed.num_classes(), 10);
}

#[test]
fn fine_tune_freezes_early_stages_and_anchored_items_keep_their_embedding() {
    let _cpu = crate::common::cpu_shared();
    let ds = slice(&fashion(), "val", None, 4);
    let (pre, set) = preprocess_for(&ds).expect("preprocessing");
    let shape = pre.input_shape();
    let arch = ArchConfig::preset("resnet-xs", shape[0]).expect("preset");
    let device = lsskd::training_device(5);
    let run = |embedding_weight: f32| {
        let net = TrainNet::new(&arch, ds.classes.len(), set.len(), true, &device);
        let mut data = FeatureData::from_dataset(&ds, &pre, false).expect("features");
        let inputs: Vec<Vec<f32>> = (0..data.len()).map(|i| data.input(i, None)).collect();
        let before = infer::forward_batch(&net.student, &inputs, shape).expect("forward");
        for (i, (logits, emb)) in before.logits.iter().zip(&before.embeddings).enumerate() {
            let probs = lsskd_edge::inference::scores::softmax(logits);
            data.set_anchor(i, probs, emb.clone());
        }
        let weights = |n: &TrainNet| {
            let w = |c: &lsskd_edge::lsskd::net::ConvBn| c.conv.weight.val().into_data();
            (
                w(&n.student.stem),
                w(&n.student.stages[1][0].c1),
                w(&n.student.stages[2][0].c1),
            )
        };
        let start = weights(&net);
        let mut cfg = TrainConfig::new(Method::Lsskd, set);
        cfg.freeze_early = true;
        cfg.frozen_stages = 2;
        cfg.anchor_weight = 0.5;
        cfg.anchor_embedding_weight = embedding_weight;
        let mut trainer = Trainer::new(net, cfg, shape);
        let batch: Vec<usize> = (0..data.len()).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..8 {
            let s = trainer
                .step(&batch, &data, 0.0, 0.05, None, &mut rng)
                .expect("step");
            assert!(s.parts.total.is_finite());
        }
        let end = weights(trainer.net());
        assert_eq!(start.0, end.0, "the stem is frozen");
        assert_eq!(start.1, end.1, "stage 2 is frozen");
        assert_ne!(start.2, end.2, "the last stage trains");
        let after = infer::forward_batch(&trainer.net().student, &inputs, shape).expect("fwd");
        // Mean cosine distance of the embeddings from their anchors.
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (n(a) * n(b)).max(1e-9)
        };
        before
            .embeddings
            .iter()
            .zip(&after.embeddings)
            .map(|(a, b)| 1.0 - cos(a, b))
            .sum::<f32>()
            / after.embeddings.len() as f32
    };
    let free = run(0.0);
    let anchored = run(10.0);
    assert!(
        anchored < free,
        "the embedding anchor keeps embeddings closer: {anchored} vs {free} without"
    );
}

/// A fine-tune runs the frozen stem and first stages as a plain forward pass and trains the
/// rest without the auxiliary heads of the frozen stages: that moves the trained part of the
/// student exactly as training the whole (frozen-early) network does.
#[test]
fn prefix_split_fine_tune_trains_the_student_as_the_full_network_does() {
    let _cpu = crate::common::cpu_shared();
    let ds = slice(&fashion(), "val", None, 3);
    let (pre, set) = preprocess_for(&ds).expect("preprocessing");
    let shape = pre.input_shape();
    let arch = ArchConfig::preset("resnet-xs", shape[0]).expect("preset");
    // No augmentation and all transforms: both paths see the same rows.
    let data = FeatureData::from_dataset(&ds, &pre, false).expect("features");
    // One initial network for both runs (burn initialises parameters lazily, in the order
    // they are first used, so two fresh networks from one seed need not be equal).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("init.bpk");
    let init = TrainNet::new(
        &arch,
        ds.classes.len(),
        set.len(),
        true,
        &lsskd::training_device(11),
    );
    checkpoint::save(&init, &path).expect("save");
    let run = |split: bool| {
        let device = lsskd::training_device(11);
        let net = checkpoint::load(&arch, ds.classes.len(), set.len(), true, &path, &device)
            .expect("load");
        let mut cfg = TrainConfig::new(Method::Lsskd, set);
        cfg.transform_mode = TransformMode::All;
        // The reference freezes the same layers itself and runs the whole network.
        let net = if split {
            cfg.freeze_early = true;
            cfg.frozen_stages = 2;
            net
        } else {
            lsskd::train::freeze_early(net, 2)
        };
        let start = net.student.stages[2][0].c1.conv.weight.val().into_data();
        let mut trainer = Trainer::new(net, cfg, shape);
        let mut store = SoftStore::new(data.len(), ds.classes.len(), 3, set.len());
        let batch: Vec<usize> = (0..data.len()).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for s in 0..3 {
            let st = trainer
                .step(
                    &batch,
                    &data,
                    0.3 * s as f32,
                    0.05,
                    Some(&mut store),
                    &mut rng,
                )
                .expect("step");
            assert!(st.parts.total.is_finite());
        }
        let n = trainer.net();
        let end = n.student.stages[2][0].c1.conv.weight.val().into_data();
        assert_ne!(start, end, "the last stage trains");
        (
            end,
            n.student.classifier.weight.val().into_data(),
            n.student.stem.conv.weight.val().into_data(),
        )
    };
    let full = run(false);
    let split = run(true);
    assert_eq!(full.2, split.2, "same initial network, stem frozen in both");
    for (a, b, what) in [
        (&full.0, &split.0, "last stage"),
        (&full.1, &split.1, "classifier"),
    ] {
        let a = a.try_to_vec::<f32>().expect("f32");
        let b = b.try_to_vec::<f32>().expect("f32");
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let scale = a.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{what}: max difference {diff}"
        );
    }
}
