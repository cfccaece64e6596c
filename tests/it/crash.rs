//! Crash safety: the daemon is killed with SIGKILL at random moments while samples stream
//! in, adaptations run and versions are promoted. After every kill, every acked sample is
//! still in the store, and the restarted daemon serves a valid model.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use lsskd_edge::registry::ModelPackage;
use rand::{Rng, SeedableRng};

use crate::adaptation::digit_files;
use crate::harness::{Daemon, Mosquitto, json, model, publish, replay_vision_config};

#[test]
fn sigkill_at_random_moments_loses_no_acked_sample_and_always_restarts_serving() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (support, query_dir) = digit_files(dir.path(), 12, 2);
    let images: Vec<(String, Vec<u8>)> = support
        .iter()
        .flat_map(|(label, files)| {
            files
                .iter()
                .map(|f| (label.clone(), std::fs::read(f).expect("png")))
                .collect::<Vec<_>>()
        })
        .collect();
    // A permissive gate and two-epoch fine-tunes so that imprints, fine-tunes and
    // promotions all happen while the kills land.
    let config = format!(
        "{}\n{}",
        replay_vision_config("desk", &query_dir.display().to_string(), broker.port),
        r#"[adapt]
min_shots = 2
auto_after = 4
cooldown_secs = 0
epochs = 2
min_new_accuracy = 0.0
max_old_drop = 1.0
keep_versions = 3
"#
    );

    // Acks are collected for the whole test by one subscriber (the broker stays up).
    let mut acks_sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-u", crate::harness::USER, "-P", crate::harness::PASSWORD])
        .args(["-t", "lsskd/it/samples/vision/ack", "-q", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let acks_out = acks_sub.stdout.take().expect("stdout");
    let acked: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
    {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(acks_out).lines().map_while(Result::ok) {
                let ack = json(&line);
                if ack["accepted"] == true {
                    acked
                        .lock()
                        .expect("lock")
                        .insert(ack["id"].as_str().expect("id").to_string());
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut next = 0usize;
    let rounds = 8;
    let mut promoted_seen = 0;
    for round in 0..rounds {
        let mut daemon = Daemon::start_in(&state, &config, &[]);
        // Serving: predictions flow from a valid model version.
        let first = broker.sub("lsskd/it/desk/prediction", 1, Duration::from_secs(30));
        assert_eq!(
            first.len(),
            1,
            "round {round}: not serving; log:\n{}",
            daemon.log()
        );
        let version = json(&first[0].1)["model_version"]
            .as_u64()
            .expect("version") as u32;
        let dir = if version == 0 {
            std::path::PathBuf::from(model("vision"))
        } else {
            state.join(format!("models/vision/v{version:04}"))
        };
        ModelPackage::load(&dir).unwrap_or_else(|e| panic!("round {round}: live v{version}: {e}"));
        promoted_seen = promoted_seen.max(version);

        // Stream samples (and an explicit `adapt` now and then) until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            let port = broker.port;
            let batch: Vec<(String, String, Vec<u8>)> = (0..20)
                .map(|k| {
                    let (label, bytes) = images[(next + k) % images.len()].clone();
                    (format!("r{round}-s{k}"), label, bytes)
                })
                .collect();
            next += 20;
            std::thread::spawn(move || {
                for (i, (id, label, bytes)) in batch.into_iter().enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = serde_json::json!({
                        "id": id,
                        "label": label,
                        "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
                    });
                    publish(port, "lsskd/it/samples/vision/add", &body.to_string());
                    if i == 10 {
                        publish(port, "lsskd/it/model/vision/cmd", "adapt");
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        if round % 3 == 0 {
            // Every third kill lands right after a promotion (the card is published once
            // the new version is live), so versions keep advancing however slow the
            // machine is; the others land at random moments.
            let before = promoted_seen;
            let card = broker.wait_retained(
                "lsskd/it/model/vision/info",
                Duration::from_secs(180),
                |p| {
                    json(p)["version"]
                        .as_u64()
                        .is_some_and(|v| v as u32 > before)
                },
            );
            assert!(
                card.is_some(),
                "round {round}: no promotion; log:\n{}",
                daemon.log()
            );
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..12000)));
        }
        daemon.kill9();
        stop.store(true, Ordering::Relaxed);
        let _ = sender.join();
        std::thread::sleep(Duration::from_millis(300));

        // Every acked sample is committed: metadata and data, both readable.
        let store =
            lsskd_edge::samples::SampleStore::open(&state, "vision", 10_000).expect("store");
        let stored: BTreeSet<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect();
        for id in acked.lock().expect("lock").iter() {
            assert!(stored.contains(id), "round {round}: acked sample {id} lost");
        }
    }
    let _ = acks_sub.kill();
    let _ = acks_sub.wait();
    assert!(
        acked.lock().expect("lock").len() >= 10,
        "too few samples were acked to mean anything"
    );
    // The kills did not stop learning from making progress over the rounds.
    let mut daemon = Daemon::start_in(&state, &config, &[]);
    let p = broker.sub("lsskd/it/desk/prediction", 1, Duration::from_secs(30));
    assert_eq!(
        p.len(),
        1,
        "final restart not serving; log:\n{}",
        daemon.log()
    );
    let training = broker.sub("lsskd/it/training/state", 1, Duration::from_secs(2));
    let log = daemon.log();
    daemon.kill9();
    assert!(
        promoted_seen >= 1,
        "no version was ever promoted between kills; training state {training:?}; last log:\n{log}"
    );
}
