//! Data sets on disk, loaded into memory as raw inputs for training, evaluation and
//! benchmarks.
//!
//! Owns [`load`] and the [`Dataset`] it returns. Two layouts are read:
//! - IDX (MNIST format): `dir/<split>-images-idx3-ubyte` + `dir/<split>-labels-idx1-ubyte`,
//!   see `idx.rs`;
//! - a folder tree `dir/<split>/<class>/*.{png,jpg,jpeg,wav}`, see `folder.rs`, or one
//!   level deeper, `dir/<split>/<group>/<class>/*` (a group is one camera view of
//!   scene-states: every item records its group).
//!
//! Class names come from `dir/classes.txt` (`index<TAB>name[<TAB>anything]` per line) when
//! present.

mod folder;
mod idx;
pub mod manifest;
pub mod regions;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};

use crate::features::{FeatureError, Raw, decode};

/// A labelled data set held in memory as raw inputs.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names; an item's `label` indexes this list.
    pub classes: Vec<String>,
    /// The items, grouped by class in label order; within a class in file order.
    pub items: Vec<Item>,
    /// Number of files skipped because they could not be read or decoded
    /// (only with [`LoadOptions::skip_bad`]).
    pub skipped_bad: usize,
}

/// One labelled raw input.
#[derive(Debug, Clone)]
pub struct Item {
    /// Index into [`Dataset::classes`].
    pub label: usize,
    /// The decoded input.
    pub raw: Raw,
    /// Where it came from: the file path, or `path#index` for an IDX image.
    pub source: String,
    /// The group folder of a grouped layout (`<split>/<group>/<class>/*`), e.g. a camera
    /// view; `None` in the other layouts.
    pub group: Option<String>,
}

/// Options for [`load`].
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// Keep only these classes, in this order (labels follow it). Every name must exist.
    pub classes: Option<Vec<String>>,
    /// Skip files that cannot be read or decoded (counted in [`Dataset::skipped_bad`])
    /// instead of failing.
    pub skip_bad: bool,
    /// Keep at most the first `k` items of each class (file order; IDX order).
    pub limit_per_class: Option<usize>,
}

/// Errors from [`load`]; each names the file or folder concerned and the cause.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Neither layout exists for the split.
    #[error("split '{split}' not found: tried {}", list_paths(tried))]
    SplitNotFound {
        /// The requested split.
        split: String,
        /// The paths looked for (IDX images, IDX labels, folder).
        tried: Vec<PathBuf>,
    },
    /// An IDX file is malformed (wrong magic, truncated, trailing bytes, ...).
    #[error("bad IDX file {}: {reason}", path.display())]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The IDX image and label files disagree on the number of items.
    #[error(
        "IDX count mismatch: {} holds {image_count} images but {} holds {label_count} labels",
        images.display(),
        labels.display()
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Number of images.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Number of labels.
        label_count: usize,
    },
    /// An IDX label is not a valid class index.
    #[error(
        "{}: item {index} has label {label} but there are only {n_classes} classes",
        path.display()
    )]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// Position of the item in the file.
        index: usize,
        /// The label found.
        label: u8,
        /// Number of classes known.
        n_classes: usize,
    },
    /// `classes.txt` is malformed.
    #[error("bad class list {} line {line}: {reason}", path.display())]
    ClassList {
        /// The class list file.
        path: PathBuf,
        /// 1-based line number (0 for whole-file problems).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Requested classes (in [`LoadOptions::classes`]) are not in the data set.
    #[error(
        "requested classes {} not in the data set at {} (it has: {})",
        quote_list(unknown),
        path.display(),
        quote_list(available)
    )]
    UnknownClasses {
        /// The data set directory.
        path: PathBuf,
        /// The requested names that do not exist.
        unknown: Vec<String>,
        /// The names that do exist.
        available: Vec<String>,
    },
    /// [`LoadOptions::classes`] names a class more than once.
    #[error("class '{class}' requested more than once for {}", path.display())]
    DuplicateClass {
        /// The data set directory.
        path: PathBuf,
        /// The repeated name.
        class: String,
    },
    /// Class folders exist that `classes.txt` does not list.
    #[error("{} does not list the class folders {} found in {}", path.display(), quote_list(folders), split_dir.display())]
    UnlistedFolders {
        /// The class list file.
        path: PathBuf,
        /// The split folder.
        split_dir: PathBuf,
        /// The unlisted folder names.
        folders: Vec<String>,
    },
    /// A data file could not be decoded.
    #[error("cannot decode {}: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: FeatureError,
    },
    /// The folder layout is unusable.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The offending path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Loading produced no items.
    #[error("no items in split '{split}' of {} ({skipped_bad} bad files skipped)", path.display())]
    Empty {
        /// The data set directory.
        path: PathBuf,
        /// The split.
        split: String,
        /// Files skipped as unreadable.
        skipped_bad: usize,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn quote_list(names: &[String]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "'{name}'");
    }
    out
}

