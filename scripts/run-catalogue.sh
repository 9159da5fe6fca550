#!/usr/bin/env bash
# Runs the whole scenario catalogue on this kernel and writes results/<kernel>/.
# Usage (as root): scripts/run-catalogue.sh [faultlab run options...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
exec target/release/faultlab run scenarios/ "$@"
