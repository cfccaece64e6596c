//! The durable labelled-sample store: `<state_dir>/samples/<model>/<id>.<png|jpg|wav>` plus
//! `<id>.json` metadata.
//!
//! Atomic writes: the data file, then the metadata are each written to a temporary name,
//! fsynced and renamed, and the folder is fsynced; the metadata file is the commit marker,
//! so a crash never leaves a half-written sample visible. `id` makes delivery idempotent.
//! Per-model quota with oldest-first eviction. The folders are fsynced into their parents
//! when created, and a removal fsyncs the folder, so an acknowledged add or a returned
//! `remove` survives any crash (every crash state is checked by `samples::crash`'s tests).
//! Every change goes through `durable::Fs`; `export` writes a plain copy elsewhere.
//!
//! The metadata is read once, when the store is opened, into an index that every later
//! add, remove, list and count keeps and reads (a store of this process is its only
//! writer; clones share the index).

pub mod ingest;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::durable::{self, Fs, StdFs};
use crate::features::{Raw, decode};

/// Errors of the store; each names the file or the offending value.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("invalid {what} `{value}`: must match [A-Za-z0-9_.-]{{1,64}}")]
    InvalidName { what: &'static str, value: String },
    #[error("unsupported sample type `{0}` (png, jpg or wav)")]
    Extension(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SampleError + '_ {
    move |source| SampleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `[A-Za-z0-9_.-]{1,64}`, not `.` or `..` (ids and labels become file names).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Metadata of one stored sample (the `<id>.json` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleMeta {
    pub id: String,
    pub label: String,
    /// Milliseconds since the Unix epoch when it was stored.
    pub created_ms: u64,
    /// File extension of the data file.
    pub ext: String,
    pub sha256: String,
    /// Where it came from (`mqtt`, `capture:<pipeline>:<id>`, ...).
    pub origin: String,
}

/// Result of [`SampleStore::add`].
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// Newly stored; ids evicted to respect the quota.
    Stored { evicted: Vec<String> },
    /// The id was already stored (redelivery): nothing written.
    Duplicate,
}

/// Samples of one model.
#[derive(Debug, Clone)]
pub struct SampleStore {
    /// Every change goes through it (`durable::StdFs` but in the crash explorer's tests).
    fs: Arc<dyn Fs>,
    root: PathBuf,
    quota: usize,
    /// Committed samples by id (see the module docs).
    index: Arc<Mutex<BTreeMap<String, SampleMeta>>>,
    /// Metadata files read since open (the index keeps this at the scan's count).
    meta_reads: Arc<AtomicUsize>,
}

impl SampleStore {
    /// Open (create) `<state_dir>/samples/<model>`; leftover temporary files are removed.
    pub fn open(state_dir: &Path, model: &str, quota: usize) -> Result<Self, SampleError> {
        Self::open_with(Arc::new(StdFs), state_dir, model, quota)
    }

    /// [`SampleStore::open`], making every change through `fs`.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        state_dir: &Path,
        model: &str,
        quota: usize,
    ) -> Result<Self, SampleError> {
        let root = state_dir.join("samples").join(model);
        durable::create_dir_all(&*fs, &root).map_err(io(&root))?;
        for entry in fs::read_dir(&root)
            .map_err(io(&root))?
            .filter_map(Result::ok)
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                fs.remove_file(&entry.path()).ok();
            }
        }
        let store = Self {
            fs,
            root,
            quota: quota.max(1),
            index: Arc::default(),
            meta_reads: Arc::default(),
        };
        let scanned = store.scan()?;
        *store.index() = scanned.into_iter().map(|m| (m.id.clone(), m)).collect();
        Ok(store)
    }

    fn index(&self) -> MutexGuard<'_, BTreeMap<String, SampleMeta>> {
        // A panic while holding the lock cannot leave the map half-updated (single
        // insert/remove calls), so a poisoned lock is still good.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Metadata files read since the store was opened.
    pub fn meta_reads(&self) -> usize {
        self.meta_reads.load(Ordering::Relaxed)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.json"))
    }

    /// `path` through `<path>.tmp` (fsynced, renamed); durable once the folder is fsynced.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), SampleError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        durable::write_atomic(&*self.fs, path, Path::new(&tmp), bytes).map_err(io(path))
    }

    /// Store a sample durably (idempotent by `id`), then evict oldest-first over the quota.
    pub fn add(
        &self,
        id: &str,
        label: &str,
        bytes: &[u8],
        ext: &str,
        origin: &str,
    ) -> Result<AddOutcome, SampleError> {
        for (what, value) in [("id", id), ("label", label)] {
            if !valid_name(value) {
                return Err(SampleError::InvalidName {
                    what,
                    value: value.to_string(),
                });
            }
        }
        let ext = ext.to_ascii_lowercase();
        if !matches!(ext.as_str(), "png" | "jpg" | "wav") {
            return Err(SampleError::Extension(ext));
        }
        if self.index().contains_key(id) || self.meta_path(id).exists() {
            return Ok(AddOutcome::Duplicate);
        }
        let data = self.root.join(format!("{id}.{ext}"));
        self.write_atomic(&data, bytes)?;
        let meta = SampleMeta {
            id: id.to_string(),
            label: label.to_string(),
            created_ms: crate::capture::now_ms(),
            ext,
            sha256: hex::encode(Sha256::digest(bytes)),
            origin: origin.to_string(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
        self.write_atomic(&self.meta_path(id), &json)?;
        self.fs.sync_dir(&self.root).map_err(io(&self.root))?;
        self.index().insert(id.to_string(), meta);
        let mut all = self.list()?;
        let mut evicted = Vec::new();
        if all.len() > self.quota {
            all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            for old in all.iter().take(all.len() - self.quota) {
                if old.id == id {
                    continue;
                }
                self.delete(&old.id, false)?;
                evicted.push(old.id.clone());
            }
        }
        Ok(AddOutcome::Stored { evicted })
    }

    /// Delete a sample durably: its metadata first (so it disappears atomically), the
    /// folder fsynced (a `forget` stays done after a crash), then its data file.
    pub fn remove(&self, id: &str) -> Result<(), SampleError> {
        self.delete(id, true)
    }

    /// [`SampleStore::remove`]; `sync: false` for eviction, whose sample is evicted again
    /// by the next add if a crash brings it back.
    fn delete(&self, id: &str, sync: bool) -> Result<(), SampleError> {
        let meta = self.meta_path(id);
        let ext = match self.index().get(id) {
            Some(m) => Some(m.ext.clone()),
            None => self.read_meta(&meta).map(|m| m.ext).ok(),
        };
        self.fs.remove_file(&meta).map_err(io(&meta))?;
        self.index().remove(id);
        if sync {
            self.fs.sync_dir(&self.root).map_err(io(&self.root))?;
        }
        if let Some(ext) = ext {
            self.fs
                .remove_file(&self.root.join(format!("{id}.{ext}")))
                .ok();
        }
        Ok(())
    }

    fn read_meta(&self, path: &Path) -> Result<SampleMeta, SampleError> {
        self.meta_reads.fetch_add(1, Ordering::Relaxed);
        let text = fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text).map_err(|e| SampleError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Every committed sample, oldest first.
    pub fn list(&self) -> Result<Vec<SampleMeta>, SampleError> {
        let mut out: Vec<SampleMeta> = self.index().values().cloned().collect();
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// The committed samples on disk. Unreadable entries are skipped with a warning.
    fn scan(&self) -> Result<Vec<SampleMeta>, SampleError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)
            .map_err(io(&self.root))?
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match self.read_meta(&path) {
                Ok(m) if self.root.join(format!("{}.{}", m.id, m.ext)).exists() => out.push(m),
                Ok(m) => tracing::warn!(id = %m.id, "sample metadata without data file; ignored"),
                Err(e) => tracing::warn!(error = %e, "unreadable sample metadata; ignored"),
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// Samples per label.
    pub fn counts(&self) -> Result<BTreeMap<String, usize>, SampleError> {
        let mut counts = BTreeMap::new();
        for m in self.index().values() {
            *counts.entry(m.label.clone()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Decode a stored sample, verifying its hash.
    /// A stored sample's bytes as they arrived, checked against its digest.
    pub fn bytes(&self, meta: &SampleMeta) -> Result<Vec<u8>, SampleError> {
        let path = self.root.join(format!("{}.{}", meta.id, meta.ext));
        let bytes = fs::read(&path).map_err(io(&path))?;
        if hex::encode(Sha256::digest(&bytes)) != meta.sha256 {
            return Err(SampleError::Corrupt {
                path,
                message: "sha256 does not match its metadata".into(),
            });
        }
        Ok(bytes)
    }

    pub fn load(&self, meta: &SampleMeta) -> Result<Raw, SampleError> {
        let bytes = self.bytes(meta)?;
        let path = self.root.join(format!("{}.{}", meta.id, meta.ext));
        decode(&bytes).map_err(|e| SampleError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// Copy every sample to `dir/<split>/<label>/<id>.<ext>` (a tree `train` reads).
    pub fn export(&self, dir: &Path, split: &str) -> Result<usize, SampleError> {
        let all = self.list()?;
        for m in &all {
            let to_dir = dir.join(split).join(&m.label);
            fs::create_dir_all(&to_dir).map_err(io(&to_dir))?;
            let from = self.root.join(format!("{}.{}", m.id, m.ext));
            let to = to_dir.join(format!("{}.{}", m.id, m.ext));
            fs::copy(&from, &to).map_err(io(&to))?;
        }
        Ok(all.len())
    }
}

#[cfg(test)]
mod crash;

#[cfg(test)]
mod tests {
    use super::*;

    fn png() -> Vec<u8> {
        let img =
            image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([9])));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    }

    #[test]
    fn add_is_idempotent_by_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SampleStore::open(dir.path(), "vision", 10).expect("open");
        assert_eq!(
            store
                .add("a1", "parcel", &png(), "png", "mqtt")
                .expect("add"),
            AddOutcome::Stored { evicted: vec![] }
        );
        assert_eq!(
            store
                .add("a1", "parcel", &png(), "png", "mqtt")
                .expect("add"),
            AddOutcome::Duplicate
        );
        assert_eq!(store.list().expect("list").len(), 1);
        assert!(matches!(
            store.load(&store.list().expect("list")[0]).expect("load"),
            Raw::Image(_)
        ));
    }

    /// Adding and counting read no metadata file: the index opened with the store answers
    /// (issue 11: each add read every metadata file twice).
    #[test]
    fn adding_and_counting_reads_no_metadata_after_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SampleStore::open(dir.path(), "vision", 100).expect("open");
        for i in 0..20 {
            store
                .add(&format!("s{i}"), "x", &png(), "png", "mqtt")
                .expect("add");
        }
        let reopened = SampleStore::open(dir.path(), "vision", 100).expect("reopen");
        assert_eq!(reopened.meta_reads(), 20, "the scan at open");
        reopened
            .add("new", "y", &png(), "png", "mqtt")
            .expect("add");
        let counts = reopened.counts().expect("counts");
        assert_eq!(counts["x"], 20);
        assert_eq!(counts["y"], 1);
        assert_eq!(reopened.list().expect("list").len(), 21);
        assert_eq!(reopened.meta_reads(), 20, "no reads after open");
        // A clone shares the index.
        let clone = reopened.clone();
        clone.remove("s0").expect("remove");
        assert_eq!(reopened.counts().expect("counts")["x"], 19);
        assert!(!dir.path().join("samples/vision/s0.json").exists());
    }

    #[test]
    fn quota_evicts_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SampleStore::open(dir.path(), "vision", 2).expect("open");
        for id in ["s1", "s2", "s3"] {
            store.add(id, "x", &png(), "png", "mqtt").expect("add");
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let ids: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec!["s2", "s3"]);
        assert!(!dir.path().join("samples/vision/s1.png").exists());
    }

    #[test]
    fn rejects_unsafe_ids_and_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SampleStore::open(dir.path(), "vision", 2).expect("open");
        for (id, label) in [
            ("../x", "ok"),
            ("ok", "a/b"),
            ("", "ok"),
            ("ok", ".."),
            ("ok", &"x".repeat(65)),
        ] {
            let err = store
                .add(id, label, &png(), "png", "mqtt")
                .expect_err("invalid");
            assert!(err.to_string().contains("must match"), "{err}");
        }
        assert!(store.add("ok", "ok", b"", "exe", "mqtt").is_err());
    }

    #[test]
    fn half_written_samples_are_invisible_and_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SampleStore::open(dir.path(), "audio", 5).expect("open");
        store
            .add("good", "yes", &png(), "png", "mqtt")
            .expect("add");
        // A crash after the data file but before the metadata commit:
        fs::write(store.root().join("orphan.png"), png()).expect("write");
        // A crash in the middle of writing metadata:
        fs::write(store.root().join("late.json.tmp"), b"{\"id\":").expect("write");
        // Garbage metadata:
        fs::write(store.root().join("bad.json"), b"not json").expect("write");
        let reopened = SampleStore::open(dir.path(), "audio", 5).expect("open");
        let ids: Vec<String> = reopened
            .list()
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec!["good"]);
        assert!(!reopened.root().join("late.json.tmp").exists());
    }

    #[test]
    fn export_writes_a_tree_the_dataset_loader_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SampleStore::open(dir.path(), "vision", 10).expect("open");
        store
            .add("p1", "parcel", &png(), "png", "mqtt")
            .expect("add");
        store
            .add("p2", "parcel", &png(), "png", "mqtt")
            .expect("add");
        store.add("d1", "door", &png(), "png", "mqtt").expect("add");
        let out = dir.path().join("export");
        assert_eq!(store.export(&out, "train").expect("export"), 3);
        let ds = crate::dataset::load(&out, "train", &Default::default()).expect("load");
        assert_eq!(ds.classes, vec!["door", "parcel"]);
        assert_eq!(ds.class_counts(), vec![1, 2]);
    }
}
