//! Shared helpers: paths to the shared data sets and the built binary, small data slices.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `../shared/data` beside the repository (CI lays a copy there too).
pub fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

pub fn fashion() -> PathBuf {
    data_root().join("fashion-mnist")
}

pub fn kws() -> PathBuf {
    data_root().join("espeak-kws")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run the real binary with `args`.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsskd-edge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("spawn lsskd-edge")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The CPU, shared among the tests that train or run daemons. A test whose outcome depends
/// on timing (a timeline scored frame by frame as it plays, a first run with the default
/// settings) takes it alone, so that on a 2-core machine it runs as a quiet device would;
/// the rest share it.
static CPU: RwLock<()> = RwLock::new(());

pub fn cpu_shared() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn cpu_alone() -> RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(PoisonError::into_inner)
}
