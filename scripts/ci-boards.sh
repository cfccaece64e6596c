#!/usr/bin/env bash
# CI's board and package checks, after the test suite (which built target/debug):
#  - the .deb in a real systemd (scripts/test-package.sh), when running as root with
#    systemd-nspawn; the package is made from the test build's binary here (the release
#    package, `scripts/package.sh`, takes a release build of its own);
#  - the arm64 build under qemu (scripts/test-aarch64.sh), when the cross toolchain is
#    installed (scripts/cross-env.sh installs it);
#  - our convolution's x86 vector paths on emulated CPUs without AVX-512 or AVX
#    (scripts/test-isa.sh), when qemu-user-static is installed (scripts/setup.sh does).
# Each says SKIP when the machine lacks what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ] && command -v systemd-nspawn >/dev/null; then
  command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked
  rm -rf target/debian-ci
  # (cargo-deb warns that the dev profile is not for releases: this one is for the test.)
  cargo deb --profile dev --no-build --strip --output target/debian-ci/
  scripts/test-package.sh target/debian-ci/lsskd-edge_*_amd64.deb
else
  echo "SKIP package test: needs root and systemd-nspawn (apt package systemd-container)"
fi
scripts/test-aarch64.sh
scripts/test-isa.sh
