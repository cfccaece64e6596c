//! Camera scenes (issue 30): a pipeline's region of interest, applied by the real daemon
//! to replayed frames and to frames sent as samples, and checked by `validate`.

use std::time::Duration;

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage};

use crate::common::{cli, stderr};
use crate::harness::{Daemon, Mosquitto, json, model, mqtt_section, publish, samples};

/// A 320x240 frame that is a bag as a whole, with an ankle boot in the 80x80 square at
/// (200, 120).
fn bag_frame_with_a_boot() -> DynamicImage {
    let open = |name: &str| {
        image::open(format!("{}/{name}.png", samples("vision")))
            .expect("demo sample")
            .to_luma8()
    };
    let mut frame: GrayImage = imageops::resize(&open("bag"), 320, 240, FilterType::Triangle);
    let boot = imageops::resize(&open("ankle_boot"), 80, 80, FilterType::Triangle);
    imageops::replace(&mut frame, &boot, 200, 120);
    DynamicImage::ImageLuma8(frame)
}

fn pipeline(name: &str, path: &str, region: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\nmodel = \"{}\"\n{region}\n[pipeline.source]\nkind = \"replay_images\"\npath = \"{path}\"\ninterval_ms = 100\n\n",
        model("vision")
    )
}

#[test]
fn a_frame_classifies_by_its_region_and_a_sent_frame_is_stored_cut_to_it() {
    let _cpu = crate::common::cpu_shared();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    let frame = bag_frame_with_a_boot();
    frame.save(frames.join("0.png")).expect("save");
    let path = frames.display().to_string();
    let region = "region = { x = 200, y = 120, width = 80, height = 80 }";
    let config = format!(
        "device_id = \"it\"\n{}{}{}[publish]\ndebounce_count = 1\n",
        pipeline("whole", &path, ""),
        pipeline("boot", &path, region),
        mqtt_section(broker.port)
    );
    let daemon = Daemon::start(&config, &[]);
    let label = |p: &str| {
        let got = broker.sub(
            &format!("lsskd/it/{p}/prediction"),
            1,
            Duration::from_secs(30),
        );
        let (_, body) = got
            .first()
            .unwrap_or_else(|| panic!("no prediction from {p}:\n{}", daemon.log()));
        json(body)["label"].as_str().expect("label").to_string()
    };
    assert_eq!(label("boot"), "ankle_boot", "the region holds a boot");
    assert_eq!(label("whole"), "bag", "the whole frame is a bag");

    // A whole frame sent as a sample of the region's model is stored cut to the region
    // (both pipelines share the model here; the region is the one configured).
    let mut png = std::io::Cursor::new(Vec::new());
    frame
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png.into_inner());
    let body = format!(r#"{{"id":"s1","label":"boot_here","data":"{data}"}}"#);
    let acks = broker.sub_background("lsskd/it/samples/vision/ack", 1, Duration::from_secs(20));
    assert!(publish(broker.port, "lsskd/it/samples/vision/add", &body));
    let acks = crate::harness::collect(acks);
    assert!(
        acks.iter().any(|(_, a)| json(a)["accepted"] == true),
        "sample not accepted: {acks:?}\n{}",
        daemon.log()
    );
    let stored: Vec<_> = crate::harness::walk_files(&daemon.state_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(stored.len(), 1, "one stored sample: {stored:?}");
    assert_eq!(image::image_dimensions(&stored[0]).expect("png"), (80, 80));
}

#[test]
fn validate_names_a_region_outside_the_cameras_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("config.toml");
    std::fs::write(
        &f,
        format!(
            "[[pipeline]]\nname = \"porch\"\nmodel = \"{}\"\nregion = {{ x = 200, y = 100, width = 160, height = 160 }}\n[pipeline.source]\nkind = \"camera\"\ndevice = \"/dev/video0\"\nwidth = 320\nheight = 240\n",
            model("vision")
        ),
    )
    .expect("write");
    let o = cli(&["validate", "--config", f.to_str().expect("utf-8")]);
    assert!(
        !o.status.success(),
        "validate accepted a region outside the frame"
    );
    let err = stderr(&o);
    assert!(
        err.contains("pipeline[0].region") && err.contains("320x240"),
        "{err}"
    );
}

/// `scripts/scene-regions.py`'s region of val view `va03_meadow` (from its teaching frames).
const MEADOW_REGION: &str = "region = { x = 58, y = 87, width = 153, height = 153 }";

fn camera_config(frames: &str, interval_ms: u64, looped: bool, port: u16) -> String {
    format!(
        "device_id = \"it\"\n[[pipeline]]\nname = \"cam\"\nmodel = \"{}\"\n{MEADOW_REGION}\n[pipeline.source]\nkind = \"replay_images\"\npath = \"{frames}\"\ninterval_ms = {interval_ms}\nloop = {looped}\n\n{}[publish]\ndebounce_count = 2\n[adapt]\nauto_after = 0\n",
        model("scenes"),
        mqtt_section(port)
    )
}

