#!/usr/bin/env bash
# Slow boards and small memory, emulated on this machine with cgroup v1 controllers
# (cpu.cfs_quota_us for `cpu.max`, memory.limit_in_bytes for `memory.max`; needs root):
# few-shot adaptation as the daemon runs it (fewshot-bench through the adaptation core,
# vision 5-way 5-shot, seed 1, one thread) unthrottled, at 1/2, 1/4 and 1/8 of a core, and
# at 1 GiB and 384 MiB. Prints one Markdown row per setting: novel and shipped accuracy
# (the same everywhere: the fine-tune runs its recipe's steps whatever the speed), seconds
# per adaptation (they scale with the quota), the group's peak memory, and OOM kills.
# Then the daemon on the demo config (a camera view at 1 frame/s and keyword windows at 2/s
# with the embedded broker, all in the group) taught the camera's view — 25 frames by
# `sample send`, an `adapt` — at each setting: the fine-tune's outcome and seconds, frames
# and windows inferred and dropped meanwhile (from the status), the group's peak memory and
# OOM kills.
# Usage: sudo scripts/bench-boards.sh [EPISODES]   (LSSKD_EDGE_BIN as the other scripts;
# STAGES="adapt daemon" picks the parts, ONLY="cpu-half mem-384MiB" the settings)
set -euo pipefail
cd "$(dirname "$0")/.."
episodes=${1:-3}
source scripts/fewshot-args.sh
cg=/sys/fs/cgroup
if [ ! -w "$cg/cpu" ] || [ ! -w "$cg/memory" ]; then
  echo "needs root and writable cgroup v1 cpu and memory controllers under $cg" >&2
  exit 1
fi
out=$(mktemp -d)
echo "| setting | novel (fine-tuned) | imprint only | shipped before → after | promoted | s per adaptation | peak RSS | peak memory of the group | OOM kills | exit |"
echo "|---|---|---|---|---|---|---|---|---|---|"
# Create group `lsskd-bench-NAME` with a CPU quota in µs per 100 ms (0: none) and a memory
# limit in MiB (0: none); print its name.
group() {
  local g="lsskd-bench-$1"
  mkdir -p "$cg/cpu/$g" "$cg/memory/$g"
  echo 100000 >"$cg/cpu/$g/cpu.cfs_period_us"
  if [ "$2" = 0 ]; then echo -1; else echo "$2"; fi >"$cg/cpu/$g/cpu.cfs_quota_us"
  if [ "$3" = 0 ]; then echo -1; else echo $(($3 * 1024 * 1024)); fi \
    >"$cg/memory/$g/memory.limit_in_bytes"
  echo "$g"
}
# Peak memory (MiB) and OOM kills of group $1, then remove it.
release() {
  echo "$(($(cat "$cg/memory/$1/memory.max_usage_in_bytes") / 1048576)) MiB" \
    "$(awk '$1 == "oom_kill" {print $2}' "$cg/memory/$1/memory.oom_control")"
  rmdir "$cg/cpu/$1" "$cg/memory/$1"
}
stages=${STAGES:-adapt daemon}
run() { # name, CPU quota in µs per 100 ms period (0: none), memory limit in MiB (0: none)
  local name=$1 g
  g=$(group "$@")
  local rc=0
  # The shell joins both groups, then becomes the benchmark.
  RAYON_NUM_THREADS=1 sh -c 'echo $$ >"$1/cpu/$2/cgroup.procs"; echo $$ >"$1/memory/$2/cgroup.procs"; shift 2; exec "$@"' \
    sh "$cg" "$g" "$bin" fewshot-bench "${vision[@]}" --way 5 --shot 5 --episodes "$episodes" \
    --seed 1 --base-limit 1000 --json >"$out/$name.json" 2>"$out/$name.log" || rc=$?
  python3 - "$out/$name.json" "$name" "$(release "$g")" "$rc" <<'PY'
import json, sys
path, name, mem, rc = sys.argv[1:]
peak, oom = mem.split(" MiB ")
oom = oom or "0"
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"| {name} | - | - | - | - | - | - | {peak} MiB | {oom} | {rc} |")
    sys.exit()
