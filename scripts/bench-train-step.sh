#!/usr/bin/env bash
# One training step (batch 64, resnet-s, 1×28×28, 10 classes) of lsskd-edge (burn flex,
# `lsskd-edge bench-train`) side by side with a PyTorch CPU peer of the same network, heads
# and losses (scripts/torch_train_bench.py), same thread count, in one run: `ce`, `lsskd`
# sampled (128 rows) and `lsskd` all 4 rotations (256 rows). Each config runs ours, then
# the peer, before the next config.
# Usage: scripts/bench-train-step.sh [STEPS] [THREADS]   (torch goes into target/bench-venv)
#   PROFILE=1 also prints the per-op profile of each config (each layer alone, as the step
#   runs it); PLAIN=1 runs our step through the plain burn ops instead of lsskd::kernels
#   (`--plain`, which needs a `--features bench` build: the one this script makes).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20}
threads=${2:-2}
warmup=3
# LSSKD_EDGE_BIN: a binary built before (with `--features bench` for PLAIN=1); else build one.
bin=${LSSKD_EDGE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --features bench --bin lsskd-edge
  bin=${CARGO_TARGET_DIR:-target}/debug/lsskd-edge
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy
fi
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $threads threads; $steps steps after $warmup warm-up"
# The last row is the adaptation's fine-tune step (batch 16 as `[adapt]`; frozen prefix).
for cfg in "ce sampled 64" "lsskd sampled 64" "lsskd all 64" "lsskd sampled 16 --finetune"; do
  set -- $cfg
  ours=$("$bin" bench-train --method "$1" --transforms "$2" --batch "$3" --arch resnet-s \
    --steps "$steps" --warmup "$warmup" --threads "$threads" --json ${4:-} ${PROFILE:+--profile} ${PLAIN:+--plain})
  peer=$("$venv/bin/python" scripts/torch_train_bench.py --method "$1" --transforms "$2" \
    --batch "$3" --steps "$steps" --warmup "$warmup" --threads "$threads" ${4:-})
  python3 - "$ours" "$peer" <<'PY'
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
s = o["step"]
name = o["method"] if o["method"] == "ce" else f"{o['method']} {o['transforms']}"
if o.get("finetune"):
    name = f"fine-tune b{o['batch']}"
print(f"{name:<14} {o['rows']:>3} rows  lsskd-edge {s['mean_ms']:7.1f} ms/step (p50 {s['p50_ms']:.1f})  "
      f"PyTorch {p['torch']} {p['mean_ms']:6.1f} ms/step (p50 {p['p50_ms']:.1f})  "
      f"ours/PyTorch {s['mean_ms'] / p['mean_ms']:.2f}x  "
      f"cores busy {o['cores_busy']:.2f} / {p['cores_busy']:.2f}  "
      f"peak RSS {o['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} MiB")
if o["params"] != p["params"] or o["rows"] != p["rows"]:
    print(f"  WARNING: not the same network: params {o['params']} vs {p['params']}, "
          f"rows {o['rows']} vs {p['rows']}")
prof = o.get("profile")
if prof:
    for op in prof["ops"]:
        print(f"    {op['kind']:<16} {op['op']:<48} x{op['count']:<3} fwd {op['forward_ms']:7.2f}  "
              f"bwd {op['backward_ms']:7.2f}  total {op['total_ms']:7.1f} ms")
    for k in prof["kinds"]:
        print(f"    = {k['kind']:<16} fwd {k['forward_ms']:7.1f}  bwd {k['backward_ms']:7.1f}  "
              f"total {k['total_ms']:7.1f} ms ({100 * k['total_ms'] / prof['step_mean_ms']:.0f}% of the step)")
    print(f"    sum of ops {prof['total_ms']:.1f} ms vs measured step {prof['step_mean_ms']:.1f} ms "
          f"(coverage {100 * prof['coverage']:.0f}%)")
PY
done
