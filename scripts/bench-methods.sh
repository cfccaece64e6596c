#!/usr/bin/env bash
# Compare ce / pskd / sla / lsskd on the same data, split and epoch budget, and time the
# training step (lsskd with all vs sampled transforms, and ce). Prints a Markdown table
# for BENCHMARKS.md. Usage:
#   scripts/bench-methods.sh vision|audio [EPOCHS] [LIMIT_PER_CLASS]
# RUNS="ce:sampled lsskd:all" picks the method:transforms pairs (default: all five).
# Run it on an otherwise idle machine: the step times are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?vision or audio}
epochs=${2:-3}
limit=${3:-}
data_root=${DATA_ROOT:-../shared/data}
[ -n "${BIN:-}" ] || cargo build --bin lsskd-edge >&2
bin=${BIN:-target/debug/lsskd-edge}   # dev profile, dependencies at opt-level 3 (Cargo.toml)
out=$(mktemp -d)
case "$kind" in
  vision) args=(--data "$data_root/fashion-mnist" --split train --val-split val) ;;
  audio) args=(--data "$data_root/espeak-kws" --split train --val-split val --batch-size 32
               --classes yes,no,up,down,left,right,on,off,stop,go,zero,one,two,three,four,five,six,seven,eight,nine) ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
[ -n "$limit" ] && args+=(--limit-per-class "$limit")
echo "| method | transforms | epochs | val accuracy (tract) | s / step | steps | train s |"
echo "|---|---|---|---|---|---|---|"
runs=${RUNS:-"ce:sampled pskd:sampled sla:sampled lsskd:sampled lsskd:all"}
for run in $runs; do
  run=${run/:/ }
  set -- $run
  dir="$out/$1-$2"
  "$bin" train "${args[@]}" --method "$1" --transforms "$2" --epochs "$epochs" --seed 0 --out "$dir" >/dev/null 2>&1
  python3 - "$dir" "$1" "$2" "$epochs" <<'PY'
import csv, json, sys
d, method, transforms, epochs = sys.argv[1:]
rows = list(csv.DictReader(open(f"{d}/train-log.csv")))
steps = sum(int(r["steps"]) for r in rows)
secs = sum(float(r["seconds"]) for r in rows)
m = json.load(open(f"{d}/manifest.json"))
acc = m["metrics"][0]["accuracy"]
print(f"| {method} | {transforms} | {epochs} | {acc:.4f} | {secs/steps:.3f} | {steps} | {secs:.0f} |")
PY
done
rm -rf "$out"
