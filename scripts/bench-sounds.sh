#!/usr/bin/env bash
# Sound events (issue 29), the numbers of BENCHMARKS.md "Sound events", in stages:
#  methods    candidates for `models/sounds`: the 9 core classes of
#             ../shared/data/sound-events plus a background class, bed mixing and microphone
#             augmentation, ARCH (resnet-m), the audio front end (40 log-mel), one per METHOD
#             (lsskd sla ce pskd) and SEED (0 1 2), each evaluated through tract on `val` and
#             `val-noisy` (core classes; the novel ones are skipped): a Markdown row per run;
#  transfer   each `methods` run of OUT (METHODS x SEEDS) taught the 5 novel classes by
#             imprinting alone (`fewshot-bench --epochs 0`, the episodes of `fewshot`), queries
#             of `val` and `val-noisy`: how well each method's features transfer;
#  fewshot    MODEL (models/sounds) taught the 5 novel classes, 3 clips of one source
#             recording a class (`--group-by recording_id`; glass_break has 4 train clips),
#             queries from other recordings, clean (`val`) and noisy (`val-noisy`), the core
#             classes measured on the same split: imprint-only beside the daemon's recipe
#             (imprint + fine-tune + gate), EPISODES (10) episodes;
#  timelines  scripts/sound-timelines.py: the val timelines through the real daemon, before
#             and after the novel classes are taught by MQTT samples.
# Usage: scripts/bench-sounds.sh [OUT_DIR]   (STAGES="methods transfer fewshot timelines",
#        METHODS, SEEDS, ARCH, EPOCHS=60, BUDGET_MINS (none: the whole schedule), MODEL, EPISODES)
# Run it with RAYON_NUM_THREADS=1 and `nice -n 19` beside other work; times are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
data=${DATA:-../shared/data/sound-events}
stages=${STAGES:-methods transfer fewshot timelines}
arch=${ARCH:-resnet-m}
epochs=${EPOCHS:-60}
model=${MODEL:-models/sounds}
episodes=${EPISODES:-10}
[ -n "${BIN:-}" ] || cargo build --bin lsskd-edge >&2
bin=${BIN:-target/debug/lsskd-edge}   # dev profile, dependencies at opt-level 3 (Cargo.toml)
core=speech,alarm,animal,bird,vehicle,water,footsteps,music,tools
mkdir -p "$out"
# `cmd`: the few-shot episodes of the novel classes for model $1, queries and core classes
# of split $2, then any further arguments (the `transfer` and `fewshot` stages).
episodes_cmd() {
  local model=$1 split=$2; shift 2
  cmd=("$bin" fewshot-bench --model "$model" --support-data "$data" --support-split train
       --query-data "$data" --query-split "$split" --base-data "$data" --base-split "$split"
       --way 5 --shot 3 --episodes "$episodes" --group-by recording_id --seed 0 --json "$@")
}
if [[ $stages == *methods* ]]; then
  echo "## methods ($arch, $epochs epochs)"
  echo "| method | seed | epochs run | s / epoch | val (core, tract) | val-noisy (core, tract) | background on val / val-noisy | train s |"
  echo "|---|---|---|---|---|---|---|---|"
  for method in ${METHODS:-lsskd sla ce pskd}; do
    for seed in ${SEEDS:-0 1 2}; do
      run="$method-s$seed"
      dir="$out/$run"
      cmd=("$bin" train --data "$data" --split train --val-split val --classes "$core"
           --background-class background --noise-beds "$data/beds" --mic-augment
           --arch "$arch" --method "$method" --epochs "$epochs"
           --batch-size 32 --seed "$seed" --name sounds --out "$dir")
      [ -z "${BUDGET_MINS:-}" ] || cmd+=(--budget-mins "$BUDGET_MINS")
      echo "${cmd[*]}" > "$out/$run.cmd"
      "${cmd[@]}" > "$out/$run.log" 2>&1
      for split in val val-noisy; do
        "$bin" eval --model "$dir" --data "$data" --split "$split" --json > "$out/$run-$split.json"
      done
      python3 - "$out" "$run" "$method" "$seed" <<'PY'
