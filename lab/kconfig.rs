//! `faultlab kernel-config [FILE]`: which options of the catalogue's kernel config
//! fragment (`config` at the top of the repository, in the kselftest convention)
//! a kernel lacks, and which cells cannot run as written because of it.
//!
//! Options map to cells through [`RULES`]: each names what in a cell's expanded
//! plan (the JSON `faultlab plan` prints) needs the option: a word of an nft or
//! iptables ruleset, a device kind, a multipath route, an IPv6 address, a sysctl,
//! a race protocol, a step kind, or an observation an expectation reads. A cell
//! whose `requires.paths` names the missing feature is skipped by the runner;
//! without tracing, `drops.*` expectations are not evaluated (skip when the
//! trigger or every expectation reads them); any other missing option makes the
//! lab fail to build or its expectations fail.

use crate::scenario;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The committed fragment (`config` at the top of the repository).
pub const FRAGMENT: &str = include_str!("../config");

/// Every option of the fragment is present (=y or =m).
pub const EXIT_OK: i32 = 0;
/// A required option is off.
pub const EXIT_MISSING: i32 = 1;
/// The kernel config cannot be read (or there is none to read): an input error,
/// faultlab's usage code (2 is kselftest's XFAIL).
pub const EXIT_UNREADABLE: i32 = crate::verdict::EXIT_USAGE;

/// A kernel `.config`: `CONFIG_X=value` lines; `# CONFIG_X is not set` reads as `n`.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    values: BTreeMap<String, String>,
}

impl KernelConfig {
    pub fn parse(text: &str) -> KernelConfig {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some(opt) = rest.strip_suffix(" is not set") {
                    if opt.starts_with("CONFIG_") {
                        values.insert(opt.to_owned(), "n".to_owned());
                    }
                }
                continue;
            }
            if let Some((opt, value)) = line.split_once('=') {
                if opt.starts_with("CONFIG_") && !opt.contains(char::is_whitespace) {
                    values.insert(opt.to_owned(), value.to_owned());
                }
            }
        }
        KernelConfig { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn value(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }

    /// Built in or a module.
    pub fn enabled(&self, option: &str) -> bool {
        matches!(self.value(option), Some("y") | Some("m"))
    }
}

/// The options a fragment asks for (`CONFIG_X=y` or `=m` lines), in file order.
pub fn fragment_options(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(opt, v)| opt.starts_with("CONFIG_") && matches!(*v, "y" | "m"))
        .map(|(opt, _)| opt.to_owned())
        .collect()
}

/// Ruleset kinds as the plan names them.
const IPT_NFT: &[&str] = &["iptables", "ip6tables"];
const IPT_LEGACY: &[&str] = &["iptables-legacy", "ip6tables-legacy"];
const IPT_ALL: &[&str] = &[
    "iptables",
    "ip6tables",
    "iptables-legacy",
    "ip6tables-legacy",
];

