#!/usr/bin/env bash
# Builds a small kernel for `faultlab vm` from Debian's linux-source package:
# allnoconfig + what the guest needs to boot (below) + the catalogue's fragment
# (`config` at the top of the repository), everything built in (no modules).
# The source is unpacked once and the build is out of tree, so a re-run (after
# patching a file in the source) is an incremental rebuild.
#
# Usage (as root): scripts/kernel-build.sh
#   then: faultlab vm --kernel /var/cache/faultlab/kernel/build -- run scenarios/
# Environment: FAULTLAB_CACHE (default /var/cache/faultlab), JOBS (default 2).
# Writes nothing outside $FAULTLAB_CACHE/kernel (besides apt installing packages).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
fragment="$repo/config"
top="${FAULTLAB_CACHE:-/var/cache/faultlab}/kernel"
src="$top/src"
out="$top/build"
jobs="${JOBS:-2}"
export ARCH=x86_64

say() { echo "kernel-build: $*" >&2; }
die() { say "$*"; exit 1; }
secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

[ -r "$fragment" ] || die "no fragment at $fragment"
[ "$(id -u)" -eq 0 ] || die "run as root (apt-get installs the source and build tools)"

# Build tools and the source package, installed only when missing.
need=()
for p in build-essential bc bison flex libelf-dev libssl-dev dwarves cpio kmod xz-utils linux-source; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1)
[ -n "$tarball" ] || die "linux-source is installed but /usr/src/linux-source-*.tar.xz is missing"

# Unpack once per tarball; a different tarball (a Debian update) is a fresh tree
# and a fresh build directory (object timestamps would not see the change).
stamp="$(basename "$tarball") $(stat -c '%s %Y' "$tarball")"
mkdir -p "$top"
if [ "$(cat "$src/.faultlab-unpacked" 2>/dev/null)" != "$stamp" ]; then
  say "unpacking $tarball into $src"
  rm -rf "$src.partial" "$src" "$out"
  mkdir -p "$src.partial"
  tar -xf "$tarball" -C "$src.partial" --strip-components=1
  echo "$stamp" >"$src.partial/.faultlab-unpacked"
  mv "$src.partial" "$src"
fi

# What `faultlab vm` needs to boot the guest (lab/vm/guest.rs, lab/vm/qemu.rs):
# a 64-bit SMP kernel on q35 with a serial console on ttyS0, ACPI power-off, an
# uncompressed initramfs whose /init is a busybox script, virtio-pci for the
# 9p (QEMU) or virtio-fs (virtiofsd) shares of the host root, an overlay on tmpfs,
# devtmpfs, devpts, proc and sysfs, tracefs; and what the host userspace run
# from that root (faultlab, iptables, nft, ip) expects of any kernel.
# BTF and BPF let the drop tracer attribute drops per namespace (lab/evidence/bpf),
# so `run --jobs` overlaps cells in the guest too; the tp_btf program needs
# bpf_trace.o, built under BPF_EVENTS, which wants KPROBE_EVENTS (needs MODULES
# here) or UPROBE_EVENTS. No BPF_JIT: it needs MODULES too (6.1), and the
# interpreter runs the program.
vm_fragment="$top/vm.config"
cat >"$vm_fragment.new" <<'EOF'
CONFIG_64BIT=y
CONFIG_LOCALVERSION="-faultlab"
# CONFIG_LOCALVERSION_AUTO is not set
CONFIG_SMP=y
CONFIG_NR_CPUS=8
CONFIG_HZ_250=y
CONFIG_NO_HZ_IDLE=y
CONFIG_HIGH_RES_TIMERS=y
CONFIG_HYPERVISOR_GUEST=y
CONFIG_PARAVIRT=y
CONFIG_KVM_GUEST=y
CONFIG_ACPI=y
CONFIG_PCI=y
CONFIG_PCI_MSI=y
CONFIG_TTY=y
CONFIG_UNIX98_PTYS=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_PRINTK=y
CONFIG_BUG=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_MULTIUSER=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_SIGNALFD=y
CONFIG_TIMERFD=y
CONFIG_EVENTFD=y
CONFIG_SHMEM=y
CONFIG_FILE_LOCKING=y
CONFIG_POSIX_TIMERS=y
CONFIG_ADVISE_SYSCALLS=y
CONFIG_MEMBARRIER=y
CONFIG_NET=y
CONFIG_UNIX=y
CONFIG_NETDEVICES=y
CONFIG_NET_CORE=y
CONFIG_NETWORK_FILESYSTEMS=y
CONFIG_PROC_FS=y
CONFIG_PROC_SYSCTL=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_TMPFS=y
CONFIG_TMPFS_XATTR=y
CONFIG_OVERLAY_FS=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO_PCI=y
CONFIG_NET_9P=y
CONFIG_NET_9P_VIRTIO=y
CONFIG_9P_FS=y
CONFIG_FUSE_FS=y
CONFIG_VIRTIO_FS=y
CONFIG_DEBUG_FS=y
CONFIG_FTRACE=y
CONFIG_ENABLE_DEFAULT_TRACERS=y
CONFIG_DEBUG_KERNEL=y
CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y
CONFIG_DEBUG_INFO_BTF=y
CONFIG_BPF_SYSCALL=y
CONFIG_PERF_EVENTS=y
CONFIG_UPROBE_EVENTS=y
CONFIG_BPF_EVENTS=y
EOF
mv "$vm_fragment.new" "$vm_fragment"

