#!/bin/sh
# Which static keys (jump labels) a catalogue run flips, and which functions' text
# that patches: run inside a guest, from the repository root, e.g.
#   faultlab vm --kernel debian:cloud/trixie --exec -- sh scripts/jump-label-census.sh [run args]
# A kprobe on arch_jump_label_transform_queue (x86) with an in-kernel histogram
# counts every patched site; scripts/jump-label-census.py names the keys from
# /proc/kallsyms. Under multi-threaded TCG a flipping key on a hot path can crash
# the guest (README "faultlab vm"); the guest pins the ones this found.
# Needs kprobes in the guest kernel (Debian's have them; this host's has none).
set -eu
T=/sys/kernel/tracing
HIST='hist:keys=entry.hex,code,keyoff:size=8192'
cleanup() {
  E=$T/events/kprobes/fl_jl
  [ -d $E ] || return 0
  echo 0 > $E/enable; echo "!$HIST" > $E/trigger 2>/dev/null || true
  echo "-:fl_jl" >> $T/kprobe_events
}
trap cleanup EXIT
echo 'p:fl_jl arch_jump_label_transform_queue entry=%di code=+0(%di):s32 keyoff=+8(%di):s64' >> $T/kprobe_events
echo "$HIST" > $T/events/kprobes/fl_jl/trigger
echo 1 > $T/events/kprobes/fl_jl/enable
out=$(mktemp)
./target/release/faultlab run scenarios/ --no-results --slow 10 "$@" > "$out" 2>&1 || true
grep -E "passed|failed" "$out" | tail -1
echo 0 > $T/events/kprobes/fl_jl/enable
hist=$(mktemp)
cat $T/events/kprobes/fl_jl/hist > "$hist"
python3 scripts/jump-label-census.py "$hist"
rm -f "$out" "$hist"
