//! Kernel counters of one node, read before and after traffic, and their difference as
//! named observations.
//!
//! Observation names (every segment passed through [`segment`]):
//!
//! - `conntrack.<node>.<field>`: `/proc/net/stat/nf_conntrack`, summed over CPUs
//!   (`entries` is the after value).
//! - `snmp.<node>.<Group>.<Field>`: `/proc/net/snmp`, `/proc/net/netstat`,
//!   `/proc/net/snmp6` (`Ip`, `Tcp`, `TcpExt`, `IpExt`, `Ip6`, `Icmp6`, `Udp6` ...).
//!   Settings and levels (`Tcp.CurrEstab`, `Ip.Forwarding` ...) are after values.
//! - `link.<node>.<dev>.<stat>`: `/proc/net/dev`, `rx_bytes` ... `tx_compressed`.
//! - `nft.<node>.<table>.<chain>.<comment|ruleN>.packets|bytes` and
//!   `nft.<node>.<table>.counter.<name>.packets|bytes`.
//! - `<kind>.<node>.<table>.<chain>.policy.packets|bytes` and
//!   `<kind>.<node>.<table>.<chain>.<comment|N>.packets|bytes`, kind being
//!   `iptables`, `ip6tables`, `iptables-legacy` or `ip6tables-legacy`.
//!
//! Everything is a delta (after − before) unless said otherwise.

mod collect;
pub mod conntrack;
pub mod iptables;
pub mod iptables_netlink;
mod names;
pub mod netdev;
pub mod nft;
pub mod nft_netlink;
pub mod snmp;

pub use collect::snapshot_node;
pub use conntrack::ConntrackStat;
pub use names::{comment_segment, segment};
pub use netdev::DevStats;
pub use snmp::SnmpCounters;

use crate::model::RulesetKind;
use crate::verdict::Observations;
use std::collections::BTreeMap;

/// Rule counters of one ruleset dump, keyed by the name after `<kind>.<node>.`.
pub type RuleCounters = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {msg}")]
pub struct ParseError {
    pub file: &'static str,
    pub line: usize,
    pub msg: String,
}

impl ParseError {
    pub fn new(file: &'static str, line: usize, msg: impl Into<String>) -> Self {
        ParseError {
            file,
            line,
            msg: msg.into(),
        }
    }
}

/// Raw texts of one node's counter sources, as read from `/proc/thread-self/net/`.
#[derive(Debug, Clone, Default)]
pub struct ProcTexts {
    /// Absent when nf_conntrack is not loaded.
    pub nf_conntrack: Option<String>,
    pub snmp: String,
    pub netstat: String,
    /// Absent when IPv6 is disabled.
    pub snmp6: Option<String>,
    pub dev: String,
}

/// Every counter of one node at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub conntrack: Option<ConntrackStat>,
    pub snmp: SnmpCounters,
    pub dev: DevStats,
    pub rulesets: BTreeMap<RulesetKind, RuleCounters>,
}

impl NodeCounters {
    /// Parses the proc files and each ruleset kind's dump (`nft -j list ruleset`,
    /// `iptables-save -c` ...).
    pub fn parse(texts: &ProcTexts, dumps: &[(RulesetKind, String)]) -> Result<Self, ParseError> {
        let mut snmp = SnmpCounters::parse_pairs("snmp", &texts.snmp)?;
        snmp.merge(SnmpCounters::parse_pairs("netstat", &texts.netstat)?);
        if let Some(s6) = &texts.snmp6 {
            snmp.merge(SnmpCounters::parse_snmp6(s6)?);
        }
        let mut rulesets = BTreeMap::new();
        for (kind, dump) in dumps {
            let counters = match kind {
                RulesetKind::Nft => nft::parse(dump)?,
                _ => iptables::parse(dump)?,
            };
            rulesets.insert(*kind, counters);
        }
        Ok(NodeCounters {
            conntrack: texts
                .nf_conntrack
                .as_deref()
                .map(ConntrackStat::parse)
                .transpose()?,
            snmp,
            dev: netdev::parse(&texts.dev)?,
            rulesets,
        })
    }
}

