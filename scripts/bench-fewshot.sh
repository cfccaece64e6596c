#!/usr/bin/env bash
# The few-shot benchmarks of BENCHMARKS.md: the shipped models adapted to classes they do
# not know, with the daemon's imprint + fine-tune + gate code, evaluated through tract.
# Usage: scripts/bench-fewshot.sh [EPISODES] [SEED]   (JSON lines to stdout)
# The 5-shot rows run EPISODES episodes (default 10), the 1-shot row half as many.
# Seed 0 is the one the adaptation recipe was tuned on; report another (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
episodes=${1:-10}
seed=${2:-1}
source scripts/fewshot-args.sh
for shot in 1 5; do
  n=$episodes
  [ "$shot" = 1 ] && n=$(( (episodes + 1) / 2 ))
  "$bin" fewshot-bench "${vision[@]}" \
    --way 5 --shot "$shot" --episodes "$n" --seed "$seed" --json
done
"$bin" fewshot-bench "${audio[@]}" \
  --way 5 --shot 5 --episodes "$episodes" --seed "$seed" --json
