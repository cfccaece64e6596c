//! The `train`, `eval`, `predict` and `export` commands through the real binary, including
//! the clear errors for bad packages and data sets.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::common::{cli, fashion, kws, stderr, stdout};

/// Train a tiny package on a slice of Fashion-MNIST val (fast; quality irrelevant).
pub fn tiny_package(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join("pkg");
    let fashion = fashion();
    let mut args = vec![
        "train",
        "--data",
        fashion.to_str().expect("utf-8 path"),
        "--split",
        "val",
        "--val-split",
        "val",
        "--epochs",
        "1",
        "--arch",
        "resnet-xs",
        "--limit-per-class",
        "6",
        "--replay-per-class",
        "2",
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let o = cli(&args);
    assert!(o.status.success(), "train failed: {}", stderr(&o));
    assert!(stdout(&o).contains("validation accuracy"), "{}", stdout(&o));
    out
}

fn eval_json(pkg: &Path, data: &Path, split: &str) -> Value {
    let o = cli(&[
        "eval",
        "--model",
        pkg.to_str().expect("utf-8"),
        "--data",
        data.to_str().expect("utf-8"),
        "--split",
        split,
        "--json",
    ]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "exactly one JSON line: {text}"
    );
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn train_writes_a_verified_package_that_eval_predict_and_export_use() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = tiny_package(dir.path(), &["--method", "lsskd"]);
    for f in [
        "model.onnx",
        "train-state.bpk",
        "manifest.json",
        "train-log.csv",
        "replay/bag/000.png",
    ] {
        assert!(pkg.join(f).exists(), "{f} written");
    }
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(pkg.join("manifest.json")).expect("read"))
            .expect("json");
    assert_eq!(manifest["deployed"]["auxiliary_heads_exported"], false);
    let deployed = manifest["deployed"]["param_count"].as_u64().expect("count");
    let training = manifest["deployed"]["training_param_count"]
        .as_u64()
        .expect("count");
    assert!(
        training > 2 * deployed,
        "aux heads are in training only: {training} vs {deployed}"
    );
    assert_eq!(manifest["classes"].as_array().expect("classes").len(), 10);
    assert_eq!(manifest["preprocess"]["modality"], "image");
    assert!(manifest["metrics"][0]["accuracy"].as_f64().is_some());
    let log = fs::read_to_string(pkg.join("train-log.csv")).expect("log");
    assert_eq!(log.lines().count(), 2, "header + one epoch: {log}");

    let report = eval_json(&pkg, &fashion(), "val");
    let acc = report["accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(report["n"], 6000);
    assert_eq!(report["skipped"], 0);
    assert_eq!(
        report["per_class"].as_object().expect("per_class").len(),
        10
    );
    let confusion = report["confusion"].as_array().expect("confusion");
    let total: u64 = confusion
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_u64().expect("count"))
        })
        .sum();
    assert_eq!(total, 6000);

    let png = fashion().join("preview/bag/0.png");
    let o = cli(&[
        "predict",
        "--model",
        pkg.to_str().expect("utf-8"),
        "--json",
        png.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let preds: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let top = preds[0]["top_k"].as_array().expect("top_k");
    assert_eq!(top.len(), 3);
    assert!(top[0]["score"].as_f64().expect("score") >= top[1]["score"].as_f64().expect("score"));

    let before = fs::read(pkg.join("model.onnx")).expect("onnx");
    let o = cli(&["export", "--model", pkg.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(pkg.join("model.onnx")).expect("onnx"),
        before,
        "export is reproducible"
    );

    assert!(pkg.join("replay/bag/001.png").exists());
    let o = cli(&[
        "export",
        "--model",
        pkg.to_str().expect("utf-8"),
        "--replay-per-class",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(pkg.join("replay/bag/000.png").exists() && !pkg.join("replay/bag/001.png").exists());
    let report = eval_json(&pkg, &fashion(), "val");
    assert_eq!(
        report["n"], 6000,
        "the trimmed package still verifies and runs"
    );
}

#[test]
fn eval_skips_and_counts_classes_the_model_does_not_know() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = tiny_package(dir.path(), &["--method", "ce", "--classes", "trouser,bag"]);
    let report = eval_json(&pkg, &fashion(), "val");
    assert_eq!(report["n"], 1200);
    assert_eq!(report["skipped"], 4800);
    assert_eq!(report["classes"], serde_json::json!(["trouser", "bag"]));
}

#[test]
fn a_tampered_or_incomplete_package_is_refused_with_the_file_named() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = tiny_package(dir.path(), &["--method", "ce"]);
    let data = fashion();
    let eval = |pkg: &Path| {
        cli(&[
            "eval",
            "--model",
            pkg.to_str().expect("utf-8"),
            "--data",
            data.to_str().expect("utf-8"),
            "--split",
            "val",
        ])
    };

    let mut onnx = fs::read(pkg.join("model.onnx")).expect("onnx");
    let last = onnx.len() - 1;
    onnx[last] ^= 0xff;
    fs::write(pkg.join("model.onnx"), &onnx).expect("write");
    let o = eval(&pkg);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("model.onnx") && stderr(&o).contains("sha256"),
        "{}",
        stderr(&o)
    );

    let pkg2 = tiny_package(&dir.path().join("b"), &["--method", "ce"]);
    fs::remove_file(pkg2.join("train-state.bpk")).expect("rm");
    let o = eval(&pkg2);
    assert!(
        stderr(&o).contains("train-state.bpk") && stderr(&o).contains("missing"),
        "{}",
        stderr(&o)
    );

    let pkg3 = tiny_package(&dir.path().join("c"), &["--method", "ce"]);
    let mpath = pkg3.join("manifest.json");
    let mut m: Value =
        serde_json::from_str(&fs::read_to_string(&mpath).expect("read")).expect("json");
    m["surprise"] = Value::Bool(true);
    fs::write(&mpath, serde_json::to_string(&m).expect("json")).expect("write");
    let o = eval(&pkg3);
    assert!(
        stderr(&o).contains("manifest.json") && stderr(&o).contains("surprise"),
        "{}",
        stderr(&o)
    );

    // A manifest that contradicts the graph (one class more than the ONNX has).
    m.as_object_mut().expect("object").remove("surprise");
    m["classes"]
        .as_array_mut()
        .expect("classes")
        .push(Value::String("extra".into()));
    fs::write(&mpath, serde_json::to_string(&m).expect("json")).expect("write");
    let o = eval(&pkg3);
    assert!(
        stderr(&o).contains("logits") && stderr(&o).contains("11 classes"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_data_sets_give_clear_errors_or_are_skipped_and_counted() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let o = cli(&[
        "train",
        "--data",
        "/nonexistent/data",
        "--split",
        "train",
        "--out",
        "/tmp/x",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/data"), "{}", stderr(&o));

    // A folder tree with one corrupt WAV among real clips.
    let root = dir.path().join("kws");
    small_kws_train(&root);
    fs::write(
        root.join("train/yes/broken.wav"),
        b"RIFF....WAVEfmt garbage",
    )
    .expect("write");
    let out = dir.path().join("pkg");
    let args = |skip: bool| {
        let mut a = vec![
            "train".to_string(),
            "--data".into(),
            root.display().to_string(),
            "--split".into(),
            "train".into(),
            "--epochs".into(),
            "1".into(),
            "--arch".into(),
            "resnet-xs".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        if skip {
            a.push("--skip-bad".into());
        }
        a
    };
    let a: Vec<String> = args(false);
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("broken.wav"), "{}", stderr(&o));
    let a: Vec<String> = args(true);
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cli(&[
        "eval",
        "--model",
        out.to_str().expect("utf-8"),
        "--data",
        root.to_str().expect("utf-8"),
        "--split",
        "train",
        "--skip-bad",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(report["skipped_bad"], 1);
    assert_eq!(report["n"], 6);
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = tiny_package(&dir.path().join("a"), &["--method", "lsskd", "--seed", "7"]);
    let b = tiny_package(&dir.path().join("b"), &["--method", "lsskd", "--seed", "7"]);
    let c = tiny_package(&dir.path().join("c"), &["--method", "lsskd", "--seed", "8"]);
    let onnx = |p: &Path| fs::read(p.join("model.onnx")).expect("onnx");
    assert_eq!(onnx(&a), onnx(&b), "same seed, same model");
    assert_ne!(onnx(&a), onnx(&c), "another seed, another model");
    let log = |p: &Path| fs::read_to_string(p.join("train-log.csv")).expect("log");
    let losses = |s: String| {
        s.lines()
            .nth(1)
            .expect("epoch line")
            .split(',')
            .nth(4)
            .map(str::to_string)
    };
    assert_eq!(losses(log(&a)), losses(log(&b)));
}

#[test]
fn fewshot_bench_reports_the_documented_json_on_the_shipped_audio_model() {
    let _cpu = crate::common::cpu_shared();
    let kws = kws();
    let kws = kws.to_str().expect("utf-8");
    let model = crate::common::repo().join("models/audio");
    let o = cli(&[
        "fewshot-bench",
        "--model",
        model.to_str().expect("utf-8"),
        "--support-data",
        kws,
        "--support-split",
        "train",
        "--query-data",
        kws,
        "--query-split",
        "val",
        "--way",
        "2",
        "--shot",
        "3",
        "--episodes",
        "1",
        "--base-data",
        kws,
        "--base-split",
        "val",
        "--base-limit",
        "40",
        "--epochs",
        "1",
        "--budget-secs",
        "120",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    for key in [
        "novel_accuracy",
        "novel_ci95",
        "imprint_only_novel_accuracy",
        "base_accuracy_before",
        "base_accuracy_after",
        "seconds_per_episode",
    ] {
        assert!(r[key].is_number(), "{key} in {r}");
    }
    assert_eq!(r["episodes"], 1);
    assert!(
        r["imprint_only_novel_accuracy"].as_f64().expect("number") > 0.5,
        "{r}"
    );
    let classes = r["per_episode"][0]["classes"].as_array().expect("classes");
    assert!(
        classes
            .iter()
            .all(|c| !["yes", "no", "up", "down"].contains(&c.as_str().expect("str"))),
        "novel words only"
    );
}

#[test]
fn training_can_continue_from_a_package_with_the_same_classes() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = tiny_package(&dir.path().join("a"), &["--method", "lsskd"]);
    let init = first.to_str().expect("utf-8");
    let second = tiny_package(
        &dir.path().join("b"),
        &["--method", "lsskd", "--init", init],
    );
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(second.join("manifest.json")).expect("read"))
            .expect("json");
    assert_eq!(manifest["training_data"]["init"], init);
    let before: Value =
        serde_json::from_str(&fs::read_to_string(first.join("manifest.json")).expect("read"))
            .expect("json");
    assert_eq!(
        manifest["preprocess"], before["preprocess"],
        "the package's preprocessing is kept"
    );

    let fashion = fashion();
    let out = dir.path().join("c");
    let o = cli(&[
        "train",
        "--data",
        fashion.to_str().expect("utf-8"),
        "--split",
        "val",
        "--classes",
        "trouser,bag",
        "--limit-per-class",
        "2",
        "--epochs",
        "1",
        "--init",
        init,
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("differ"), "{}", stderr(&o));
    let o = cli(&[
        "train",
        "--data",
        fashion.to_str().expect("utf-8"),
        "--split",
        "val",
        "--method",
        "ce",
        "--limit-per-class",
        "2",
        "--epochs",
        "1",
        "--init",
        init,
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("auxiliary heads"), "{}", stderr(&o));
}

/// `root/train/{yes,no}/{0,1,2}.wav`: three real clips of two words.
fn small_kws_train(root: &Path) {
    for word in ["yes", "no"] {
        let d = root.join("train").join(word);
        fs::create_dir_all(&d).expect("mkdir");
        for i in 0..3 {
            fs::copy(
                kws().join(format!("train/{word}/{i}.wav")),
                d.join(format!("{i}.wav")),
            )
            .expect("copy");
        }
    }
}

#[test]
fn train_with_beds_and_a_background_class_records_both_in_the_package() {
    let _cpu = crate::common::cpu_shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("kws");
    small_kws_train(&root);
    let beds = dir.path().join("beds");
    fs::create_dir_all(&beds).expect("mkdir");
    fs::copy(
        crate::common::data_root().join("sound-events/beds/5_harbour-ship.wav"),
        beds.join("ship.wav"),
    )
    .expect("copy bed");
    let out = dir.path().join("pkg");
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            root.to_str().expect("utf-8"),
            "--split",
            "train",
            "--epochs",
            "1",
            "--arch",
            "resnet-xs",
            "--replay-per-class",
            "2",
            "--out",
            out.to_str().expect("utf-8"),
        ];
        a.extend_from_slice(extra);
        cli(&a)
    };
    // The background class needs the beds it is drawn from.
    let o = train(&["--background-class", "background"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--noise-beds"), "{}", stderr(&o));

    let o = train(&[
        "--noise-beds",
        beds.to_str().expect("utf-8"),
        "--mic-augment",
        "--background-class",
        "background",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Value =
        serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).expect("read"))
            .expect("json");
    assert_eq!(m["classes"], serde_json::json!(["no", "yes", "background"]));
    assert_eq!(m["background"], "background");
    let data = &m["training_data"];
    assert_eq!(data["samples_per_class"]["background"], 3);
    assert_eq!(data["noise_beds"].as_array().map(Vec::len), Some(1));
    let augment = &data["audio_augment"];
    assert_eq!(augment["beds"]["snr_db"], serde_json::json!([0.0, 20.0]));
    assert!(augment["band_limit"].is_object() && augment["reverb"].is_object());
    // Replay keeps the background class, so that device fine-tunes keep it too.
    let replay = fs::read_dir(out.join("replay/background")).expect("background replay");
    assert_eq!(replay.count(), 2);
}

/// `bench --report`: the figures of README's board table for this machine, one JSON object
/// (what a user runs on a board to compare); and a vector path that is not one is refused
/// with the variable named.
#[test]
fn bench_report_gives_the_board_table_figures_as_one_json_object() {
    let _cpu = crate::common::cpu_shared();
    let model = crate::common::repo().join("models/vision");
    let model = model.to_str().expect("utf-8");
    let o = cli(&[
        "bench",
        "--report",
        "--model",
        model,
        "--iterations",
        "5",
        "--warmup",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    let m = &r["machine"];
    assert!(m["cores"].as_u64().expect("cores") >= 1, "{r}");
    assert!(
        m["matmul_gflops_one_thread"].as_f64().expect("peak") > 0.0,
        "{r}"
    );
    assert!(
        ["avx512f", "avx+fma", "neon", "portable"]
            .contains(&m["vector_path"].as_str().expect("path")),
        "{r}"
    );
    let k = &r["training_kernels"];
    assert!(
        ["ours", "burn"].contains(&k["kernels"].as_str().expect("kernels")),
        "{r}"
    );
    let v = &r["models"][0];
    assert_eq!(v["model"], "vision", "{r}");
    assert!(v["mfma_per_input"].as_f64().expect("mfma") > 1.0, "{r}");
    assert!(v["inference"]["p50_ms"].as_f64().expect("p50") > 0.0, "{r}");
    let a = &v["adaptation"];
    assert_eq!(a["samples"], 5, "{r}");
    assert!(
        a["steps"].as_u64().expect("steps") > 0,
        "the recipe's fine-tune ran: {r}"
    );
    assert!(a["train_secs"].as_f64().expect("train") > 0.0, "{r}");
    assert!(r["peak_rss_mib"].as_f64().expect("rss") > 10.0, "{r}");

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lsskd-edge"))
        .args(["bench", "--model", model, "--iterations", "1"])
        .env("LSSKD_EDGE_KERNEL_ISA", "avx2")
        .output()
        .expect("spawn lsskd-edge");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("LSSKD_EDGE_KERNEL_ISA `avx2`"),
        "{}",
        stderr(&o)
    );
}
