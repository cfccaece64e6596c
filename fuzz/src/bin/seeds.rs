//! Writes the seed corpus under `fuzz/corpus/` (committed; rerun after a change of the
//! fixture or the shipped manifests): valid files of several sizes for every target, the
//! decompression bombs (`bombs/`, also read by `tests/it/ingest_fuzz.rs`) and the files over
//! AFL++'s 1 MiB input limit (`large/`, replayed once each by `scripts/fuzz.sh`).
//! Deterministic: the same bytes on every run.
//!
//! `seeds [CORPUS_DIR]` (default `fuzz/corpus`, from the repository root).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn main() {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut noise = Noise(0x2545_F491_4F6C_DD1D);

    // Images.
    let gray28 = encode(
        &DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([((x * 9 + y * 3) % 256) as u8])
        })),
        ImageFormat::Png,
    );
    let rgb64 = noise.rgb(64, 64);
    let png64 = encode(&rgb64, ImageFormat::Png);
    let jpg64 = encode(&rgb64, ImageFormat::Jpeg);
    let jpg28 = encode(
        &DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, _| {
            image::Luma([(x * 9) as u8])
        })),
        ImageFormat::Jpeg,
    );
    let rgba16 = encode(
        &DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(16, 12, |x, y| {
            image::Rgba([(x * 4000) as u16, (y * 5000) as u16, 7, 65535])
        })),
        ImageFormat::Png,
    );
    let png256 = encode(&noise.rgb(256, 256), ImageFormat::Png);
    let jpg512 = encode(&noise.rgb(512, 512), ImageFormat::Jpeg);
    let png_1_9 = encode(&noise.rgb(812, 818), ImageFormat::Png);
    let png_for_request = encode(&noise.rgb(700, 700), ImageFormat::Png);

    // Audio.
    let wav16 = wav(16_000, 1, 16, 16_000, &mut noise);
    let wav8 = wav(8_000, 2, 8, 4_000, &mut noise);
    let wav24 = wav(48_000, 1, 24, 12_000, &mut noise);
    let wav_f = wav_float(44_100, 11_025, &mut noise);
    let wav_6ch = wav(16_000, 6, 16, 2_000, &mut noise);
    let wav_large = wav(44_100, 2, 16, 256_000, &mut noise);
    let wav_short = wav(16_000, 1, 16, 800, &mut noise);

    let request = |data: &[u8]| {
        serde_json::json!({
            "id": "seed-1",
            "label": "parcel",
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        })
        .to_string()
        .into_bytes()
    };

    // Bombs: small files whose headers claim far more than they hold.
    let bombs: Vec<(&str, Vec<u8>)> = vec![
        (
            "png-claims-4096x4096.png",
            png_claiming(&gray28, 4096, 4096),
        ),
        (
            "png-rgba16-claims-4096x4096.png",
            png_claiming(&rgba16, 4096, 4096),
        ),
        (
            "png-claims-100000x100000.png",
            png_claiming(&gray28, 100_000, 100_000),
        ),
        (
            "jpeg-claims-65000x65000.jpg",
            jpeg_claiming(&jpg28, 65_000, 65_000),
        ),
        (
            "jpeg-claims-4096x4096.jpg",
            jpeg_claiming(&jpg28, 4096, 4096),
        ),
        (
            "wav-claims-37-hours.wav",
            wav_claiming(&wav_short, 0xFFFF_FFF0),
        ),
        ("wav-rate-4-mhz.wav", wav_rate(&wav_short, 4_000_000)),
        ("wav-rate-1-hz.wav", wav_rate(&wav_short, 1)),
    ];

    write(&root, "bombs", &bombs);
    let bomb_request = request(&bombs[0].1);
    write(
        &root,
        "sample",
        &[
            ("req-png-28.json", request(&gray28)),
            ("req-jpeg-64.json", request(&jpg64)),
            ("req-wav-1s.json", request(&wav16)),
            ("req-wav-8bit-stereo.json", request(&wav8)),
            (
                "req-capture.json",
                br#"{"id":"seed-2","label":"parcel","capture_id":17}"#.to_vec(),
            ),
            ("req-png-bomb.json", bomb_request),
            ("png-28-gray.png", gray28.clone()),
            ("png-64-rgb.png", png64.clone()),
            ("jpeg-64-rgb.jpg", jpg64.clone()),
            ("wav-1s-16k.wav", wav16.clone()),
        ],
    );
    write(
        &root,
        "image",
        &[
            ("png-28-gray.png", gray28.clone()),
            ("png-64-rgb.png", png64),
            ("png-16x12-rgba16.png", rgba16),
            ("png-256-rgb-noise.png", png256),
            ("jpeg-28-gray.jpg", jpg28),
            ("jpeg-64-rgb.jpg", jpg64),
            ("jpeg-512-rgb-noise.jpg", jpg512),
        ],
    );
    write(
        &root,
        "wav",
        &[
            ("wav-1s-16k-mono-16bit.wav", wav16),
            ("wav-0.5s-8k-stereo-8bit.wav", wav8),
            ("wav-0.25s-48k-24bit.wav", wav24),
            ("wav-0.25s-44k-float.wav", wav_f),
            ("wav-6ch-16k.wav", wav_6ch),
        ],
    );
    let mut configs = Vec::new();
    for entry in std::fs::read_dir("config").expect("config/ (run from the repository root)") {
        let path = entry.expect("config entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            configs.push((leak(name), std::fs::read(&path).expect("config file")));
        }
    }
    configs.push((
        "replay-pipeline.toml",
        b"device_id = \"fuzz\"\n[[pipeline]]\nname = \"door\"\nmodel = \"vision\"\n\
          [pipeline.source]\nkind = \"replay_images\"\npath = \"/nonexistent\"\n"
            .to_vec(),
    ));
    write(&root, "config", &configs);
    let fixture =
        serde_json::to_vec_pretty(&lsskd_edge_fuzz::fixture_manifest()).expect("manifest json");
    write(
        &root,
        "manifest",
        &[
            ("fixture-loads.json", fixture),
            (
                "vision.json",
                std::fs::read("models/vision/manifest.json").expect("vision"),
            ),
            (
                "audio.json",
                std::fs::read("models/audio/manifest.json").expect("audio"),
            ),
        ],
    );
    check_fixture(&root);
    let model = lsskd_edge_fuzz::fixture_files().remove(0).1;
    lsskd_edge::inference::Classifier::from_bytes(&model).expect("the fixture model loads");
    for (name, bomb) in &bombs {
        let why = lsskd_edge::features::decode(bomb)
            .expect_err(name)
            .to_string();
        assert!(
            ["claims", "larger than", "sample rate"]
                .iter()
                .any(|w| why.contains(w)),
            "bomb {name} refused for another reason: {why}"
        );
    }
    write(&root, "onnx", &[("fixture-model.onnx", model)]);
    write(
        &root,
        "large",
        &[
            ("png-1.9MiB.png", png_1_9),
            ("req-png-1.9MiB.json", request(&png_for_request)),
            ("wav-1MiB-44k-stereo.wav", wav_large),
        ],
    );
}