/// What in a cell's plan needs an option.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Every cell.
    Always,
    /// A veth pair (`[[links]]`).
    Veth,
    /// A device of this kind (`devices.NAME.kind`).
    Device(&'static str),
    /// A route with several next hops.
    MultipathRoute,
    /// A policy routing rule (`ip_rules`) of this family: IPv6 when true.
    IpRule(bool),
    /// An IPv6 address or prefix anywhere in the plan, or an ip6tables ruleset.
    Ipv6,
    /// A sysctl the cell sets (node or host) or a `requires.paths` entry under
    /// /proc/sys, whose key starts with this.
    Sysctl(&'static str),
    /// Any non-empty nft ruleset.
    NftAny,
    /// These words, in sequence, in an nft ruleset.
    Nft(&'static str),
    /// An nft table (or rule, chain) of this family.
    NftFamily(&'static str),
    /// These words, in sequence, in a ruleset of these kinds ("" = any rule).
    Ipt(&'static [&'static str], &'static str),
    /// A race step with this protocol.
    RaceProto(&'static str),
    /// A step of this kind.
    Step(&'static str),
    /// A step of this kind with this field set (not null, 0, false or empty) anywhere in it.
    StepField(&'static str, &'static str),
    /// An expression (trigger, expect, by_kernel) reads an observation with this prefix.
    Observes(&'static str),
    /// An expression reads a drop at a function (`drops.REASON@function`).
    DropsAt,
    /// An AF_PACKET socket: captures, tcp-inject, raw races of other than UDP.
    Packet,
}

/// What a missing option does to a cell that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// The lab cannot be built as written, or its expectations cannot hold: a failure.
    Fails,
    /// No drop evidence: `drops.*` expectations are not evaluated.
    NoDrops,
}

pub struct Rule {
    pub option: &'static str,
    /// What uses it, for the report.
    pub why: &'static str,
    /// Any of these in a cell's plan.
    pub needs: &'static [Need],
    pub effect: Effect,
}

const NETFILTER: &[Need] = &[
    Need::NftAny,
    Need::Ipt(IPT_ALL, ""),
    Need::Step("conntrack"),
    Need::Observes("conntrack."),
    Need::Observes("ct."),
    Need::Sysctl("net.netfilter."),
    Need::Sysctl("net.bridge.bridge-nf-"),
];
const CONNTRACK: &[Need] = &[
    Need::Step("conntrack"),
    Need::Observes("conntrack."),
    Need::Observes("ct."),
    Need::Sysctl("net.netfilter.nf_conntrack"),
    Need::Nft("ct"),
    Need::Nft("notrack"),
    Need::Nft("dnat"),
    Need::Nft("snat"),
    Need::Nft("masquerade"),
    Need::Nft("redirect"),
    Need::Nft("synproxy"),
    Need::Nft("type nat"),
    Need::Ipt(IPT_ALL, "-m conntrack"),
    Need::Ipt(IPT_ALL, "-m state"),
    Need::Ipt(IPT_ALL, "*nat"),
    Need::Ipt(IPT_ALL, "-j CT"),
    Need::Ipt(IPT_ALL, "-j NOTRACK"),
];
const NAT: &[Need] = &[
    Need::Nft("dnat"),
    Need::Nft("snat"),
    Need::Nft("masquerade"),
    Need::Nft("redirect"),
    Need::Nft("type nat"),
    Need::Ipt(IPT_ALL, "*nat"),
];
const NFNETLINK: &[Need] = &[
    Need::NftAny,
    Need::Ipt(IPT_NFT, ""),
    Need::Step("conntrack"),
    Need::Observes("ct."),
];
/// x_tables extensions iptables-nft runs through nft_compat: every `-m` match and
/// the targets that are not nf_tables verdicts.
const XT_EXT_NFT: &[Need] = &[
    Need::Ipt(IPT_NFT, "-m"),
    Need::Ipt(IPT_NFT, "-j DNAT"),
    Need::Ipt(IPT_NFT, "-j SNAT"),
    Need::Ipt(IPT_NFT, "-j MASQUERADE"),
    Need::Ipt(IPT_NFT, "-j REDIRECT"),
    Need::Ipt(IPT_NFT, "-j CT"),
    Need::Ipt(IPT_NFT, "-j NOTRACK"),
    Need::Ipt(IPT_NFT, "-j LOG"),
    Need::Ipt(IPT_NFT, "-j REJECT"),
    Need::Ipt(IPT_NFT, "-j MARK"),
];
/// x_tables: iptables-legacy, and the extensions of iptables-nft.
const XTABLES: &[Need] = &[
    Need::Ipt(IPT_LEGACY, ""),
    Need::Ipt(IPT_NFT, "-m"),
    Need::Ipt(IPT_NFT, "-j DNAT"),
    Need::Ipt(IPT_NFT, "-j SNAT"),
    Need::Ipt(IPT_NFT, "-j MASQUERADE"),
    Need::Ipt(IPT_NFT, "-j REDIRECT"),
    Need::Ipt(IPT_NFT, "-j CT"),
    Need::Ipt(IPT_NFT, "-j NOTRACK"),
    Need::Ipt(IPT_NFT, "-j LOG"),
    Need::Ipt(IPT_NFT, "-j REJECT"),
    Need::Ipt(IPT_NFT, "-j MARK"),
];
/// Kconfig hides several matches and targets (and SCTP tracking) behind it.
const ADVANCED: &[Need] = &[
    Need::Ipt(IPT_ALL, "-m"),
    Need::Ipt(IPT_ALL, "-j CT"),
    Need::Ipt(IPT_ALL, "-j NOTRACK"),
    Need::RaceProto("sctp-init"),
    Need::Nft("synproxy"),
];
const CT_TARGET: &[Need] = &[
    Need::Ipt(IPT_ALL, "-j CT"),
    Need::Ipt(IPT_ALL, "-j NOTRACK"),
];
const MULTIPATH: &[Need] = &[Need::MultipathRoute, Need::Sysctl("net.ipv4.fib_multipath")];
const SYNPROXY: &[Need] = &[Need::Nft("synproxy")];
const DROPS: &[Need] = &[Need::Observes("drops.")];

const fn rule(
    option: &'static str,
    why: &'static str,
    needs: &'static [Need],
    effect: Effect,
) -> Rule {
    Rule {
        option,
        why,
        needs,
        effect,
    }
}

use Effect::{Fails, NoDrops};

/// Every option of [`FRAGMENT`] and what in a cell needs it.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    rule("CONFIG_NAMESPACES", "every node is a network namespace", &[Need::Always], Fails),
    rule("CONFIG_NET_NS", "every node is a network namespace", &[Need::Always], Fails),
    rule("CONFIG_VETH", "[[links]] are veth pairs", &[Need::Veth], Fails),
    rule("CONFIG_BRIDGE", "devices of kind bridge", &[Need::Device("bridge")], Fails),
    rule("CONFIG_VXLAN", "devices of kind vxlan", &[Need::Device("vxlan")], Fails),
    rule("CONFIG_DUMMY", "devices of kind dummy", &[Need::Device("dummy")], Fails),
    rule("CONFIG_NET_L3_MASTER_DEV", "devices of kind vrf (a dependency)", &[Need::Device("vrf")], Fails),
    rule("CONFIG_IP_MULTIPLE_TABLES", "devices of kind vrf (their routing table), IPv4 ip_rules", &[Need::Device("vrf"), Need::IpRule(false)], Fails),
    rule("CONFIG_IPV6_MULTIPLE_TABLES", "devices of kind vrf (their IPv6 routing table), IPv6 ip_rules", &[Need::Device("vrf"), Need::IpRule(true)], Fails),
    rule("CONFIG_NET_VRF", "devices of kind vrf", &[Need::Device("vrf")], Fails),
    rule("CONFIG_PACKET", "AF_PACKET captures (captures, tcp-inject, raw races)", &[Need::Packet], Fails),
    rule("CONFIG_INET", "IPv4", &[Need::Always], Fails),
    rule("CONFIG_IPV6", "IPv6 addresses, routes or rulesets", &[Need::Ipv6], Fails),
    rule("CONFIG_IP_ADVANCED_ROUTER", "multipath routes (a dependency)", MULTIPATH, Fails),
    rule("CONFIG_IP_ROUTE_MULTIPATH", "multipath routes, fib_multipath_hash_* sysctls", MULTIPATH, Fails),
    rule("CONFIG_SYN_COOKIES", "nft synproxy (SYN cookies)", SYNPROXY, Fails),
    rule("CONFIG_NETFILTER", "rulesets, conntrack", NETFILTER, Fails),
    rule("CONFIG_NETFILTER_ADVANCED", "xt matches and targets, SCTP tracking, synproxy (a dependency)", ADVANCED, Fails),
    rule("CONFIG_NETFILTER_NETLINK", "nft, iptables-nft, ctnetlink", NFNETLINK, Fails),
    rule("CONFIG_NF_CONNTRACK", "conntrack: ct expressions, NAT, conntrack counters and steps", CONNTRACK, Fails),
    rule("CONFIG_NF_CONNTRACK_ZONES", "conntrack zones (nft ct zone, zones in conntrack steps)", &[Need::Nft("ct zone"), Need::StepField("conntrack", "zone")], Fails),
    rule("CONFIG_NF_CT_NETLINK", "conntrack steps, ct.* queries, and conntrack.* counters where procfs lacks them (ctnetlink)", &[Need::Step("conntrack"), Need::Observes("ct."), Need::Observes("conntrack.")], Fails),
    rule("CONFIG_NF_CT_PROTO_SCTP", "race proto sctp-init (SCTP tracking)", &[Need::RaceProto("sctp-init")], Fails),
    rule("CONFIG_NF_CT_PROTO_GRE", "race proto gre (GRE key tracking)", &[Need::RaceProto("gre")], Fails),
    rule("CONFIG_NF_CONNTRACK_PPTP", "race proto gre (PPTP's GRE tracker)", &[Need::RaceProto("gre")], Fails),
    rule("CONFIG_NF_NAT", "NAT rules (dnat, snat, masquerade, redirect, nat tables)", NAT, Fails),
    rule("CONFIG_NF_NAT_MASQUERADE", "masquerade / -j MASQUERADE", &[Need::Nft("masquerade"), Need::Ipt(IPT_ALL, "-j MASQUERADE")], Fails),
    rule("CONFIG_NF_NAT_REDIRECT", "redirect / -j REDIRECT", &[Need::Nft("redirect"), Need::Ipt(IPT_ALL, "-j REDIRECT")], Fails),
    rule("CONFIG_BRIDGE_NETFILTER", "br_netfilter: bridge-nf-call-* sysctls, -m physdev", &[Need::Sysctl("net.bridge.bridge-nf-"), Need::Ipt(IPT_ALL, "-m physdev")], Fails),
    rule("CONFIG_NF_TABLES_BRIDGE", "nft bridge family", &[Need::NftFamily("bridge")], Fails),
    rule("CONFIG_NF_TABLES", "nft and iptables-nft rulesets", &[Need::NftAny, Need::Ipt(IPT_NFT, "")], Fails),
    rule("CONFIG_NF_TABLES_INET", "nft inet family", &[Need::NftFamily("inet")], Fails),
    rule("CONFIG_NF_TABLES_IPV4", "nft ip family, iptables-nft", &[Need::NftFamily("ip"), Need::NftFamily("inet"), Need::Ipt(&["iptables"], "")], Fails),
    rule("CONFIG_NF_TABLES_IPV6", "nft ip6 family, ip6tables-nft", &[Need::NftFamily("ip6"), Need::NftFamily("inet"), Need::Ipt(&["ip6tables"], "")], Fails),
    rule("CONFIG_NFT_CT", "nft ct and notrack, iptables-nft state matches", &[Need::Nft("ct"), Need::Nft("notrack"), Need::Ipt(IPT_NFT, "-m conntrack"), Need::Ipt(IPT_NFT, "-m state")], Fails),
    rule("CONFIG_NFT_NAT", "nft dnat / snat and nat chains (iptables-nft *nat too)", &[Need::Nft("dnat"), Need::Nft("snat"), Need::Nft("type nat"), Need::Ipt(IPT_NFT, "*nat")], Fails),
    rule("CONFIG_NFT_MASQ", "nft masquerade", &[Need::Nft("masquerade")], Fails),
    rule("CONFIG_NFT_REDIR", "nft redirect", &[Need::Nft("redirect")], Fails),
    rule("CONFIG_NFT_NUMGEN", "nft numgen", &[Need::Nft("numgen")], Fails),
    rule("CONFIG_NFT_LIMIT", "nft limit", &[Need::Nft("limit")], Fails),
    rule("CONFIG_NETFILTER_SYNPROXY", "nft synproxy (core)", SYNPROXY, Fails),
    rule("CONFIG_NFT_SYNPROXY", "nft synproxy", SYNPROXY, Fails),
    rule("CONFIG_NFT_OBJREF", "nft named objects (counter name)", &[Need::Nft("counter name"), Need::Nft("quota name"), Need::Nft("limit name")], Fails),
    rule("CONFIG_NFT_COMPAT", "iptables-nft's xt matches and targets (nft_compat)", XT_EXT_NFT, Fails),
    rule("CONFIG_NETFILTER_XTABLES", "x_tables: iptables-legacy, xt extensions", XTABLES, Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_ADDRTYPE", "-m addrtype", &[Need::Ipt(IPT_ALL, "-m addrtype")], Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_COMMENT", "-m comment", &[Need::Ipt(IPT_ALL, "-m comment")], Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_CONNTRACK", "-m conntrack", &[Need::Ipt(IPT_ALL, "-m conntrack")], Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_PHYSDEV", "-m physdev", &[Need::Ipt(IPT_ALL, "-m physdev")], Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_STATE", "-m state", &[Need::Ipt(IPT_ALL, "-m state")], Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_STATISTIC", "-m statistic", &[Need::Ipt(IPT_ALL, "-m statistic")], Fails),
    rule("CONFIG_NETFILTER_XT_MATCH_STRING", "-m string", &[Need::Ipt(IPT_ALL, "-m string")], Fails),
    rule("CONFIG_NETFILTER_XT_NAT", "-j DNAT / -j SNAT", &[Need::Ipt(IPT_ALL, "-j DNAT"), Need::Ipt(IPT_ALL, "-j SNAT")], Fails),
    rule("CONFIG_NETFILTER_XT_TARGET_CT", "-j CT, -j NOTRACK", CT_TARGET, Fails),
    rule("CONFIG_NETFILTER_XT_TARGET_MASQUERADE", "-j MASQUERADE", &[Need::Ipt(IPT_ALL, "-j MASQUERADE")], Fails),
    rule("CONFIG_NETFILTER_XT_TARGET_NOTRACK", "-j NOTRACK", &[Need::Ipt(IPT_ALL, "-j NOTRACK")], Fails),
    rule("CONFIG_NETFILTER_XT_TARGET_REDIRECT", "-j REDIRECT", &[Need::Ipt(IPT_ALL, "-j REDIRECT")], Fails),
    rule("CONFIG_IP_NF_IPTABLES", "iptables-legacy", &[Need::Ipt(&["iptables-legacy"], "")], Fails),
    rule("CONFIG_IP_NF_FILTER", "iptables-legacy *filter", &[Need::Ipt(&["iptables-legacy"], "*filter")], Fails),
    rule("CONFIG_IP_NF_RAW", "iptables-legacy *raw; Kconfig's condition for -j CT / NOTRACK", &[Need::Ipt(&["iptables-legacy"], "*raw"), Need::Ipt(IPT_ALL, "-j CT"), Need::Ipt(IPT_ALL, "-j NOTRACK")], Fails),
    rule("CONFIG_IP_NF_MATCH_RPFILTER", "iptables -m rpfilter", &[Need::Ipt(&["iptables", "iptables-legacy"], "-m rpfilter")], Fails),
    rule("CONFIG_IP6_NF_IPTABLES", "ip6tables-legacy; Kconfig's condition for ip6tables -m rpfilter", &[Need::Ipt(&["ip6tables-legacy"], ""), Need::Ipt(&["ip6tables", "ip6tables-legacy"], "-m rpfilter")], Fails),
    rule("CONFIG_IP6_NF_RAW", "ip6tables-legacy *raw; Kconfig's condition for ip6tables -m rpfilter", &[Need::Ipt(&["ip6tables-legacy"], "*raw"), Need::Ipt(&["ip6tables", "ip6tables-legacy"], "-m rpfilter")], Fails),
    rule("CONFIG_IP6_NF_MATCH_RPFILTER", "ip6tables -m rpfilter", &[Need::Ipt(&["ip6tables", "ip6tables-legacy"], "-m rpfilter")], Fails),
    rule("CONFIG_NFT_FIB_IPV4", "nft fib (ip, inet)", &[Need::Nft("fib")], Fails),
    rule("CONFIG_NFT_FIB_IPV6", "nft fib (ip6, inet)", &[Need::Nft("fib")], Fails),
    rule("CONFIG_NFT_FIB_INET", "nft fib in the inet family", &[Need::Nft("fib")], Fails),
    rule("CONFIG_FTRACE", "drops.* (skb:kfree_skb through tracefs; a dependency)", DROPS, NoDrops),
    rule("CONFIG_TRACING", "drops.* (skb:kfree_skb through tracefs)", DROPS, NoDrops),
    rule("CONFIG_KALLSYMS", "drops.REASON@function (locations through /proc/kallsyms)", &[Need::DropsAt], NoDrops),
    rule("CONFIG_PRINTK", "kmsg.* (kernel log lines)", &[Need::Observes("kmsg.")], Fails),
];

/// Options later kernels fold into another one (the symbol is gone): present when
/// the config does not name them at all while the other is enabled. (Kconfig
/// writes `# CONFIG_X is not set` for every symbol it offers, so silence with
/// the only dependency enabled means the symbol does not exist.)
pub const FOLDED: &[(&str, &str)] = &[("CONFIG_NFT_OBJREF", "CONFIG_NF_TABLES")];

/// Is `option` there in `kernel`, built in, a module, or folded into its parent?
pub fn present(kernel: &KernelConfig, option: &str) -> bool {
    kernel.enabled(option)
        || FOLDED
            .iter()
            .any(|(o, into)| *o == option && kernel.value(o).is_none() && kernel.enabled(into))
}

/// What one cell's plan contains, as far as kernel options go.
#[derive(Debug, Default, Clone)]
pub struct CellFacts {
    /// (ruleset kind, text).
    pub rulesets: Vec<(String, String)>,
    pub device_kinds: BTreeSet<String>,
    pub veth: bool,
    pub multipath: bool,
    /// Families of the `ip_rules` (false: IPv4, true: IPv6).
    pub ip_rule_families: BTreeSet<bool>,
    pub ipv6: bool,
    /// Sysctl keys the cell sets, on nodes or the host.
    pub sysctls: BTreeSet<String>,
    /// `requires.paths` under /proc/sys, as sysctl keys (the runner skips without them).
    pub required_sysctls: BTreeSet<String>,
    pub step_kinds: BTreeSet<String>,
    pub race_protos: BTreeSet<String>,
    /// (step kind, field) of every field set in a step.
    pub step_fields: BTreeSet<(String, String)>,
    /// Trigger and expectations, including the by_kernel ones.
    pub expressions: Vec<String>,
    /// The trigger or every expectation reads `drops.*`: no drop evidence is a skip.
    pub judged_by_drops: bool,
    pub captures: bool,
}

impl CellFacts {
    /// From a cell plan serialized as `faultlab plan` prints it.
    pub fn from_plan(plan: &Value) -> CellFacts {
        let mut f = CellFacts::default();
        walk(plan, None, &mut f);
        f.veth = plan
            .pointer("/lab/veths")
            .and_then(Value::as_array)
            .is_some_and(|v| !v.is_empty());
        f.captures = plan
            .get("captures")
            .and_then(Value::as_array)
            .is_some_and(|v| !v.is_empty());
        if let Some(paths) = plan.pointer("/requires/paths").and_then(Value::as_array) {
            for p in paths.iter().filter_map(Value::as_str) {
                if let Some(key) = p.strip_prefix("/proc/sys/") {
                    f.required_sysctls.insert(key.replace('/', "."));
                }
            }
        }
        if let Some(steps) = plan.get("steps").and_then(Value::as_array) {
            for s in steps {
                let action = s.get("action").unwrap_or(s);
                if let Some(kind) = action.get("kind").and_then(Value::as_str) {
                    f.step_kinds.insert(kind.to_owned());
                    let mut fields = BTreeSet::new();
                    set_fields(action, &mut fields);
                    for field in fields {
                        f.step_fields.insert((kind.to_owned(), field));
                    }
                    if kind == "race" {
                        let proto = action.get("proto").and_then(Value::as_str).unwrap_or("udp");
                        f.race_protos.insert(proto.to_owned());
                    }
                }
            }
        }
        let trigger = plan.get("trigger").and_then(Value::as_str);
        let expect: Vec<&str> = plan
            .get("expect")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        f.judged_by_drops = trigger.is_some_and(|t| mentions(t, "drops."))
            || (!expect.is_empty() && expect.iter().all(|e| mentions(e, "drops.")));
        f.ipv6 |= f
            .rulesets
            .iter()
            .any(|(k, t)| k.starts_with("ip6tables") && has_rules(t));
        f
    }

    /// Does this cell need something `need` names?
    pub fn needs(&self, need: &Need) -> bool {
        match *need {
            Need::Always => true,
            Need::Veth => self.veth,
            Need::Device(kind) => self.device_kinds.contains(kind),
            Need::MultipathRoute => self.multipath,
            Need::IpRule(v6) => self.ip_rule_families.contains(&v6),
            Need::Ipv6 => self.ipv6,
            Need::Sysctl(prefix) => self
                .sysctls
                .iter()
                .chain(&self.required_sysctls)
                .any(|k| k.starts_with(prefix)),
            Need::NftAny => self.nft().any(has_rules),
            Need::Nft(words) => self.nft().any(|t| has_words(t, words)),
            Need::NftFamily(family) => self.nft().any(|t| nft_families(t).contains(family)),
            Need::Ipt(kinds, words) => self
                .rulesets
                .iter()
                .filter(|(k, _)| kinds.contains(&k.as_str()))
                .any(|(_, t)| {
                    if words.is_empty() {
                        has_rules(t)
                    } else {
                        has_words(t, words)
                    }
                }),
            Need::RaceProto(p) => self.race_protos.contains(p),
            Need::Step(kind) => self.step_kinds.contains(kind),
            Need::StepField(kind, field) => self
                .step_fields
                .contains(&(kind.to_owned(), field.to_owned())),
            Need::Observes(prefix) => self.expressions.iter().any(|e| mentions(e, prefix)),
            Need::DropsAt => self
                .expressions
                .iter()
                .any(|e| observations(e).any(|o| o.starts_with("drops.") && o.contains('@'))),
            Need::Packet => {
                self.captures
                    || self.step_kinds.contains("tcp-inject")
                    || self.race_protos.iter().any(|p| p != "udp")
                    || self.expressions.iter().any(|e| mentions(e, "capture."))
            }
        }
    }

    /// What a missing option of `rule` does to this cell, if it needs it.
    pub fn effect(&self, rule: &Rule) -> Option<CellEffect> {
        let hit: Vec<&Need> = rule.needs.iter().filter(|n| self.needs(n)).collect();
        if hit.is_empty() {
            return None;
        }
        // The runner checks requires.paths first: a missing sysctl there is a skip.
        let skipped = hit.iter().any(|n| match n {
            Need::Sysctl(prefix) => self.required_sysctls.iter().any(|k| k.starts_with(prefix)),
            _ => false,
        });
        Some(if skipped {
            CellEffect::Skip
        } else {
            match rule.effect {
                Effect::Fails => CellEffect::Fail,
                Effect::NoDrops if self.judged_by_drops => CellEffect::SkipNoDrops,
                Effect::NoDrops => CellEffect::NoDrops,
            }
        })
    }

    fn nft(&self) -> impl Iterator<Item = &str> {
        self.rulesets
            .iter()
            .filter(|(k, _)| k == "nft")
            .map(|(_, t)| t.as_str())
    }
}

/// What happens to one cell on a kernel without an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
/// Ordered by precedence: the runner checks `requires` before building the lab,
/// and a lab that cannot be built is never judged.
pub enum CellEffect {
    /// Judged without its `drops.*` expectations.
    NoDrops,
    /// Skipped after the run: its trigger, or every expectation, reads `drops.*`.
    SkipNoDrops,
    /// The lab cannot be built, or the expectations cannot hold.
    Fail,
    /// Skipped before the run: a `requires.paths` entry is missing.
    Skip,
}

impl CellEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            CellEffect::NoDrops => "no drop evidence",
            CellEffect::SkipNoDrops => "skip (drops)",
            CellEffect::Fail => "fail",
            CellEffect::Skip => "skip",
        }
    }
}

const RULESET_KINDS: &[&str] = &[
    "nft",
    "iptables",
    "ip6tables",
    "iptables-legacy",
    "ip6tables-legacy",
];

/// Collects rulesets, devices, routes, sysctls, expressions and IPv6 addresses
/// wherever they appear in the plan (nodes, cell overrides, configure steps).
fn walk(v: &Value, key: Option<&str>, f: &mut CellFacts) {
    match v {
        Value::Object(map) => {
            let kind = map.get("kind").and_then(Value::as_str);
            if let (Some(kind), Some(text)) = (kind, map.get("text").and_then(Value::as_str)) {
                if RULESET_KINDS.contains(&kind) {
                    f.rulesets.push((kind.to_owned(), text.to_owned()));
                    return;
                }
            }
            if kind == Some("multipath") {
                f.multipath = true;
            }
            // Node devices, and those a `configure` step adds mid-run.
            if matches!(key, Some("devices" | "add_devices")) {
                if let Some(k) = map
                    .get("kind")
                    .and_then(|k| k.get("kind"))
                    .and_then(Value::as_str)
                {
                    f.device_kinds.insert(k.to_owned());
                }
            }
            // A node's rules, a cell's, and a `configure` step's (`{op, what}`).
            if key == Some("ip_rules") {
                let rule = map.get("what").unwrap_or(v);
                if rule.get("action").is_some() {
                    let v6 = rule.get("v6").and_then(Value::as_bool).unwrap_or(false);
                    f.ip_rule_families.insert(v6);
                }
            }
            if let (Some(k), Some(_)) = (map.get("key").and_then(Value::as_str), map.get("value")) {
                f.sysctls.insert(k.to_owned());
            }
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("about" | "name", _) => {}
                    ("trigger", Value::String(s)) => f.expressions.push(s.clone()),
                    ("expect", Value::Array(items)) => f
                        .expressions
                        .extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
                    _ => walk(child, Some(k), f),
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                walk(i, key, f);
            }
        }
        Value::String(s) if is_ipv6(s) => f.ipv6 = true,
        _ => {}
    }
}

