#!/usr/bin/env bash
# Camera scenes (issue 30), every number of BENCHMARKS.md "Camera scenes":
#  1. regions of interest for the views (scripts/scene-regions.py, from the teaching frames);
#  2. the candidate backbones for `models/scenes`: resnet-s at 64x64 on the square around
#     each frame's change from its view's empty reference (`--crop-to-change empty`, inside
#     the view's region; its colour and, as a fourth channel, the change), trained on 30 train views (4 held out for validation and
#     the gate set), one per METHOD (default "lsskd ce");
#  3. per-view teaching on the val views (`view-bench`: 5 frames per state teach, the other
#     11 per state test; the empty ones are the reference) for each candidate and for the
#     shipped Fashion-MNIST model (whole frame, the region, the change), imprint-only beside
#     fine-tuned;
#  4. the end-to-end timelines through the daemon for MODEL (default: the shipped
#     models/scenes; scripts/scene-timelines.py).
# Usage: scripts/bench-scenes.sh [OUT_DIR]   (EPOCHS=10, SEED=0, DRAWS=1, STAGES="train views timelines",
#        TRANSFORMS: `train --transforms`, e.g. sampled)
# Run with RAYON_NUM_THREADS=1 and `nice` beside other work.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
data=$(realpath "${DATA:-../shared/data/scene-states}")
epochs=${EPOCHS:-10}
seed=${SEED:-0}
draws=${DRAWS:-1}
stages=${STAGES:-train views timelines}
[ -n "${BIN:-}" ] || cargo build --bin lsskd-edge >&2
bin=$(realpath "${BIN:-target/debug/lsskd-edge}")
mkdir -p "$out"
python3 scripts/scene-regions.py "$data" train > "$out/regions-train.csv"
python3 scripts/scene-regions.py "$data" val > "$out/regions-val.csv"
# Train views tr31..tr34 are held out of training: the validation split and gate set.
mkdir -p "$out/data/fit" "$out/data/hold"
ln -sfn "$data/classes.txt" "$out/data/classes.txt"
for v in "$data"/train/*/; do
  v=$(basename "$v")
  case $v in tr3[1-4]_*) ln -sfn "$data/train/$v" "$out/data/hold/$v" ;;
             *) ln -sfn "$data/train/$v" "$out/data/fit/$v" ;; esac
done
if [[ $stages == *train* ]]; then
  for method in ${METHODS:-lsskd ce}; do
    cmd=("$bin" train --data "$out/data" --split fit --val-split hold
         --regions "$out/regions-train.csv" --image-size 64x64 --arch resnet-s
         --crop-to-change empty --method "$method" --epochs "$epochs" --batch-size 32
         --seed "$seed" --name scenes ${TRANSFORMS:+--transforms "$TRANSFORMS"}
         --replay-per-class 20 --gate-per-class 40 --out "$out/$method")
    echo "# ${cmd[*]}"
    "${cmd[@]}" > "$out/$method.log" 2>&1
    tail -n 1 "$out/$method/train-log.csv"
  done
fi
if [[ $stages == *views* ]]; then
  view() { # name, model, extra args
    local name=$1 model=$2; shift 2
    local cmd=("$bin" view-bench --model "$model" --data "$data" --split val --shot 5
               --draws "$draws" --seed "$seed" "$@")
    echo "## $name"
    echo "# ${cmd[*]}"
    "${cmd[@]}" --json > "$out/views-$name.json" 2> "$out/views-$name.log"
    python3 - "$out/views-$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("| view | before | imprinted | fine-tuned | served | gate |")
print("|---|---|---|---|---|---|")
for t in r["teachings"]:
    b = "-" if t["before"] is None else f"{t['before']:.3f}"
    print(f"| {t['view']} #{t['draw']} | {b} | {t['imprinted']:.3f} | {t['finetuned']:.3f} | {t['served']:.3f} | {t['promoted_as'] or t['verdict']} |")
b = "-" if r["before"] is None else f"{r['before']:.3f}"
print(f"| **mean** | {b} | {r['imprinted']:.3f} | {r['finetuned']:.3f} ± {r['finetuned_ci95']:.3f} | {r['served']:.3f} | {r['promoted']} of {len(r['teachings'])} promoted |")
print(f"worst view, fine-tuned: {r['worst_view_finetuned'][0]} {r['worst_view_finetuned'][1]:.3f}")
PY
  }
  view fashion-whole models/vision
  view fashion-region models/vision --regions "$out/regions-val.csv"
  view fashion-change models/vision --regions "$out/regions-val.csv" --crop-to-change empty
  for method in ${METHODS:-lsskd ce}; do
    [ -d "$out/$method" ] && view "scenes-$method" "$out/$method" --regions "$out/regions-val.csv"
  done
  [ -d models/scenes ] && view scenes-shipped models/scenes --regions "$out/regions-val.csv"
fi
if [[ $stages == *timelines* ]]; then
  model=${MODEL:-models/scenes}
  cmd=(python3 scripts/scene-timelines.py --bin "$bin" --model "$model" --data "$data"
       --split val --regions "$out/regions-val.csv" --work "$out/timelines")
  echo "## timelines ($model)"
  echo "# ${cmd[*]}"
  "${cmd[@]}"
fi
