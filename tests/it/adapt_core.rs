//! The daemon's learner and `fewshot-bench` run one adaptation core: the same samples and
//! seed give the same verdict and the same model bytes, whichever of the two asks.

use std::collections::BTreeMap;

use lsskd_edge::adapt::core::ShippedSets;
use lsskd_edge::adapt::learner::{self, Outcome};
use lsskd_edge::adapt::{Candidate, Overrides, Verdict};
use lsskd_edge::commands::fewshot;
use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::features::Raw;
use lsskd_edge::registry::versions::Versions;
use lsskd_edge::registry::{ModelPackage, replay};
use lsskd_edge::samples::SampleStore;
use lsskd_edge::settings::AdaptSettings;

use crate::common::{data_root, repo};

/// Five samples each of three digits the shipped vision model does not know, stored as a
/// person would send them.
fn store_digits(store: &SampleStore) {
    let digits = ["3", "5", "7"];
    let ds = dataset::load(
        &data_root().join("mnist-fewshot"),
        "pool",
        &LoadOptions {
            classes: Some(digits.iter().map(|d| d.to_string()).collect()),
            ..LoadOptions::default()
        },
    )
    .expect("mnist-fewshot pool");
    for (ci, digit) in ds.classes.iter().enumerate() {
        let items = ds.items.iter().filter(|i| i.label == ci).skip(40).take(5);
        for (k, item) in items.enumerate() {
            let (bytes, ext) = replay::encode(&item.raw).expect("encode");
            store
                .add(
                    &format!("d{digit}-{k}"),
                    &format!("digit_{digit}"),
                    &bytes,
                    ext,
                    "test",
                )
                .expect("store sample");
        }
    }
}

/// The shipped vision model's version store and a sample store holding [`store_digits`],
/// under `dir`.
fn vision_with_digits(dir: &std::path::Path) -> (Versions, SampleStore) {
    let versions =
        Versions::new(dir, "vision", &repo().join("models/vision"), 3).expect("versions");
    let store = SampleStore::open(dir, "vision", 1000).expect("store");
    store_digits(&store);
    (versions, store)
}

/// The stored samples as the learner trains on them: labels in name order, each label's
/// samples in the store's order.
fn stored_support(store: &SampleStore) -> Vec<(String, Raw)> {
    let mut by_label: BTreeMap<String, Vec<Raw>> = BTreeMap::new();
    for meta in store.list().expect("list") {
        let raw = store.load(&meta).expect("load");
        by_label.entry(meta.label.clone()).or_default().push(raw);
    }
    by_label
        .into_iter()
        .flat_map(|(l, raws)| raws.into_iter().map(move |r| (l.clone(), r)))
        .collect()
}

#[test]
fn the_benchmark_and_the_daemon_learner_give_the_same_verdict_and_model_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = repo().join("models/vision");
    let (versions, store) = vision_with_digits(dir.path());
    // Two epochs keep the test short; a budget no machine reaches keeps the schedule the
    // recipe's (a wall-clock budget that binds would make the step count timing-dependent).
    let mut settings = AdaptSettings::defaults();
    settings.epochs = Some(2);
    settings.budget_secs = 600;
    let seed = 11;

    let daemon = learner::run(
        &versions,
        &store,
        &settings,
        false,
        seed,
        &|| false,
        &mut |_| {},
    )
    .expect("learner");
    let pkg = ModelPackage::load(&shipped).expect("shipped package");
    let sets = ShippedSets::load(&pkg, None).expect("replay and gate set");
    let support = stored_support(&store);
    let none = Overrides::default();
    let bench = fewshot::adapt_support(&pkg, &sets, &support, &settings, &none, seed)
        .expect("benchmark adaptation");

    let chosen = bench
        .judgement
        .chosen
        .expect("three clear digits pass the gate");
    let judged = bench.judgement.get(chosen).expect("the chosen candidate");
    assert_eq!(judged.verdict, Verdict::Promote);
    let Outcome::Promoted { package, info } = daemon else {
        panic!("the daemon rejected what the benchmark promoted: {daemon:?}");
    };
    let chosen_name = match chosen {
        Candidate::Imprinted => "imprinted",
        Candidate::Finetuned => "finetuned",
    };
    assert_eq!(info.chosen, chosen_name, "the same candidate chosen");
    assert!(info.steps > 0, "the fine-tune's steps are recorded");
    assert_eq!(
        serde_json::to_value(&info.gate).expect("json"),
        serde_json::to_value(&judged.gate).expect("json"),
        "the same gate evidence and verdict"
    );
    let written = std::fs::read(package.onnx_path()).expect("the new version's model");
    assert!(
        written == judged.snapshot.onnx,
        "the daemon's new version is byte for byte the benchmark's candidate"
    );
    assert_eq!(package.manifest.classes, bench.adapted.classes);

    // The comparison can fail: another seed trains another model.
    let other = fewshot::adapt_support(&pkg, &sets, &support, &settings, &none, seed + 1)
        .expect("benchmark adaptation, other seed");
    let other_tuned = other.judgement.finetuned.expect("fine-tuned");
    let tuned = bench.judgement.finetuned.as_ref().expect("fine-tuned");
    assert!(
        other_tuned.snapshot.onnx != tuned.snapshot.onnx,
        "a fine-tune depends on its seed"
    );
}

