//! The scenario file as written (TOML), before validation. Every field that is
//! checked beyond its type keeps its span so errors can point at it.
//! Unknown fields are errors everywhere (`deny_unknown_fields`).

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

pub mod stand_ins;
mod steps;
mod topology;
pub use steps::*;
pub use topology::*;

pub type SpannedStr = Spanned<String>;
/// `{ "net.ipv4.ip_forward" = 1 }`: values are integers or strings. Kept in file
/// order, which is the order they are written (some writes have side effects:
/// changing `conf.all.forwarding` resets `accept_redirects`).
pub type SysctlMap = indexmap::IndexMap<SpannedStr, Spanned<toml::Value>>;
/// `{ nft = "...", iptables = ["...", "..."] }`: one text or several, loaded in order.
pub type RulesetMap = BTreeMap<SpannedStr, RulesetText>;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RulesetText {
    One(String),
    Many(Vec<String>),
}

impl RulesetText {
    /// The non-empty texts, in order (an empty string removes a kind in a cell).
    pub fn texts(&self) -> Vec<String> {
        let all = match self {
            RulesetText::One(s) => vec![s.clone()],
            RulesetText::Many(v) => v.clone(),
        };
        all.into_iter().filter(|t| !t.trim().is_empty()).collect()
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short identifier; used in results file names and test names.
    #[schemars(with = "String")]
    pub name: SpannedStr,
    /// One paragraph: the phenomenon and the field report it comes from.
    pub about: String,
    /// The field report (file in shared/seeds/) this scenario reproduces.
    #[serde(default)]
    pub seed: Option<String>,
    /// Repetitions of every cell (default 1); `--repeat` multiplies it.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub repeat: Option<Spanned<u32>>,
    /// Expression that proves the trigger fired; false makes a cell inconclusive.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub trigger: Option<SpannedStr>,
    #[serde(default)]
    pub requires: RequiresSpec,
    /// Instantiate a topology template from scenarios/topologies/.
    #[serde(default)]
    pub template: Option<TemplateUse>,
    /// Host-global sysctls written in the root namespace, restored afterwards.
    #[serde(default)]
    #[schemars(with = "stand_ins::Sysctls")]
    pub host_sysctls: SysctlMap,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, NodeSpec>")]
    pub nodes: BTreeMap<SpannedStr, NodeSpec>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// Traffic steps, run in order; each table has a `kind` (see "Traffic kinds" in README.md).
    #[serde(default)]
    #[schemars(with = "Vec<stand_ins::Step>")]
    pub traffic: Vec<Spanned<toml::Table>>,
    /// Packet captures, with named counters over what they saw.
    #[serde(default)]
    #[schemars(with = "Vec<stand_ins::Table>")]
    pub captures: Vec<Spanned<toml::Table>>,
    /// Kernel log lines to count while the traffic runs (`kmsg.<name>`).
    #[serde(default)]
    #[schemars(with = "Vec<stand_ins::Table>")]
    pub kmsg: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    pub evidence: EvidenceSpec,
    pub cells: Vec<CellSpec>,
    /// How `faultlab check-host` runs this phenomenon against the machine's own settings.
    #[serde(default)]
    pub host_check: Option<HostCheckSpec>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateUse {
    /// File stem under scenarios/topologies/ (e.g. `docker`).
    #[schemars(with = "String")]
    pub name: SpannedStr,
    /// Values for the template's `{param}` placeholders.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub params: BTreeMap<SpannedStr, Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiresSpec {
    /// Programs that must be on PATH (ruleset loaders are added automatically).
    #[serde(default)]
    pub programs: Vec<String>,
    /// Paths that must exist, e.g. `/proc/sys/net/bridge` for br_netfilter.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Minimum number of CPUs (races need two).
    #[serde(default)]
    pub cpus: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceSpec {
    /// Trace skb:kfree_skb drop reasons during traffic (default true).
    #[serde(default)]
    pub drops: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    #[schemars(with = "String")]
    pub name: SpannedStr,
    #[serde(default)]
    pub about: String,
    /// Per node sysctl overrides: `{ sw = { "net.bridge.bridge-nf-call-iptables" = 0 } }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, stand_ins::Sysctls>")]
    pub sysctls: BTreeMap<SpannedStr, SysctlMap>,
    #[serde(default)]
    #[schemars(with = "stand_ins::Sysctls")]
    pub host_sysctls: SysctlMap,
    /// Per node ruleset replacements by kind (`""` removes that kind).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, stand_ins::Rulesets>")]
    pub rulesets: BTreeMap<SpannedStr, RulesetMap>,
    /// Per node rulesets loaded after the node's own (add one rule).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, stand_ins::Rulesets>")]
    pub extra_rulesets: BTreeMap<SpannedStr, RulesetMap>,
    /// Per node routes added after the node's own.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub extra_routes: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node routes that replace the node's whole route list.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub routes: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node destinations whose routes this cell removes (`default`, `10.0.0.0/8`,
    /// `default table 100` for another table than main).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub remove_routes: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node `ip rule` lines that replace the node's whole rule list (`[]` removes them).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub ip_rules: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node `ip rule` lines added after the node's own.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub extra_ip_rules: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node command lines that replace the node's `commands` (`[]` removes them).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub commands: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node command lines run after the node's own `commands`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub extra_commands: BTreeMap<SpannedStr, Vec<SpannedStr>>,
    /// Per node helper processes added in this cell.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<ProcessSpec>>")]
    pub processes: BTreeMap<SpannedStr, Vec<ProcessSpec>>,
    /// Helper processes (by name, any node) this cell does not start.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub skip_processes: Vec<SpannedStr>,
    /// Steps added to this cell's timeline: at the end, or before the step named
    /// by `before = "..."`.
    #[serde(default)]
    #[schemars(with = "Vec<stand_ins::Step>")]
    pub extra_steps: Vec<Spanned<toml::Table>>,
    /// Per traffic step (by name) parameter overrides.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, stand_ins::Table>")]
    pub traffic: BTreeMap<SpannedStr, Spanned<toml::Table>>,
    /// Overrides the scenario's trigger; `""` means this cell has none.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub trigger: Option<SpannedStr>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub expect: Vec<SpannedStr>,
    /// Expectations that replace `expect` on matching kernels (first match wins).
    #[serde(default)]
    pub expect_by_kernel: Vec<KernelExpectSpec>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub repeat: Option<Spanned<u32>>,
    #[serde(default)]
    pub requires: RequiresSpec,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelExpectSpec {
    /// Version range: `>=5.6`, `<4.19`, `>=4.19, <5.6`.
    #[schemars(with = "String")]
    pub kernel: SpannedStr,
    /// Replaces the cell's trigger on these kernels when given.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub trigger: Option<SpannedStr>,
    #[schemars(with = "Vec<String>")]
    pub expect: Vec<SpannedStr>,
}

/// `[host_check]`: how `faultlab check-host` maps this machine onto the lab and
/// which observations of one cell mean "this machine is affected".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCheckSpec {
    /// The lab node that plays the machine being checked.
    #[schemars(with = "String")]
    pub node: SpannedStr,
    /// The cell whose lab and timeline are run with the machine's settings.
    #[schemars(with = "String")]
    pub cell: SpannedStr,
    /// Expression over the cell's observations that holds when the machine is affected.
    #[schemars(with = "String")]
    pub affected: SpannedStr,
    /// What "affected" means, one sentence (printed with the verdict).
    pub says: String,
    /// What would change the answer.
    pub fix: String,
    /// Sysctls read on the machine and written to the node (`conf.@uplink.` and
    /// device names are mapped through `interfaces`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub sysctls: Vec<SpannedStr>,
    /// Values to use when the machine lacks a sysctl (e.g. br_netfilter not loaded).
    #[serde(default)]
    #[schemars(with = "stand_ins::Sysctls")]
    pub absent: BTreeMap<SpannedStr, Spanned<toml::Value>>,
    /// Ruleset kinds taken from the machine; they replace the node's own.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub rulesets: Vec<SpannedStr>,
    /// Machine interface glob (or `@uplink`) → lab device (`*` allowed at the end).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub interfaces: indexmap::IndexMap<SpannedStr, SpannedStr>,
    /// Rules that decide the answer: name → glob (or globs) over the machine's
    /// rule lines (`iptables TABLE -A CHAIN ...`, `nft FAMILY TABLE CHAIN RULE`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RulesetText>")]
    pub rules: indexmap::IndexMap<SpannedStr, RulesetText>,
}
