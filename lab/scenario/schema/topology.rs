//! The topology part of a scenario file: nodes, their devices, processes, and links.

use super::{RulesetMap, SpannedStr, SysctlMap};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Free text shown in `faultlab list --verbose` and plans.
    #[serde(default)]
    pub about: Option<String>,
    #[serde(default)]
    #[schemars(with = "super::stand_ins::Sysctls")]
    pub sysctls: SysctlMap,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, DeviceSpec>")]
    pub devices: BTreeMap<SpannedStr, DeviceSpec>,
    /// Extra addresses per device: `{ lo = ["10.0.0.1/32"] }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub addresses: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// `ip route` syntax: `default via 192.0.2.254`, `blackhole 10.9.0.0/16`, ...
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub routes: Vec<SpannedStr>,
    /// `ip neigh` syntax, added `nud permanent`: `192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0`.
    /// `lladdr @NODE:DEV` is the MAC that device of the lab will have (a veth end or a
    /// created device; every one gets a known MAC, see `mac`): `10.0.0.2 lladdr @b:eth0 dev eth0`.
    /// Policy routing rules, the words after `ip rule add`: `from 10.0.2.2 lookup 100`,
    /// `fwmark 1 lookup 100`, `iif eth1 lookup 100 priority 10`, `-6 to 2001:db8::/64 lookup 7`,
    /// `lookup main suppress_prefixlength 0`. Added after the routes.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ip_rules: Vec<SpannedStr>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub neighbours: Vec<SpannedStr>,
    /// Ruleset text by kind: nft, iptables, ip6tables, iptables-legacy, ip6tables-legacy.
    #[serde(default)]
    #[schemars(with = "super::stand_ins::Rulesets")]
    pub rulesets: RulesetMap,
    /// Rulesets loaded after `rulesets`: add rules to a template's node.
    #[serde(default)]
    #[schemars(with = "super::stand_ins::Rulesets")]
    pub extra_rulesets: RulesetMap,
    /// Programs run to completion inside the node after its rulesets, one command
    /// line each, split into words as a shell would (quotes work; no pipes, use
    /// `sh -c '...'`): `tc qdisc add dev eth0 root tbf rate 1mbit burst 4k latency 20ms`.
    /// For what the format has no field for; a non-zero exit fails the build.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub commands: Vec<SpannedStr>,
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// bridge, vxlan, dummy, macvlan or vrf. A kind the running kernel lacks (no
    /// CONFIG_DUMMY, CONFIG_NET_VRF, ...) makes the cell a skip with that reason.
    #[schemars(with = "String")]
    pub kind: SpannedStr,
    /// bridge, vrf: devices of this node to enslave (veth ends or other devices; a device
    /// has one master, and a bridge may itself be a vrf port).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ports: Vec<SpannedStr>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub addresses: Vec<SpannedStr>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// MAC address set when the device is created: `mac = "02:00:00:00:01:01"` (unicast:
    /// the first byte even). Without it the device still gets a fixed MAC, `02:` and a
    /// hash of node and device name (the same in every run, unique within the lab), so
    /// neighbours can name it as `@node:dev`. Not for a passthru macvlan (it takes its link's).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub mac: Option<SpannedStr>,
    /// vxlan: VNI.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub vni: Option<Spanned<u32>>,
    /// vxlan: local underlay address.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub local: Option<SpannedStr>,
    /// vxlan: remote underlay address.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub remote: Option<SpannedStr>,
    /// vxlan: underlay device.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dev: Option<SpannedStr>,
    /// vxlan: UDP port (default 4789).
    #[serde(default)]
    pub port: Option<u16>,
    /// macvlan: the device of this node it sits on (`link = "eth0"`; not a bridge port:
    /// a macvlan and a bridge cannot share a device, put the macvlan on the bridge).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub link: Option<SpannedStr>,
    /// macvlan: `bridge` (default), `private`, `vepa`, `passthru` (the only macvlan of
    /// its link, with the link's MAC) or `source` (receives only from `sources`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub mode: Option<SpannedStr>,
    /// macvlan in `source` mode: source MACs it receives from, each `aa:bb:cc:dd:ee:ff`
    /// or `@node:dev`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub sources: Vec<SpannedStr>,
    /// vrf: the routing table it binds (`table = 10`; not 0 or the reserved 253..=255).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub table: Option<Spanned<u32>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    #[schemars(with = "String")]
    pub name: SpannedStr,
    /// argv; a first word `faultlab` runs this executable (e.g. `faultlab serve dns`).
    #[schemars(with = "Vec<String>")]
    pub run: Spanned<Vec<String>>,
    /// Wait for this port to be bound before traffic starts.
    #[serde(default)]
    pub ready_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// `node:device [address/len ...] [mac=MAC]`, e.g.
    /// `a:eth0 192.0.2.1/24 mac=02:00:00:00:00:01`. Without `mac=` the end gets a fixed
    /// MAC derived from node and device name (see devices' `mac`).
    #[schemars(with = "String")]
    pub a: SpannedStr,
    #[schemars(with = "String")]
    pub b: SpannedStr,
    #[serde(default)]
    pub mtu: Option<u32>,
}
