#!/usr/bin/env bash
# CPU cost of an RTSP camera: the daemon reads a 320×240 H.264 stream (a scene timeline
# served by scripts/rtsp-server.py on loopback) with interval_ms = 200 (5 frames a second
# to inference) for SECONDS, and this prints the CPU of its ffmpeg child (decode, frame
# selection, RGB conversion, the pipe) and of the daemon (reading frames, features and
# inference of the shipped vision model), each in % of one core, for streams of 5 and 15
# fps. Guards the issue-30 budget: a camera at 5 fps under 5 % of a core.
# Usage: scripts/bench-rtsp.sh [SECONDS]   (needs what scripts/setup.sh installs)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cargo build --bin lsskd-edge
bin=${CARGO_TARGET_DIR:-target}/debug/lsskd-edge
frames=../shared/data/scene-states/val/va01_table/timeline
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
tick=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "| stream | ffmpeg, % of a core | ffmpeg per decoded frame | daemon, % of a core |"
echo "|---|---|---|---|"
for fps in 5 15; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  /usr/bin/python3 scripts/rtsp-server.py "$frames" "$port" --fps "$fps" >"$work/server.log" 2>&1 &
  server=$!
  pids+=("$server")
  sleep 2
  # No broker: the pipeline runs all the same (MQTT retries in the background).
  cat >"$work/config.toml" <<TOML
device_id = "bench"
state_dir = "$work/state"
[[pipeline]]
name = "cam"
model = "$PWD/models/vision"
[pipeline.source]
kind = "rtsp"
url = "rtsp://127.0.0.1:$port/cam"
interval_ms = 200
[mqtt]
host = "127.0.0.1"
port = 9
TOML
  RUST_LOG=warn "$bin" run --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
  daemon=$!
  pids+=("$daemon")
  sleep 8 # connected and streaming
  ffmpeg=$(pgrep -P "$daemon" ffmpeg) || { echo "no ffmpeg child:"; cat "$work/daemon.log"; exit 1; }
  f0=$(cpu_ticks "$ffmpeg") d0=$(cpu_ticks "$daemon") t0=$(date +%s.%N)
  sleep "$secs"
  f1=$(cpu_ticks "$ffmpeg") d1=$(cpu_ticks "$daemon") t1=$(date +%s.%N)
  python3 -c "
dt = $t1 - $t0
f, d = ($f1 - $f0) / $tick, ($d1 - $d0) / $tick
print(f'| 320x240 H.264, {$fps} fps | {f / dt * 100:.1f} | {f / (dt * $fps) * 1000:.2f} ms | {d / dt * 100:.1f} |')"
  kill "$daemon" "$server"
  wait "$daemon" "$server" 2>/dev/null || true
done
