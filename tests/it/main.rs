//! Integration tests: one binary, shared helpers in `common`.

mod common;
mod core_cli;
mod lsskd_training;
mod settings_cli;
