#!/usr/bin/env bash
# Mutation testing of the catalogue: for each kernel source patch in
# kernel-mutants/, apply it to the linux-source tree of scripts/kernel-build.sh,
# rebuild incrementally, boot the build under `faultlab vm`, run the scenario
# files the patch header names (`Run:`, default the whole catalogue), and
# reverse the patch -- always, also on an error or Ctrl-C (trap), and on the
# next start after a SIGKILL (the state file names the applied patch). The
# unmutated build runs the whole catalogue once, and so does the host.
# Finally `faultlab mutants-summary` writes results/mutants/summary.md.
#
# Usage (as root): scripts/mutants.sh [NAME... | none]   (default: every kernel-mutants/*.patch)
# Environment: FAULTLAB (the binary; default $CARGO_TARGET_DIR/debug/faultlab),
#   FAULTLAB_CACHE (default /var/cache/faultlab), SKIP_HOST=1 / SKIP_UNMUTATED=1
#   (keep earlier host / unmutated results), RESUME_UNMUTATED=1 (run the files
#   a timed-out unmutated run did not reach), VM_TIMEOUT (seconds per boot, 1500).
# Writes: $FAULTLAB_CACHE/mutants/{host,unmutated,NAME}/ (raw results, run.env),
#   $FAULTLAB_CACHE/kernel/pristine/ (the unmutated kernel, when its config changed), and
#   results/mutants/summary.md through the tool.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache="${FAULTLAB_CACHE:-/var/cache/faultlab}"
src="$cache/kernel/src"
build="$cache/kernel/build"
pristine="$cache/kernel/pristine"
out="$cache/mutants"
state="$out/applied-patch"
faultlab="${FAULTLAB:-${CARGO_TARGET_DIR:-$repo/target}/debug/faultlab}"
timeout="${VM_TIMEOUT:-1500}"

say() { echo "mutants: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (kernel-build.sh, faultlab run and vm need it)"
[ -x "$faultlab" ] || die "no faultlab binary at $faultlab: cargo build --features lab, or set FAULTLAB"
[ -d "$src" ] || die "no kernel source at $src: run scripts/kernel-build.sh once first"
mkdir -p "$out"

# --- the source tree is pristine before, between and after mutants ---------
applied=""
unapply() {
  [ -n "$applied" ] || return 0
  if patch -d "$src" -p1 -R -s -f --no-backup-if-mismatch <"$applied" >/dev/null; then
    say "reversed $(basename "$applied")"
    rm -f "$state"
  else
    say "could not reverse $applied in $src: fix the tree by hand (patch -R -p1)"
  fi
  applied=""
}
trap unapply EXIT
trap 'exit 130' INT TERM HUP

if [ -f "$state" ]; then
  leftover=$(cat "$state")
  say "a previous sweep left $leftover applied: reversing it"
  applied="$leftover"
  unapply
fi
for p in "$repo"/kernel-mutants/*.patch; do
  if patch -d "$src" -p1 -R --dry-run -s -f <"$p" >/dev/null 2>&1; then
    die "$src already has $(basename "$p") applied (reverse it: patch -d $src -p1 -R < $p)"
  fi
done

header() { # header FILE KEY: the value of "KEY: value" before the diff
  sed -n '/^--- /q; s/^'"$2"': *//p' "$1" | head -n 1
}

rebuild() { # rebuild DIR: incremental build, seconds in DIR/run.env
  local dir=$1 t0 rc=0
  t0=$(date +%s)
  "$repo/scripts/kernel-build.sh" >"$dir/build.out" 2>&1 || rc=$?
  echo "rebuild_seconds=$(($(date +%s) - t0))" >>"$dir/run.env"
  echo "build_exit=$rc" >>"$dir/run.env"
  return $rc
}

boot_and_run() { # boot_and_run DIR SCENARIO...
  local dir=$1 rc=0 t0
  shift
  echo "scenarios=$*" >>"$dir/run.env"
  t0=$(date +%s)
  "$faultlab" vm --kernel "$build" --timeout "$timeout" --results "$dir" -- run "$@" \
    >"$dir/vm.out" 2>&1 || rc=$?
  echo "vm_seconds=$(($(date +%s) - t0))" >>"$dir/run.env"
  echo "vm_exit=$rc" >>"$dir/run.env"
  say "$(basename "$dir"): vm exit $rc ($(($(date +%s) - t0)) s)"
}

fresh() { rm -rf "$1"; mkdir -p "$1"; : >"$1/run.env"; }

catalogue=("$repo/scenarios")

