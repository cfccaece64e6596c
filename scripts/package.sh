#!/usr/bin/env bash
# Build the Debian packages of lsskd-edge from this checkout: amd64 (this machine) and
# arm64 (Raspberry Pi 4/5, Jetson; cross-built with Debian's aarch64 toolchain and arm64
# multiarch -dev packages), release profile. Installs what it needs (apt, the rustup
# target, cargo-deb) when missing. Prints the paths of the .deb files.
# Usage: scripts/package.sh [amd64|arm64|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
}

command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked

if [ "$which" = amd64 ] || [ "$which" = all ]; then
  cargo deb --profile release --dbgsym >&2
  ls "${CARGO_TARGET_DIR:-target}"/debian/lsskd-edge_*_amd64.deb
fi

if [ "$which" = arm64 ] || [ "$which" = all ]; then
  scripts/cross-env.sh >&2
  # shellcheck source=/dev/null
  source scripts/cross-env.sh
  cargo deb --profile release --dbgsym --target aarch64-unknown-linux-gnu >&2
  ls "${CARGO_TARGET_DIR:-target}"/aarch64-unknown-linux-gnu/debian/lsskd-edge_*_arm64.deb
fi
