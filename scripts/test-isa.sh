#!/usr/bin/env bash
# Our convolution's vector paths on x86 CPUs other than this one: the kernels crate's tests
# (every available path against the definition) natively, then under qemu-user on an
# emulated CPU with AVX and FMA but no AVX2 or AVX-512 (Haswell without AVX2) and on one
# without AVX (Westmere), each checked to take the path that CPU should take; then the
# binary's `bench` on each emulated CPU, which loads the vision model the daemon's way
# (the faster of ours and tract's, timed there: under emulation the times say nothing of
# a real CPU, only that the choice is made and the model runs).
# Needs qemu-user-static (scripts/setup.sh installs it); without it, says so and exits 0.
# Usage: scripts/test-isa.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ] || ! command -v qemu-x86_64-static >/dev/null; then
  echo "SKIP ISA checks: needs x86-64 and qemu-x86_64-static (apt package qemu-user-static)"
  exit 0
fi
tests=$(cargo test -p lsskd-kernels --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    o = json.loads(line)
    if o.get("reason") == "compiler-artifact" and o.get("executable") and o["target"]["name"] == "lsskd_kernels":
        print(o["executable"])')
[ -x "$tests" ] || { echo "FAIL: no test binary of lsskd-kernels"; exit 1; }
cargo build --bin lsskd-edge
bin=${CARGO_TARGET_DIR:-target}/debug/lsskd-edge
status=0
check() { # LABEL WANT RUNNER...
  local label=$1 want=$2; shift 2
  local out
  out=$("$@" "$tests" --nocapture 2>/dev/null) || { echo "FAIL $label: the kernels' tests failed"; echo "$out" | tail -20; status=1; return; }
  local got
  got=$(echo "$out" | sed -n 's/^isa: \([^ ]*\) of .*/\1/p')
  if [ "$got" != "$want" ]; then echo "FAIL $label: took $got, expected $want"; status=1; return; fi
  echo "ok   $label: $(echo "$out" | grep '^isa:'), $(echo "$out" | grep -m1 'test result')"
}
native=portable
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
if [[ $flags == *" avx512f "* ]]; then native=avx512f
elif [[ $flags == *" avx "* && $flags == *" fma "* ]]; then native=avx+fma; fi
check "this CPU" "$native" env
for cpu in "Haswell-noTSX,-avx2:avx+fma" "Westmere:portable"; do
  model=${cpu%%:*}
  check "qemu -cpu $model" "${cpu##*:}" qemu-x86_64-static -cpu "$model"
  kernel=$(qemu-x86_64-static -cpu "$model" "$bin" bench --model models/vision --iterations 5 \
    --warmup 1 --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["kernel"])') ||
    { echo "FAIL qemu -cpu $model: bench did not run"; status=1; continue; }
  echo "ok   qemu -cpu $model: bench loaded models/vision with $kernel"
done
exit $status
