#!/usr/bin/env bash
# Sound events (issue 29): train the candidates for `models/sounds` — the 9 core classes of
# ../shared/data/sound-events plus a background class, bed mixing and microphone
# augmentation, resnet-s, the shipped audio model's front end (40 log-mel) — one method
# after the other, then evaluate each through tract on `val` and `val-noisy` (core
# classes; the novel ones are skipped). Prints a Markdown table for BENCHMARKS.md
# ("Sound events"). Usage:
#   scripts/bench-sounds.sh [BUDGET_MINS] [OUT_DIR]      (BUDGET_MINS 0: the whole schedule)
# METHODS="lsskd sla" (default) picks the methods, SEED (0) the seed, EPOCHS (60) the
# planned schedule that --budget-mins fits to the time. Run it with RAYON_NUM_THREADS=1
# and `nice -n 19` beside other work; the epoch times are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-15}
out=${2:-$(mktemp -d)}
data=${DATA:-../shared/data/sound-events}
seed=${SEED:-0}
epochs=${EPOCHS:-60}
[ -n "${BIN:-}" ] || cargo build --bin lsskd-edge >&2
bin=${BIN:-target/debug/lsskd-edge}   # dev profile, dependencies at opt-level 3 (Cargo.toml)
core=speech,alarm,animal,bird,vehicle,water,footsteps,music,tools
mkdir -p "$out"
echo "| method | epochs run | s / epoch | val (core, tract) | val-noisy (core, tract) | background on val / val-noisy | train s |"
echo "|---|---|---|---|---|---|---|"
for method in ${METHODS:-lsskd sla}; do
  dir="$out/$method"
  cmd=("$bin" train --data "$data" --split train --val-split val --classes "$core"
       --background-class background --noise-beds "$data/beds" --mic-augment
       --arch resnet-s --method "$method" --epochs "$epochs"
       --batch-size 32 --seed "$seed" --out "$dir")
  [ "$budget" = 0 ] || cmd+=(--budget-mins "$budget")
  echo "${cmd[*]}" > "$out/$method.cmd"
  "${cmd[@]}" > "$out/$method.log" 2>&1
  for split in val val-noisy; do
    "$bin" eval --model "$dir" --data "$data" --split "$split" --json > "$out/$method-$split.json"
  done
  python3 - "$out" "$method" <<'PY'
import csv, json, sys
out, method = sys.argv[1:]
rows = list(csv.DictReader(open(f"{out}/{method}/train-log.csv")))
secs = sum(float(r["seconds"]) for r in rows)
accs, bg = [], []
for split in ("val", "val-noisy"):
    r = json.load(open(f"{out}/{method}-{split}.json"))
    accs.append(f"{r['accuracy']:.3f} ({round(r['accuracy'] * r['n'])}/{r['n']})")
    b = r["classes"].index("background")
    bg.append(str(sum(row[b] for row in r["confusion"])))
print(f"| {method} | {len(rows)} | {secs / max(len(rows), 1):.0f} | {accs[0]} | {accs[1]} | {' / '.join(bg)} | {secs:.0f} |")
PY
done
