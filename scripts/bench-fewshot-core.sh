#!/usr/bin/env bash
# The current few-shot tables of BENCHMARKS.md re-run through the adaptation core
# (`adapt::core`, shared by the daemon's learner and fewshot-bench since issue 27):
# vision 5-way 5-shot on the tuning part and on the held-out quarter of the digits
# (seed 1, --budget-secs 150: "Few-shot vision: the sample augmentation and the
# fine-tune's method", the recipe now, 4'), audio 5-way 5-shot cross-accent (seeds 1 and 2,
# --budget-secs 80: "Audio's new words on other accents: a longer fine-tune").
# One thread each (RAYON_NUM_THREADS=1), two runs at a time, as those tables were made.
# Usage: scripts/bench-fewshot-core.sh [EPISODES]   (LSSKD_EDGE_BIN as the others)
# Prints one line per row: novel (fine-tuned) ± ci95, imprint only, shipped before → after,
# promoted (as fine-tune), seconds per adaptation.
set -euo pipefail
cd "$(dirname "$0")/.."
episodes=${1:-10}
source scripts/fewshot-args.sh
out=$(mktemp -d)
export RAYON_NUM_THREADS=1
run() { # name, args...
  local name=$1; shift
  nice -n 5 "$bin" fewshot-bench "$@" --way 5 --shot 5 --episodes "$episodes" --json \
    >"$out/$name.json" 2>"$out/$name.log"
}
run vision-tune-s1 "${vision[@]}" --seed 1 --budget-secs 150 &
run audio-accent-s1 "${audio[@]}" --group-by accent --seed 1 --budget-secs 80 &
wait
run audio-accent-s2 "${audio[@]}" --group-by accent --seed 2 --budget-secs 80 &
POOL_PART=final source scripts/fewshot-args.sh
run vision-final-s1 "${vision[@]}" --seed 1 --budget-secs 150 &
wait
for name in vision-tune-s1 vision-final-s1 audio-accent-s1 audio-accent-s2; do
  python3 - "$out/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: novel {r['novel_accuracy']:.4f} ± {r['novel_ci95']:.4f}, "
      f"imprint only {r['imprint_only_novel_accuracy']:.4f}, shipped "
      f"{r['base_accuracy_before']:.4f} → {r['base_accuracy_after']:.4f}, promoted "
      f"{r['promoted_episodes']} ({r['finetune_promoted_episodes']}), "
      f"{r['seconds_per_episode']:.1f} s per adaptation")
PY
done
rm -rf "$out"