#[test]
fn forget_serves_a_version_without_the_label_and_every_other_score_unchanged() {
    use lsskd_edge::adapt::learner::Forgotten;
    use lsskd_edge::inference::Classifier;
    let dir = tempfile::tempdir().expect("tempdir");
    let (versions, store) = vision_with_digits(dir.path());
    let settings = AdaptSettings::defaults();
    let imprinted = learner::run(
        &versions,
        &store,
        &settings,
        true,
        3,
        &|| false,
        &mut |_| {},
    )
    .expect("imprint");
    let Outcome::Promoted {
        package: before, ..
    } = imprinted
    else {
        panic!("imprint of three digits: {imprinted:?}");
    };
    let k = before
        .manifest
        .classes
        .iter()
        .position(|c| c == "digit_5")
        .expect("digit_5 served");

    assert!(matches!(
        learner::forget(&versions, "sneaker").expect("forget"),
        Forgotten::Shipped
    ));
    assert!(matches!(
        learner::forget(&versions, "digit_9").expect("forget"),
        Forgotten::NotServed
    ));
    let Forgotten::Version(after) = learner::forget(&versions, "digit_5").expect("forget") else {
        panic!("a version without digit_5");
    };
    assert_eq!(
        versions.open_current().expect("current").version,
        after.manifest.version
    );
    let mut expected = before.manifest.classes.clone();
    expected.remove(k);
    assert_eq!(after.manifest.classes, expected);
    assert!(
        after.manifest.files.keys().all(|f| !f.contains("digit_5")),
        "its replay exemplars go too"
    );
    // Nothing is retrained: every other class scores as before.
    let (old, new) = (
        Classifier::load(&before.onnx_path()).expect("before"),
        Classifier::load(&after.onnx_path()).expect("after"),
    );
    let pre = &before.manifest.preprocess;
    for (_, raw) in stored_support(&store).iter().take(8) {
        let x = pre.tensor(raw).expect("tensor");
        let mut a = old.classify(&x).expect("classify").logits;
        a.remove(k);
        let b = new.classify(&x).expect("classify").logits;
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
}

/// `adapt.budget_secs` is a limit, not a schedule: a recipe this machine cannot finish
/// within it is not cut short and shipped, the adaptation fails and says why.
#[test]
fn a_recipe_that_cannot_finish_within_the_limit_fails_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (versions, store) = vision_with_digits(dir.path());
    let mut settings = AdaptSettings::defaults();
    settings.epochs = Some(100_000);
    settings.budget_secs = 1;
    let err = learner::run(
        &versions,
        &store,
        &settings,
        false,
        1,
        &|| false,
        &mut |_| {},
    )
    .expect_err("cannot finish");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot finish its recipe within adapt.budget_secs")
            && msg.contains("over the 1 s limit"),
        "{msg}"
    );
    assert!(
        versions.on_disk().expect("versions").is_empty(),
        "nothing staged or promoted"
    );
}
