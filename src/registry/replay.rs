//! Exemplars of a package, one folder per class: the replay set (`replay/<class>/<n>.png|wav`,
//! a small bounded set per class trained on against forgetting) and the gate set
//! (`gate/<class>/<n>.png|wav`, validation exemplars the promotion gate judges the shipped
//! classes on, never trained on).

use std::io::Cursor;
use std::path::Path;

use crate::features::{Clip, Raw, decode};

/// Encode a raw input for storage: PNG for images, 16-bit PCM WAV for audio.
pub fn encode(raw: &Raw) -> Result<(Vec<u8>, &'static str), String> {
    match raw {
        Raw::Image(img) => {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| format!("PNG encoding failed: {e}"))?;
            Ok((out.into_inner(), "png"))
        }
        Raw::Audio(clip) => Ok((encode_wav(clip)?, "wav")),
    }
}

/// Mono 16-bit PCM WAV.
pub fn encode_wav(clip: &Clip) -> Result<Vec<u8>, String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: clip.sample_rate_hz,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut out, spec).map_err(|e| e.to_string())?;
        for &s in &clip.samples {
            w.write_sample((s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16)
                .map_err(|e| e.to_string())?;
        }
        w.finalize().map_err(|e| e.to_string())?;
    }
    Ok(out.into_inner())
}

/// Pick up to `per_class` exemplars of each class (first ones, deterministic) and return
/// `(relative path, bytes)` entries under `replay/`.
pub fn select(
    items: &[(usize, &Raw)],
    classes: &[String],
    per_class: usize,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    select_into(super::package::REPLAY_DIR, items, classes, per_class)
}

/// [`select`] into another folder of the package (`gate/`).
pub fn select_into(
    folder: &str,
    items: &[(usize, &Raw)],
    classes: &[String],
    per_class: usize,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut counts = vec![0usize; classes.len()];
    let mut out = Vec::new();
    for &(label, raw) in items {
        if counts[label] >= per_class {
            continue;
        }
        let (bytes, ext) = encode(raw)?;
        out.push((
            format!("{folder}/{}/{:03}.{ext}", classes[label], counts[label]),
            bytes,
        ));
        counts[label] += 1;
    }
    Ok(out)
}

/// Load all replay exemplars of a package directory: `(class index, raw)`; classes not in
/// `classes` are an error naming the folder.
pub fn load(dir: &Path, classes: &[String]) -> Result<Vec<(usize, Raw)>, String> {
    load_from(dir, super::package::REPLAY_DIR, classes)
}

/// Load the gate set of a package directory (empty when it has none), like [`load`].
pub fn load_gate(dir: &Path, classes: &[String]) -> Result<Vec<(usize, Raw)>, String> {
    load_from(dir, super::package::GATE_DIR, classes)
}

fn load_from(dir: &Path, folder: &str, classes: &[String]) -> Result<Vec<(usize, Raw)>, String> {
    let mut out = Vec::new();
    let root = dir.join(folder);
    if !root.exists() {
        return Ok(out);
    }
    let mut entries: Vec<_> = std::fs::read_dir(&root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for class_dir in entries {
        let name = class_dir.file_name().to_string_lossy().to_string();
        let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
            format!(
                "{}: {folder} class `{name}` is not a class of the model",
                class_dir.path().display()
            )
        })?;
        let mut files: Vec<_> = std::fs::read_dir(class_dir.path())
            .map_err(|e| format!("{}: {e}", class_dir.path().display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let raw = decode(&bytes).map_err(|e| format!("{}: {e}", f.display()))?;
            out.push((label, raw));
        }
    }
    Ok(out)
}
