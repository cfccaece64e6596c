//! A model package on disk — the unit that is trained, shipped, promoted and rolled back:
//! `model.onnx` (head-free student), `train-state.bpk` (student + auxiliary heads),
//! `manifest.json`, `replay/<class>/<n>.{png,wav}` exemplars and, optionally, the gate set
//! `gate/<class>/<n>.{png,wav}` (validation exemplars the promotion gate judges the shipped
//! classes on; packages without one fall back to held-back replay exemplars).
//!
//! Loading verifies every file against the manifest's sha256 and the ONNX graph against the
//! manifest (input shape, class count, embedding size, no auxiliary-head nodes): a package
//! that does not check out is an error naming the file and the problem, never a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::durable::{self, Fs, StdFs};
use crate::features::{ChangeLocator, Preprocess};
use crate::inference::{GraphSummary, inspect};
use crate::lsskd::{ArchConfig, LsskdError, TrainConfig, TrainNet, TransformSet, checkpoint};
use burn::prelude::Device;

pub const MANIFEST: &str = "manifest.json";
pub const MODEL_ONNX: &str = "model.onnx";
pub const TRAIN_STATE: &str = "train-state.bpk";
pub const REPLAY_DIR: &str = "replay";
pub const GATE_DIR: &str = "gate";
/// A view's reference frame, the mean of its taught frames of `Manifest::change_reference`.
pub const REFERENCE_PNG: &str = "reference.png";
/// Manifest format written by this build.
pub const FORMAT: u32 = 1;

/// Errors loading or writing a package. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: file listed in the manifest is missing")]
    MissingFile { path: PathBuf },
    #[error(
        "{path}: sha256 mismatch (manifest {expected}, file {actual}) — the package is corrupt or was edited"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: invalid manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: ONNX graph contradicts the manifest: {message}")]
    GraphMismatch { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The package's training checkpoint (the manifest's `train_state`): its file and how the
/// training network was built, so it can be rebuilt from the file for fine-tuning. (Not
/// `mqtt::payload::TrainState`, the state a training job reports.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointInfo {
    pub file: String,
    pub aux_heads: bool,
    pub transforms: TransformSet,
    /// Offsets of the classifier's logits (`lsskd::net::ClassifierHead::offset`; the taught labels' after
    /// a fine-tune), one per class; empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_offset: Vec<f32>,
}

/// Where the training data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataInfo {
    pub data: String,
    pub split: String,
    pub samples_per_class: BTreeMap<String, usize>,
    /// The package training started from (`train --init`), if any.
    #[serde(default)]
    pub init: Option<String>,
    /// The audio augmentation training used (absent for images and older packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_augment: Option<crate::augment::AudioAugment>,
    /// The background beds mixed under the clips (`train --noise-beds`), by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noise_beds: Vec<String>,
}

/// Accuracy of the deployed ONNX model on a named set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMetrics {
    pub set: String,
    pub accuracy: f64,
    pub n: usize,
    pub per_class: BTreeMap<String, f64>,
}

/// What was exported (checked against the ONNX file on load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployedInfo {
    /// Parameters of the exported graph (BatchNorm folded): backbone + N-way head only.
    pub param_count: usize,
    /// Parameters of the training model, auxiliary heads included (BatchNorm unfolded).
    pub training_param_count: usize,
    /// Always false: auxiliary heads are removed at export.
    pub auxiliary_heads_exported: bool,
    pub embedding_dim: usize,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: u32,
    pub parent: Option<u32>,
    pub created_at: String,
    pub classes: Vec<String>,
    /// The class that means "no known sound" (`train --background-class`): a pipeline's
    /// stable state reports it as nothing (the pipeline's debounce, `pipeline::decide::NOTHING`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
    /// Images: the class whose frames are a view's reference (`train --crop-to-change`).
    /// Once a version holds [`REFERENCE_PNG`], every frame is cut to the square around its
    /// change from it (`features::ChangeLocator`) before preprocessing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_reference: Option<String>,
    pub preprocess: Preprocess,
    pub arch: ArchConfig,
    pub method: TrainConfig,
    pub train_state: CheckpointInfo,
    pub training_data: Option<DataInfo>,
    pub training_seconds: f64,
    pub metrics: Vec<SetMetrics>,
    pub deployed: DeployedInfo,
    /// How an on-device version was made (absent in trained packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<super::card::AdaptationInfo>,
    /// Relative path → sha256 (hex) of every other file in the package.
    pub files: BTreeMap<String, String>,
}

