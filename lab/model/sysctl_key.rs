//! Sysctl keys as scenario files write them, and the /proc/sys paths they name.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// /proc/sys path of a sysctl key.
///
/// Dotted keys (`net.ipv4.ip_forward`) map dots to slashes, except in the device
/// segment of per-device keys (`net.ipv4.conf.<dev>.<leaf>`, `net.ipv6.neigh.<dev>.<leaf>`):
/// there everything between the table and the last segment is the device name, so
/// `net.ipv4.conf.eth0.100.rp_filter` names device `eth0.100`. A key containing `/`
/// is taken as a path as-is (sysctl(8)'s own escape for such names).
pub fn key_to_path(key: &str) -> Result<PathBuf> {
    let rel = key_to_rel(key)?;
    Ok(PathBuf::from("/proc/sys").join(rel))
}

fn key_to_rel(key: &str) -> Result<String> {
    let key = key.trim();
    if key.is_empty() {
        bail!("empty sysctl key");
    }
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        let segs: Vec<&str> = key.split('.').collect();
        if segs.len() >= 5 && segs[0] == "net" && matches!(segs[2], "conf" | "neigh") {
            let last = segs.len() - 1;
            format!(
                "{}/{}/{}/{}/{}",
                segs[0],
                segs[1],
                segs[2],
                segs[3..last].join("."),
                segs[last]
            )
        } else {
            segs.join("/")
        }
    };
    if rel
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!("invalid sysctl key `{key}`");
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str) -> String {
        key_to_path(k).unwrap().display().to_string()
    }

    #[test]
    fn plain_keys() {
        assert_eq!(p("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(
            p("net.netfilter.nf_conntrack_max"),
            "/proc/sys/net/netfilter/nf_conntrack_max"
        );
        assert_eq!(
            p("net.bridge.bridge-nf-call-iptables"),
            "/proc/sys/net/bridge/bridge-nf-call-iptables"
        );
    }

    #[test]
    fn device_keys_keep_dots_in_device_names() {
        assert_eq!(
            p("net.ipv4.conf.eth0.proxy_arp"),
            "/proc/sys/net/ipv4/conf/eth0/proxy_arp"
        );
        assert_eq!(
            p("net.ipv4.conf.eth0.100.rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            p("net.ipv6.neigh.br0.1.base_reachable_time_ms"),
            "/proc/sys/net/ipv6/neigh/br0.1/base_reachable_time_ms"
        );
        assert_eq!(
            p("net.ipv4.conf.all.forwarding"),
            "/proc/sys/net/ipv4/conf/all/forwarding"
        );
    }

    #[test]
    fn slash_keys_and_bad_keys() {
        assert_eq!(
            p("net/ipv4/conf/eth0.5/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.5/rp_filter"
        );
        assert!(key_to_path("").is_err());
        assert!(key_to_path("net..ipv4").is_err());
        assert!(key_to_path("net/../../etc/passwd").is_err());
    }
}
