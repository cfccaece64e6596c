//! Teaching the daemon new digits with its default settings, against mosquitto: five
//! samples of each of three digits the shipped (clothing) model has never seen. Whatever
//! the gate decides, every label ends served (in the model card, flagged `provisional`
//! when its own evidence is weak) or reported on `training/state` (`unserved`, with a
//! reason and what to send), and the trainer ends idle: no job after the last outcome.
//! Issue 28: a rejected imprint was retried every few seconds for ever, and the queued
//! fine-tune that could have served the label never ran.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lsskd_edge::dataset::{self, LoadOptions};
use lsskd_edge::features::Raw;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::common::data_root;
use crate::harness::{Daemon, Mosquitto, json, publish, replay_vision_config, samples};

fn label(digit: &str) -> String {
    format!("digit_{digit}")
}

/// `k` PNGs of each of `digits`, a seeded draw from the MNIST few-shot pool (the
/// development split; the blind test split is not used), named after `tag`.
fn digit_sets(
    dir: &Path,
    digits: &[&str],
    k: usize,
    seed: u64,
    tag: &str,
) -> Vec<(String, Vec<PathBuf>)> {
    let ds = dataset::load(
        &data_root().join("mnist-fewshot"),
        "pool",
        &LoadOptions {
            classes: Some(digits.iter().map(|d| d.to_string()).collect()),
            ..LoadOptions::default()
        },
    )
    .expect("mnist-fewshot pool");
    let mut sets = Vec::new();
    for (ci, digit) in ds.classes.iter().enumerate() {
        let mut items: Vec<&Raw> = ds
            .items
            .iter()
            .filter(|i| i.label == ci)
            .map(|i| &i.raw)
            .collect();
        items.shuffle(&mut StdRng::seed_from_u64(
            seed.wrapping_mul(31) + ci as u64,
        ));
        let files = items
            .iter()
            .take(k)
            .enumerate()
            .map(|(n, raw)| {
                let Raw::Image(img) = raw else {
                    panic!("image")
                };
                let path = dir.join(format!("{tag}-{digit}-{n}.png"));
                img.save(&path).expect("png");
                path
            })
            .collect();
        sets.push((label(digit), files));
    }
    // In the order asked for (the scenario sends them one label after the other).
    sets.sort_by_key(|(l, _)| digits.iter().position(|d| label(d) == *l));
    sets
}

/// `lsskd-edge sample send` of `files` as `label`; asserts every sample was stored.
fn send(broker: &Mosquitto, label: &str, files: &[PathBuf]) {
    crate::adaptation::send_samples(broker, label, files, &[]);
}

fn retained(broker: &Mosquitto, topic: &str) -> Option<serde_json::Value> {
    broker
        .sub(topic, 1, Duration::from_secs(2))
        .pop()
        .map(|(_, p)| json(&p))
}

/// The daemon's log without terminal colours.
fn plain_log(daemon: &Daemon) -> String {
    let mut out = String::new();
    let mut rest = daemon.log();
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        let esc = &rest[at..];
        let end = esc.find('m').map_or(esc.len(), |m| m + 1);
        rest = esc[end..].to_string();
    }
    out.push_str(&rest);
    out
}

/// Jobs the trainer started, from the daemon's log.
fn jobs_started(daemon: &Daemon) -> usize {
    plain_log(daemon).matches("trainer job job=").count()
}

/// `(kind, state)` of every job that ended, in order, from the daemon's log.
fn jobs_ended(daemon: &Daemon) -> Vec<(String, String)> {
    plain_log(daemon)
        .lines()
        .filter(|l| l.contains("trainer job ended"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_default()
                    .to_string()
            };
            (field("kind="), field("state="))
        })
        .collect()
}

/// What became of each label once the trainer has settled.
#[derive(Debug)]
struct Settled {
    card: serde_json::Value,
    state: serde_json::Value,
}

