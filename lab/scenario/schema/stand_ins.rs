//! What the JSON Schema shows for the parser's span-carrying types. schemars cannot
//! see through `toml::Spanned` or `toml::Value`, so each field of those types names
//! one of these (`#[schemars(with = ...)]`); they are never deserialized.

use schemars::JsonSchema;
use std::collections::BTreeMap;

/// A sysctl value: an integer or a string (`"4096 87380 6291456"`).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SysctlValue {
    Integer(i64),
    Text(String),
}

/// `{ "net.ipv4.ip_forward" = 1 }`, written in file order.
pub type Sysctls = BTreeMap<String, SysctlValue>;

/// Ruleset text by kind: nft, iptables, ip6tables, iptables-legacy, ip6tables-legacy.
pub type Rulesets = BTreeMap<String, super::RulesetText>;

/// A table whose keys depend on where it is used (checked when the cell is expanded).
pub type Table = serde_json::Map<String, serde_json::Value>;

/// One step of the timeline: a traffic kind (`ping`, `udp`, `tcp`, `race`, `dns`,
/// `tcp-inject`, `churn`, `multiflow`) or a control step (`configure`, `conntrack`,
/// `wait`, `checkpoint`, `join`, `sleep`), with that kind's parameters (README
/// "Traffic kinds"). The parameters are checked when the cell is expanded.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct Step {
    pub kind: String,
    #[serde(flatten)]
    pub parameters: Table,
}
