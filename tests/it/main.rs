//! Integration tests: one binary, shared helpers in `common`.

mod camera;
mod common;
mod core_cli;
mod daemon;
mod harness;
mod lsskd_training;
mod registry;
mod settings_cli;
mod shipped;