/// A verified package on disk.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub graph: GraphSummary,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let bytes = fs::read(path).map_err(io(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Manifest {
    /// The manifest of the package in `dir`, parsed but not checked against the files (a
    /// listing, not a load: [`ModelPackage::load`] verifies).
    pub fn read(dir: &Path) -> Result<Manifest, PackageError> {
        let mpath = dir.join(MANIFEST);
        if !mpath.exists() {
            return Err(PackageError::MissingFile { path: mpath });
        }
        let text = fs::read_to_string(&mpath).map_err(io(&mpath))?;
        serde_json::from_str(&text).map_err(|e| PackageError::Manifest {
            path: mpath,
            message: e.to_string(),
        })
    }
}

impl ModelPackage {
    /// The view's change locator, when this version holds a reference frame.
    pub fn change_locator(&self) -> Result<Option<ChangeLocator>, PackageError> {
        if !self.manifest.files.contains_key(REFERENCE_PNG) {
            return Ok(None);
        }
        let path = self.dir.join(REFERENCE_PNG);
        let bad = |message: String| PackageError::Manifest {
            path: path.clone(),
            message,
        };
        let bytes = fs::read(&path).map_err(io(&path))?;
        let frame = image::load_from_memory(&bytes).map_err(|e| bad(e.to_string()))?;
        ChangeLocator::new(frame)
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    }

    pub fn onnx_path(&self) -> PathBuf {
        self.dir.join(MODEL_ONNX)
    }

