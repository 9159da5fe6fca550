//! The control steps of a timeline as written (`kind = "configure"`, `"conntrack"`,
//! `"wait"`, `"checkpoint"`, `"join"`, `"sleep"`), before they are resolved against
//! the lab. Traffic kinds are typed directly by `crate::model::steps::TrafficSpec`.

use super::{DeviceSpec, RulesetMap, SpannedStr, SysctlMap};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Keys every step may carry besides its kind's own parameters; removed before the
/// kind's parameters are typed.
pub const COMMON_STEP_KEYS: [&str; 7] = [
    "skip",
    "background",
    "sample",
    "sample_every_ms",
    "until",
    "until_every_ms",
    "before",
];

/// `kind = "checkpoint"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    pub name: String,
}

/// `kind = "join"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Background steps to wait for; all running ones when absent.
    #[serde(default)]
    pub steps: Vec<String>,
    /// First tells the steps it waits for to stop: a connection's hold ends, a sender
    /// starts nothing new (their `hold_ms`, `count`, ... are then caps).
    #[serde(default)]
    pub stop: bool,
}

/// `kind = "sleep"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub ms: u64,
}

/// Changes to one node in mid-run.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigureSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    /// `{ "net.ipv4.ip_forward" = 0 }`, written in order.
    #[serde(default)]
    pub sysctls: SysctlMap,
    /// Ruleset kinds to empty: `["nft", "iptables"]`.
    #[serde(default)]
    pub flush: Vec<SpannedStr>,
    /// Rulesets loaded on top of what is there (`iptables-restore --noflush`, `nft -f`).
    #[serde(default)]
    pub load: RulesetMap,
    /// Rulesets that replace their kind: a flush of the kind, then a load.
    #[serde(default)]
    pub replace: RulesetMap,
    /// `ip route` syntax, per operation.
    #[serde(default)]
    pub routes: ChangeLists,
    /// `IP lladdr MAC dev DEV` (delete: `IP dev DEV`), per operation.
    #[serde(default)]
    pub neighbours: ChangeLists,
    /// `ip rule` words, per operation: `{ add = ["fwmark 1 lookup 100"], delete = [...] }`
    /// (a delete names the rule as it was added).
    #[serde(default)]
    pub ip_rules: RuleChangeLists,
    /// Per device: `{ eth0 = { up = false, mtu = 1400, mac = "02:..." } }`.
    #[serde(default)]
    pub links: BTreeMap<SpannedStr, LinkChangeSpec>,
    /// Devices created now, as in `[nodes.X.devices]`.
    #[serde(default)]
    pub add_devices: BTreeMap<SpannedStr, DeviceSpec>,
    #[serde(default)]
    pub delete_devices: Vec<SpannedStr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChangeLists {
    #[serde(default)]
    pub add: Vec<SpannedStr>,
    #[serde(default)]
    pub replace: Vec<SpannedStr>,
    #[serde(default)]
    pub delete: Vec<SpannedStr>,
}

/// `ip rule` has no replace: rules are added and deleted.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleChangeLists {
    #[serde(default)]
    pub add: Vec<SpannedStr>,
    #[serde(default)]
    pub delete: Vec<SpannedStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChangeSpec {
    #[serde(default)]
    pub up: Option<bool>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    /// flush, delete or insert.
    pub action: String,
    /// Conntrack filter (README "Conntrack filters"): flush/delete only these.
    #[serde(default)]
    pub filter: Option<String>,
    /// insert: the entry.
    #[serde(default)]
    pub entry: Option<CtEntrySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtEntrySpec {
    /// tcp, udp, icmp, icmpv6, sctp, gre or a number.
    pub proto: String,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    #[serde(default)]
    pub sport: u16,
    #[serde(default)]
    pub dport: u16,
    /// The reply tuple (default: the inverse of the original), e.g. a NATed one.
    #[serde(default)]
    pub reply_src: Option<std::net::IpAddr>,
    #[serde(default)]
    pub reply_dst: Option<std::net::IpAddr>,
    #[serde(default)]
    pub reply_sport: Option<u16>,
    #[serde(default)]
    pub reply_dport: Option<u16>,
    /// Seconds (default 120).
    #[serde(default)]
    pub timeout: Option<u32>,
    /// Status bits: `"ASSURED,SEEN_REPLY"`.
    #[serde(default)]
    pub status: Option<String>,
    /// TCP state (default ESTABLISHED).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub mark: u32,
    #[serde(default)]
    pub zone: u16,
}

/// `kind = "exec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    /// One command line, split into words as a shell would (no shell runs it).
    pub run: String,
    /// The exit status that counts as success (default 0).
    #[serde(default)]
    pub expect_exit: Option<i32>,
    /// Default 10000; scaled by `--slow`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `fail` (default), `inconclusive`, or `record` (go on; `exit_code` for the
    /// expectations to judge).
    #[serde(default)]
    pub on_failure: crate::model::steps::OnTimeout,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// An expression over live observations.
    pub until: String,
    /// Default 5000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// First poll interval (default 10), doubling up to 200 ms.
    #[serde(default)]
    pub every_ms: Option<u64>,
    /// `fail` (default), `inconclusive`, or `record` (go on; `held = 0` for the
    /// expectations to judge).
    #[serde(default)]
    pub on_timeout: crate::model::steps::OnTimeout,
    /// An expression over live observations that makes `until` unreachable (e.g. a
    /// connection it needs has closed): once it holds and `until` does not, the wait
    /// ends at once as on a timeout (`on_timeout` applies; `gave_up = 1`).
    #[serde(default)]
    pub give_up: Option<String>,
}
