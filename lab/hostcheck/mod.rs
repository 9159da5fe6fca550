//! `faultlab check-host`: does this machine, with its kernel, sysctls and rules,
//! have the catalogue's phenomena? Each scenario with a `[host_check]` table is run
//! in namespaces with the machine's settings on the node that plays it, and its
//! outcome read as affected / not affected / cannot tell.
//!
//! reader (the machine, read-only) → mapping (names onto the lab) → lab_cell (the
//! cell to run) → run (the existing runner, outcome → verdict) → report;
//! snapshot proves the root namespace did not change.

pub mod lab_cell;
pub mod mapping;
pub mod reader;
pub mod report;
pub mod run;
pub mod snapshot;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Affected,
    NotAffected,
    CannotTell,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Affected => "affected",
            Verdict::NotAffected => "not affected",
            Verdict::CannotTell => "cannot tell",
        }
    }
}

/// One phenomenon's answer for the machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostVerdict {
    pub scenario: String,
    /// The cell whose lab and traffic were run.
    pub cell: String,
    /// The lab node that played the machine.
    pub node: String,
    pub verdict: Verdict,
    /// What "affected" means for this phenomenon.
    pub says: String,
    /// Why the answer is cannot tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The machine's values of the knobs this phenomenon depends on, and its
    /// deciding rules (present / absent).
    pub deciding: Vec<String>,
    /// The checks the runner evaluated, with the values they read.
    pub evidence: Vec<String>,
    pub fix: String,
    /// What could not be carried over from the machine.
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

/// The whole answer: what was read, the verdicts, and whether the host stayed as it was.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub source: String,
    pub kernel: String,
    pub uplink: String,
    /// `key = value` of every sysctl read (or why it could not be).
    pub settings: Vec<(String, String)>,
    /// Per ruleset kind: how many rules, or why it cannot tell.
    pub rulesets: Vec<(String, String)>,
    pub verdicts: Vec<HostVerdict>,
    /// None: not checked; Some(empty): unchanged; else the differences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_changes: Option<Vec<String>>,
}

impl HostReport {
    /// The header part: what the machine's reading says, before any run.
    pub fn from_reading(r: &reader::HostReading) -> HostReport {
        let show = |x: &reader::Reading| match x {
            reader::Reading::Value(v) => v.clone(),
            reader::Reading::Absent(why) => format!("cannot tell: {why}"),
        };
        HostReport {
            source: r.source.clone(),
            kernel: r.kernel.clone(),
            uplink: show(&r.uplink),
            settings: r
                .sysctls
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        reader::Reading::Value(v) => v.clone(),
                        reader::Reading::Absent(_) => "absent".into(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            rulesets: r
                .rulesets
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        reader::Reading::Value(t) => {
                            let n = mapping::rule_lines(k, t)
                                .iter()
                                .filter(|l| !l.contains(" :") && !l.contains(" hook "))
                                .count();
                            format!("{n} rules")
                        }
                        reader::Reading::Absent(why) => format!("cannot tell: {why}"),
                    };
                    (k.clone(), s)
                })
                .collect(),
            verdicts: vec![],
            host_changes: None,
        }
    }
}

/// Exit code: 0 nothing affected, 1 something affected or the host changed,
/// 4 only cannot-tell answers (like `run`'s skips).
pub fn exit_code(report: &HostReport) -> i32 {
    if report.host_changes.as_ref().is_some_and(|c| !c.is_empty())
        || report
            .verdicts
            .iter()
            .any(|v| v.verdict == Verdict::Affected)
    {
        1
    } else if !report.verdicts.is_empty()
        && report
            .verdicts
            .iter()
            .all(|v| v.verdict == Verdict::CannotTell)
    {
        4
    } else {
        0
    }
}