print(f"| {name} | {r['novel_accuracy']:.4f} ± {r['novel_ci95']:.4f} | "
      f"{r['imprint_only_novel_accuracy']:.4f} | {r['base_accuracy_before']:.4f} → "
      f"{r['base_accuracy_after']:.4f} | {r['promoted_episodes']} | "
      f"{r['seconds_per_episode']:.1f} | {r['peak_rss_mb']:.0f} MiB | "
      f"{peak} MiB | {oom} | {rc} |")
PY
}
settings=(unthrottled 0 0  cpu-half 50000 0  cpu-quarter 25000 0  cpu-eighth 12500 0
          mem-1GiB 0 1024  mem-384MiB 0 384)
if [[ $stages == *adapt* ]]; then
  for ((i = 0; i < ${#settings[@]}; i += 3)); do
    [[ -z ${ONLY:-} || " $ONLY " == *" ${settings[i]} "* ]] && run "${settings[@]:i:3}"
  done
fi
daemon() { # name, CPU quota, memory limit
  local name=$1 g port state pid rc=0
  g=$(group "$@")
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  state="$out/state-$name"
  LSSKD_EDGE__MQTT__PORT=$port LSSKD_EDGE__STATE_DIR=$state RUST_LOG=info \
    sh -c 'echo $$ >"$1/cpu/$2/cgroup.procs"; echo $$ >"$1/memory/$2/cgroup.procs"; shift 2; exec "$@"' \
    sh "$cg" "$g" "$bin" run --config config/demo.toml >"$out/daemon-$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
  sleep 5
  for st in empty animal vehicle parcel lights_off; do
    LSSKD_EDGE__MQTT__PORT=$port "$bin" sample send --config config/demo.toml --model scenes \
      --label "$st" demo/samples/scenes/teach/"$st"/*.jpg >/dev/null 2>&1 || rc=$?
  done
  # The fine-tunes the samples started (`auto_after`) and the one asked for: their end.
  mosquitto_pub -h 127.0.0.1 -p "$port" -t lsskd/demo/model/scenes/cmd -m adapt
  local outcome
  outcome=$(python3 scripts/wait-training.py "$port" lsskd/demo scenes 900)
  mosquitto_sub -h 127.0.0.1 -p "$port" -t lsskd/demo/status -C 1 -W 5 >"$out/status-$name.json" || true
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || rc=$?
  python3 - "$name" "$outcome" "$out/status-$name.json" "$(release "$g")" "$rc" <<'PY'
import json, sys
name, outcome, status_path, mem, rc = sys.argv[1:]
o = json.loads(outcome) if outcome else {}
try:
    st = json.load(open(status_path))
    p = {x["name"]: x for x in st["pipelines"]}
    flows = " · ".join(f"{n} {p[n]['inferences']} ({p[n]['dropped']} dropped)" for n in ("camera", "microphone") if n in p)
except (OSError, ValueError, KeyError):
    flows = "-"
peak, oom = mem.split(" MiB ")
print(f"| {name} | {o.get('state', 'none')} | {o.get('seconds', 0):.1f} | {o.get('elapsed', 0):.0f} | {flows} | {peak} MiB | {oom or 0} | {rc} |")
PY
}
if [[ $stages == *daemon* ]]; then
  echo
  echo "| setting | last fine-tune | its seconds | teach → outcome, s | inferences (dropped) | peak memory of the group | OOM kills | exit |"
  echo "|---|---|---|---|---|---|---|---|"
  for ((i = 0; i < ${#settings[@]}; i += 3)); do
    [[ -z ${ONLY:-} || " $ONLY " == *" ${settings[i]} "* ]] && daemon "${settings[@]:i:3}"
  done
fi
rm -rf "$out"
