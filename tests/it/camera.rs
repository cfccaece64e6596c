//! The camera path without a camera: recorded MJPEG and YUYV frames (made from the demo
//! images the way a UVC camera delivers them) go through nokhwa's own decoder, the shared
//! preprocessing and the shipped vision model through tract.

use image::{DynamicImage, RgbImage, imageops::FilterType};
use lsskd_edge::capture::camera::decode_frame;
use lsskd_edge::inference::{Classifier, scores::argmax};
use lsskd_edge::registry::ModelPackage;
use lsskd_edge::settings::CameraFormat;

use crate::common::repo;

const W: u32 = 320;
const H: u32 = 240;

/// A camera-sized RGB frame showing the sample.
fn frame(path: &std::path::Path) -> RgbImage {
    let img = image::open(path).expect("demo image");
    DynamicImage::ImageRgb8(img.to_rgb8())
        .resize_exact(W, H, FilterType::Triangle)
        .to_rgb8()
}

fn mjpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .expect("jpeg");
    out
}

/// YUYV 4:2:2 (BT.601, studio range), as V4L2 delivers it.
fn yuyv(img: &RgbImage) -> Vec<u8> {
    let yuv = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(f32::from);
        let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
        let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
        let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
        (y, u, v)
    };
    let mut out = Vec::with_capacity((W * H * 2) as usize);
    for row in 0..H {
        for col in (0..W).step_by(2) {
            let (y0, u0, v0) = yuv(img.get_pixel(col, row));
            let (y1, u1, v1) = yuv(img.get_pixel(col + 1, row));
            let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
            out.extend([c(y0), c((u0 + u1) / 2.0), c(y1), c((v0 + v1) / 2.0)]);
        }
    }
    out
}

#[test]
fn recorded_mjpeg_and_yuyv_frames_are_classified_through_nokhwas_decoder() {
    let _cpu = crate::common::cpu_shared();
    let pkg = ModelPackage::load(&repo().join("models/vision")).expect("models/vision");
    let model = Classifier::load(&pkg.onnx_path()).expect("onnx");
    let classes = &pkg.manifest.classes;
    let dir = repo().join("demo/samples/vision");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("demo/samples/vision")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    for path in files {
        let want = path.file_stem().and_then(|s| s.to_str()).expect("stem");
        let rgb = frame(&path);
        for (format, bytes) in [
            (CameraFormat::Mjpeg, mjpeg(&rgb)),
            (CameraFormat::Yuyv, yuyv(&rgb)),
        ] {
            let raw = decode_frame(format, W, H, &bytes).expect("decode");
            let x = pkg.manifest.preprocess.tensor(&raw).expect("features");
            let out = model.classify(&x).expect("tract");
            let got = &classes[argmax(&out.logits)];
            assert_eq!(got, want, "{format:?} frame of {}", path.display());
        }
    }
}

#[test]
fn a_frame_that_is_not_mjpeg_is_an_error_not_a_panic() {
    let _cpu = crate::common::cpu_shared();
    let e = decode_frame(
        CameraFormat::Mjpeg,
        W,
        H,
        b"\xff\xd8 this is not a JPEG stream",
    );
    assert!(e.is_err());
    let e = decode_frame(CameraFormat::Mjpeg, W, H, &[]);
    assert!(e.is_err());
}
