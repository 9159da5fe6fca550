//! Prerequisites of a cell: a missing one makes the cell a skip with the reason,
//! never a failure.

use crate::model::Requirements;
use std::path::Path;

/// Why this cell cannot run here, or None when everything is present.
pub fn missing(req: &Requirements) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "not root: namespaces and netfilter need CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root)"
                .into(),
        );
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Some("the kernel has no network namespaces (CONFIG_NET_NS)".into());
    }
    for p in &req.programs {
        if which(p).is_none() {
            return Some(match crate::netns::exec::package_of(p) {
                "it" => format!("`{p}` is not installed (a command of the scenario runs it)"),
                _ => format!("`{p}` is not installed (scripts/install-deps.sh installs it)"),
            });
        }
    }
    for p in &req.paths {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing: {}", feature_hint(p)));
        }
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    if cpus < req.cpus {
        return Some(format!("needs {} CPUs, this machine has {cpus}", req.cpus));
    }
    None
}

fn feature_hint(path: &str) -> &'static str {
    if path.contains("/net/bridge") {
        "br_netfilter is not available (CONFIG_BRIDGE_NETFILTER or `modprobe br_netfilter`)"
    } else if path.contains("/net/ipv6") {
        "IPv6 is disabled in this kernel"
    } else if path.contains("tracing") {
        "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    } else if path.contains("nf_conntrack") || path.contains("netfilter") {
        "conntrack is not available (CONFIG_NF_CONNTRACK)"
    } else {
        "a kernel feature the scenario needs is absent"
    }
}

pub fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return p.exists().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