/// Read a whole file, naming it on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Dataset {
    /// Number of items per class, indexed by label (length `classes.len()`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for item in &self.items {
            if let Some(c) = counts.get_mut(item.label) {
                *c += 1;
            }
        }
        counts
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The `*.wav` files directly in `dir`, in name order, decoded to mono: background beds
/// for `train --noise-beds`. Fails on an unreadable or undecodable file, and when there is
/// none.
pub fn load_wavs(dir: &Path) -> Result<Vec<(PathBuf, crate::features::Clip)>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()).map_err(io))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(DatasetError::Layout {
            path: dir.to_path_buf(),
            reason: "no .wav files".into(),
        });
    }
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|source| DatasetError::Io {
                path: path.clone(),
                source,
            })?;
            match decode(&bytes) {
                Ok(Raw::Audio(clip)) => Ok((path, clip)),
                Ok(Raw::Image(_)) => Err(DatasetError::Layout {
                    path,
                    reason: "an image, not a WAV file".into(),
                }),
                Err(source) => Err(DatasetError::Decode { path, source }),
            }
        })
        .collect()
}

/// Load split `split` of the data set in `dir`.
///
/// Layouts: `dir/split-images-idx3-ubyte` + `dir/split-labels-idx1-ubyte` (IDX,
/// uncompressed; used when both files exist) or a folder tree
/// `dir/split/<class>/*.{png,jpg,jpeg,wav}` (extensions case-insensitive, other files
/// ignored, files in name order, decoded with [`crate::features::decode`]). IDX images
/// become `Raw::Image(DynamicImage::ImageLuma8(..))`.
///
/// Class order: `opts.classes` when given (items of other classes are dropped), else the
/// order of `dir/classes.txt` when it exists (folders it does not list are an error; listed
/// classes without a folder just have 0 items), else sorted folder names. IDX sets
/// without `classes.txt` get classes named `"0"`..=max label.
///
/// Errors name the file and cause: missing split (listing the paths tried), malformed
/// IDX, label out of range, unknown requested class, undecodable file (unless
/// `opts.skip_bad`), or an empty result.
pub fn load(dir: &Path, split: &str, opts: &LoadOptions) -> Result<Dataset, DatasetError> {
    let images_path = dir.join(format!("{split}-images-idx3-ubyte"));
    let labels_path = dir.join(format!("{split}-labels-idx1-ubyte"));
    let split_dir = dir.join(split);
    let classes_path = dir.join("classes.txt");
    let listed = if classes_path.is_file() {
        Some(read_class_list(&classes_path)?)
    } else {
        None
    };
    let dataset = if images_path.is_file() && labels_path.is_file() {
        load_idx(dir, &images_path, &labels_path, listed, opts)?
    } else if split_dir.is_dir() {
        let listed = listed.map(|names| (classes_path, names));
        load_folder(dir, &split_dir, listed, opts)?
    } else {
        return Err(DatasetError::SplitNotFound {
            split: split.to_string(),
            tried: vec![images_path, labels_path, split_dir],
        });
    };
    if dataset.items.is_empty() {
        return Err(DatasetError::Empty {
            path: dir.to_path_buf(),
            split: split.to_string(),
            skipped_bad: dataset.skipped_bad,
        });
    }
    tracing::debug!(
        dir = %dir.display(),
        split,
        items = dataset.items.len(),
        classes = dataset.classes.len(),
        skipped_bad = dataset.skipped_bad,
        "loaded data set"
    );
    Ok(dataset)
}

