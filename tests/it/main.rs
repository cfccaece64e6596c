//! Integration tests: one binary, shared helpers in `common`.

mod common;
mod core_cli;
mod lsskd_training;
mod registry;
mod settings_cli;
mod shipped;
