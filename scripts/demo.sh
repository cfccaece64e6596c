#!/usr/bin/env bash
# Command 1 of the README: install what is needed, build, and run the daemon on the
# bundled demo config — a camera view playing a scene timeline into `models/scenes`, a
# minute of real sounds into `models/sounds`, and an embedded MQTT broker on 127.0.0.1:1884 —
# then teach the camera its view as a user would: five frames of each of its five states,
# sent as MQTT samples, and a fine-tune. Predictions and what the trainer does show in the log; in a
# second terminal, `target/debug/lsskd-edge watch --config config/demo.toml` (or
# `mosquitto_sub -h 127.0.0.1 -p 1884 -t 'lsskd/#' -v`) shows them over MQTT. Ctrl-C stops
# it. Extra arguments go to `cargo build`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --bin lsskd-edge "$@"
bin="${CARGO_TARGET_DIR:-target}/debug/lsskd-edge"
# The default log is quiet (events only); the demo also shows every prediction.
export RUST_LOG=${RUST_LOG:-info,lsskd_edge::predictions=debug}
"$bin" run --config config/demo.toml &
daemon=$!
# Ctrl-C reaches the daemon itself (the terminal signals the whole process group): wait for
# its clean stop. A TERM for this script alone is passed on.
trap 'wait "$daemon"' INT
trap 'kill -TERM "$daemon" 2>/dev/null || true; wait "$daemon"' TERM
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/1884) 2>/dev/null && break
  sleep 0.2
done
# The broker listens before the daemon has subscribed (a sample published then reaches no
# one and is never acknowledged): wait for the camera model's card, which the daemon
# publishes after its subscriptions.
mosquitto_sub -h 127.0.0.1 -p 1884 -t lsskd/demo/model/scenes/info -C 1 -W 60 >/dev/null || true
# Teach the camera its view (kept in target/demo-state: a second run finds it taught, and
# the samples are acknowledged as duplicates).
for state in empty animal vehicle parcel lights_off; do
  "$bin" sample send --config config/demo.toml --model scenes --label "$state" \
    demo/samples/scenes/teach/"$state"/*.jpg >&2 || true
done
mosquitto_pub -h 127.0.0.1 -p 1884 -t lsskd/demo/model/scenes/cmd -m adapt || true
wait "$daemon"
