#!/usr/bin/env bash
# The daemon's footprint at real rates (BENCHMARKS.md "Daemon footprint"): a camera pipeline
# at 15 frames/s and a microphone pipeline at 4 windows/s (replay sources paced like the
# devices), publishing to mosquitto on loopback (the embedded broker when mosquitto is not
# installed). Measures CPU % of one core, resident memory and wake-ups per second
# (scripts/footprint.py), idle for SECONDS, then while 15 labelled digits make the device
# imprint and fine-tune — with the frames and windows dropped in each phase.
# Usage: scripts/bench-footprint.sh [SECONDS]   (LSSKD_EDGE_BIN=<binary> to use one built before)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bin=${LSSKD_EDGE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --bin lsskd-edge
  bin=target/debug/lsskd-edge
fi
bin=$(realpath "$bin")
port=18851
prom=18852
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
embedded=true
if command -v mosquitto >/dev/null; then
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  embedded=false
  sleep 0.5
fi
source scripts/replay-config.sh
replay_config "$work/config.toml" "$work/state" 67
cat >> "$work/config.toml" <<TOML
[mqtt]
host = "127.0.0.1"
port = $port
embedded_broker = $embedded
homeassistant_prefix = ""
[publish]
prometheus_listen = "127.0.0.1:$prom"
TOML
RUST_LOG=warn "$bin" run --config "$work/config.toml" &
daemon=$!
"$bin" watch --config "$work/config.toml" --raw > "$work/watch.txt" 2>/dev/null &
# Let the models load and the rates settle.
sleep 15
url=http://127.0.0.1:$prom/metrics
idle=$(python3 scripts/footprint.py "$daemon" "$url" --seconds "$seconds")
for d in 3 5 7; do
  "$bin" sample send --config "$work/config.toml" --model vision --label "digit_$d" \
    ../shared/data/mnist-fewshot/preview/$d/*.png > /dev/null
done
# From the samples to the fine-tune's verdict.
busy=$(python3 scripts/footprint.py "$daemon" "$url" --watch "$work/watch.txt" \
  --until '"state":"(promoted|rejected|failed)","kind":"finetune"')
outcome=$(grep -oE '"state":"(promoted|rejected|failed)","kind":"finetune"' "$work/watch.txt" | tail -1 || true)
python3 - "$idle" "$busy" "$outcome" "$embedded" <<'PY'
import json, sys
idle, busy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
broker = "embedded (rumqttd, in the daemon)" if sys.argv[4] == "true" else "mosquitto on loopback"
print(f"broker: {broker}; fine-tune: {sys.argv[3] or 'no verdict'}")
print("| phase | seconds | CPU % of one core | RSS median (max) | wake-ups / s | camera frames/s (dropped) | microphone windows/s (dropped) |")
print("|---|---|---|---|---|---|---|")
for name, r in (("idle", idle), ("imprint + fine-tune", busy)):
    p = r["pipelines"]
    cam, mic = p.get("camera", {}), p.get("microphone", {})
    print(f"| {name} | {r['seconds']:.0f} | {r['cpu_percent_of_one_core']:.1f} | "
          f"{r['rss_mb_median']:.0f} MiB ({r['rss_mb_max']:.0f}) | {r['wakeups_per_s']:.0f} | "
          f"{cam.get('frames_per_s', 0):.1f} ({cam.get('dropped', 0):.0f}) | "
          f"{mic.get('frames_per_s', 0):.1f} ({mic.get('dropped', 0):.0f}) |")
PY
