#!/usr/bin/env bash
# Per-frame / per-window latency of both shipped models (features + tract inference, one
# thread), side by side with onnxruntime on the same model.onnx (inference only).
# Usage: scripts/bench-latency.sh [ITERATIONS]   (onnxruntime goes into target/ort-venv)
# PROFILE=release measures the profile the package ships (default: dev, what tests and
# `cargo run` use); LSSKD_EDGE_BIN=<binary> measures a binary built before (with
# `--features bench`). Each model also runs once with tract's own convolutions
# (LSSKD_EDGE_DIRECT_CONV=0, which only a `bench` build honours) for the comparison with
# ours (src/inference/direct.rs); the first run loads each model as the daemon does, the
# faster of the two on this machine (`chosen at load`). Then, for every narrower vector
# path than this CPU's widest (LSSKD_EDGE_KERNEL_ISA=avx+fma, portable: what a CPU without
# AVX-512, or without AVX, runs), the model loaded the daemon's way with ours limited to
# it, against tract's own convolutions in the same loop (tract keeps its own widest path,
# so on a CPU that really lacks AVX-512 tract is slower too: the ratio is an upper bound).
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
# Narrower vector paths of ours, each against tract's own convolutions, alternating.
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
paths=""
if [[ $flags == *" avx512f "* ]]; then paths="avx+fma portable"
elif [[ $flags == *" avx "* && $flags == *" fma "* ]]; then paths="portable"; fi
for isa in $paths; do
  for m in vision audio; do
    capped=$(LSSKD_EDGE_KERNEL_ISA=$isa "$bin" bench --model "models/$m" --iterations "$n" --json)
    own=$(LSSKD_EDGE_DIRECT_CONV=0 "$bin" bench --model "models/$m" --iterations "$n" --json)
    python3 - "$isa" "$capped" "$own" <<'PY'
import json, sys
isa, c, w = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
k = c["kernel_choice"]
print(f"{c['model']:<7} ours limited to {isa}: at load ours {k['direct_ms']:.3f} ms vs tract's "
      f"{k['tract_ms']:.3f} ms -> chosen {c['kernel']}: {c['inference']['mean_ms']:.3f} ms, "
      f"tract's own {w['inference']['mean_ms']:.3f} ms "
      f"({c['inference']['mean_ms']/w['inference']['mean_ms']:.2f}x of tract's own)")
PY
  done
done
