#!/usr/bin/env bash
# The full-schedule method comparison (BENCHMARKS.md "Vision: full Fashion-MNIST, 20
# epochs"): for each METHOD:SEED, train `resnet-s` on all of Fashion-MNIST's train split
# for EPOCHS (default 20), then measure the backbone's few-shot transfer: imprint only
# (`--epochs 0`), 5-way 5-shot digits from the tuning part of mnist-fewshot, seed 1, 10
# episodes. Packages, logs and the transfer JSON go to OUT (default target/methods).
# Usage: scripts/bench-methods-seeds.sh ce:1 pskd:1 …   (BIN: a release build, else built)
# Two runs side by side with RAYON_NUM_THREADS=1 each give more steps per second than one
# run on two threads (2-core machine): 1.5 times for `ce`/`pskd`, only 1.2 times for
# `sla`/`lsskd` (0.51 s a step each against 0.31), which then finish much later: start two
# of these scripts when throughput matters, one when the first package is wanted soon.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${BIN:-}" ] || cargo build --release --bin lsskd-edge >&2
bin=${BIN:-target/release/lsskd-edge}
# The vision episodes of the few-shot benchmarks (tuning part of the digits), minus their
# `--model models/vision`: each trained backbone takes its place.
LSSKD_EDGE_BIN=$bin source scripts/fewshot-args.sh
[ "${vision[0]}" = --model ] || { echo "fewshot-args.sh: vision no longer starts with --model" >&2; exit 2; }
episodes=("${vision[@]:2}")
out=${OUT:-target/methods}
epochs=${EPOCHS:-20}
mkdir -p "$out"
for run in "$@"; do
  method=${run%%:*}
  seed=${run##*:}
  dir="$out/$method-s$seed"
  echo "$(date -u +%FT%TZ) $method seed $seed: training" >>"$out/log"
  nice -n 10 "$bin" train --data "$data/fashion-mnist" --split train --val-split val \
    --method "$method" --epochs "$epochs" --seed "$seed" --out "$dir" >"$dir.train.log" 2>&1
  echo "$(date -u +%FT%TZ) $method seed $seed: $(grep -a 'validation accuracy' "$dir.train.log")" >>"$out/log"
  nice -n 10 "$bin" fewshot-bench --model "$dir" "${episodes[@]}" --way 5 --shot 5 \
    --episodes 10 --seed 1 --epochs 0 --base-limit 1000 --json \
    >"$dir.transfer.json" 2>"$dir.transfer.log"
  python3 - "$dir.transfer.json" "$method" "$seed" >>"$out/log" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} seed {sys.argv[3]}: imprint-only digits "
      f"{j['imprint_only_novel_accuracy']:.3f} ± {j['imprint_only_novel_ci95']:.3f}")
PY
done
