//! The fully expanded, validated description of one lab: what `build` creates.
//!
//! Pure data. Every name is final: namespace names carry the run prefix, device
//! names are the ones written in the scenario (they live inside namespaces, so
//! they never collide with another run).

use ipnet::IpNet;
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabPlan {
    /// Short unique id of this run, e.g. `fl3a9c1`; every namespace name starts with it.
    pub run_id: String,
    pub nodes: Vec<NodePlan>,
    pub veths: Vec<VethPlan>,
    /// Host-global sysctls (e.g. `net.netfilter.nf_conntrack_max`) written in the root
    /// namespace's /proc/sys; saved before and restored after the run.
    pub host_sysctls: Vec<Sysctl>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePlan {
    /// Logical name used in the scenario file (`a`, `host`, `vm1`).
    pub name: String,
    /// The network namespace name under /run/netns (`<run_id>-<name>`).
    pub netns: String,
    /// Devices created inside this node after the veths exist (bridges, vxlan, dummy).
    pub devices: Vec<DevicePlan>,
    /// Applied after devices exist and before addresses (so `accept_dad`, `proxy_arp`,
    /// per-device keys work). In file order.
    pub sysctls: Vec<Sysctl>,
    /// Addresses; IPv6 ones are added with IFA_F_NODAD.
    pub addresses: Vec<AddressPlan>,
    /// Every device of the node is brought up, `lo` included; this lists them in order.
    pub up: Vec<String>,
    pub routes: Vec<RoutePlan>,
    pub neighbours: Vec<NeighbourPlan>,
    /// Loaded in order after routes.
    pub rulesets: Vec<RulesetPlan>,
    /// Started last, in order; stopped by pid at teardown.
    pub processes: Vec<ProcessPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sysctl {
    /// Dotted key, e.g. `net.ipv4.ip_forward`.
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub node: String,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VethPlan {
    pub a: Endpoint,
    pub b: Endpoint,
    /// Optional MTU for both ends.
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    pub name: String,
    pub kind: DeviceKind,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DeviceKind {
    /// A Linux bridge; `ports` are devices of the same node enslaved to it.
    Bridge {
        ports: Vec<String>,
    },
    Vxlan {
        vni: u32,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        /// Underlay device.
        dev: Option<String>,
        port: u16,
    },
    Dummy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressPlan {
    pub dev: String,
    pub addr: IpNet,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutePlan {
    /// Destination; `0.0.0.0/0` or `::/0` for default.
    pub dst: IpNet,
    pub kind: RouteKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RouteKind {
    Unicast {
        via: Option<IpAddr>,
        dev: Option<String>,
        /// `onlink` lets a gateway outside the device's subnet (calico's 169.254.1.1).
        onlink: bool,
    },
    Multipath {
        nexthops: Vec<Nexthop>,
    },
    Blackhole,
    Unreachable,
    Prohibit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nexthop {
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    pub weight: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeighbourPlan {
    pub dev: String,
    pub ip: IpAddr,
    /// `aa:bb:cc:dd:ee:ff`
    pub mac: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum RulesetKind {
    /// Native nft syntax, loaded with `nft -f -`.
    Nft,
    /// iptables-restore syntax through iptables-nft-restore.
    Iptables,
    /// ip6tables-restore syntax through ip6tables-nft-restore.
    Ip6tables,
    /// iptables-restore syntax through iptables-legacy-restore (x_tables, not nf_tables).
    IptablesLegacy,
    Ip6tablesLegacy,
}

impl RulesetKind {
    /// The program that loads this kind of ruleset from standard input.
    pub fn loader(self) -> (&'static str, &'static [&'static str]) {
        match self {
            RulesetKind::Nft => ("nft", &["-f", "-"]),
            RulesetKind::Iptables => ("iptables-nft-restore", &["--noflush"]),
            RulesetKind::Ip6tables => ("ip6tables-nft-restore", &["--noflush"]),
            RulesetKind::IptablesLegacy => ("iptables-legacy-restore", &["--noflush"]),
            RulesetKind::Ip6tablesLegacy => ("ip6tables-legacy-restore", &["--noflush"]),
        }
    }

    /// The program that dumps this kind of ruleset with counters.
    pub fn dumper(self) -> (&'static str, &'static [&'static str]) {
        match self {
            RulesetKind::Nft => ("nft", &["-j", "list", "ruleset"]),
            RulesetKind::Iptables => ("iptables-nft-save", &["-c"]),
            RulesetKind::Ip6tables => ("ip6tables-nft-save", &["-c"]),
            RulesetKind::IptablesLegacy => ("iptables-legacy-save", &["-c"]),
            RulesetKind::Ip6tablesLegacy => ("ip6tables-legacy-save", &["-c"]),
        }
    }

    /// Name used in scenario files and observation names.
    pub fn key(self) -> &'static str {
        match self {
            RulesetKind::Nft => "nft",
            RulesetKind::Iptables => "iptables",
            RulesetKind::Ip6tables => "ip6tables",
            RulesetKind::IptablesLegacy => "iptables-legacy",
            RulesetKind::Ip6tablesLegacy => "ip6tables-legacy",
        }
    }

    pub const ALL: [RulesetKind; 5] = [
        RulesetKind::Nft,
        RulesetKind::Iptables,
        RulesetKind::Ip6tables,
        RulesetKind::IptablesLegacy,
        RulesetKind::Ip6tablesLegacy,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesetPlan {
    pub kind: RulesetKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessPlan {
    /// Name used in observation names and logs.
    pub name: String,
    /// argv; a first word of `faultlab` means this very executable.
    pub argv: Vec<String>,
    /// Wait until this TCP/UDP port is bound in the node before going on.
    pub ready_port: Option<u16>,
}
