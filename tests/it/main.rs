//! Integration tests: one binary, shared helpers in `common`.

mod adapt_core;
mod adaptation;
mod broker_acl;
mod camera;
mod common;
mod core_cli;
mod crash;
mod daemon;
mod fleet;
mod harness;
mod home_assistant;
mod imports;
mod in_process;
mod ingest_fuzz;
mod lsskd_training;
mod packaging;
mod registry;
mod rtsp;
mod samples_mqtt;
mod scenes;
mod settings_cli;
mod shipped;
mod sounds;
mod teach;
