//! Sound events (issue 29): `models/sounds` in the real daemon, a microphone replaying a
//! stretch of a real timeline, and a new sound taught by MQTT samples.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Daemon, Mosquitto, model, mqtt_section};

/// `models/sounds` on a replay microphone playing `path` (1 s windows every 250 ms). The
/// gate's limits on the shipped classes are open: taught any new sound, today's model loses
/// 0.12-0.15 of its core classes (0.61) and the gate refuses every teaching (BENCHMARKS.md
/// "Sound events: the shipped model"); this test is of the daemon's audio path with real
/// recordings, sample to served model to stable state.
fn microphone_config(path: &str, looped: bool, port: u16) -> String {
    format!(
        "device_id = \"it\"\n[[pipeline]]\nname = \"mic\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"replay_audio\"\npath = \"{path}\"\nwindow_ms = 1000\nhop_ms = 250\nloop = {looped}\n\n{}[publish]\ndebounce_count = 2\n[adapt]\nauto_after = 0\nmax_old_drop = 1.0\nmax_class_drop = 1.0\nrename_typicality = 1.0\n",
        model("sounds"),
        mqtt_section(port)
    )
}

/// Seconds `from..to` of a 16 kHz mono WAV, written to `out`.
fn cut_wav(src: &Path, from_s: f64, to_s: f64, out: &Path) {
    let mut r = hound::WavReader::open(src).expect("timeline wav");
    let spec = r.spec();
    let rate = f64::from(spec.sample_rate);
    let samples: Vec<i16> = r
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .skip((from_s * rate) as usize)
        .take(((to_s - from_s) * rate) as usize)
        .collect();
    let mut w = hound::WavWriter::create(out, spec).expect("create wav");
    for s in samples {
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize");
}

#[test]
fn a_sound_taught_by_mqtt_samples_is_recognised_in_a_timeline() {
    let _cpu = crate::common::cpu_alone();
    let broker = Mosquitto::start();
    let data = crate::common::data_root().join("sound-events");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");

    // 1. Teach `keyboard_typing` (a novel class) with five train clips of one package, the
    //    microphone meanwhile on the train beds.
    let beds = data.join("beds").display().to_string();
    let mut daemon = Daemon::start_in(&state, &microphone_config(&beds, true, broker.port), &[]);
    let files: Vec<PathBuf> = (0..5)
        .map(|n| data.join(format!("train/keyboard_typing/{n}.wav")))
        .collect();
    crate::adaptation::teach_and_promote(&broker, &daemon, "sounds", &[("keyboard_typing", files)]);
    daemon.terminate(Duration::from_secs(20));

    // 2. Seconds 50-56 of val timeline 0, played once: a val bed with a keyboard burst of
    //    other keys at 53.04-54.04 s (its CSV: 15 dB over the bed), nothing else.
    let play = dir.path().join("play");
    std::fs::create_dir(&play).expect("mkdir");
    cut_wav(
        &data.join("timelines/val_0.wav"),
        50.0,
        56.0,
        &play.join("stretch.wav"),
    );
    let sub = broker.sub_background("lsskd/it/mic/#", 10_000, Duration::from_secs(25));
    let daemon = Daemon::start_in(
        &state,
        &microphone_config(&play.display().to_string(), false, broker.port),
        &[],
    );
    let messages = crate::harness::collect(sub);
    let predictions = messages
        .iter()
        .filter(|(t, _)| t.ends_with("/prediction"))
        .count();
    // 6 s of audio, one window every 250 ms once the first second is in: 21.
    assert_eq!(predictions, 21, "{messages:?}\n{}", daemon.log());
    // The stable state after each window, at the window's end in the stretch's seconds.
    let shown: Vec<(f64, String)> = crate::harness::shown_states(&messages, predictions)
        .into_iter()
        .enumerate()
        .map(|(j, label)| (1.0 + 0.25 * j as f64, label))
        .collect();
    eprintln!("stable state after each window: {shown:?}");
    // Caught as sound-timelines.py scores it: the taught label, at the end of a window
    // within the burst's second (3.04-4.04 s into the stretch) ±0.5 s.
    assert!(
        shown
            .iter()
            .any(|(t, l)| (2.54..=4.54).contains(t) && l == "keyboard_typing"),
        "the taught sound was not the state during the burst: {shown:?}\n{}",
        daemon.log()
    );
}