import csv, json, sys
out, run, method, seed = sys.argv[1:]
rows = list(csv.DictReader(open(f"{out}/{run}/train-log.csv")))
secs = sum(float(r["seconds"]) for r in rows)
accs, bg = [], []
for split in ("val", "val-noisy"):
    r = json.load(open(f"{out}/{run}-{split}.json"))
    accs.append(f"{r['accuracy']:.3f} ({round(r['accuracy'] * r['n'])}/{r['n']})")
    b = r["classes"].index("background")
    bg.append(str(sum(row[b] for row in r["confusion"])))
print(f"| {method} | {seed} | {len(rows)} | {secs / max(len(rows), 1):.0f} | {accs[0]} | {accs[1]} | {' / '.join(bg)} | {secs:.0f} |")
PY
    done
  done
fi
if [[ $stages == *transfer* ]]; then
  echo "## transfer: each method's run taught the novel classes by imprinting alone (5-way 3-shot, $episodes episodes)"
  echo "| method | seed | novel, imprint-only, val | novel, imprint-only, val-noisy | core on val-noisy, before → imprinted |"
  echo "|---|---|---|---|---|"
  for method in ${METHODS:-lsskd sla ce pskd}; do
    for seed in ${SEEDS:-0 1 2}; do
      run="$method-s$seed"
      [ -d "$out/$run" ] || { echo "| $method | $seed | (no run $out/$run) | | |"; continue; }
      for split in val val-noisy; do
        episodes_cmd "$out/$run" "$split" --epochs 0
        "${cmd[@]}" > "$out/transfer-$run-$split.json" 2> "$out/transfer-$run-$split.log"
      done
      python3 - "$out" "$run" "$method" "$seed" <<'PY'
import json, sys
out, run, method, seed = sys.argv[1:]
r = {s: json.load(open(f"{out}/transfer-{run}-{s}.json")) for s in ("val", "val-noisy")}
n = r["val-noisy"]
imprinted = sum(e["imprint_only_base_accuracy"] for e in n["per_episode"]) / len(n["per_episode"])
cells = [f"{r[s]['imprint_only_novel_accuracy']:.3f} ± {r[s]['imprint_only_novel_ci95']:.3f}" for s in r]
print(f"| {method} | {seed} | {cells[0]} | {cells[1]} | {n['base_accuracy_before']:.3f} → {imprinted:.3f} |")
PY
    done
  done
fi
if [[ $stages == *fewshot* ]]; then
  echo "## few-shot: $model taught the novel classes (5-way 3-shot, $episodes episodes)"
  echo "| queries and core classes | novel, imprint-only | novel, imprint + fine-tune | core before | core, imprinted | core, fine-tuned | promoted by the gate (fine-tuned) |"
  echo "|---|---|---|---|---|---|---|"
  for split in val val-noisy; do
    episodes_cmd "$model" "$split"
    echo "# ${cmd[*]}"
    "${cmd[@]}" > "$out/fewshot-$split.json" 2> "$out/fewshot-$split.log"
    python3 - "$out/fewshot-$split.json" "$split" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
imprinted = [e["imprint_only_base_accuracy"] for e in r["per_episode"]]
print(f"| {sys.argv[2]} | {r['imprint_only_novel_accuracy']:.3f} ± {r['imprint_only_novel_ci95']:.3f} "
      f"| {r['novel_accuracy']:.3f} ± {r['novel_ci95']:.3f} | {r['base_accuracy_before']:.3f} "
      f"| {sum(imprinted) / len(imprinted):.3f} | {r['base_accuracy_after']:.3f} "
      f"| {r['promoted_episodes']} of {r['episodes']} ({r['finetune_promoted_episodes']}) |")
PY
  done
fi
if [[ $stages == *timelines* ]]; then
  cmd=(python3 scripts/sound-timelines.py --bin "$bin" --model "$model" --data "$data"
       --split val --work "$out/timelines")
  echo "## timelines ($model)"
  echo "# ${cmd[*]}"
  "${cmd[@]}"
fi
