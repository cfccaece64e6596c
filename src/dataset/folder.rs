//! Folder-tree data sets: `dir/split/<class>/*.{png,jpg,jpeg,wav}` (extensions matched
//! case-insensitively, other files ignored, files taken in name order).

use std::fs;
use std::path::{Path, PathBuf};

use super::DatasetError;

/// Extensions (lower case) of the files a class folder contributes.
const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "wav"];

fn io_error(path: &Path, source: std::io::Error) -> DatasetError {
    DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names of the sub-folders of `split_dir` (class folders), sorted; hidden entries
/// (starting with '.') and plain files are ignored.
pub(crate) fn class_folders(split_dir: &Path) -> Result<Vec<String>, DatasetError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(split_dir).map_err(|e| io_error(split_dir, e))? {
        let entry = entry.map_err(|e| io_error(split_dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(DatasetError::Layout {
                path,
                reason: "folder name is not valid UTF-8".to_string(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        // `metadata` follows symbolic links, so linked class folders count.
        if fs::metadata(&path)
            .map_err(|e| io_error(&path, e))?
            .is_dir()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The data files directly inside `class_dir`, sorted by file name. A missing folder
/// has no files.
pub(crate) fn class_files(class_dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    if !class_dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(class_dir).map_err(|e| io_error(class_dir, e))? {
        let entry = entry.map_err(|e| io_error(class_dir, e))?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|w| e.eq_ignore_ascii_case(w)));
        if wanted
            && fs::metadata(&path)
                .map_err(|e| io_error(&path, e))?
                .is_file()
        {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_class_folders_sorted_without_files_or_hidden_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["zeta", "alpha", ".cache"] {
            fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        fs::write(dir.path().join("notes.txt"), "x").expect("write");
        assert_eq!(
            class_folders(dir.path()).expect("list"),
            vec!["alpha", "zeta"]
        );
    }

    #[test]
    fn lists_data_files_case_insensitively_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.WAV", "a.Png", "c.jpeg", "d.JPG", "e.txt", "f.wav.bak"] {
            fs::write(dir.path().join(name), "x").expect("write");
        }
        fs::create_dir(dir.path().join("sub.png")).expect("mkdir");
        let names: Vec<String> = class_files(dir.path())
            .expect("list")
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(names, vec!["a.Png", "b.WAV", "c.jpeg", "d.JPG"]);
    }

    #[test]
    fn missing_class_folder_has_no_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            class_files(&dir.path().join("absent"))
                .expect("list")
                .is_empty()
        );
    }
}
