#!/usr/bin/env bash
# Installs what faultlab needs on Debian/Ubuntu, as root. Idempotent: a second
# run installs nothing and takes well under a second.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have nft || need+=(nftables)
{ have iptables-nft-restore && have iptables-legacy-restore; } || need+=(iptables)
have ip || need+=(iproute2)
have tcpdump || need+=(tcpdump)
# tests/lab_devices.rs pings through the lab with the system ping.
have ping || need+=(iputils-ping)
have cc || need+=(gcc libc6-dev)
have pkg-config || need+=(pkg-config)
# libpcap compiles and matches capture filters (tcpdump's language).
[ -e /usr/include/pcap.h ] || need+=(libpcap-dev)
# The drop tracer's BPF program (build.rs): clang compiles it, libbpf-sys builds the
# vendored libbpf against libelf and zlib; bpftool is for inspecting what is loaded.
have clang || need+=(clang)
have bpftool || need+=(bpftool)
{ [ -e /usr/include/bpf/bpf_helpers.h ] && [ -e /usr/include/libelf.h ] && [ -e /usr/include/zlib.h ]; } ||
  need+=(libbpf-dev libelf-dev zlib1g-dev)
# faultlab vm (kernel matrix): QEMU, a static busybox for the guest initramfs, depmod,
# module decompressors, and the headers `cargo install virtiofsd` builds against.
{ have qemu-system-x86_64 && have busybox && have depmod && have xz && have zstd; } ||
  need+=(qemu-system-x86 busybox-static kmod xz-utils zstd)
{ [ -e /usr/include/cap-ng.h ] && [ -e /usr/include/seccomp.h ]; } || need+=(libcap-ng-dev libseccomp-dev)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root (sudo $0)" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have cargo; then
  # Prefer rustup's stable toolchain; Debian's packaged rustc may be too old (need >= 1.85).
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    :
  elif have curl && curl -fsS --max-time 20 https://sh.rustup.rs -o /tmp/rustup-init.sh; then
    sh /tmp/rustup-init.sh -y --profile minimal >/dev/null
  else
    apt-get install -y -qq --no-install-recommends cargo rustc >/dev/null
  fi
fi

# The Rust virtiofsd shares the host root with cloud kernels (which have no 9p).
export PATH="$HOME/.cargo/bin:$PATH"
if ! have virtiofsd && [ ! -x /usr/libexec/virtiofsd ]; then
  echo "install-deps: cargo install virtiofsd (for faultlab vm)" >&2
  cargo install --quiet --locked virtiofsd
fi
