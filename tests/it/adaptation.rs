//! On-device adaptation end to end, against mosquitto: the daemon runs the shipped vision
//! model on a replay source of handwritten digits it has never seen; five labelled
//! examples of each of three digits are sent with `lsskd-edge sample send`; the daemon
//! imprints, fine-tunes, gates and promotes a new version by itself; its predictions on
//! unseen digits carry the new labels; `rollback` brings the previous version back live.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::features::Raw;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::common::data_root;
use crate::harness::{Daemon, Mosquitto, PASSWORD, USER, json, publish, replay_vision_config};

const DIGITS: [&str; 3] = ["3", "5", "7"];

fn label(digit: &str) -> String {
    format!("digit_{digit}")
}

/// The MNIST few-shot pool's images of the chosen digits, each digit's in a seeded draw
/// from the whole pool (not its first images: a test of the flow should not hang on which
/// few images a data set happens to list first): (digit, images in draw order).
pub fn digit_draw() -> Vec<(String, Vec<Raw>)> {
    let ds = dataset::load(
        &data_root().join("mnist-fewshot"),
        "pool",
        &LoadOptions {
            classes: Some(DIGITS.iter().map(|d| d.to_string()).collect()),
            ..LoadOptions::default()
        },
    )
    .expect("mnist-fewshot pool");
    ds.classes
        .iter()
        .enumerate()
        .map(|(ci, digit)| {
            let mut items: Vec<Raw> = ds
                .items
                .iter()
                .filter(|i| i.label == ci)
                .map(|i| i.raw.clone())
                .collect();
            items.shuffle(&mut StdRng::seed_from_u64(ci as u64));
            (digit.clone(), items)
        })
        .collect()
}

/// Write `support` and `query` PNGs of the chosen digits: the first of [`digit_draw`].
pub fn digit_files(
    dir: &Path,
    support: usize,
    query: usize,
) -> (Vec<(String, Vec<PathBuf>)>, PathBuf) {
    let query_dir = dir.join("query");
    std::fs::create_dir_all(&query_dir).expect("query dir");
    let mut sets = Vec::new();
    for (digit, items) in digit_draw() {
        let mut files = Vec::new();
        for (k, raw) in items.iter().take(support + query).enumerate() {
            let Raw::Image(img) = raw else {
                panic!("image")
            };
            let path = if k < support {
                dir.join(format!("support-{digit}-{k}.png"))
            } else {
                query_dir.join(format!("{digit}-{k}.png"))
            };
            img.save(&path).expect("png");
            if k < support {
                files.push(path);
            }
        }
        sets.push((label(&digit), files));
    }
    (sets, query_dir)
}

/// Teach device `it`'s `model` as a person does once the daemon is up: wait for the model's
/// card (the daemon subscribes to its samples before publishing it), send each label's
/// files, then `adapt` (one fine-tune on all of them; the config's `auto_after = 0` starts
/// none before) and wait for its outcome, which must be a promotion.
pub fn teach_and_promote(
    broker: &Mosquitto,
    daemon: &Daemon,
    model: &str,
    lessons: &[(&str, Vec<PathBuf>)],
) {
    let card = broker.wait_retained(
        &format!("lsskd/it/model/{model}/info"),
        Duration::from_secs(60),
        |_| true,
    );
    assert!(card.is_some(), "no model card; log:\n{}", daemon.log());
    for (label, files) in lessons {
        send_samples_to(broker, model, label, files, &[]);
    }
    let asked = crate::harness::now_ms();
    assert!(publish(
        broker.port,
        &format!("lsskd/it/model/{model}/cmd"),
        "adapt"
    ));
    let done = broker.wait_retained("lsskd/it/training/state", Duration::from_secs(300), |p| {
        let st = json(p);
        st["ts"].as_u64() >= Some(asked)
            && ["promoted", "rejected", "failed"].contains(&st["state"].as_str().unwrap_or(""))
            && st["queued"].as_array().is_none_or(|q| q.is_empty())
    });
    let done = done.unwrap_or_else(|| panic!("no outcome; log:\n{}", daemon.log()));
    assert_eq!(json(&done)["state"], "promoted", "{done}\n{}", daemon.log());
}

/// `lsskd-edge sample send` of `files` as `label` to the test device, with `extra`
/// arguments; asserts every sample was stored and returns what it printed.
pub fn send_samples(broker: &Mosquitto, label: &str, files: &[PathBuf], extra: &[&str]) -> String {
    send_samples_to(broker, "vision", label, files, extra)
}

