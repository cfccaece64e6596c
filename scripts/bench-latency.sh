#!/usr/bin/env bash
# Per-frame / per-window latency of both shipped models (features + tract inference, one
# thread), side by side with onnxruntime on the same model.onnx (inference only).
# Usage: scripts/bench-latency.sh [ITERATIONS]   (onnxruntime goes into target/ort-venv)
# PROFILE=release measures the profile the package ships (default: dev, what tests and
# `cargo run` use); LSSKD_EDGE_BIN=<binary> measures a binary built before (with
# `--features bench`). Each model also runs once with tract's own convolutions
# (LSSKD_EDGE_DIRECT_CONV=0, which only a `bench` build honours) for the comparison with
# ours (src/inference/direct.rs); the first run loads each model as the daemon does, the
# faster of the two on this machine (`chosen at load`).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
profile=${PROFILE:-dev}
bin=${LSSKD_EDGE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --profile "$profile" --features bench --bin lsskd-edge
  if [ "$profile" = dev ]; then bin=target/debug/lsskd-edge; else bin=target/$profile/lsskd-edge; fi
fi
venv=target/ort-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime numpy
fi
for m in vision audio; do
  ours=$("$bin" bench --model "models/$m" --iterations "$n" --json)
  own=$(LSSKD_EDGE_DIRECT_CONV=0 "$bin" bench --model "models/$m" --iterations "$n" --json)
  peer=$("$venv/bin/python" scripts/ort_bench.py "models/$m/model.onnx" "$n" 50)
  python3 - "$ours" "$peer" "$own" <<'PY'
import json, sys
o, p, w = (json.loads(a) for a in sys.argv[1:4])
f, i, t = o["features"], o["inference"], o["total"]
print(f"{o['model']:<7} features {f['mean_ms']:.3f} ms (p95 {f['p95_ms']:.3f})  "
      f"tract {i['mean_ms']:.3f} ms (p95 {i['p95_ms']:.3f})  total {t['mean_ms']:.3f} ms  "
      f"onnxruntime {p['onnxruntime']} {p['mean_ms']:.3f} ms (p95 {p['p95_ms']:.3f})  "
      f"tract/ort {i['mean_ms']/p['mean_ms']:.2f}x  peak RSS {o['peak_rss_mb']:.0f} MiB  "
      f"(tract's own convolutions {w['inference']['mean_ms']:.3f} ms, "
      f"{w['inference']['mean_ms']/p['mean_ms']:.2f}x; chosen at load: {o['kernel']}, "
      f"{i['mean_ms']/w['inference']['mean_ms']:.2f}x of tract's own)")
PY
done
