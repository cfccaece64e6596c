#!/usr/bin/env bash
# The promotion gate's error rates (BENCHMARKS.md "The gate's error rates"): fewshot-bench
# episodes of each kind — good, labels shuffled among the new classes, half of each label's
# samples mislabelled, a shipped class under a new name — adapted with the default budget
# and judged by the daemon's gate with its default settings. Prints how many episodes were
# promoted, and as what (the fine-tune or the imprint).
# Usage: scripts/bench-gate.sh [EPISODES] [SEED]   (MODELS="audio" for one model)
set -euo pipefail
cd "$(dirname "$0")/.."
episodes=${1:-10}
seed=${2:-1}
source scripts/fewshot-args.sh
echo "| model | episodes | promoted (any) | promoted as fine-tune | promoted as imprint | novel acc. of the fine-tune | base after |"
echo "|---|---|---|---|---|---|---|"
for m in ${MODELS:-vision audio}; do
  for kind in good shuffled mislabelled renamed; do
    if [ "$m" = vision ]; then args=("${vision[@]}"); else args=("${audio[@]}"); fi
    "$bin" fewshot-bench "${args[@]}" --way 5 --shot 5 --episodes "$episodes" --seed "$seed" \
      --kind "$kind" --json 2>/dev/null | python3 -c '
import json, sys
m, kind = sys.argv[1:3]
r = json.loads(sys.stdin.read())
eps = r["per_episode"]
n = len(eps)
any_ = sum(1 for e in eps if e["promoted"])
ft = sum(1 for e in eps if e.get("promoted_as") == "finetuned")
im = sum(1 for e in eps if e.get("promoted_as") == "imprinted")
print("| %s | %s | %d/%d | %d/%d | %d/%d | %.3f | %.3f |" % (m, kind, any_, n, ft, n, im, n,
      r["novel_accuracy"], r["base_accuracy_after"] or float("nan")))
' "$m" "$kind"
  done
done
