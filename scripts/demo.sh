#!/usr/bin/env bash
# Command 1 of the README: install what is needed, build, and run the daemon on the
# bundled demo config — replay sources over demo/samples, both shipped models, and an
# embedded MQTT broker on 127.0.0.1:1884. Predictions show in the log; in a second
# terminal, `target/debug/lsskd-edge watch --config config/demo.toml` (or
# `mosquitto_sub -h 127.0.0.1 -p 1884 -t 'lsskd/#' -v`) shows them over MQTT.
# Ctrl-C stops it. Extra arguments go to `cargo build`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --bin lsskd-edge "$@"
# The default log is quiet (events only); the demo also shows every prediction.
export RUST_LOG=${RUST_LOG:-info,lsskd_edge::predictions=debug}
exec "${CARGO_TARGET_DIR:-target}/debug/lsskd-edge" run --config config/demo.toml
