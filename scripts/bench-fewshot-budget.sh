#!/usr/bin/env bash
# Few-shot adaptation at the old and the new fine-tune budget on the same episodes
# (BENCHMARKS.md "Adaptation in seconds"): 50 s (the budget before the faster training step)
# and 10 s (today's default). Vision 5-way 5-shot on MNIST digits, audio 5-way 5-shot on new
# words.
# Usage: scripts/bench-fewshot-budget.sh [EPISODES] [SEED]   (a table on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
episodes=${1:-10}
seed=${2:-1}
source scripts/fewshot-args.sh
echo "| model | budget | novel acc. (±95% CI) | imprint only | base before → after | steps (mean) | s / adaptation (max) | s with the gate (max) | peak RSS | promoted |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run() {
  local name=$1 budget=$2; shift 2
  "$bin" fewshot-bench "$@" --way 5 --shot 5 --episodes "$episodes" --seed "$seed" \
    --budget-secs "$budget" --json 2>/dev/null |
    python3 -c '
import json, sys
name, budget = sys.argv[1:3]
r = json.loads(sys.stdin.read())
eps = r["per_episode"]
steps = sum(e["steps"] for e in eps) / len(eps)
smax = max(e["seconds"] for e in eps)
whole = [e["seconds"] + e["gate_seconds"] for e in eps]
novel = "%.3f ± %.3f" % (r["novel_accuracy"], r["novel_ci95"])
imprint = "%.3f ± %.3f" % (r["imprint_only_novel_accuracy"], r["imprint_only_novel_ci95"])
base = "%.3f → %.3f" % (r["base_accuracy_before"], r["base_accuracy_after"])
promoted = sum(1 for e in eps if e["promoted"])
print("| %s | %s s | %s | %s | %s | %.0f | %.1f (%.1f) | %.1f (%.1f) | %.0f MiB | %d/%d |" % (
    name, budget, novel, imprint, base, steps, r["seconds_per_episode"], smax,
    sum(whole) / len(whole), max(whole), r["peak_rss_mb"], promoted, len(eps)))
' "$name" "$budget"
}
run vision 50 "${vision[@]}"
run vision 10 "${vision[@]}"
run audio 50 "${audio[@]}"
run audio 10 "${audio[@]}"