/// Keys with a value that is set (not null, 0, false, "" or empty), at any depth.
fn set_fields(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let set = match child {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                };
                if set {
                    out.insert(k.clone());
                }
                set_fields(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| set_fields(i, out)),
        _ => {}
    }
}

fn is_ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok() || s.parse::<ipnet::Ipv6Net>().is_ok()
}

/// A ruleset with anything in it but blank lines and comments.
fn has_rules(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'))
}

fn tokens(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || "{};,".contains(c)))
        .filter(|t| !t.is_empty())
        .collect()
}

/// `words` (space-separated) appear as consecutive tokens of `text`.
fn has_words(text: &str, words: &str) -> bool {
    let want: Vec<&str> = words.split_whitespace().collect();
    let toks = tokens(text);
    !want.is_empty() && toks.windows(want.len()).any(|w| w == want.as_slice())
}

const NFT_FAMILIES: &[&str] = &["ip", "ip6", "inet", "bridge", "arp", "netdev"];

/// The families an nft ruleset's tables, chains and rules name (`table filter` is ip).
fn nft_families(text: &str) -> BTreeSet<&'static str> {
    let toks = tokens(text);
    let mut out = BTreeSet::new();
    for (i, t) in toks.iter().enumerate() {
        if !matches!(*t, "table" | "chain" | "rule" | "set" | "map" | "flowtable") {
            continue;
        }
        // `chain NAME {` inside a table names no family; `add chain FAMILY ...` does.
        let statement = i == 0
            || matches!(
                toks[i - 1],
                "add" | "create" | "insert" | "replace" | "delete" | "flush" | "destroy"
            );
        if *t != "table" && !statement {
            continue;
        }
        match toks
            .get(i + 1)
            .and_then(|n| NFT_FAMILIES.iter().find(|f| *f == n))
        {
            Some(f) => {
                out.insert(*f);
            }
            None if *t == "table" => {
                out.insert("ip");
            }
            None => {}
        }
    }
    out
}