/// Wait until the trainer has settled on `labels`: its latest `training/state` ends a job
/// with nothing queued, every label is in the card or listed `unserved` there, and no job
/// started for 10 s. Panics after `timeout`.
fn settle(broker: &Mosquitto, daemon: &Daemon, labels: &[String], timeout: Duration) -> Settled {
    let start = Instant::now();
    let mut stable_since = (Instant::now(), jobs_started(daemon));
    loop {
        let jobs = jobs_started(daemon);
        if jobs != stable_since.1 {
            stable_since = (Instant::now(), jobs);
        }
        let state = retained(broker, "lsskd/it/training/state");
        let card = retained(broker, "lsskd/it/model/vision/info");
        if let (Some(state), Some(card)) = (state, card) {
            let done = matches!(
                state["state"].as_str(),
                Some("promoted" | "rejected" | "failed" | "idle")
            ) && state["queued"].as_array().is_none_or(|q| q.is_empty());
            let accounted = labels
                .iter()
                .all(|l| served(&card, l) || unserved(&state, l).is_some());
            if done && accounted && stable_since.0.elapsed() > Duration::from_secs(10) {
                return Settled { card, state };
            }
        }
        assert!(
            start.elapsed() < timeout,
            "the trainer did not settle on {labels:?} in {timeout:?}; jobs {:?}; log:\n{}",
            jobs_ended(daemon),
            daemon.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether a model card counts no stored sample.
fn no_samples(card: &serde_json::Value) -> bool {
    card["samples_per_class"]
        .as_object()
        .is_some_and(|c| c.is_empty())
}

fn served(card: &serde_json::Value, label: &str) -> bool {
    card["classes"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x == label))
}

fn unserved<'a>(state: &'a serde_json::Value, label: &str) -> Option<&'a serde_json::Value> {
    state["unserved"]
        .as_array()?
        .iter()
        .find(|u| u["label"] == label)
}

/// Every label is served (and, when its own evidence is weak, listed as provisional with
/// what to send) or reported unserved with a reason and what to send. `min_new` is the
/// daemon's `adapt.min_new_accuracy`, below which a served label is provisional.
fn assert_accounted(s: &Settled, labels: &[String], daemon: &Daemon, min_new: f64) {
    for l in labels {
        if served(&s.card, l) {
            assert_eq!(s.card["samples_per_class"][l], 5, "{l}: {}", s.card);
            if let Some(p) = s.card["provisional"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["label"] == l.as_str()))
            {
                assert!(
                    p["send"].as_str().is_some_and(|t| t.contains(l.as_str())),
                    "{p}"
                );
                assert!(p["accuracy"].as_f64().expect("accuracy") < min_new, "{p}");
            }
        } else {
            let u = unserved(&s.state, l).expect("accounted");
            assert_eq!(u["samples"], 5, "{u}");
            assert_eq!(s.state["state"], "rejected", "{}", s.state);
            assert!(
                s.state["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{}",
                s.state
            );
            assert!(
                u["send"].as_str().is_some_and(|t| t.contains("send")),
                "{l} unserved without what to send: {}\nlog:\n{}",
                s.state,
                daemon.log()
            );
        }
    }
    // Labels the gate judged weak but the card serves are all flagged.
    if let Some(labels) = s.card["adaptation"]["gate"]["labels"].as_array() {
        for l in labels {
            let weak = l["accuracy"].as_f64().expect("accuracy") < min_new;
            let flagged = s.card["provisional"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["label"] == l["label"]));
            assert_eq!(weak, flagged, "{l} vs {}", s.card["provisional"]);
        }
    }
}

fn daemon(broker: &Mosquitto, adapt: &str) -> Daemon {
    let config = format!(
        "{}\n[adapt]\n{adapt}\n",
        replay_vision_config("desk", &samples("vision"), broker.port)
    );
    let daemon = Daemon::start(&config, &[]);
    let start = Instant::now();
    while retained(broker, "lsskd/it/model/vision/info").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no model card; log:\n{}",
            daemon.log()
        );
    }
    daemon
}

