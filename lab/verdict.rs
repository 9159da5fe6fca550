//! What a run produces: observations, per-cell outcomes and their evidence.
//! Shared by judge (which fills it), report (which prints it) and `show` / `diff`
//! (which read it back from JSON).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Named numeric observations of one cell run, e.g. `conntrack.sw.drop`,
/// `ping.received`, `iptables.sw.filter.FORWARD.policy.packets`.
pub type Observations = BTreeMap<String, f64>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// A prerequisite is missing (not root, no `nft`, feature absent); carries a reason.
    Skip,
    /// The trigger was not proven to fire: the experiment says nothing.
    Inconclusive,
    Fail,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Skip => "skip",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Fail => "fail",
        }
    }
}

/// One evaluated expectation (or trigger) with the values it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub expr: String,
    pub ok: bool,
    /// The observations the expression read, `name = value`, or the evaluation error.
    pub detail: String,
}

/// Packets freed with a drop reason (skb:kfree_skb), attributed where possible.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DropStat {
    pub reason: String,
    pub location: String,
    /// Lab node the drop was attributed to, if the correlation succeeded.
    pub node: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub name: String,
    #[serde(default)]
    pub about: String,
    pub outcome: Outcome,
    /// Why skip / inconclusive / fail, in one line.
    #[serde(default)]
    pub reason: Option<String>,
    /// The trigger check (proof the phenomenon's trigger fired), if the scenario has one.
    #[serde(default)]
    pub trigger: Option<Check>,
    #[serde(default)]
    pub checks: Vec<Check>,
    #[serde(default)]
    pub observations: Observations,
    #[serde(default)]
    pub drops: Vec<DropStat>,
    /// pcap files written for this cell, relative to the results directory.
    #[serde(default)]
    pub captures: Vec<String>,
    /// Outcome of each repetition when run with --repeat.
    #[serde(default)]
    pub repetitions: Vec<Outcome>,
    /// Kernel bug reports (WARN, BUG, KASAN, ...) logged while the cell ran: any
    /// fails the cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splats: Vec<String>,
    pub duration_ms: u64,
    /// Milliseconds per phase (build, observe, traffic, evidence, teardown),
    /// summed over repetitions.
    #[serde(default)]
    pub phases_ms: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    #[serde(default)]
    pub about: String,
    /// Scenario file as given on the command line.
    pub file: String,
    /// `uname -r` of the kernel the run happened on.
    pub kernel_release: String,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub duration_ms: u64,
    pub cells: Vec<CellResult>,
}

impl ScenarioResult {
    /// Worst outcome over all cells (`Pass` for a scenario with no cells).
    pub fn outcome(&self) -> Outcome {
        self.cells
            .iter()
            .map(|c| c.outcome)
            .max()
            .unwrap_or(Outcome::Pass)
    }
}

/// kselftest-style process exit code for a set of outcomes:
/// 0 all pass, 1 any fail or inconclusive, 4 only skips (and passes).
pub fn exit_code<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> i32 {
    let mut any_skip = false;
    let mut any_pass = false;
    for o in outcomes {
        match o {
            Outcome::Fail | Outcome::Inconclusive => return 1,
            Outcome::Skip => any_skip = true,
            Outcome::Pass => any_pass = true,
        }
    }
    if any_skip && !any_pass {
        4
    } else {
        0
    }
}
