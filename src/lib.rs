//! lsskd-edge: an edge daemon that classifies camera frames and microphone windows with
//! compact CNNs, publishes results over MQTT and learns new classes on the device with
//! LSSKD (layered self-supervised knowledge distillation).
//!
//! The library holds the whole system; `src/main.rs` only parses the command line.
//! Module map (see ARCHITECTURE.md):
//! - [`features`]: pure functions from images / PCM to model input tensors.
//! - [`dataset`]: IDX and folder-tree data sets for training, evaluation and benchmarks.
//! - [`lsskd`]: the only importer of burn — student, auxiliary heads, losses, trainer.
//! - [`inference`]: the only importer of tract — ONNX writing and running.
//! - [`registry`]: model packages on disk (manifest, hashes, replay exemplars) and the
//!   per-device version store (atomic promote, rollback).
//! - [`samples`]: the durable labelled-sample store.
//! - [`adapt`]: adaptation decisions (hold-back, scheduling, promotion gate).
//! - [`capture`]: input sources, hand-over slots with full-buffer rules, audio windows.
//! - [`pipeline`]: per-pipeline decisions (debounce, publish gate).
//! - [`mqtt`]: topic tree and payload schemas.
//! - [`daemon`]: `lsskd-edge run` — wiring, shutdown order, sd_notify.
//! - [`settings`]: layered configuration with validation that reports every problem.
//! - [`commands`]: the CLI subcommands as library functions.

pub mod adapt;
pub mod augment;
pub mod capture;
pub mod commands;
pub mod daemon;
pub mod dataset;
pub mod features;
pub mod inference;
pub mod lsskd;
pub mod mqtt;
pub mod parts;
pub mod pipeline;
pub mod registry;
pub mod samples;
pub mod settings;
pub mod trainset;

/// The `tracing` target of per-prediction log lines (at DEBUG, so that a healthy daemon's
/// log stays quiet; the demo turns it on to show predictions).
pub const PREDICTIONS_LOG: &str = "lsskd_edge::predictions";

/// The log filter when `RUST_LOG` is not set: our INFO events; the embedded broker's
/// warnings only, without its per-connection chatter (`broker` logs every accept; the
/// router logs an ERROR "no-connection id N is already gone" each time a client leaves).
pub const DEFAULT_LOG_FILTER: &str =
    "info,rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off";