# --- the host's own verdicts -------------------------------------------------
if [ "${SKIP_HOST:-0}" != 1 ]; then
  say "host: faultlab run ${catalogue[*]}"
  fresh "$out/host"
  rc=0
  "$faultlab" run "${catalogue[@]}" --results "$out/host" >"$out/host/run.out" 2>&1 || rc=$?
  echo "run_exit=$rc" >>"$out/host/run.env"
fi

# --- the unmutated build -----------------------------------------------------
if [ "${SKIP_UNMUTATED:-0}" != 1 ]; then
  fresh "$out/unmutated"
  rebuild "$out/unmutated" || die "the unmutated build failed (see $out/unmutated/build.out)"
  # Saved again whenever the configuration changed (kernel-build.sh's fragment).
  if [ ! -f "$pristine/arch/x86/boot/bzImage" ] || ! cmp -s "$build/.config" "$pristine/.config"; then
    say "saving the unmutated kernel in $pristine"
    rm -rf "$pristine"
    mkdir -p "$pristine/arch/x86/boot" "$pristine/include/config"
    cp "$build/arch/x86/boot/bzImage" "$pristine/arch/x86/boot/"
    cp "$build/include/config/kernel.release" "$pristine/include/config/"
    cp "$build/.config" "$build/System.map" "$build/modules.builtin" "$build/modules.builtin.modinfo" "$pristine/"
    [ -f "$build/modules.order" ] && cp "$build/modules.order" "$pristine/"
  fi
  boot_and_run "$out/unmutated" "${catalogue[@]}"
fi

# RESUME_UNMUTATED=1: a second boot runs the catalogue files the unmutated run
# did not reach (a timeout), into the same results; run.env keeps both exits.
if [ "${RESUME_UNMUTATED:-0}" = 1 ]; then
  kdir=$(ls -d "$out"/unmutated/*/ 2>/dev/null | head -n 1)
  rest=()
  while IFS= read -r f; do
    n=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$f" | head -n 1)
    [ -n "$kdir" ] && [ -f "$kdir/$n.json" ] || rest+=("$f")
  done < <(find "$repo/scenarios" -name '*.toml' -not -path '*/topologies/*' | sort)
  if [ ${#rest[@]} -gt 0 ]; then
    say "unmutated: resuming with ${rest[*]#"$repo/"}"
    rebuild "$out/unmutated" || die "the unmutated build failed (see $out/unmutated/build.out)"
    t0=$(date +%s) rc=0
    "$faultlab" vm --kernel "$build" --timeout "$timeout" --results "$out/unmutated" -- run "${rest[@]}" \
      >"$out/unmutated/vm-resume.out" 2>&1 || rc=$?
    { echo "resumed=${rest[*]}"; echo "resume_vm_seconds=$(($(date +%s) - t0))"; echo "resume_vm_exit=$rc"; } >>"$out/unmutated/run.env"
  fi
fi

# --- the mutants ---------------------------------------------------------------
if [ "$*" = none ]; then
  patches=()
elif [ $# -gt 0 ]; then
  patches=()
  for n in "$@"; do
    p="$repo/kernel-mutants/${n%.patch}.patch"
    [ -f "$p" ] || die "no mutant $p"
    patches+=("$p")
  done
else
  patches=("$repo"/kernel-mutants/*.patch)
fi
for p in ${patches[@]+"${patches[@]}"}; do
  name=$(basename "$p" .patch)
  dir="$out/$name"
  fresh "$dir"
  run=()
  for s in $(header "$p" Run); do run+=("$repo/scenarios/$s.toml"); done
  [ ${#run[@]} -gt 0 ] || run=("${catalogue[@]}")
  say "$name: applying, rebuilding, running ${run[*]#"$repo/"}"
  echo "$p" >"$state"
  applied="$p"
  if ! patch -d "$src" -p1 -s -f --no-backup-if-mismatch <"$p" >"$dir/patch.out" 2>&1; then
    # A partly applied patch would leave rejects: reverse what went in.
    say "$name does not apply (see $dir/patch.out)"
    echo "patch_failed=1" >>"$dir/run.env"
    unapply
    continue
  fi
  if rebuild "$dir"; then
    boot_and_run "$dir" "${run[@]}"
  else
    say "$name: the build failed (see $dir/build.out)"
  fi
  unapply
done

# The build tree ends as the pristine source builds it.
say "rebuilding the pristine tree"
fresh "$out/restore"
rebuild "$out/restore" || die "the pristine rebuild failed (see $out/restore/build.out)"

mkdir -p "$repo/results/mutants"
cd "$repo"
"$faultlab" mutants-summary --patches kernel-mutants --runs "$out" \
  --kernel-config "$pristine/.config" --out results/mutants/summary.md >/dev/null
say "wrote $repo/results/mutants/summary.md"
