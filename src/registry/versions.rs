//! Versions of one model on a device: `<state_dir>/models/<model>/vNNNN/` packages, a
//! `current` pointer switched atomically, pruning to the last K, rollback to the parent.
//! The shipped package is the read-only version 0 and is never written.
//!
//! Crash safety (every state checked by `registry::crash`'s tests): the store's folders
//! are fsynced into their parents when created; a version is written into a `.tmp-*`
//! folder (files, every folder, then the manifest fsynced), renamed into place, and the
//! folder is fsynced; the pointer is written to `current.tmp`, fsynced and renamed over
//! `current`, and the folder is fsynced. At any instant `current` names either the old or
//! the new version. A pruned version is renamed to `.pruned-vNNNN` before it is deleted,
//! so no `vNNNN/` is ever half there.
//! On open, no pointer means nothing was ever promoted: the shipped package is live. A
//! corrupt pointer, or a pointer to a version that no longer verifies, falls back to the
//! newest version that does — loudly (a warning is returned and logged).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::package::{Manifest, ModelPackage, PackageError};
use crate::durable::{self, Fs, StdFs};

const CURRENT: &str = "current";
/// The prefix of a version folder being deleted.
const PRUNED: &str = ".pruned-";

/// Errors of the version store.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model `{model}` has no version {version}")]
    NoSuchVersion { model: String, version: u32 },
    #[error("model `{model}` version {version} has no parent to roll back to")]
    NoParent { model: String, version: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which versions to delete so that at most `keep` remain, never the current one nor the
/// shipped version 0 (which is not on disk here).
pub fn prune_plan(versions: &[u32], current: u32, keep: usize) -> Vec<u32> {
    let mut sorted: Vec<u32> = versions.iter().copied().filter(|v| *v != 0).collect();
    sorted.sort_unstable();
    let mut keep_set: Vec<u32> = sorted.iter().rev().take(keep.max(1)).copied().collect();
    if current != 0 && !keep_set.contains(&current) {
        keep_set.push(current);
    }
    sorted
        .into_iter()
        .filter(|v| !keep_set.contains(v))
        .collect()
}

fn dir_name(version: u32) -> String {
    format!("v{version:04}")
}

fn parse_dir(name: &str) -> Option<u32> {
    name.strip_prefix('v')
        .filter(|s| s.len() >= 4)
        .and_then(|s| s.parse().ok())
}

/// The version store of one model.
#[derive(Debug, Clone)]
pub struct Versions {
    /// Every change goes through it (`durable::StdFs` but in the crash explorer's tests).
    fs: Arc<dyn Fs>,
    model: String,
    root: PathBuf,
    shipped: PathBuf,
    keep: usize,
}

/// The live version after [`Versions::open_current`].
#[derive(Debug, Clone)]
pub struct Current {
    pub version: u32,
    pub package: ModelPackage,
    /// Set when the pointer was missing/corrupt and a fallback was chosen.
    pub warning: Option<String>,
}

impl Versions {
    /// `root` is `<state_dir>/models/<model>` (created); `shipped` the read-only v0 package.
    pub fn new(
        state_dir: &Path,
        model: &str,
        shipped: &Path,
        keep: usize,
    ) -> Result<Self, RegistryError> {
        Self::new_with(Arc::new(StdFs), state_dir, model, shipped, keep)
    }

    /// [`Versions::new`], making every change through `fs`.
    pub fn new_with(
        fs: Arc<dyn Fs>,
        state_dir: &Path,
        model: &str,
        shipped: &Path,
        keep: usize,
    ) -> Result<Self, RegistryError> {
        let root = state_dir.join("models").join(model);
        durable::create_dir_all(&*fs, &root).map_err(io(&root))?;
        Ok(Self {
            fs,
            model: model.to_string(),
            root,
            shipped: shipped.to_path_buf(),
            keep: keep.max(1),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of a version (0: the shipped package).
    pub fn path_of(&self, version: u32) -> PathBuf {
        if version == 0 {
            self.shipped.clone()
        } else {
            self.root.join(dir_name(version))
        }
    }

    /// Versions present on disk (not verified), ascending, without 0.
    pub fn on_disk(&self) -> Result<Vec<u32>, RegistryError> {
        let mut out: Vec<u32> = fs::read_dir(&self.root)
            .map_err(io(&self.root))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| parse_dir(&e.file_name().to_string_lossy()))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn sync_dir(&self, path: &Path) -> Result<(), RegistryError> {
        self.fs.sync_dir(path).map_err(io(path))
    }

    fn read_pointer(&self) -> Result<u32, String> {
        let path = self.root.join(CURRENT);
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.trim().parse::<u32>().map_err(|_| {
            format!(
                "{}: `{}` is not a version number",
                path.display(),
                text.trim()
            )
        })
    }

    /// The live version: the pointer's target if it verifies, else the newest version that
    /// does (ending with the shipped package), with a warning saying why.
    pub fn open_current(&self) -> Result<Current, RegistryError> {
        let warning;
        match self.read_pointer() {
            Ok(v) => match ModelPackage::load(&self.path_of(v)) {
                Ok(package) => {
                    return Ok(Current {
                        version: v,
                        package,
                        warning: None,
                    });
                }
                Err(e) => {
                    warning = Some(format!(
                        "current version {v} of `{}` is unusable ({e})",
                        self.model
                    ))
                }
            },
            Err(e) if self.root.join(CURRENT).exists() => {
                warning = Some(format!("corrupt pointer: {e}"))
            }
            // Never promoted: the shipped package is live (staged versions are not).
            Err(_) => match ModelPackage::load(&self.shipped) {
                Ok(package) => {
                    return Ok(Current {
                        version: 0,
                        package,
                        warning: None,
                    });
                }
                Err(e) => {
                    warning = Some(format!(
                        "shipped package of `{}` is unusable ({e})",
                        self.model
                    ))
                }
            },
        }
        for v in self.on_disk()?.into_iter().rev().chain([0]) {
            if let Ok(package) = ModelPackage::load(&self.path_of(v)) {
                if let Some(w) = &warning {
                    tracing::warn!(model = %self.model, version = v, "{w}; falling back to the newest valid version");
                }
                return Ok(Current {
                    version: v,
                    package,
                    warning: warning.map(|w| format!("{w}; fell back to version {v}")),
                });
            }
        }
        // Not even the shipped package verifies: report why.
        Err(ModelPackage::load(&self.shipped).err().map_or(
            RegistryError::NoSuchVersion {
                model: self.model.clone(),
                version: 0,
            },
            RegistryError::from,
        ))
    }

    /// Write a new complete version (next number, `parent` recorded) without making it live.
    pub fn stage(
        &self,
        mut manifest: Manifest,
        parent: u32,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<ModelPackage, RegistryError> {
        let version = self.on_disk()?.last().copied().unwrap_or(0).max(parent) + 1;
        manifest.version = version;
        manifest.parent = Some(parent);
        let tmp = self.root.join(format!(".tmp-{}", dir_name(version)));
        if tmp.exists() {
            self.fs.remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        ModelPackage::write_with(&*self.fs, &tmp, manifest, files)?;
        let dest = self.path_of(version);
        self.fs.rename(&tmp, &dest).map_err(io(&dest))?;
        self.sync_dir(&self.root)?;
        Ok(ModelPackage::load(&dest)?)
    }

    /// Make `version` live (atomic pointer switch), then prune to the last K versions.
    pub fn promote(&self, version: u32) -> Result<ModelPackage, RegistryError> {
        let package = ModelPackage::load(&self.path_of(version)).map_err(|e| match e {
            PackageError::MissingFile { .. } => RegistryError::NoSuchVersion {
                model: self.model.clone(),
                version,
            },
            other => other.into(),
        })?;
        let tmp = self.root.join(format!("{CURRENT}.tmp"));
        let path = self.root.join(CURRENT);
        durable::write_atomic(&*self.fs, &path, &tmp, format!("{version}\n").as_bytes())
            .map_err(io(&path))?;
        self.sync_dir(&self.root)?;
        self.prune(version);
        Ok(package)
    }

    /// Delete the versions [`prune_plan`] names. Each is first renamed to
    /// `.pruned-vNNNN` (and the folder fsynced), so that a crash while it is deleted never
    /// leaves a `vNNNN/` that lacks files; what a crash leaves of those is deleted by the
    /// next prune. Failures are logged: the promotion they follow has happened.
    fn prune(&self, current: u32) {
        self.delete_pruned();
        let plan = match self.on_disk() {
            Ok(on_disk) => prune_plan(&on_disk, current, self.keep),
            Err(e) => return tracing::warn!(error = %e, "could not list versions to prune"),
        };
        for old in &plan {
            let from = self.path_of(*old);
            let to = self.root.join(format!("{PRUNED}{}", dir_name(*old)));
            if let Err(e) = self.fs.rename(&from, &to) {
                tracing::warn!(path = %from.display(), error = %e, "could not prune an old version");
            }
        }
        if !plan.is_empty() {
            if let Err(e) = self.sync_dir(&self.root) {
                tracing::warn!(error = %e, "could not fsync the pruned versions' folder");
            }
            self.delete_pruned();
        }
    }

    /// Delete the `.pruned-*` folders.
    fn delete_pruned(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_name().to_string_lossy().starts_with(PRUNED) {
                continue;
            }
            let dir = entry.path();
            if let Err(e) = self.fs.remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "could not delete a pruned version");
            }
        }
    }

    /// Re-point to the current version's parent.
    pub fn rollback(&self) -> Result<ModelPackage, RegistryError> {
        let current = self.open_current()?;
        let parent = current
            .package
            .manifest
            .parent
            .ok_or(RegistryError::NoParent {
                model: self.model.clone(),
                version: current.version,
            })?;
        self.promote(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_k_and_always_the_current_one() {
        assert_eq!(prune_plan(&[1, 2, 3, 4, 5], 5, 3), vec![1, 2]);
        assert_eq!(prune_plan(&[1, 2, 3, 4, 5], 1, 2), vec![2, 3]);
        assert_eq!(prune_plan(&[1, 2], 0, 5), Vec::<u32>::new());
        assert_eq!(
            prune_plan(&[3], 3, 0),
            Vec::<u32>::new(),
            "keep is at least 1"
        );
    }

    #[test]
    fn version_folders_parse() {
        assert_eq!(parse_dir("v0007"), Some(7));
        assert_eq!(parse_dir("v12345"), Some(12345));
        assert_eq!(parse_dir("v7"), None);
        assert_eq!(parse_dir(".tmp-v0003"), None);
        assert_eq!(dir_name(3), "v0003");
    }
}
