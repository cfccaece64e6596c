#!/usr/bin/env bash
# Installs what building and testing lsskd-edge needs on a fresh Debian / Raspberry Pi OS
# machine that already has Rust (rustup). Safe to run again.
set -euo pipefail

# Build: pkg-config, ALSA headers (cpal), libudev + clang/libclang (nokhwa's V4L2 bindings).
# Tests and demo tooling: mosquitto (+ clients), ALSA utilities and sox (audio fixtures),
# systemd (systemd-analyze verifies the unit), systemd-container (the package test boots
# systemd in systemd-nspawn). RTSP cameras: ffmpeg (the RTSP source's decoder), and for
# the test's camera on loopback GStreamer's RTSP server through Debian's Python
# (python3-gi, gir1.2-gst-rtsp-server-1.0) with multifilesrc / jpegdec (base, good) and
# x264enc (ugly). Other x86 CPUs: qemu-user-static runs the kernels' tests on an emulated
# CPU without AVX-512, or without AVX (scripts/test-isa.sh).
APT_PACKAGES=(pkg-config libasound2-dev libudev-dev clang libclang-dev
  mosquitto mosquitto-clients alsa-utils sox systemd systemd-container
  ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly qemu-user-static)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# rustfmt and clippy for the CI checks (no-ops when present).
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