    pub fn train_state_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.train_state.file)
    }

    /// The training model (student and auxiliary heads) of this package, as its manifest
    /// describes it: architecture, classes, transforms, auxiliary heads.
    pub fn load_train_net(&self, device: &Device) -> Result<TrainNet, LsskdError> {
        let m = &self.manifest;
        let mut net = checkpoint::load(
            &m.arch,
            m.classes.len(),
            m.train_state.transforms.len(),
            m.train_state.aux_heads,
            &self.train_state_path(),
            device,
        )?;
        // Checked against the classes by `load`.
        net.student.classifier.offset = m.train_state.logit_offset.clone();
        Ok(net)
    }

    pub fn replay_dir(&self) -> PathBuf {
        self.dir.join(REPLAY_DIR)
    }

    /// Whether the manifest lists a gate set (`gate/…`).
    pub fn has_gate_set(&self) -> bool {
        let prefix = format!("{GATE_DIR}/");
        self.manifest.files.keys().any(|k| k.starts_with(&prefix))
    }

    /// Read and verify a package: manifest schema, every file's hash, and the ONNX graph.
    pub fn load(dir: &Path) -> Result<Self, PackageError> {
        let mpath = dir.join(MANIFEST);
        let manifest = Manifest::read(dir)?;
        let bad = |message: String| PackageError::Manifest {
            path: mpath.clone(),
            message,
        };
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "format {} is not supported (this build reads format {FORMAT})",
                manifest.format
            )));
        }
        if manifest.classes.is_empty() {
            return Err(bad("no classes".into()));
        }
        if let Some(b) = &manifest.background
            && !manifest.classes.contains(b)
        {
            return Err(bad(format!(
                "background class `{b}` is not one of the classes"
            )));
        }
        if manifest.files.contains_key(REFERENCE_PNG) && manifest.change_reference.is_none() {
            return Err(bad(format!(
                "`files` lists {REFERENCE_PNG} but there is no change_reference"
            )));
        }
        manifest
            .preprocess
            .validate()
            .map_err(|e| bad(e.to_string()))?;
        manifest.arch.validate().map_err(bad)?;
        let offsets = &manifest.train_state.logit_offset;
        if !crate::lsskd::net::offset_fits(offsets, manifest.classes.len()) {
            return Err(bad(format!(
                "train_state.logit_offset has {} values for {} classes",
                offsets.len(),
                manifest.classes.len()
            )));
        }
        if offsets.iter().any(|o| !o.is_finite()) {
            return Err(bad(
                "train_state.logit_offset holds a value that is not finite".into(),
            ));
        }
        for required in [MODEL_ONNX, manifest.train_state.file.as_str()] {
            if !manifest.files.contains_key(required) {
                return Err(bad(format!("`files` does not list {required}")));
            }
        }
        for (rel, expected) in &manifest.files {
            if rel.contains("..") || Path::new(rel).is_absolute() {
                return Err(bad(format!("file path {rel} leaves the package")));
            }
            let path = dir.join(rel);
            if !path.exists() {
                return Err(PackageError::MissingFile { path });
            }
            let actual = sha256_file(&path)?;
            if &actual != expected {
                return Err(PackageError::HashMismatch {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let onnx = dir.join(MODEL_ONNX);
        let graph = inspect(&fs::read(&onnx).map_err(io(&onnx))?).map_err(|e| {
            PackageError::GraphMismatch {
                path: onnx.clone(),
                message: e.to_string(),
            }
        })?;
        check_graph(&manifest, &graph).map_err(|message| PackageError::GraphMismatch {
            path: onnx,
            message,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            graph,
        })
    }

    /// Write a complete package into `dir` (created; must not hold another package's files).
    /// `files` are (relative path, bytes) for model.onnx, the train state and replay
    /// exemplars; hashes are filled in. Files and their folders are fsynced before the
    /// manifest is written last (and its folder fsynced), so a package with a manifest is
    /// complete, after a crash too.
    pub fn write(
        dir: &Path,
        manifest: Manifest,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, PackageError> {
        Self::write_with(&StdFs, dir, manifest, files)
    }

    /// [`ModelPackage::write`], making every change through `fs`.
    pub fn write_with(
        fs: &dyn Fs,
        dir: &Path,
        mut manifest: Manifest,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, PackageError> {
        durable::create_dir_all(fs, dir).map_err(io(dir))?;
        manifest.files.clear();
        // Every folder that gains a name (the package's own, `replay/`, `replay/<class>/`
        // ...), fsynced before the manifest is written: a file's fsync does not persist
        // its name.
        let mut folders = BTreeSet::from([dir.to_path_buf()]);
        for (rel, bytes) in &files {
            let path = dir.join(rel);
            let parent = durable::parent_of(&path);
            fs.create_dir_all(parent).map_err(io(parent))?;
            folders.extend(
                parent
                    .ancestors()
                    .take_while(|a| a.starts_with(dir))
                    .map(Path::to_path_buf),
            );
            fs.write(&path, bytes, true).map_err(io(&path))?;
            manifest
                .files
                .insert(rel.clone(), hex::encode(Sha256::digest(bytes)));
        }
        for folder in &folders {
            fs.sync_dir(folder).map_err(io(folder))?;
        }
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        let mpath = dir.join(MANIFEST);
        fs.write(&mpath, &json, true).map_err(io(&mpath))?;
        fs.sync_dir(dir).map_err(io(dir))?;
        Self::load(dir)
    }
}

/// Write a file and fsync it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    StdFs.write(path, bytes, true).map_err(io(path))
}

fn check_graph(m: &Manifest, g: &GraphSummary) -> Result<(), String> {
    let [c, h, w] = m.preprocess.input_shape();
    let want = vec![1, c as i64, h as i64, w as i64];
    if g.input_name != "input" || g.input_shape != want {
        return Err(format!(
            "input is `{}` {:?}, manifest preprocessing needs `input` {:?}",
            g.input_name, g.input_shape, want
        ));
    }
    let out = |name: &str| {
        g.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    };
    let n = m.classes.len() as i64;
    match out("logits") {
        Some(s) if s == vec![1, n] => {}
        other => {
            return Err(format!(
                "output `logits` is {other:?}, manifest lists {n} classes"
            ));
        }
    }
    let d = m.deployed.embedding_dim as i64;
    match out("embedding") {
        Some(s) if s == vec![1, d] => {}
        other => {
            return Err(format!(
                "output `embedding` is {other:?}, manifest says dimension {d}"
            ));
        }
    }
    if g.param_count != m.deployed.param_count {
        return Err(format!(
            "graph holds {} parameters, manifest says {} (backbone + head only)",
            g.param_count, m.deployed.param_count
        ));
    }
    if let Some(aux) = g.node_names.iter().find(|n| n.starts_with("aux")) {
        return Err(format!("auxiliary-head node `{aux}` in the deployed graph"));
    }
    Ok(())
}
