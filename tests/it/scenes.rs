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
    let stored: Vec<_> = walk(&daemon.state_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(stored.len(), 1, "one stored sample: {stored:?}");
    assert_eq!(image::image_dimensions(&stored[0]).expect("png"), (80, 80));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
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