/// [`load`] with a model's `classes` as the labels (an item's `label` indexes `classes`),
/// leaving out its `background` class (`Manifest::background`): a data set has no files of
/// it, its windows are drawn from background beds.
pub fn load_for_model(
    dir: &Path,
    split: &str,
    classes: &[String],
    background: Option<&str>,
    opts: &LoadOptions,
) -> Result<Dataset, DatasetError> {
    let recorded: Vec<String> = classes
        .iter()
        .filter(|c| background != Some(c.as_str()))
        .cloned()
        .collect();
    let mut ds = load(
        dir,
        split,
        &LoadOptions {
            classes: Some(recorded),
            ..opts.clone()
        },
    )?;
    let index: Vec<usize> = ds
        .classes
        .iter()
        .map(|c| {
            classes
                .iter()
                .position(|k| k == c)
                .expect("a requested class")
        })
        .collect();
    for it in &mut ds.items {
        it.label = index[it.label];
    }
    ds.items.sort_by_key(|it| it.label);
    ds.classes = classes.to_vec();
    Ok(ds)
}

/// Parse `classes.txt`: `index<TAB>name[<TAB>anything]` per line; blank lines and lines
/// starting with `#` are ignored. Indices must be exactly `0..n` (any order) and names
/// unique. Returns names in index order.
fn read_class_list(path: &Path) -> Result<Vec<String>, DatasetError> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| DatasetError::ClassList {
        path: path.to_path_buf(),
        line: 0,
        reason: "not valid UTF-8".to_string(),
    })?;
    parse_class_list(path, &text)
}

