//! lsskd-edge: an edge daemon that classifies camera frames and microphone windows with
//! compact CNNs trained with LSSKD (layered self-supervised knowledge distillation),
//! publishes results over MQTT and learns new classes on the device (imprinting, then a
//! cross-entropy fine-tune).
//!
//! The library holds the whole system; `src/main.rs` only parses the command line.
//! Module map, in dependency order (ARCHITECTURE.md has what each depends on, and which
//! third-party crates each imports: its module table, which `tests/it/imports.rs` keeps
//! true):
//! - [`durable`]: the file operations whose order decides what survives a crash (and,
//!   in tests, the crash-point explorer that replays every crash state of them).
//! - [`settings`]: layered configuration with validation that reports every problem.
//! - [`features`]: pure functions from images / PCM to model input tensors.
//! - [`augment`]: training-time augmentation of images and audio.
//! - [`dataset`]: IDX and folder-tree data sets for training, evaluation and benchmarks.
//! - [`lsskd`]: student, auxiliary heads, losses, trainer, on burn (which [`registry`]
//!   and [`commands`] import too).
//! - [`inference`]: ONNX writing and running on tract, our convolution op.
//! - [`trainset`]: raw items to training data (features and augmentation).
//! - [`registry`]: model packages on disk (manifest, hashes, replay and gate exemplars)
//!   and the per-device version store (atomic promote, rollback).
//! - [`capture`]: input sources, hand-over slots with full-buffer rules, audio windows,
//!   the capture ring.
//! - [`samples`]: the durable labelled-sample store and the sample request checks.
//! - [`mqtt`]: topic tree, payload schemas, Home Assistant discovery, the session state
//!   and the connection task, the embedded broker.
//! - [`parts`]: supervised OS threads (panics reported, stopping bounded by a deadline).
//! - [`pipeline`]: one pipeline — source thread, inference worker, its outputs, label
//!   requests, debounce and publish decisions.
//! - [`adapt`]: on-device adaptation — the job, the learner, the promotion gate and its
//!   statistics, the scheduler.
//! - [`daemon`]: `lsskd-edge run` — wiring, the inbound and trainer threads, status,
//!   supervision, shutdown order, sd_notify.
//! - [`commands`]: the CLI subcommands as library functions.

pub mod adapt;
pub mod augment;
pub mod capture;
pub mod commands;
pub mod daemon;
pub mod dataset;
pub mod durable;
pub mod features;
pub mod fleet;
pub mod inference;
pub mod lsskd;
pub mod mqtt;
pub mod parts;
pub mod pipeline;
pub mod registry;
pub mod samples;
pub mod settings;
pub mod trainset;

/// The `tracing` target of per-prediction and per-state-change log lines (at DEBUG, so
/// that a healthy daemon's log stays quiet; the demo turns it on to show predictions).
pub const PREDICTIONS_LOG: &str = "lsskd_edge::predictions";

/// The log level when `RUST_LOG` is not set: our INFO events (see [`log_filter`] for the
/// embedded broker's).
pub const DEFAULT_LOG_FILTER: &str = "info";

/// What the embedded broker (`rumqttd`) may log: warnings, without its per-connection
/// chatter (`server::broker` logs every accept; `router::routing` logs an ERROR
/// "no-connection id N is already gone" each time a client leaves). Off there, real
/// routing errors are off too: the embedded broker is the demo's; production uses
/// mosquitto.
pub const BROKER_LOG_FILTER: &str =
    "rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off";

/// The log filter for `RUST_LOG` (`None`: unset): its directives, or [`DEFAULT_LOG_FILTER`],
/// followed by [`BROKER_LOG_FILTER`] unless they name `rumqttd` themselves, so that a
/// plain `RUST_LOG=info` (as the systemd unit sets) keeps a healthy daemon's log quiet.
pub fn log_filter(rust_log: Option<&str>) -> String {
    let base = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_LOG_FILTER);
    if base.contains("rumqttd") {
        base.to_string()
    } else {
        format!("{base},{BROKER_LOG_FILTER}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_stays_quiet_under_a_plain_rust_log_and_obeys_one_that_names_it() {
        for plain in [None, Some(""), Some("info"), Some("debug,tract=warn")] {
            let f = log_filter(plain);
            assert!(
                f.ends_with(
                    ",rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off"
                ),
                "{plain:?} -> {f}"
            );
            tracing_subscriber::EnvFilter::try_new(&f).expect("a valid filter");
        }
        assert!(log_filter(None).starts_with("info,"));
        assert_eq!(log_filter(Some("info,rumqttd=debug")), "info,rumqttd=debug");
    }
}