#[test]
fn a_view_taught_its_states_by_mqtt_samples_follows_its_timeline() {
    let _cpu = crate::common::cpu_alone();
    let broker = Mosquitto::start();
    let view = crate::common::data_root().join("scene-states/val/va03_meadow");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");

    // 1. Teach: five frames of each state, the camera meanwhile on the empty view.
    let empty = view.join("empty").display().to_string();
    let mut daemon = Daemon::start_in(&state, &camera_config(&empty, 500, true, broker.port), &[]);
    let lessons: Vec<(&str, Vec<std::path::PathBuf>)> =
        ["empty", "animal", "vehicle", "parcel", "lights_off"]
            .into_iter()
            .map(|s| {
                (
                    s,
                    (0..5)
                        .map(|n| view.join(s).join(format!("{n}.jpg")))
                        .collect(),
                )
            })
            .collect();
    crate::adaptation::teach_and_promote(&broker, &daemon, "scenes", &lessons);
    daemon.terminate(Duration::from_secs(20));
    // The new version holds the view's reference: the mean of the taught empty frames.
    let mut versions: Vec<_> = std::fs::read_dir(state.join("models/scenes"))
        .expect("versions")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('v'))
        })
        .collect();
    versions.sort();
    let version = versions.last().expect("a promoted version");
    let reference = image::open(version.join("reference.png")).expect("reference.png");
    assert_eq!((reference.width(), reference.height()), (153, 153));

    // 2. The timeline once, in time order, after a lead-in of its first (empty) frame.
    let truth: Vec<String> = std::fs::read_to_string(view.join("timeline.csv"))
        .expect("timeline.csv")
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).expect("state").to_string())
        .collect();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    const LEAD: usize = 10;
    for t in 0..LEAD + truth.len() {
        let src = view
            .join("timeline")
            .join(format!("{}.jpg", t.saturating_sub(LEAD)));
        std::os::unix::fs::symlink(src, frames.join(format!("{t:04}.jpg"))).expect("link");
    }
    let path = frames.display().to_string();
    let sub = broker.sub_background("lsskd/it/cam/#", 100_000, Duration::from_secs(30));
    let daemon = Daemon::start_in(&state, &camera_config(&path, 100, false, broker.port), &[]);
    let messages = crate::harness::collect(sub);
    let shown = crate::harness::shown_states(&messages, truth.len());

    // Scored outside 2 frames (2 s of the 1 frame/s timeline) after each change.
    let changes: Vec<usize> = (0..truth.len())
        .filter(|&t| t == 0 || truth[t] != truth[t - 1])
        .collect();
    let scored: Vec<usize> = (0..truth.len())
        .filter(|t| !changes.iter().any(|c| (*c..c + 2).contains(t)))
        .collect();
    let right = scored.iter().filter(|&&t| shown[t] == truth[t]).count();
    let accuracy = right as f64 / scored.len() as f64;
    let in_time = changes
        .iter()
        .filter(|&&c| (c..(c + 2).min(truth.len())).any(|t| shown[t] == truth[c]))
        .count();
    eprintln!(
        "timeline: state right on {right} of {} frames ({accuracy:.3}); {in_time} of {} changes within 2 s",
        scored.len(),
        changes.len()
    );
    // Taught, `models/scenes` was right on 0.931 of them here (8 of 9 changes in time; the
    // model before the change channel: 0.68 and 6; BENCHMARKS.md "Camera scenes" has every
    // val view; the issue's target is 0.95). The floor leaves room for a fine-tune that gets
    // fewer steps in its 10 s on a loaded machine.
    assert!(
        accuracy >= 0.80 && in_time >= 6,
        "shown vs truth:\n{:?}\n{:?}\n{}",
        shown,
        truth,
        daemon.log()
    );
}

/// `bench --frames --reference`: camera frames timed through the cut a taught view's
/// worker makes (region, then the change from the view's empty frames); a reference folder
/// without images is named in the error.
#[test]
fn bench_times_frames_through_the_region_and_the_change_cut() {
    let view = crate::common::data_root().join("scene-states/val/va03_meadow");
    let (timeline, empty) = (view.join("timeline"), view.join("empty"));
    let args = |reference: &str| {
        cli(&[
            "bench",
            "--model",
            &model("scenes"),
            "--frames",
            timeline.to_str().expect("utf-8"),
            "--region",
            "58,87,153,153",
            "--reference",
            reference,
            "--iterations",
            "5",
            "--warmup",
            "1",
            "--json",
        ])
    };
    let o = args(empty.to_str().expect("utf-8"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(crate::common::stdout(&o).trim());
    assert_eq!(r["iterations"], 5, "{r}");
    assert!(
        r["features"]["mean_ms"].as_f64().expect("features") > 0.0,
        "{r}"
    );
    let nothing = tempfile::tempdir().expect("tempdir");
    let o = args(nothing.path().to_str().expect("utf-8"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--reference"), "{}", stderr(&o));
}