/// The observation names an expression reads (`a.b.c`, `drops.X@f`), at word boundaries.
fn observations(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || "._-@".contains(c)))
        .filter(|t| t.contains('.') && !t.starts_with(|c: char| c.is_ascii_digit()))
}

fn mentions(expr: &str, prefix: &str) -> bool {
    observations(expr).any(|o| o.starts_with(prefix))
}

/// One cell of the catalogue and its facts.
pub struct CatalogueCell {
    pub scenario: String,
    pub cell: String,
    pub facts: CellFacts,
}

impl CatalogueCell {
    pub fn id(&self) -> String {
        format!("{}::{}", self.scenario, self.cell)
    }
}

/// Every cell of the scenarios under `dir` (as `faultlab list` finds them).
pub fn catalogue(dir: &Path) -> Result<Vec<CatalogueCell>, String> {
    let files = scenario::discover(&[], dir)?;
    let mut out = Vec::new();
    for f in files {
        let s = scenario::load(&f).map_err(|e| e.to_string())?;
        for c in &s.cells {
            let plan = serde_json::to_value(c).map_err(|e| format!("{}: {e}", s.file))?;
            out.push(CatalogueCell {
                scenario: s.name.clone(),
                cell: c.name.clone(),
                facts: CellFacts::from_plan(&plan),
            });
        }
    }
    Ok(out)
}

