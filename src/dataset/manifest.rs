//! A split's `manifest-<split>.csv`: one row per file (`path` relative to the data set,
//! then attributes such as a clip's speaker accent or a drum hit's kit), for benchmarks
//! that split by those attributes.

use std::collections::HashMap;
use std::path::Path;

use super::{Dataset, DatasetError};

/// The value of `column` for every item of `ds` (loaded from `dir`, split `split`), from
/// `dir/manifest-<split>.csv`, in item order. A missing file or column, a row without a
/// `path`, or an item the manifest does not list is an error naming it.
pub fn column(
    dir: &Path,
    split: &str,
    ds: &Dataset,
    column: &str,
) -> Result<Vec<String>, DatasetError> {
    let path = dir.join(format!("manifest-{split}.csv"));
    let bad = |reason: String| DatasetError::Layout {
        path: path.clone(),
        reason,
    };
    let mut reader = csv::Reader::from_path(&path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let find = |name: &str| headers.iter().position(|h| h == name);
    let at_path = find("path").ok_or_else(|| bad("no `path` column".into()))?;
    let at_value = find(column).ok_or_else(|| {
        bad(format!(
            "no `{column}` column (it has: {})",
            headers.iter().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let mut by_path = HashMap::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.map_err(|e| bad(e.to_string()))?;
        let (Some(p), Some(v)) = (row.get(at_path), row.get(at_value)) else {
            return Err(bad(format!("row {} is short", n + 2)));
        };
        by_path.insert(p.to_string(), v.to_string());
    }
    ds.items
        .iter()
        .map(|item| {
            let rel = Path::new(&item.source)
                .strip_prefix(dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| item.source.clone());
            by_path
                .get(&rel)
                .cloned()
                .ok_or_else(|| bad(format!("does not list {rel}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{LoadOptions, load};

    fn wav(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for _ in 0..1600 {
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn a_column_is_read_per_item_and_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        wav(&dir.path().join("train/kick/0.wav"));
        wav(&dir.path().join("train/snare/0.wav"));
        let ds = load(dir.path(), "train", &LoadOptions::default()).unwrap();
        std::fs::write(
            dir.path().join("manifest-train.csv"),
            "path,class,kit\ntrain/kick/0.wav,kick,\"Gimme A Hand, 1.0\"\ntrain/snare/0.wav,snare,BJA\n",
        )
        .unwrap();
        let kits = column(dir.path(), "train", &ds, "kit").unwrap();
        let kick = ds.classes.iter().position(|c| c == "kick").unwrap();
        for (item, kit) in ds.items.iter().zip(&kits) {
            let want = if item.label == kick {
                "Gimme A Hand, 1.0"
            } else {
                "BJA"
            };
            assert_eq!(kit, want);
        }
        let err = column(dir.path(), "train", &ds, "accent")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no `accent` column") && err.contains("kit"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("manifest-train.csv"),
            "path,kit\ntrain/kick/0.wav,A\n",
        )
        .unwrap();
        let err = column(dir.path(), "train", &ds, "kit")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not list train/snare/0.wav"), "{err}");
        let err = column(dir.path(), "val", &ds, "kit")
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest-val.csv"), "{err}");
    }
}