/// Named observations of what changed on `node` between two snapshots.
pub fn observations_delta(node: &str, before: &NodeCounters, after: &NodeCounters) -> Observations {
    let node = segment(node);
    let mut obs = Observations::new();
    let diff = |a: u64, b: Option<u64>| a as f64 - b.unwrap_or(0) as f64;

    if let Some(ct_after) = &after.conntrack {
        let empty = ConntrackStat::default();
        let ct_before = before.conntrack.as_ref().unwrap_or(&empty);
        for (field, v) in ConntrackStat::delta(ct_before, ct_after) {
            obs.insert(format!("conntrack.{node}.{}", segment(&field)), v);
        }
    }
    for (group, fields) in &after.snmp.groups {
        for (field, &a) in fields {
            let v = if snmp::is_gauge(group, field) {
                a as f64
            } else {
                a as f64 - before.snmp.get(group, field).unwrap_or(0) as f64
            };
            obs.insert(
                format!("snmp.{node}.{}.{}", segment(group), segment(field)),
                v,
            );
        }
    }
    for (dev, stats) in &after.dev {
        let prev = before.dev.get(dev);
        for (stat, &a) in stats {
            let b = prev.and_then(|p| p.get(stat)).copied();
            obs.insert(format!("link.{node}.{}.{stat}", segment(dev)), diff(a, b));
        }
    }
    for (kind, counters) in &after.rulesets {
        let prev = before.rulesets.get(kind);
        for (name, &a) in counters {
            let b = prev.and_then(|p| p.get(name)).copied();
            obs.insert(format!("{}.{node}.{name}", kind.key()), diff(a, b));
        }
    }
    obs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ct: &str, dev: &str) -> ProcTexts {
        ProcTexts {
            nf_conntrack: Some(ct.to_owned()),
            snmp: include_str!("fixtures/snmp.txt").to_owned(),
            netstat: include_str!("fixtures/netstat.txt").to_owned(),
            snmp6: Some(include_str!("fixtures/snmp6.txt").to_owned()),
            dev: dev.to_owned(),
        }
    }

    fn snapshot(ct: &str, dev: &str, ipt: &str) -> NodeCounters {
        NodeCounters::parse(
            &texts(ct, dev),
            &[
                (
                    RulesetKind::Nft,
                    include_str!("fixtures/nft-ruleset.json").to_owned(),
                ),
                (RulesetKind::Iptables, ipt.to_owned()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn delta_names_and_values() {
        let before = snapshot(
            include_str!("fixtures/nf_conntrack-before.txt"),
            include_str!("fixtures/dev-sw-before.txt"),
            "*filter\n:FORWARD DROP [2:168]\n[1:84] -A FORWARD -m comment --comment keep -j ACCEPT\nCOMMIT\n",
        );
        let mut after = snapshot(
            include_str!("fixtures/nf_conntrack-after.txt"),
            include_str!("fixtures/dev-sw-after.txt"),
            "*filter\n:FORWARD DROP [22:1848]\n[1:84] -A FORWARD -m comment --comment keep -j ACCEPT\nCOMMIT\n",
        );
        after
            .snmp
            .groups
            .get_mut("Ip")
            .unwrap()
            .insert("InReceives".into(), 2659);
        after
            .snmp
            .groups
            .get_mut("Tcp")
            .unwrap()
            .insert("CurrEstab".into(), 3);

        let obs = observations_delta("sw", &before, &after);
        assert_eq!(obs["conntrack.sw.clashres"], 28.0);
        assert_eq!(obs["conntrack.sw.entries"], 41.0);
        assert_eq!(obs["snmp.sw.Ip.InReceives"], 20.0);
        assert_eq!(obs["snmp.sw.Tcp.CurrEstab"], 3.0);
        assert_eq!(obs["snmp.sw.Tcp.MaxConn"], -1.0);
        assert_eq!(obs["snmp.sw.TcpExt.TW"], 0.0);
        assert_eq!(obs["snmp.sw.Ip6.InReceives"], 0.0);
        assert_eq!(obs["link.sw.sw-a.rx_packets"], 20.0);
        assert_eq!(obs["link.sw.sw-a.rx_bytes"], 1960.0);
        assert_eq!(obs["link.sw.sw-b.tx_drop"], 20.0);
        assert_eq!(obs["iptables.sw.filter.FORWARD.policy.packets"], 20.0);
        assert_eq!(obs["iptables.sw.filter.FORWARD.policy.bytes"], 1680.0);
        assert_eq!(obs["iptables.sw.filter.FORWARD.keep.packets"], 0.0);
        assert_eq!(obs["nft.sw.filter.counter.dropped_syn.packets"], 0.0);
        assert_eq!(obs["nft.sw.filter.input.ct-invalid.packets"], 0.0);
        assert!(obs.keys().all(|k| !k.contains(' ')));
    }

    #[test]
    fn counters_missing_before_count_from_zero() {
        let after = snapshot(
            include_str!("fixtures/nf_conntrack-after.txt"),
            include_str!("fixtures/dev-sw-after.txt"),
            "*filter\n:FORWARD DROP [22:1848]\nCOMMIT\n",
        );
        let obs = observations_delta("sw-1", &NodeCounters::default(), &after);
        assert_eq!(obs["iptables.sw-1.filter.FORWARD.policy.packets"], 22.0);
        assert_eq!(obs["nft.sw-1.filter.input.rule2.packets"], 5.0);
        assert_eq!(obs["conntrack.sw-1.clashres"], 29.0);
    }

    #[test]
    fn absent_optional_files() {
        let mut t = texts("", include_str!("fixtures/dev.txt"));
        t.nf_conntrack = None;
        t.snmp6 = None;
        let c = NodeCounters::parse(&t, &[]).unwrap();
        assert!(c.conntrack.is_none());
        let obs = observations_delta("a", &c, &c);
        assert!(obs.keys().all(|k| !k.starts_with("conntrack.")));
        assert_eq!(obs["link.a.eth0.rx_bytes"], 0.0);
    }
}
