#!/usr/bin/env bash
# The arm64 build under qemu-user: the library's unit tests, then `eval` (the gate sets of
# both shipped models, through tract) and `bench` of the arm64 binary, with its predictions
# compared to this machine's: the same accuracy and the same confusion matrix.
# Needs the cross toolchain (scripts/cross-env.sh installs it); without it, says so and
# exits 0. Usage: scripts/test-aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null ||
  ! rustup target list --installed 2>/dev/null | grep -qx "$target" ||
  ! dpkg-query -W -f='${Status}' libasound2-dev:arm64 2>/dev/null | grep -q "install ok installed"; then
  echo "SKIP aarch64 checks: no cross toolchain (run scripts/cross-env.sh to install it)"
  exit 0
fi
# shellcheck source=/dev/null
source scripts/cross-env.sh
# One build for the library's tests and the binary (`--test it` makes cargo build the
# binary with the tests' features, so the dependencies build once), then the tests run
# under qemu.
cargo test --target "$target" --lib --test it --no-run
cargo test --target "$target" --lib
cargo build --bin lsskd-edge
tdir=${CARGO_TARGET_DIR:-target}
arm=$tdir/$target/debug/lsskd-edge
native=$tdir/debug/lsskd-edge
python3 -c 'import sys; h = open(sys.argv[1], "rb").read(20); sys.exit(h[:4] != b"\x7fELF" or int.from_bytes(h[18:20], "little") != 183)' "$arm" ||
  { echo "FAIL: $arm is not an aarch64 ELF binary"; exit 1; }
for m in vision audio; do
  "$native" eval --model "models/$m" --data "models/$m" --split gate --json >"$tdir/eval-$m-amd64.json"
  qemu-aarch64-static "$arm" eval --model "models/$m" --data "models/$m" --split gate --json >"$tdir/eval-$m-arm64.json"
  python3 - "$m" "$tdir/eval-$m-amd64.json" "$tdir/eval-$m-arm64.json" <<'PY'
import json, sys
m, a, b = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
for k in ("accuracy", "confusion", "n"):
    if k in a and a[k] != b.get(k):
        sys.exit(f"FAIL {m}: {k} differs: amd64 {a[k]} vs arm64 {b.get(k)}")
print(f"{m}: amd64 and arm64 (qemu) agree: accuracy {a.get('accuracy')} on {a.get('n', '?')} gate items")
PY
  qemu-aarch64-static "$arm" bench --model "models/$m" --iterations 20 --warmup 2 | tail -1
done
echo "PASS aarch64 checks"
