//! The topology part of a scenario file: nodes, their devices, processes, and links.

use super::{RulesetMap, SpannedStr, SysctlMap};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Free text shown in `faultlab list --verbose` and plans.
    #[serde(default)]
    pub about: Option<String>,
    #[serde(default)]
    pub sysctls: SysctlMap,
    #[serde(default)]
    pub devices: BTreeMap<SpannedStr, DeviceSpec>,
    /// Extra addresses per device: `{ lo = ["10.0.0.1/32"] }`.
    #[serde(default)]
    pub addresses: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// `ip route` syntax: `default via 192.0.2.254`, `blackhole 10.9.0.0/16`, ...
    #[serde(default)]
    pub routes: Vec<SpannedStr>,
    /// `192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0`
    #[serde(default)]
    pub neighbours: Vec<SpannedStr>,
    /// Ruleset text by kind: nft, iptables, ip6tables, iptables-legacy, ip6tables-legacy.
    #[serde(default)]
    pub rulesets: RulesetMap,
    /// Rulesets loaded after `rulesets`: add rules to a template's node.
    #[serde(default)]
    pub extra_rulesets: RulesetMap,
    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// bridge, vxlan or dummy.
    pub kind: SpannedStr,
    /// bridge: devices of this node to enslave.
    #[serde(default)]
    pub ports: Vec<SpannedStr>,
    #[serde(default)]
    pub addresses: Vec<SpannedStr>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// vxlan: VNI.
    #[serde(default)]
    pub vni: Option<Spanned<u32>>,
    /// vxlan: local underlay address.
    #[serde(default)]
    pub local: Option<SpannedStr>,
    /// vxlan: remote underlay address.
    #[serde(default)]
    pub remote: Option<SpannedStr>,
    /// vxlan: underlay device.
    #[serde(default)]
    pub dev: Option<SpannedStr>,
    /// vxlan: UDP port (default 4789).
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub name: SpannedStr,
    /// argv; a first word `faultlab` runs this executable (e.g. `faultlab serve dns`).
    pub run: Spanned<Vec<String>>,
    /// Wait for this port to be bound before traffic starts.
    #[serde(default)]
    pub ready_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// `node:device [address/len ...]`
    pub a: SpannedStr,
    pub b: SpannedStr,
    #[serde(default)]
    pub mtu: Option<u32>,
}