/// The cells `option` matters to, with what its absence does to each.
pub fn cells_needing<'a>(
    option: &str,
    cells: &'a [CatalogueCell],
) -> Vec<(&'a CatalogueCell, CellEffect)> {
    let mut out: Vec<(&CatalogueCell, CellEffect)> = Vec::new();
    for rule in RULES.iter().filter(|r| r.option == option) {
        for c in cells {
            if let Some(e) = c.facts.effect(rule) {
                match out.iter_mut().find(|(x, _)| std::ptr::eq(*x, c)) {
                    Some((_, old)) => *old = (*old).max(e),
                    None => out.push((c, e)),
                }
            }
        }
    }
    out
}

/// The report: options of the fragment the kernel lacks, and the cells that
/// cannot run as written because of them. Returns (text, exit code).
pub fn report(
    source: &str,
    kernel: &KernelConfig,
    cells: Result<&[CatalogueCell], String>,
) -> (String, i32) {
    let options = fragment_options(FRAGMENT);
    let missing: Vec<&String> = options.iter().filter(|o| !present(kernel, o)).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "kernel-config: {source} against the catalogue's fragment `config` ({} options)",
        options.len()
    );
    if missing.is_empty() {
        let _ = writeln!(s, "all {} options are present (=y or =m)", options.len());
        return (s, EXIT_OK);
    }
    let _ = writeln!(s, "missing {} of {} options:", missing.len(), options.len());
    let width = missing.iter().map(|o| o.len()).max().unwrap_or(0);
    let mut by_cell: BTreeMap<String, (CellEffect, Vec<&str>)> = BTreeMap::new();
    for opt in &missing {
        let have = match kernel.value(opt) {
            Some("n") => "is not set".to_owned(),
            Some(v) => format!("={v}"),
            None => "absent".to_owned(),
        };
        let why = RULES
            .iter()
            .find(|r| r.option == opt.as_str())
            .map(|r| r.why)
            .unwrap_or("");
        let needing = match &cells {
            Ok(cells) => cells_needing(opt, cells),
            Err(_) => Vec::new(),
        };
        let count = match &cells {
            Ok(_) if needing.is_empty() => "no cell".to_owned(),
            Ok(_) => format!(
                "{} cell{}",
                needing.len(),
                if needing.len() == 1 { "" } else { "s" }
            ),
            Err(_) => "cells unknown".to_owned(),
        };
        let _ = writeln!(s, "  {opt:<width$}  {have:<10}  {why}: {count}");
        for (c, e) in needing {
            let entry = by_cell.entry(c.id()).or_insert((e, Vec::new()));
            entry.0 = entry.0.max(e);
            entry.1.push(opt.as_str());
        }
    }
    match cells {
        Err(why) => {
            let _ = writeln!(s, "cannot map options to cells: {why}");
        }
        Ok(cells) => {
            let _ = writeln!(
                s,
                "cells that cannot run as written ({} of {}):",
                by_cell.len(),
                cells.len()
            );
            let width = by_cell.keys().map(String::len).max().unwrap_or(0);
            for (id, (effect, opts)) in &by_cell {
                let _ = writeln!(
                    s,
                    "  {id:<width$}  {:<16}  {}",
                    effect.as_str(),
                    opts.join(", ")
                );
            }
        }
    }
    (s, EXIT_MISSING)
}

