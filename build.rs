//! Compiles the drop-attribution BPF program (lab/evidence/bpf/kfree_skb.bpf.c) with clang
//! and generates its libbpf-rs skeleton into OUT_DIR.

use std::path::PathBuf;
use std::process::Command;

const SRC: &str = "lab/evidence/bpf/kfree_skb.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=lab/evidence/bpf/vmlinux.h");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=CLANG");
    if Command::new(&clang).arg("--version").output().is_err() {
        panic!(
            "build.rs: `{clang}` not found: the drop tracer's BPF program ({SRC}) is \
             compiled with clang. Install it (Debian/Ubuntu: apt-get install clang \
             libbpf-dev libelf-dev zlib1g-dev, or run scripts/install-deps.sh as root), \
             or point CLANG at a clang binary."
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"))
        .join("kfree_skb.skel.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
        .source(SRC)
        .clang(&clang)
        .clang_args([
            "-Wall",
            "-Wno-unused-function",
            &format!("-D__TARGET_ARCH_{arch}"),
        ])
        .build_and_generate(&out)
    {
        panic!("build.rs: compiling {SRC} with `{clang}` failed: {e:#}");
    }
}
