#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets "$@"
# The kernels crate (a path dependency, not a workspace member) has its own tests.
cargo test -p lsskd-kernels "$@"