/// [`send_samples`] to model `model`.
pub fn send_samples_to(
    broker: &Mosquitto,
    model: &str,
    label: &str,
    files: &[PathBuf],
    extra: &[&str],
) -> String {
    send_samples_as(broker, "it", model, label, files, extra)
}

/// [`send_samples_to`] device `device`.
pub fn send_samples_as(
    broker: &Mosquitto,
    device: &str,
    model: &str,
    label: &str,
    files: &[PathBuf],
    extra: &[&str],
) -> String {
    let mut args: Vec<String> = [
        "sample",
        "send",
        "--model",
        model,
        "--label",
        label,
        "--device",
        device,
        "--host",
        "127.0.0.1",
        "--username",
        USER,
        "--password",
        PASSWORD,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    args.extend(["--port".into(), broker.port.to_string()]);
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lsskd-edge"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("sample send");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("accepted (stored)").count(),
        files.len(),
        "{text}"
    );
    text
}

/// Poll the retained model card until `pred` holds.
fn wait_card(
    broker: &Mosquitto,
    daemon: &Daemon,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some((_, p)) = broker
            .sub("lsskd/it/model/vision/info", 1, Duration::from_secs(2))
            .pop()
        {
            let card = json(&p);
            if pred(&card) {
                return card;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let state = broker.sub("lsskd/it/training/state", 1, Duration::from_secs(2));
    panic!(
        "model card never matched; training state {state:?}; log:\n{}",
        daemon.log()
    );
}

#[test]
fn three_new_classes_over_mqtt_are_learnt_promoted_served_and_rolled_back() {
    let _cpu = crate::common::cpu_alone();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (support, query_dir) = digit_files(dir.path(), 5, 4);
    let config = format!(
        "{}\n{}",
        replay_vision_config("desk", &query_dir.display().to_string(), broker.port),
        r#"# The default gate; the automatic fine-tune's trigger is set.
[adapt]
auto_after = 15
cooldown_secs = 0
"#
    );
    let daemon = Daemon::start(&config, &[]);
    // The shipped model's card is announced first.
    wait_card(&broker, &daemon, Duration::from_secs(20), |c| {
        c["version"] == 0
    });

    // Five examples of each new digit, through the real client tool.
    for (label, files) in &support {
        send_samples(&broker, label, files, &[]);
    }

    // A fine-tuned version is promoted by itself and its card lists the new classes.
    let card = wait_card(&broker, &daemon, Duration::from_secs(240), |c| {
        c["adaptation"]["kind"] == "finetune"
    });
    let classes: Vec<&str> = card["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for d in DIGITS {
        assert!(classes.contains(&label(d).as_str()), "{classes:?}");
        assert_eq!(card["samples_per_class"][label(d)], 5);
    }
    let version = card["version"].as_u64().expect("version");
    let parent = card["parent"].as_u64().expect("parent");
    assert!(version >= 1);
    let gate = &card["adaptation"]["gate"];
    assert!(
        gate["new_after"].as_f64().expect("new-class accuracy") >= 0.6,
        "{gate}"
    );

    // Predictions on unseen digits now come from the new version and carry new labels.
    let preds: Vec<serde_json::Value> = broker
        .sub("lsskd/it/desk/prediction", 40, Duration::from_secs(30))
        .iter()
        .map(|(_, p)| json(p))
        .filter(|p| p["model_version"].as_u64() == Some(version))
        .collect();
    assert!(
        preds.len() >= 12,
        "{} predictions from v{version}",
        preds.len()
    );
    let new_labels: Vec<String> = DIGITS.iter().map(|d| label(d)).collect();
    let hits = preds
        .iter()
        .filter(|p| new_labels.iter().any(|l| p["label"] == l.as_str()))
        .count();
    // Chance is 1 in 13; the shipped model alone never says a digit label.
    assert!(
        hits * 2 > preds.len(),
        "only {hits} of {} predictions on unseen digits carry a new label",
        preds.len()
    );

    // Rollback: the parent version is live again, without a restart.
    assert!(publish(
        broker.port,
        "lsskd/it/model/vision/cmd",
        "rollback"
    ));
    wait_card(&broker, &daemon, Duration::from_secs(30), |c| {
        c["version"].as_u64() == Some(parent)
    });
    let start = Instant::now();
    loop {
        let p = broker.sub("lsskd/it/desk/prediction", 1, Duration::from_secs(5));
        if p.first()
            .is_some_and(|(_, p)| json(p)["model_version"].as_u64() == Some(parent))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "rollback not live"
        );
    }
}

/// The first run of a new user, with the DEFAULT settings: five samples of each of three
/// digits, sent one label after the other with `sample send --wait`. Every label is
/// imprinted and served as soon as it has `min_shots` samples (a fine-tune queued or
/// running gives way to it), and `--wait` prints each outcome.
#[test]
fn first_run_with_default_settings_serves_every_label_and_reports_each_outcome() {
    let _cpu = crate::common::cpu_alone();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (support, query_dir) = digit_files(dir.path(), 5, 4);
    let config = replay_vision_config("desk", &query_dir.display().to_string(), broker.port);
    let daemon = Daemon::start(&config, &[]);
    wait_card(&broker, &daemon, Duration::from_secs(20), |c| {
        c["version"] == 0
    });
    let mut outputs = Vec::new();
    for (label, files) in &support {
        let text = send_samples(&broker, label, files, &["--wait", "--timeout-secs", "240"]);
        // The label is served by the time `--wait` returns: imprinted and promoted.
        assert!(
            text.contains("vision: promoted (imprint)"),
            "no imprint reported for {label}:\n{text}\nlog:\n{}",
            daemon.log()
        );
        let card = wait_card(&broker, &daemon, Duration::from_secs(10), |c| {
            c["classes"]
                .as_array()
                .is_some_and(|cl| cl.iter().any(|x| x == label.as_str()))
        });
        assert!(card["version"].as_u64().expect("version") >= 1);
        outputs.push(text);
    }
    // The 15th sample starts a fine-tune (`auto_after` = 15): `--wait` stayed until its
    // outcome — a promoted fine-tune, with the default gate — and nothing was left queued.
    let last = outputs.last().expect("three sends");
    assert!(
        last.lines()
            .any(|l| l.starts_with("vision: promoted (finetune)")),
        "no promoted fine-tune:\n{last}\nlog:\n{}",
        daemon.log()
    );
    assert!(!last.contains("still running"), "{last}");
    // No fine-tune took a label away: all three are live.
    let card = wait_card(&broker, &daemon, Duration::from_secs(10), |_| true);
    let classes = card["classes"].as_array().expect("classes");
    for d in DIGITS {
        assert!(classes.iter().any(|c| c == label(d).as_str()), "{card}");
    }
}

/// While a fine-tune trains, `training/state` carries the seconds it is expected to take
/// (from its speed on this machine so far), and the card records the steps it ran: the
/// recipe's, never a schedule shortened to fit the time (`adapt.budget_secs` is a limit:
/// `adapt_core` shows one that binds).
#[test]
fn training_states_carry_the_expected_time_and_the_card_the_steps_run() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (support, query_dir) = digit_files(dir.path(), 4, 2);
    let config = format!(
        "{}\n[adapt]\nauto_after = 0\n",
        replay_vision_config("desk", &query_dir.display().to_string(), broker.port)
    );
    let daemon = Daemon::start(&config, &[]);
    wait_card(&broker, &daemon, Duration::from_secs(20), |c| {
        c["version"] == 0
    });
    for (label, files) in support.iter().take(2) {
        send_samples(&broker, label, files, &["--wait"]);
    }
    // One fine-tune and its gate: over well within a minute.
    let states = broker.sub_background("lsskd/it/training/state", 1000, Duration::from_secs(60));
    assert!(publish(broker.port, "lsskd/it/model/vision/cmd", "adapt"));
    let seen: Vec<serde_json::Value> = crate::harness::collect(states)
        .iter()
        .map(|(_, p)| json(p))
        .collect();
    assert!(
        seen.iter().any(|s| s["state"] == "training"
            && s["kind"] == "finetune"
            && s["expected_secs"].as_f64().is_some_and(|e| e > 0.0)),
        "no expected time while training: {seen:?}\nlog:\n{}",
        daemon.log()
    );
    let end = seen
        .iter()
        .find(|s| {
            s["kind"] == "finetune"
                && ["promoted", "rejected"].contains(&s["state"].as_str().unwrap_or(""))
        })
        .unwrap_or_else(|| panic!("no fine-tune outcome in {seen:?}; log:\n{}", daemon.log()));
    if end["state"] == "promoted" {
        let card = wait_card(&broker, &daemon, Duration::from_secs(10), |c| {
            c["adaptation"]["kind"] == "finetune"
        });
        assert!(
            card["adaptation"]["steps"].as_u64().is_some_and(|s| s > 0),
            "{card}"
        );
    }
}
