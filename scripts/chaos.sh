#!/usr/bin/env bash
# The daemon's reliability checks (RELIABILITY.md): each part prints PASS/FAIL per check
# with its figure and the script exits non-zero when any check fails. Real components: the
# daemon binary (LSSKD_EDGE_BIN, else the debug build, made here) and mosquitto on
# loopback ports.
#   scripts/chaos.sh short              every part, bounded (~10 min): what CI runs
#   scripts/chaos.sh short kill         the named parts, bounded
#   scripts/chaos.sh all                every part at full size (~2 h, the soak 1 h), then
#                                       rewrites RELIABILITY.md from that run
#   scripts/chaos.sh kill broker        the named parts at full size (crash | kill | broker |
#                                       flood | soak | fuzz); RELIABILITY.md untouched
#   scripts/chaos.sh report             rewrites RELIABILITY.md from each part's last
#                                       full-size run (target/chaos/<part>.json)
# Options after the parts go to scripts/chaos.py (--iterations 20, --minutes 5, --seed 2).
set -euo pipefail
cd "$(dirname "$0")/.."
command="scripts/chaos.sh $*"
mode=()
parts=()
while [ $# -gt 0 ] && [[ $1 != -* ]]; do
  case $1 in
    short) mode+=(--short) ;;
    all) mode+=(--report) ;;
    report) mode+=(--report-saved) ;;
    *) parts+=("$1") ;;
  esac
  shift
done
if [ ${#mode[@]} -eq 0 ] && [ ${#parts[@]} -eq 0 ]; then
  echo "usage: scripts/chaos.sh short | all | PART... [options]  (see the head of this file)" >&2
  exit 2
fi
if [[ " ${mode[*]} " == *" --report "* ]] && [ ${#parts[@]} -gt 0 ]; then
  echo "scripts/chaos.sh all takes no parts (RELIABILITY.md needs every one)" >&2
  exit 2
fi
if [ -z "${LSSKD_EDGE_BIN:-}" ] && [[ " ${mode[*]} " != *" --report-saved "* ]]; then
  cargo build --bin lsskd-edge
fi
CHAOS_COMMAND="$command" exec python3 scripts/chaos.py "${mode[@]}" "${parts[@]}" "$@"
