# Sourced by the few-shot benchmark scripts: `bin` (LSSKD_EDGE_BIN, a binary built before,
# e.g. by `cargo test`; else a fresh `cargo build`) and the episode data of both shipped
# models, `vision` and `audio` (fewshot-bench arguments).
bin=${LSSKD_EDGE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --bin lsskd-edge
  bin=${CARGO_TARGET_DIR:-target}/debug/lsskd-edge
fi
data=../shared/data
# Vision episodes draw from the three quarters of the digit pool kept for tuning;
# POOL_PART=final reports on the held-out quarter (only at the end of a tuning round).
vision=(--model models/vision --support-data "$data/mnist-fewshot" --support-split pool
  --query-data "$data/mnist-fewshot" --query-split pool --pool-part "${POOL_PART:-tune}"
  --base-data "$data/fashion-mnist" --base-split val)
audio=(--model models/audio --support-data "$data/espeak-kws" --support-split train
  --query-data "$data/espeak-kws" --query-split val
  --base-data "$data/espeak-kws" --base-split val)
