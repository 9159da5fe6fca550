#!/usr/bin/env bash
# Runs every benchmark and writes results/bench/summary.md and results/bench/conntrack.svg
# (date, kernel, measured ratios). Needs root: namespaces, and the conntrack sweep
# changes host-global nf_conntrack_buckets/max (restored, even on a panic).
# Usage: sudo scripts/bench.sh [criterion options, e.g. --quick]
#   FAULTLAB_BENCH_KERNEL=PATH also times the catalogue under `faultlab vm` on PATH;
#   FAULTLAB_BENCH_CATALOGUE_ROUNDS (default 1), FAULTLAB_BENCH_CATALOGUE_JOBS (default
#   the machine's, as `run` chooses); FAULTLAB_BENCH_KERNELS=K1,K2,... times those
#   kernels under `vm --parallel 1` against `--parallel N` (one catalogue per kernel each;
#   FAULTLAB_BENCH_PARALLEL_SMP CPUs per guest, default 2).
# About 5-7 minutes on 2 CPUs (plus 2 catalogue runs per kernel under TCG), plus the
# first build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The kernel-limit replay captures the ruleset loaders' nfnetlink batches with strace.
if ! command -v strace >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends strace >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p results/bench
rm -f results/bench/harness.json results/bench/fixcost.json results/bench/conntrack.json results/bench/race.json results/bench/catalogue.json
cargo bench --features lab --bench harness --bench fixcost --bench race -- "$@"
# The whole catalogue, --jobs 1 against --jobs N (host; and under `faultlab vm` when
# FAULTLAB_BENCH_KERNEL names a kernel, e.g. /var/cache/faultlab/kernel/build).
cargo bench --features lab --bench catalogue
cargo bench --features lab --bench report
echo "wrote results/bench/summary.md and results/bench/conntrack.svg"