# (Re)generate .config only when a fragment changed, so a rebuild after a source
# change recompiles just that change.
want="$(cat "$vm_fragment" "$fragment" | sha256sum | cut -d' ' -f1)"
mkdir -p "$out"
if [ ! -f "$out/.config" ] || [ "$(cat "$out/.faultlab-fragments" 2>/dev/null)" != "$want" ]; then
  say "configuring $out: allnoconfig + $vm_fragment + $fragment"
  (cd "$src" && scripts/kconfig/merge_config.sh -n -O "$out" "$vm_fragment" "$fragment") \
    >"$top/merge_config.log" 2>&1 || { cat "$top/merge_config.log" >&2; die "merge_config.sh failed"; }
  # Every option the fragments ask for must have made it (a dependency missing
  # from the fragments makes Kconfig drop it silently).
  # A symbol this kernel's Kconfig does not define at all (folded into another
  # one, or not there yet) is only noted.
  lost=()
  while IFS= read -r line; do
    case "$line" in CONFIG_*=*) ;; *) continue ;; esac
    opt=${line%%=*}
    grep -qx -- "$line" "$out/.config" && continue
    if ! grep -rqsE --include='Kconfig*' "^(menu)?config ${opt#CONFIG_}[[:space:]]*$" "$src"; then
      say "note: $opt is not an option of this kernel (left out)"
      continue
    fi
    lost+=("$line (have: $(grep -E "^(# )?$opt[= ]" "$out/.config" || echo unset))")
  done < <(cat "$vm_fragment" "$fragment")
  if [ "${#lost[@]}" -gt 0 ]; then
    printf '  %s\n' "${lost[@]}" >&2
    die "these requested options are not in $out/.config (see $top/merge_config.log)"
  fi
  echo "$want" >"$out/.faultlab-fragments"
fi

say "building bzImage in $out (make -j$jobs, log in $top/build.log)"
start=$(date +%s)
if ! make -C "$src" O="$out" -j"$jobs" bzImage >"$top/build.log" 2>&1; then
  tail -n 40 "$top/build.log" >&2
  die "the build failed after $(secs $(($(date +%s) - start))) (full log: $top/build.log)"
fi
if grep -q '^CONFIG_MODULES=y' "$out/.config"; then
  make -C "$src" O="$out" -j"$jobs" modules >>"$top/build.log" 2>&1 || die "modules failed (see $top/build.log)"
fi
took=$(($(date +%s) - start))
release=$(cat "$out/include/config/kernel.release")
say "built $release in $(secs "$took") ($took s)"
echo "$out/arch/x86/boot/bzImage"
say "boot it with: faultlab vm --kernel $out -- run scenarios/bridge-netfilter.toml"
