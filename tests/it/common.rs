//! Shared helpers: paths to the shared data sets and the built binary, small data slices.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
