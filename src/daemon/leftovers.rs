//! Temporaries a killed daemon left in its state folder, removed at start before any part
//! runs. The version store writes a version into `models/<model>/.tmp-vNNNN/` and the live
//! pointer into `models/<model>/current.tmp` before renaming them into place (the sample
//! store's `*.tmp` files are removed when it opens); a SIGKILL between the write and the
//! rename leaves them behind, where they would otherwise stay until the next version is
//! staged or promoted.

use std::path::{Path, PathBuf};

/// Whether a name in a model's version folder is an unfinished write.
fn is_temporary(name: &str) -> bool {
    name.starts_with(".tmp-") || name.ends_with(".tmp")
}

/// Remove the version stores' temporaries under `state_dir` (`models/*/`); returns what
/// was removed. Nothing else writes there yet, so nothing in progress is touched.
pub fn remove_temporaries(state_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let models = state_dir.join("models");
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(&models) else {
        return Ok(removed);
    };
    for model in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        for entry in std::fs::read_dir(model.path())?.filter_map(Result::ok) {
            if !is_temporary(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_half_staged_version_and_pointer_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("models").join("vision");
        std::fs::create_dir_all(root.join(".tmp-v0003/replay")).expect("mkdir");
        std::fs::write(root.join(".tmp-v0003/model.onnx"), b"half").expect("write");
        std::fs::create_dir_all(root.join("v0002")).expect("mkdir");
        std::fs::write(root.join("v0002/manifest.json"), b"{}").expect("write");
        std::fs::write(root.join("current"), b"2\n").expect("write");
        std::fs::write(root.join("current.tmp"), b"3\n").expect("write");

        let removed = remove_temporaries(dir.path()).expect("cleanup");

        assert_eq!(
            removed,
            vec![root.join(".tmp-v0003"), root.join("current.tmp")]
        );
        assert!(!root.join(".tmp-v0003").exists());
        assert!(!root.join("current.tmp").exists());
        assert_eq!(std::fs::read(root.join("current")).expect("read"), b"2\n");
        assert!(root.join("v0002/manifest.json").exists());
    }

    #[test]
    fn a_state_folder_without_models_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(remove_temporaries(dir.path()).expect("cleanup").is_empty());
    }
}