/// Where the running kernel's config is: /proc/config.gz, else /boot/config-RELEASE.
pub fn default_source() -> Result<PathBuf, String> {
    let proc = PathBuf::from("/proc/config.gz");
    if proc.exists() {
        return Ok(proc);
    }
    let release = crate::runner::kernel::release();
    let boot = PathBuf::from(format!("/boot/config-{release}"));
    if boot.exists() {
        return Ok(boot);
    }
    Err(format!(
        "neither /proc/config.gz (CONFIG_IKCONFIG_PROC) nor {} exists: give the kernel's .config as FILE",
        boot.display()
    ))
}

/// A config file's text; gzip-compressed files (/proc/config.gz) through `gzip -dc`.
pub fn read_config(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run gzip -dc {}: {e}", path.display()))?;
        if !out.status.success() {
            return Err(format!(
                "gzip -dc {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        out.stdout
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|_| format!("{} is not a text file", path.display()))
}

fn scenarios_dir() -> PathBuf {
    std::env::var_os("FAULTLAB_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("scenarios"))
}

/// `faultlab kernel-config [FILE]`; returns the exit code.
pub fn main(file: Option<&Path>) -> i32 {
    let path = match file {
        Some(f) => f.to_owned(),
        None => match default_source() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("kernel-config: {e}");
                return EXIT_UNREADABLE;
            }
        },
    };
    let text = match read_config(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kernel-config: {e}");
            return EXIT_UNREADABLE;
        }
    };
    let kernel = KernelConfig::parse(&text);
    if kernel.is_empty() {
        eprintln!(
            "kernel-config: {} has no CONFIG_ lines: not a kernel config",
            path.display()
        );
        return EXIT_UNREADABLE;
    }
    let dir = scenarios_dir();
    let cells = catalogue(&dir).map_err(|e| format!("{}: {e}", dir.display()));
    let (text, code) = report(
        &path.display().to_string(),
        &kernel,
        cells.as_deref().map_err(Clone::clone),
    );
    print!("{text}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_unset_options() {
        let k = KernelConfig::parse(
            "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x y\"\nCONFIG_E=250\n",
        );
        assert!(k.enabled("CONFIG_A") && k.enabled("CONFIG_B"));
        assert!(!k.enabled("CONFIG_C") && !k.enabled("CONFIG_D") && !k.enabled("CONFIG_Z"));
        assert_eq!(k.value("CONFIG_C"), Some("n"));
        assert_eq!(k.value("CONFIG_D"), Some("\"x y\""));
    }

    #[test]
    fn every_fragment_option_has_a_rule_and_every_rule_an_option() {
        let options = fragment_options(FRAGMENT);
        assert!(options.len() > 40, "{options:?}");
        for o in &options {
            assert!(RULES.iter().any(|r| r.option == o), "no rule for {o}");
        }
        for r in RULES {
            assert!(
                options.iter().any(|o| o == r.option),
                "{} is not in config",
                r.option
            );
        }
    }

    #[test]
    fn nft_words_and_families() {
        let t = "table inet filter {\n  chain forward {\n    type nat hook prerouting priority 0;\n    ct state new counter comment \"masquerade\"\n  }\n}\n";
        assert!(has_words(t, "type nat"));
        assert!(has_words(t, "ct"));
        assert!(!has_words(t, "masquerade"));
        assert_eq!(nft_families(t), BTreeSet::from(["inet"]));
        assert_eq!(
            nft_families("add rule ip copp forward counter drop\n"),
            BTreeSet::from(["ip"])
        );
        assert_eq!(nft_families("table filter { }"), BTreeSet::from(["ip"]));
    }

    #[test]
    fn observation_prefixes() {
        assert!(mentions("race.sent - conntrack.r.drop == 0", "conntrack."));
        assert!(!mentions("race.sent == nf_conntrack.x", "conntrack."));
        assert!(mentions("drops.NETFILTER_DROP@nft_do_chain >= 1", "drops."));
        assert!(!mentions("x.drops.y > 0", "drops."));
    }

    #[test]
    fn ip_rules_are_found_by_family_in_nodes_and_steps() {
        let node = serde_json::json!({
            "lab": { "nodes": [{ "name": "a", "ip_rules": [
                { "v6": false, "action": { "kind": "lookup", "table": 100 } }
            ] }] }
        });
        let f = CellFacts::from_plan(&node);
        assert!(f.needs(&Need::IpRule(false)));
        assert!(!f.needs(&Need::IpRule(true)));
        let step = serde_json::json!({
            "steps": [{ "action": { "kind": "configure", "node": "a", "ip_rules": [
                { "op": "add", "what": { "v6": true, "action": { "kind": "prohibit" } } }
            ] } }]
        });
        let f = CellFacts::from_plan(&step);
        assert!(f.needs(&Need::IpRule(true)));
        assert!(!f.needs(&Need::IpRule(false)));
    }

    #[test]
    fn iptables_rules_are_found_by_kind() {
        let f = CellFacts {
            rulesets: vec![(
                "iptables-legacy".into(),
                "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n".into(),
            )],
            ..Default::default()
        };
        assert!(f.needs(&Need::Ipt(&["iptables-legacy"], "*filter")));
        assert!(f.needs(&Need::Ipt(IPT_LEGACY, "")));
        assert!(!f.needs(&Need::Ipt(IPT_NFT, "")));
        let empty = CellFacts {
            rulesets: vec![("iptables".into(), "".into())],
            ..Default::default()
        };
        assert!(!empty.needs(&Need::Ipt(IPT_NFT, "")));
    }
}