/// The fixture manifest loads as a package (so the `manifest` target reaches the graph
/// checks from its first seed).
fn check_fixture(root: &Path) {
    let dir = root.join("../target-fixture-package");
    std::fs::create_dir_all(&dir).expect("fixture folder");
    for (name, bytes) in lsskd_edge_fuzz::fixture_files() {
        std::fs::write(dir.join(name), bytes).expect("fixture file");
    }
    std::fs::copy(
        root.join("manifest/fixture-loads.json"),
        dir.join("manifest.json"),
    )
    .expect("fixture manifest");
    let loaded = lsskd_edge::registry::ModelPackage::load(&dir);
    std::fs::remove_dir_all(&dir).expect("remove the fixture folder");
    loaded.expect("the fixture package loads");
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn write(root: &Path, dir: &str, files: &[(&str, Vec<u8>)]) {
    let dir = root.join(dir);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("seed file");
        println!("{:>9} {}/{name}", bytes.len(), dir.display());
    }
}

/// xorshift64: deterministic noise, so the seeds are the same bytes on every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn rgb(&mut self, w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| {
            let v = self.next();
            Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        }))
    }
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format)
        .expect("encode");
    out
}

fn wav(rate: u32, channels: u16, bits: u16, frames: usize, noise: &mut Noise) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("wav writer");
    let max = (1i64 << (bits - 1)) - 1;
    for i in 0..frames * usize::from(channels) {
        let tone = ((i as f64 * 0.05).sin() * 0.5 * max as f64) as i64;
        let hiss = (noise.next() % 64) as i64 - 32;
        w.write_sample((tone + hiss).clamp(-max, max) as i32)
            .expect("sample");
    }
    w.finalize().expect("finalize");
    out.into_inner()
}

fn wav_float(rate: u32, frames: usize, noise: &mut Noise) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("wav writer");
    for i in 0..frames {
        let hiss = (noise.next() % 1000) as f32 / 1e5;
        w.write_sample((i as f32 * 0.03).sin() * 0.4 + hiss)
            .expect("sample");
    }
    w.finalize().expect("finalize");
    out.into_inner()
}

/// The `data` chunk's offset in a WAV written by hound.
fn data_chunk(wav: &[u8]) -> usize {
    wav.windows(4)
        .position(|w| w == b"data")
        .expect("data chunk")
}

fn wav_claiming(wav: &[u8], data_bytes: u32) -> Vec<u8> {
    let mut out = wav.to_vec();
    let at = data_chunk(&out);
    out[at + 4..at + 8].copy_from_slice(&data_bytes.to_le_bytes());
    out[4..8].copy_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    out
}

fn wav_rate(wav: &[u8], rate: u32) -> Vec<u8> {
    let mut out = wav.to_vec();
    // `fmt ` chunk: tag, size, format, channels, then the rate.
    let fmt = out
        .windows(4)
        .position(|w| w == b"fmt ")
        .expect("fmt chunk");
    out[fmt + 12..fmt + 16].copy_from_slice(&rate.to_le_bytes());
    // The byte rate after it: rate × block align (hound checks that the two agree).
    let align = u32::from(u16::from_le_bytes([out[fmt + 20], out[fmt + 21]]));
    out[fmt + 16..fmt + 20].copy_from_slice(&(rate * align).to_le_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid PNG whose header then claims `width`×`height` (its pixel data unchanged).
fn png_claiming(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = png.to_vec();
    out[16..20].copy_from_slice(&width.to_be_bytes());
    out[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A valid baseline JPEG whose frame header then claims `width`×`height`.
fn jpeg_claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline frame header");
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}
