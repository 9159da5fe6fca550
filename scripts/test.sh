#!/usr/bin/env bash
# The whole test suite: unit and snapshot tests, then the root-only lab tests
# (namespaces, real traffic, every scenario cell). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --no-fail-fast --features lab -- --test-threads=1
