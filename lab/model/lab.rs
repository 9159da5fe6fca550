//! The fully expanded, validated description of one lab: what `setup` creates.
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

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodePlan {
    /// Logical name used in the scenario file (`a`, `host`, `vm1`).
    pub name: String,
    /// The network namespace name under /run/netns (`<run_id>-<name>`).
    pub netns: String,
    /// Devices created inside this node after the veths exist (bridges, vxlan, dummy,
    /// macvlan, vrf), in creation order: a device comes after the device it is put on
    /// (a macvlan's `link`, a vxlan's `dev`).
    pub devices: Vec<DevicePlan>,
    /// Applied after devices exist and before addresses (so `accept_dad`, `proxy_arp`,
    /// per-device keys work). In file order.
    pub sysctls: Vec<Sysctl>,
    /// Addresses; IPv6 ones are added with IFA_F_NODAD.
    pub addresses: Vec<AddressPlan>,
    /// Every device of the node is brought up, `lo` included; this lists them in order.
    pub up: Vec<String>,
    pub routes: Vec<RoutePlan>,
    /// Policy routing rules (`ip rule`), added after the routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_rules: Vec<crate::model::IpRulePlan>,
    pub neighbours: Vec<NeighbourPlan>,
    /// Loaded in order after routes.
    pub rulesets: Vec<RulesetPlan>,
    /// Programs run to completion after the rulesets, in order (`tc qdisc add ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandPlan>,
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
    /// MAC address (`aa:bb:cc:dd:ee:ff`) given to this end when the veth is created
    /// (IFLA_ADDRESS). The loader always sets one: the scenario's `mac=`, or one derived
    /// from the node and device names (see [`derived_mac`]). `None`: the kernel's random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
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
    /// MAC address set at creation (IFLA_ADDRESS); the loader gives every device one
    /// (the scenario's `mac`, else derived like a veth end's). `None`: the kernel's
    /// choice, always the case for a passthru macvlan (it takes its link's MAC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
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
    /// `ip link add NAME link LINK type macvlan mode MODE`: a device with its own MAC on
    /// top of `link` (a device of the same node).
    Macvlan {
        link: String,
        mode: MacvlanMode,
        /// Source mode: the source MACs whose frames this device receives
        /// (IFLA_MACVLAN_MACADDR_DATA with MACVLAN_MACADDR_SET). Empty otherwise.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        sources: Vec<String>,
    },
    /// An L3 master device bound to routing table `table`; `ports` (devices of the same
    /// node) are enslaved to it.
    Vrf {
        table: u32,
        ports: Vec<String>,
    },
}

impl DeviceKind {
    /// The kind's name in scenario files and `ip link ... type NAME`.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceKind::Bridge { .. } => "bridge",
            DeviceKind::Vxlan { .. } => "vxlan",
            DeviceKind::Dummy => "dummy",
            DeviceKind::Macvlan { .. } => "macvlan",
            DeviceKind::Vrf { .. } => "vrf",
        }
    }

    /// The kernel option that provides this kind of device.
    pub fn kconfig(&self) -> &'static str {
        match self {
            DeviceKind::Bridge { .. } => "CONFIG_BRIDGE",
            DeviceKind::Vxlan { .. } => "CONFIG_VXLAN",
            DeviceKind::Dummy => "CONFIG_DUMMY",
            DeviceKind::Macvlan { .. } => "CONFIG_MACVLAN",
            DeviceKind::Vrf { .. } => "CONFIG_NET_VRF",
        }
    }

    /// Devices enslaved to this one (bridge and vrf ports).
    pub fn ports(&self) -> &[String] {
        match self {
            DeviceKind::Bridge { ports } | DeviceKind::Vrf { ports, .. } => ports,
            _ => &[],
        }
    }
}

/// `mode` of a macvlan device (`ip link add ... type macvlan mode MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Macvlans on the same link reach each other directly (the default).
    Bridge,
    /// No traffic between macvlans on the same link, not even through a reflecting switch.
    Private,
    /// Traffic between macvlans goes out of the link and must come back through a switch.
    Vepa,
    /// The one macvlan of its link; it takes the link's MAC.
    Passthru,
    /// Receives only frames from the listed source MACs.
    Source,
}

impl MacvlanMode {
    pub const ALL: [MacvlanMode; 5] = [
        MacvlanMode::Bridge,
        MacvlanMode::Private,
        MacvlanMode::Vepa,
        MacvlanMode::Passthru,
        MacvlanMode::Source,
    ];

    /// The name in scenario files and `ip link`.
    pub fn key(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        }
    }
}

/// The MAC a device gets when the scenario gives none: locally administered unicast
/// (`02:` then 40 bits of an FNV-1a hash of node and device names, and of `attempt`,
/// which the loader raises until the MAC is unused in the lab). Stable across runs, so
/// plans and snapshots are too.
pub fn derived_mac(node: &str, dev: &str, attempt: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let attempt = attempt.to_le_bytes();
    let bytes = node
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(dev.as_bytes())
        .chain(&[0])
        .chain(&attempt);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
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
    /// Routing table (`table 10`: a VRF's); the main table when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
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
    /// `aa:bb:cc:dd:ee:ff` (a scenario's `lladdr @node:dev` is resolved to that
    /// device's MAC by the loader).
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

/// One program a node runs to completion while the lab is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandPlan {
    /// argv; a first word of `faultlab` means this very executable.
    pub argv: Vec<String>,
}

impl std::fmt::Display for CommandPlan {
    /// The argv as a shell would need it quoted (shlex; a word with a NUL byte, which
    /// no argv can hold, is shown as it is).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self
            .argv
            .iter()
            .map(|w| shlex::try_quote(w).map_or_else(|_| w.clone(), |q| q.into_owned()))
            .collect();
        write!(f, "{}", words.join(" "))
    }
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
