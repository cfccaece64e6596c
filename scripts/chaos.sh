#!/usr/bin/env bash
# The daemon's reliability figures (RELIABILITY.md), each part bounded in time; not run by
# CI. Real components: the daemon binary (LSSKD_EDGE_BIN, else target/debug/lsskd-edge,
# built here when missing) and mosquitto on loopback ports.
#   scripts/chaos.sh                 all five parts: fuzz, flood, broker, kill, soak (~90 min)
#   scripts/chaos.sh kill broker     the named parts (kill | broker | flood | soak | fuzz)
# Options after the parts go to scripts/chaos.py (e.g. --iterations 20, --minutes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LSSKD_EDGE_BIN:-}" ] && [ ! -x target/debug/lsskd-edge ]; then
  cargo build --bin lsskd-edge
fi
parts=()
while [ $# -gt 0 ] && [[ $1 != -* ]]; do parts+=("$1"); shift; done
[ ${#parts[@]} -eq 0 ] && parts=(all)
for part in "${parts[@]}"; do
  python3 scripts/chaos.py "$part" "$@"
done
