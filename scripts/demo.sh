#!/usr/bin/env bash
# Command 1 of the README: set up, build, and run the shipped models on the bundled demo
# samples (images and keyword clips), printing what they recognise.
# (The sensing daemon `lsskd-edge run` will take over this script when it lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --bin lsskd-edge
bin=target/debug/lsskd-edge
for kind in vision audio; do
  if [ ! -f "models/$kind/manifest.json" ]; then
    echo "models/$kind is not there yet: train it with the command in BENCHMARKS.md" >&2
    continue
  fi
  echo "== models/$kind on demo/samples/$kind"
  "$bin" predict --model "models/$kind" demo/samples/"$kind"/*
done