/// The scenario (digits 3, 8 and 2, five samples each, sent one label after the
/// other), with a gate strict enough that imprints are rejected whatever the draw: each
/// rejected imprint is tried once, the labels go to the fine-tune, its outcome is said
/// once, and no job starts in the next 60 s.
#[test]
fn a_rejected_imprint_goes_to_the_finetune_and_the_trainer_then_rests() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sets = digit_sets(dir.path(), &["3", "8", "2"], 5, 28, "stall");
    let labels: Vec<String> = sets.iter().map(|(l, _)| l.clone()).collect();
    let daemon = daemon(&broker, "min_new_accuracy = 0.9");
    for (label, files) in &sets {
        send(&broker, label, files);
    }
    let s = settle(&broker, &daemon, &labels, Duration::from_secs(600));
    let ended = jobs_ended(&daemon);
    eprintln!("jobs: {ended:?}; unserved {}", s.state["unserved"]);
    assert!(
        ended.iter().any(|(k, s)| k == "imprint" && s == "Rejected"),
        "the scenario needs a rejected imprint: {ended:?}"
    );
    let first_rejected = ended
        .iter()
        .position(|(k, s)| k == "imprint" && s == "Rejected")
        .expect("rejected imprint");
    assert!(
        ended[first_rejected..].iter().any(|(k, _)| k == "finetune"),
        "no fine-tune after the rejected imprint: {ended:?}\nlog:\n{}",
        daemon.log()
    );
    // Each imprint has new samples to try: at most one per sample past `min_shots`.
    let imprints = ended.iter().filter(|(k, _)| k == "imprint").count();
    assert!(imprints <= 3 * 3, "{ended:?}");
    assert_accounted(&s, &labels, &daemon, 0.9);

    // Idle: no job in the next 60 s, and the outcome stays what it said.
    let jobs = jobs_started(&daemon);
    std::thread::sleep(Duration::from_secs(60));
    assert_eq!(
        jobs_started(&daemon),
        jobs,
        "the trainer ran jobs while nothing changed: {:?}",
        jobs_ended(&daemon)
    );
    let later = retained(&broker, "lsskd/it/training/state").expect("state");
    assert_eq!(later["ts"], s.state["ts"], "{later}");

    // A new sample of an unserved label is something new: it is tried again.
    if let Some((label, files)) = sets.iter().find(|(l, _)| !served(&s.card, l)) {
        let more = digit_sets(dir.path(), &[&label["digit_".len()..]], 6, 99, "more");
        let extra = more[0].1.last().expect("a sixth sample").clone();
        assert!(!files.contains(&extra));
        send(&broker, label, &[extra]);
        let start = Instant::now();
        while jobs_started(&daemon) == jobs {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "a new sample of `{label}` started nothing; log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Five draws of three digits with the default settings, one daemon, one label set at a
/// time (`forget`, `promote 0` in between): no label is left silently unserved and the
/// trainer settles after each.
#[test]
fn any_three_digits_end_served_or_reported_over_five_draws() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = daemon(&broker, "");
    let mut digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    for draw in 0..5u64 {
        digits.shuffle(&mut StdRng::seed_from_u64(1000 + draw));
        let three: Vec<&str> = digits[..3].iter().map(|d| d.as_str()).collect();
        let sets = digit_sets(dir.path(), &three, 5, draw, &format!("draw{draw}"));
        let labels: Vec<String> = sets.iter().map(|(l, _)| l.clone()).collect();
        for (label, files) in &sets {
            send(&broker, label, files);
        }
        let s = settle(&broker, &daemon, &labels, Duration::from_secs(600));
        eprintln!(
            "draw {draw} {three:?}: card v{} classes {:?}, provisional {}, unserved {}",
            s.card["version"], s.card["classes"], s.card["provisional"], s.state["unserved"]
        );
        assert_accounted(
            &s,
            &labels,
            &daemon,
            lsskd_edge::settings::AdaptSettings::defaults().min_new_accuracy,
        );
        // `forget` means forget: each label's samples go, and a version without it
        // serves (the card's classes no longer have it).
        for l in &labels {
            assert!(publish(
                broker.port,
                "lsskd/it/model/vision/cmd",
                &format!("forget {l}")
            ));
        }
        let forgotten =
            broker.wait_retained("lsskd/it/model/vision/info", Duration::from_secs(60), |p| {
                let card = json(p);
                labels.iter().all(|l| !served(&card, l)) && no_samples(&card)
            });
        assert!(
            forgotten.is_some(),
            "forgotten labels still served: {:?}; log:\n{}",
            retained(&broker, "lsskd/it/model/vision/info"),
            daemon.log()
        );
        // The next draw starts from the shipped model.
        assert!(publish(
            broker.port,
            "lsskd/it/model/vision/cmd",
            "promote 0"
        ));
        let reset =
            broker.wait_retained("lsskd/it/model/vision/info", Duration::from_secs(60), |p| {
                let card = json(p);
                card["version"] == 0 && no_samples(&card)
            });
        assert!(
            reset.is_some(),
            "no reset: {:?}; log:\n{}",
            retained(&broker, "lsskd/it/model/vision/info"),
            daemon.log()
        );
    }
}