fn parse_class_list(path: &Path, text: &str) -> Result<Vec<String>, DatasetError> {
    let bad = |line: usize, reason: String| DatasetError::ClassList {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut entries: Vec<(usize, String, usize)> = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw_line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let index_field = fields.next().unwrap_or_default().trim();
        let Some(name) = fields.next().map(str::trim) else {
            return Err(bad(
                line_no,
                format!("expected 'index<TAB>name', got '{line}'"),
            ));
        };
        let index: usize = index_field
            .parse()
            .map_err(|_| bad(line_no, format!("index '{index_field}' is not a number")))?;
        if name.is_empty() {
            return Err(bad(line_no, "empty class name".to_string()));
        }
        entries.push((index, name.to_string(), line_no));
    }
    if entries.is_empty() {
        return Err(bad(0, "no classes listed".to_string()));
    }
    entries.sort_by_key(|e| e.0);
    let mut seen = HashSet::new();
    for (position, (index, name, line_no)) in entries.iter().enumerate() {
        if *index != position {
            return Err(bad(
                *line_no,
                format!(
                    "index {index} breaks the sequence 0..{} (indices must be unique and contiguous from 0)",
                    entries.len()
                ),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(bad(*line_no, format!("class '{name}' is listed twice")));
        }
    }
    Ok(entries.into_iter().map(|e| e.1).collect())
}

/// The output classes and, for each class of the set, its new label (or `None` when it
/// is dropped).
struct Selection {
    classes: Vec<String>,
    new_label: Vec<Option<usize>>,
}

fn select_classes(
    dir: &Path,
    available: Vec<String>,
    requested: Option<&[String]>,
) -> Result<Selection, DatasetError> {
    let Some(requested) = requested else {
        let new_label = (0..available.len()).map(Some).collect();
        return Ok(Selection {
            classes: available,
            new_label,
        });
    };
    let position: HashMap<&str, usize> = available
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let unknown: Vec<String> = requested
        .iter()
        .filter(|name| !position.contains_key(name.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(DatasetError::UnknownClasses {
            path: dir.to_path_buf(),
            unknown,
            available,
        });
    }
    let mut new_label = vec![None; available.len()];
    for (label, name) in requested.iter().enumerate() {
        let slot = &mut new_label[position[name.as_str()]];
        if slot.is_some() {
            return Err(DatasetError::DuplicateClass {
                path: dir.to_path_buf(),
                class: name.clone(),
            });
        }
        *slot = Some(label);
    }
    Ok(Selection {
        classes: requested.to_vec(),
        new_label,
    })
}

fn load_idx(
    dir: &Path,
    images_path: &Path,
    labels_path: &Path,
    listed: Option<Vec<String>>,
    opts: &LoadOptions,
) -> Result<Dataset, DatasetError> {
    let images = idx::read_images(images_path)?;
    let labels = idx::read_labels(labels_path)?;
    if images.count != labels.len() {
        return Err(DatasetError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count: images.count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    let available = match listed {
        Some(names) => names,
        None => {
            let max = labels.iter().copied().max().map_or(0, usize::from);
            (0..=max).map(|i| i.to_string()).collect()
        }
    };
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= available.len())
    {
        return Err(DatasetError::LabelOutOfRange {
            path: labels_path.to_path_buf(),
            index,
            label,
            n_classes: available.len(),
        });
    }
    let selection = select_classes(dir, available, opts.classes.as_deref())?;
    let limit = opts.limit_per_class.unwrap_or(usize::MAX);
    let mut per_class: Vec<Vec<Item>> = vec![Vec::new(); selection.classes.len()];
    let source_prefix = images_path.display().to_string();
    for (index, &label) in labels.iter().enumerate() {
        let Some(new_label) = selection.new_label[usize::from(label)] else {
            continue;
        };
        let bucket = &mut per_class[new_label];
        if bucket.len() >= limit {
            continue;
        }
        let pixels = images.pixels(index).ok_or_else(|| DatasetError::Idx {
            path: images_path.to_path_buf(),
            reason: format!("image {index} is out of range"),
        })?;
        let image =
            GrayImage::from_raw(images.cols, images.rows, pixels.to_vec()).ok_or_else(|| {
                DatasetError::Idx {
                    path: images_path.to_path_buf(),
                    reason: format!("image {index} has the wrong number of pixels"),
                }
            })?;
        bucket.push(Item {
            label: new_label,
            raw: Raw::Image(DynamicImage::ImageLuma8(image)),
            source: format!("{source_prefix}#{index}"),
            group: None,
        });
    }
    Ok(Dataset {
        classes: selection.classes,
        items: per_class.into_iter().flatten().collect(),
        skipped_bad: 0,
    })
}

/// The group folders of a grouped layout: `split_dir`'s folders, when `classes.txt` lists
/// none of them but each holds at least one listed class folder. `None`: a flat layout.
fn group_folders(
    split_dir: &Path,
    folders: &[String],
    listed: &[String],
) -> Result<Option<Vec<String>>, DatasetError> {
    if folders.is_empty() || folders.iter().any(|f| listed.contains(f)) {
        return Ok(None);
    }
    for f in folders {
        let inner = folder::class_folders(&split_dir.join(f))?;
        if !inner.iter().any(|c| listed.contains(c)) {
            return Ok(None);
        }
    }
    Ok(Some(folders.to_vec()))
}

fn load_folder(
    dir: &Path,
    split_dir: &Path,
    listed: Option<(PathBuf, Vec<String>)>,
    opts: &LoadOptions,
) -> Result<Dataset, DatasetError> {
    let folders = folder::class_folders(split_dir)?;
    let mut groups = None;
    let available = match listed {
        Some((classes_path, names)) => {
            groups = group_folders(split_dir, &folders, &names)?;
            let known: HashSet<&str> = names.iter().map(String::as_str).collect();
            let unlisted: Vec<String> = folders
                .iter()
                .filter(|f| groups.is_none() && !known.contains(f.as_str()))
                .cloned()
                .collect();
            if !unlisted.is_empty() {
                return Err(DatasetError::UnlistedFolders {
                    path: classes_path,
                    split_dir: split_dir.to_path_buf(),
                    folders: unlisted,
                });
            }
            names
        }
        None => folders,
    };
    let selection = select_classes(dir, available, opts.classes.as_deref())?;
    let limit = opts.limit_per_class.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut skipped_bad = 0;
    // (group, the folder holding the class folders)
    let roots: Vec<(Option<String>, PathBuf)> = match &groups {
        Some(gs) => gs
            .iter()
            .map(|g| (Some(g.clone()), split_dir.join(g)))
            .collect(),
        None => vec![(None, split_dir.to_path_buf())],
    };
    for (label, class) in selection.classes.iter().enumerate() {
        let mut kept = 0;
        for (group, root) in &roots {
            for path in folder::class_files(&root.join(class))? {
                if kept >= limit {
                    break;
                }
                let raw = match read_file(&path).and_then(|bytes| {
                    decode(&bytes).map_err(|source| DatasetError::Decode {
                        path: path.clone(),
                        source,
                    })
                }) {
                    Ok(raw) => raw,
                    Err(err) if opts.skip_bad => {
                        tracing::warn!(path = %path.display(), error = %err, "skipping bad data file");
                        skipped_bad += 1;
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                items.push(Item {
                    label,
                    raw,
                    source: path.display().to_string(),
                    group: group.clone(),
                });
                kept += 1;
            }
        }
    }
    Ok(Dataset {
        classes: selection.classes,
        items,
        skipped_bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;

    use image::{ImageFormat, Luma};

    fn write_idx(dir: &Path, split: &str, images: &[Vec<u8>], labels: &[u8]) {
        let (img, lab) = idx::encode(2, 2, images, labels);
        fs::write(dir.join(format!("{split}-images-idx3-ubyte")), img).expect("write images");
        fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), lab).expect("write labels");
    }

    fn png_bytes(value: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        DynamicImage::ImageLuma8(GrayImage::from_pixel(3, 3, Luma([value])))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("encode png");
        bytes
    }

    fn wav_bytes(n: usize) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).expect("wav writer");
            for i in 0..n {
                w.write_sample(i as i16).expect("sample");
            }
            w.finalize().expect("finalize");
        }
        cursor.into_inner()
    }

    /// `train/<class>/<file>` for each (class, file, bytes).
    fn write_tree(dir: &Path, files: &[(&str, &str, Vec<u8>)]) {
        for (class, name, bytes) in files {
            let class_dir = dir.join("train").join(class);
            fs::create_dir_all(&class_dir).expect("mkdir");
            fs::write(class_dir.join(name), bytes).expect("write");
        }
    }

    fn idx_fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let images: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i * 10; 4]).collect();
        write_idx(dir.path(), "train", &images, &[0, 1, 2, 0, 1, 0]);
        fs::write(
            dir.path().join("classes.txt"),
            "0\tcat\n1\tdog\textra\n2\tbird\n",
        )
        .expect("classes");
        dir
    }

    fn labels_of(ds: &Dataset) -> Vec<usize> {
        ds.items.iter().map(|i| i.label).collect()
    }

    #[test]
    fn loads_idx_with_class_names_and_sources() {
        let dir = idx_fixture();
        let ds = load(dir.path(), "train", &LoadOptions::default()).expect("load");
        assert_eq!(ds.classes, vec!["cat", "dog", "bird"]);
        assert_eq!(ds.len(), 6);
        assert_eq!(ds.class_counts(), vec![3, 2, 1]);
        assert_eq!(labels_of(&ds), vec![0, 0, 0, 1, 1, 2]);
        let first_dog = &ds.items[3];
        assert!(
            first_dog.source.ends_with("train-images-idx3-ubyte#1"),
            "{}",
            first_dog.source
        );
        let Raw::Image(DynamicImage::ImageLuma8(img)) = &first_dog.raw else {
            panic!("IDX item is not a Luma8 image");
        };
        assert_eq!(img.dimensions(), (2, 2));
        assert_eq!(img.as_raw(), &vec![10u8; 4]);
    }

    #[test]
    fn a_split_for_a_model_takes_its_class_order_and_leaves_out_its_background() {
        let dir = idx_fixture();
        let classes: Vec<String> = ["bird", "background", "cat"].map(String::from).into();
        let ds = load_for_model(
            dir.path(),
            "train",
            &classes,
            Some("background"),
            &LoadOptions::default(),
        )
        .expect("load");
        assert_eq!(ds.classes, classes);
        // bird (1 item) is 0, cat (3 items) is 2; dog, not the model's, is left out.
        assert_eq!(labels_of(&ds), vec![0, 2, 2, 2]);
        assert_eq!(ds.class_counts(), vec![1, 0, 3]);
        // Without its background named, the model's class list asks for a class the data
        // set does not have.
        assert!(
            load_for_model(dir.path(), "train", &classes, None, &LoadOptions::default()).is_err()
        );
    }

    #[test]
    fn requested_classes_set_order_and_drop_others() {
        let dir = idx_fixture();
        let opts = LoadOptions {
            classes: Some(vec!["bird".into(), "cat".into()]),
            ..LoadOptions::default()
        };
        let ds = load(dir.path(), "train", &opts).expect("load");
        assert_eq!(ds.classes, vec!["bird", "cat"]);
        assert_eq!(ds.class_counts(), vec![1, 3]);
        assert_eq!(labels_of(&ds), vec![0, 1, 1, 1]);
        assert!(ds.items[0].source.ends_with("#2"));
    }

    #[test]
    fn limit_per_class_keeps_the_first_items() {
        let dir = idx_fixture();
        let opts = LoadOptions {
            limit_per_class: Some(2),
            ..LoadOptions::default()
        };
        let ds = load(dir.path(), "train", &opts).expect("load");
        assert_eq!(ds.class_counts(), vec![2, 2, 1]);
        let sources: Vec<&str> = ds
            .items
            .iter()
            .map(|i| &i.source[i.source.len() - 2..])
            .collect();
        assert_eq!(sources, vec!["#0", "#3", "#1", "#4", "#2"]);
    }

    #[test]
    fn rejects_unknown_requested_class_naming_it() {
        let dir = idx_fixture();
        let opts = LoadOptions {
            classes: Some(vec!["cat".into(), "unicorn".into()]),
            ..LoadOptions::default()
        };
        let err = load(dir.path(), "train", &opts).expect_err("unknown class accepted");
        assert!(matches!(err, DatasetError::UnknownClasses { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("'unicorn'") && !msg.contains("'unicorn', 'cat'"),
            "{msg}"
        );
        let dup = LoadOptions {
            classes: Some(vec!["cat".into(), "cat".into()]),
            ..LoadOptions::default()
        };
        let err = load(dir.path(), "train", &dup).expect_err("duplicate class accepted");
        assert!(matches!(err, DatasetError::DuplicateClass { .. }), "{err}");
    }

    #[test]
    fn idx_without_class_list_gets_numeric_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_idx(dir.path(), "val", &[vec![0; 4], vec![1; 4]], &[3, 1]);
        let ds = load(dir.path(), "val", &LoadOptions::default()).expect("load");
        assert_eq!(ds.classes, vec!["0", "1", "2", "3"]);
        assert_eq!(ds.class_counts(), vec![0, 1, 0, 1]);
    }

    #[test]
    fn rejects_idx_label_beyond_class_list() {
        let dir = idx_fixture();
        write_idx(dir.path(), "train", &[vec![0; 4], vec![0; 4]], &[0, 3]);
        let err = load(dir.path(), "train", &LoadOptions::default()).expect_err("label 3 accepted");
        let msg = err.to_string();
        assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
        assert!(
            msg.contains("item 1 has label 3") && msg.contains("only 3 classes"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_idx_count_mismatch() {
        let dir = idx_fixture();
        let (img, _) = idx::encode(2, 2, &[vec![0; 4], vec![0; 4]], &[]);
        fs::write(dir.path().join("train-images-idx3-ubyte"), img).expect("write");
        let err = load(dir.path(), "train", &LoadOptions::default()).expect_err("mismatch");
        assert!(
            matches!(
                err,
                DatasetError::CountMismatch {
                    image_count: 2,
                    label_count: 6,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_truncated_idx_file() {
        let dir = idx_fixture();
        let path = dir.path().join("train-images-idx3-ubyte");
        let mut bytes = fs::read(&path).expect("read");
        bytes.truncate(bytes.len() - 3);
        fs::write(&path, bytes).expect("write");
        let msg = load(dir.path(), "train", &LoadOptions::default())
            .expect_err("truncated accepted")
            .to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte") && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_idx_wrong_magic() {
        let dir = idx_fixture();
        let path = dir.path().join("train-labels-idx1-ubyte");
        let mut bytes = fs::read(&path).expect("read");
        bytes[3] = 3;
        fs::write(&path, bytes).expect("write");
        let msg = load(dir.path(), "train", &LoadOptions::default())
            .expect_err("wrong magic accepted")
            .to_string();
        assert!(
            msg.contains("train-labels-idx1-ubyte") && msg.contains("wrong magic"),
            "{msg}"
        );
    }

    #[test]
    fn missing_split_names_the_paths_tried() {
        let dir = idx_fixture();
        let msg = load(dir.path(), "test", &LoadOptions::default())
            .expect_err("missing split")
            .to_string();
        assert!(msg.contains("test-images-idx3-ubyte"), "{msg}");
        assert!(msg.contains("test-labels-idx1-ubyte"), "{msg}");
        assert!(
            msg.contains(&dir.path().join("test").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn loads_folder_tree_with_sorted_folder_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(
            dir.path(),
            &[
                ("yes", "b.wav", wav_bytes(10)),
                ("yes", "a.WAV", wav_bytes(20)),
                ("no", "x.png", png_bytes(7)),
                ("no", "readme.txt", b"ignored".to_vec()),
            ],
        );
        let ds = load(dir.path(), "train", &LoadOptions::default()).expect("load");
        assert_eq!(ds.classes, vec!["no", "yes"]);
        assert_eq!(ds.class_counts(), vec![1, 2]);
        assert!(
            ds.items[1].source.ends_with("a.WAV"),
            "{}",
            ds.items[1].source
        );
        let Raw::Audio(clip) = &ds.items[1].raw else {
            panic!("WAV item is not audio");
        };
        assert_eq!(clip.samples.len(), 20);
        assert!(matches!(ds.items[0].raw, Raw::Image(_)));
    }

    #[test]
    fn folder_tree_follows_class_list_order_and_allows_missing_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(
            dir.path(),
            &[
                ("go", "1.wav", wav_bytes(5)),
                ("stop", "1.wav", wav_bytes(5)),
            ],
        );
        fs::write(
            dir.path().join("classes.txt"),
            "0\tstop\tcore\n1\tgo\tcore\n2\tleft\tnovel\n",
        )
        .expect("classes");
        let ds = load(dir.path(), "train", &LoadOptions::default()).expect("load");
        assert_eq!(ds.classes, vec!["stop", "go", "left"]);
        assert_eq!(ds.class_counts(), vec![1, 1, 0]);
    }

    #[test]
    fn rejects_folder_not_in_class_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(
            dir.path(),
            &[
                ("go", "1.wav", wav_bytes(5)),
                ("zebra", "1.wav", wav_bytes(5)),
            ],
        );
        fs::write(dir.path().join("classes.txt"), "0\tgo\n").expect("classes");
        let err = load(dir.path(), "train", &LoadOptions::default()).expect_err("unlisted");
        let msg = err.to_string();
        assert!(
            msg.contains("'zebra'") && msg.contains("classes.txt"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_corrupt_png_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut corrupt = png_bytes(1);
        corrupt.truncate(20);
        write_tree(
            dir.path(),
            &[("a", "good.png", png_bytes(1)), ("a", "bad.png", corrupt)],
        );
        let err = load(dir.path(), "train", &LoadOptions::default()).expect_err("corrupt accepted");
        assert!(matches!(err, DatasetError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("bad.png"), "{err}");
    }

    #[test]
    fn skip_bad_counts_undecodable_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(
            dir.path(),
            &[
                ("a", "1.png", png_bytes(1)),
                ("a", "2.png", b"not a png at all".to_vec()),
                ("a", "3.wav", wav_bytes(0)),
                ("a", "4.png", png_bytes(2)),
            ],
        );
        let opts = LoadOptions {
            skip_bad: true,
            ..LoadOptions::default()
        };
        let ds = load(dir.path(), "train", &opts).expect("load");
        assert_eq!(ds.skipped_bad, 2);
        assert_eq!(ds.len(), 2);
        let limited = LoadOptions {
            skip_bad: true,
            limit_per_class: Some(2),
            ..LoadOptions::default()
        };
        let ds = load(dir.path(), "train", &limited).expect("load");
        assert_eq!(ds.len(), 2, "bad files do not count towards the limit");
        assert!(ds.items[1].source.ends_with("4.png"));
    }

    #[test]
    fn rejects_empty_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("train").join("empty")).expect("mkdir");
        let err = load(dir.path(), "train", &LoadOptions::default()).expect_err("empty accepted");
        assert!(matches!(err, DatasetError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("split 'train'"), "{err}");
    }

    #[test]
    fn rejects_malformed_class_list() {
        let p = Path::new("classes.txt");
        assert!(parse_class_list(p, "0\ta\n1\tb\n").is_ok());
        assert_eq!(
            parse_class_list(p, "1\tb\r\n\n# note\n0\ta\r\n").expect("ok"),
            vec!["a", "b"]
        );
        let msg = parse_class_list(p, "0\ta\n2\tb\n")
            .expect_err("gap")
            .to_string();
        assert!(msg.contains("line 2") && msg.contains("index 2"), "{msg}");
        assert!(parse_class_list(p, "0 a\n").is_err());
        assert!(parse_class_list(p, "x\ta\n").is_err());
        assert!(parse_class_list(p, "0\ta\n1\ta\n").is_err());
        assert!(parse_class_list(p, "").is_err());
    }

    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");

    /// A data set of `../shared/data`, which the test suite needs (a missing one fails the
    /// test rather than passing it unseen).
    fn shared(name: &str) -> PathBuf {
        let path = Path::new(SHARED).join(name);
        assert!(
            path.is_dir(),
            "shared data {} not present (see ../shared/data/README.md)",
            path.display()
        );
        path
    }

    #[test]
    fn loads_real_fashion_mnist_val() {
        let dir = shared("fashion-mnist");
        let ds = load(&dir, "val", &LoadOptions::default()).expect("fashion-mnist val");
        assert_eq!(ds.classes.len(), 10);
        assert_eq!(ds.classes[0], "t-shirt_top");
        assert_eq!(ds.len(), 6000);
        assert!(ds.class_counts().iter().all(|&c| c > 0));
        let Raw::Image(img) = &ds.items[0].raw else {
            panic!("not an image");
        };
        assert_eq!((img.width(), img.height()), (28, 28));
    }

    #[test]
    fn loads_real_espeak_kws_subset() {
        let dir = shared("espeak-kws");
        let opts = LoadOptions {
            classes: Some(vec!["yes".into(), "no".into()]),
            limit_per_class: Some(3),
            ..LoadOptions::default()
        };
        let ds = load(&dir, "val", &opts).expect("espeak-kws val");
        assert_eq!(ds.classes, vec!["yes", "no"]);
        assert_eq!(ds.class_counts(), vec![3, 3]);
        let Raw::Audio(clip) = &ds.items[0].raw else {
            panic!("not audio");
        };
        assert_eq!((clip.samples.len(), clip.sample_rate_hz), (16_000, 16_000));
        let all = load(&dir, "val", &LoadOptions::default()).expect("espeak-kws val");
        assert_eq!(all.classes.len(), 35);
        assert_eq!(all.classes[34], "visual");
        assert_eq!(all.len(), 280);
    }
}
