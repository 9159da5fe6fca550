//! Reading a node's counters from inside its namespace (needs root).

use super::{NodeCounters, ProcTexts};
use crate::model::RulesetKind;
use anyhow::{Context, Result};
use std::io::ErrorKind;

/// Reads the proc files from a thread inside `netns` and dumps each ruleset kind with
/// its counters.
pub fn snapshot_node(netns: &str, ruleset_kinds: &[RulesetKind]) -> Result<NodeCounters> {
    // /proc/self/net is the main thread's namespace; thread-self follows setns.
    let texts = crate::netns::run_in(netns, || {
        Ok(ProcTexts {
            nf_conntrack: read_optional("/proc/thread-self/net/stat/nf_conntrack")?,
            snmp: read("/proc/thread-self/net/snmp")?,
            netstat: read("/proc/thread-self/net/netstat")?,
            snmp6: read_optional("/proc/thread-self/net/snmp6")?,
            dev: read("/proc/thread-self/net/dev")?,
        })
    })?;
    let mut dumps = Vec::new();
    let mut netlink_nft = None;
    let mut netlink_iptables = Vec::new();
    for &kind in ruleset_kinds {
        if kind == RulesetKind::Nft {
            // In-process over nfnetlink; `nft -j list ruleset` only if that fails.
            if let Ok(c) = super::nft_netlink::read(netns) {
                netlink_nft = Some(c);
                continue;
            }
        }
        // iptables-nft likewise; `iptables-nft-save -c` only if that fails.
        let family = match kind {
            RulesetKind::Iptables => Some(libc::NFPROTO_IPV4 as u8),
            RulesetKind::Ip6tables => Some(libc::NFPROTO_IPV6 as u8),
            _ => None,
        };
        if let Some(family) = family {
            if let Ok(c) = super::iptables_netlink::read(netns, family) {
                netlink_iptables.push((kind, c));
                continue;
            }
        }
        let (program, args) = kind.dumper();
        let argv: Vec<&str> = std::iter::once(program)
            .chain(args.iter().copied())
            .collect();
        let out = crate::netns::output_in(netns, &argv, None)
            .with_context(|| format!("dumping {} counters in `{netns}`", kind.key()))?;
        dumps.push((kind, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let mut counters =
        NodeCounters::parse(&texts, &dumps).with_context(|| format!("counters of `{netns}`"))?;
    if let Some(c) = netlink_nft {
        counters.rulesets.insert(RulesetKind::Nft, c);
    }
    counters.rulesets.extend(netlink_iptables);
    if counters.conntrack.is_none() {
        // Kernels built without CONFIG_NF_CONNTRACK_PROCFS (the netfilter selftests'
        // config, and it is obsolete upstream) have no /proc/net/stat/nf_conntrack: the
        // same per-CPU counters come over ctnetlink (IPCTNL_MSG_CT_GET_STATS_CPU, what
        // `conntrack -S` reads), the entry count with IPCTNL_MSG_CT_GET_STATS.
        if let (Ok(rows), Ok(entries)) = (
            crate::netns::ctnetlink::stats_per_cpu(netns),
            crate::netns::ctnetlink::count(netns),
        ) {
            counters.conntrack = Some(super::conntrack::ConntrackStat::from_per_cpu(
                entries, &rows,
            ));
        }
    }
    Ok(counters)
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

fn read_optional(path: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

#[cfg(all(test, feature = "lab"))]
mod tests {
    use super::super::observations_delta;
    use super::*;
    use crate::verdict::Observations;

    /// Needs root: a fresh namespace with a counting nft rule, read twice.
    #[test]
    fn snapshot_of_a_fresh_namespace() {
        let ns = format!("flobs{}", std::process::id());
        crate::netns::create(&ns).unwrap();
        let result = (|| -> Result<Observations> {
            let rules = "table inet t {\n chain c {\n  type filter hook output priority 0;\n  udp dport 9 counter comment \"out\"\n }\n}\n";
            crate::netns::output_in(&ns, &["nft", "-f", "-"], Some(rules))?;
            let before = snapshot_node(&ns, &[RulesetKind::Nft, RulesetKind::Iptables])?;
            crate::netns::run_in(&ns, || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
                for _ in 0..3 {
                    s.send_to(b"x", "127.0.0.1:9")?;
                }
                Ok(())
            })?;
            let after = snapshot_node(&ns, &[RulesetKind::Nft, RulesetKind::Iptables])?;
            Ok(observations_delta("a", &before, &after))
        })();
        crate::netns::delete(&ns).unwrap();
        let obs = result.unwrap();
        assert_eq!(obs["nft.a.t.c.out.packets"], 3.0);
        assert_eq!(obs["snmp.a.Udp.OutDatagrams"], 3.0);
        // Nothing listens on port 9: each datagram draws an ICMP port unreachable.
        assert_eq!(obs["snmp.a.Icmp.OutDestUnreachs"], 3.0);
        assert_eq!(obs["link.a.lo.tx_packets"], 6.0);
    }
}
