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

/// kselftest's exit codes (tools/testing/selftests/kselftest.h: KSFT_PASS 0,
/// KSFT_FAIL 1, KSFT_XFAIL 2, KSFT_SKIP 4).
pub const EXIT_PASS: i32 = 0;
pub const EXIT_FAIL: i32 = 1;
/// An inconclusive cell: the race (trigger) did not fire, as the netfilter
/// selftests report it.
pub const EXIT_XFAIL: i32 = 2;
pub const EXIT_SKIP: i32 = 4;
/// Usage and scenario-file errors (sysexits.h EX_USAGE), off kselftest's codes.
pub const EXIT_USAGE: i32 = 64;

/// kselftest-style process exit code for a set of outcomes: 1 any fail, else 2 any
/// inconclusive, else 4 only skips, else 0 (all pass, or passes and skips).
pub fn exit_code<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> i32 {
    let (mut any_xfail, mut any_skip, mut any_pass) = (false, false, false);
    for o in outcomes {
        match o {
            Outcome::Fail => return EXIT_FAIL,
            Outcome::Inconclusive => any_xfail = true,
            Outcome::Skip => any_skip = true,
            Outcome::Pass => any_pass = true,
        }
    }
    if any_xfail {
        EXIT_XFAIL
    } else if any_skip && !any_pass {
        EXIT_SKIP
    } else {
        EXIT_PASS
    }
}

/// `git bisect run`'s codes: 0 good, 1 bad, 125 "cannot tell, skip this commit";
/// anything above 127 aborts the bisection.
pub const BISECT_GOOD: i32 = 0;
pub const BISECT_BAD: i32 = 1;
pub const BISECT_SKIP: i32 = 125;
/// A usage or scenario-file error under `--bisect`: no commit can be judged, so
/// the bisection stops instead of marking commits bad.
pub const BISECT_ABORT: i32 = 128;

/// What one cell says about a commit under `run --bisect --bad-threshold K`, over
/// its N repetitions (N = `--repeat` times the file's `repeat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BisectVerdict {
    /// At least K repetitions failed.
    Bad,
    /// Fewer than K failed and at least K were decisive (pass or fail).
    Good,
    /// Too few decisive repetitions (skips, races that did not fire) to tell.
    Undecided,
}

pub fn bisect_cell(repetitions: &[Outcome], bad_threshold: u32) -> BisectVerdict {
    let k = bad_threshold.max(1) as usize;
    let fails = repetitions.iter().filter(|o| **o == Outcome::Fail).count();
    let passes = repetitions.iter().filter(|o| **o == Outcome::Pass).count();
    if fails >= k {
        BisectVerdict::Bad
    } else if fails + passes >= k {
        BisectVerdict::Good
    } else {
        BisectVerdict::Undecided
    }
}

/// The outcome of every repetition of a cell (one, when it was not repeated).
pub fn repetition_outcomes(cell: &CellResult) -> Vec<Outcome> {
    if cell.repetitions.is_empty() {
        vec![cell.outcome]
    } else {
        cell.repetitions.clone()
    }
}

/// `run --bisect`'s exit code: 1 if any cell is bad, else 125 if any cell is
/// undecided (or nothing ran), else 0.
pub fn bisect_exit_code<'a>(
    cells: impl IntoIterator<Item = &'a CellResult>,
    bad_threshold: u32,
) -> i32 {
    let mut any = false;
    let mut undecided = false;
    for c in cells {
        any = true;
        match bisect_cell(&repetition_outcomes(c), bad_threshold) {
            BisectVerdict::Bad => return BISECT_BAD,
            BisectVerdict::Undecided => undecided = true,
            BisectVerdict::Good => {}
        }
    }
    if undecided || !any {
        BISECT_SKIP
    } else {
        BISECT_GOOD
    }
}

/// `vm … -- run --bisect`: the guest's own exit code passes through, a timed-out
/// or broken boot (124, 125, a kernel that does not boot) is "skip this commit",
/// never "bad".
pub fn bisect_vm_code(vm_code: i32) -> i32 {
    match vm_code {
        BISECT_GOOD | BISECT_BAD | BISECT_SKIP | BISECT_ABORT => vm_code,
        EXIT_USAGE => BISECT_ABORT,
        130 => 130,
        _ => BISECT_SKIP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    #[test]
    fn kselftest_exit_codes() {
        let table: &[(&[Outcome], i32)] = &[
            (&[], 0),
            (&[Pass], 0),
            (&[Pass, Skip], 0),
            (&[Skip, Skip], 4),
            (&[Inconclusive], 2),
            (&[Pass, Inconclusive, Skip], 2),
            (&[Inconclusive, Fail], 1),
            (&[Skip, Fail, Pass], 1),
        ];
        for (outcomes, code) in table {
            assert_eq!(exit_code(outcomes.iter()), *code, "{outcomes:?}");
        }
    }

    #[test]
    fn bisect_cell_table() {
        use BisectVerdict::*;
        let table: &[(&[Outcome], u32, BisectVerdict)] = &[
            (&[Pass], 1, Good),
            (&[Fail], 1, Bad),
            (&[Inconclusive], 1, Undecided),
            (&[Skip], 1, Undecided),
            // K = 0 means 1: a run without fails and without passes says nothing.
            (&[Skip], 0, Undecided),
            // A racy cell, 2 of 5 fail: bad at K = 2, good at K = 3.
            (&[Pass, Fail, Pass, Fail, Pass], 2, Bad),
            (&[Pass, Fail, Pass, Fail, Pass], 3, Good),
            // Races that did not fire are not passes: 1 fail + 1 pass < K = 3.
            (
                &[Inconclusive, Fail, Inconclusive, Pass, Skip],
                3,
                Undecided,
            ),
            (&[Inconclusive, Fail, Inconclusive, Pass, Skip], 1, Bad),
            (&[Inconclusive, Pass, Pass, Pass], 3, Good),
        ];
        for (reps, k, want) in table {
            assert_eq!(bisect_cell(reps, *k), *want, "{reps:?} K={k}");
        }
    }

    fn cell(outcome: Outcome, repetitions: &[Outcome]) -> CellResult {
        CellResult {
            name: "c".into(),
            about: String::new(),
            outcome,
            reason: None,
            trigger: None,
            checks: vec![],
            observations: Default::default(),
            drops: vec![],
            captures: vec![],
            repetitions: repetitions.to_vec(),
            splats: vec![],
            duration_ms: 0,
            phases_ms: Default::default(),
        }
    }

    #[test]
    fn bisect_run_table() {
        let good = cell(Pass, &[]);
        let good2 = cell(Pass, &[Pass, Pass]);
        let bad = cell(Fail, &[]);
        let race = cell(Inconclusive, &[]);
        let skip = cell(Skip, &[]);
        let racy = cell(Fail, &[Pass, Fail, Pass, Pass]);
        let table: &[(&[&CellResult], u32, i32)] = &[
            (&[&good, &good], 1, BISECT_GOOD),
            (&[&good, &bad], 1, BISECT_BAD),
            (&[&bad, &race], 1, BISECT_BAD),
            (&[&good, &race], 1, BISECT_SKIP),
            (&[&good, &skip], 1, BISECT_SKIP),
            (&[], 1, BISECT_SKIP),
            (&[&good, &racy], 1, BISECT_BAD),
            (&[&good2, &racy], 2, BISECT_GOOD),
            // K = 2 needs two decisive runs before a cell is good.
            (&[&good, &racy], 2, BISECT_SKIP),
        ];
        for (cells, k, code) in table {
            assert_eq!(
                bisect_exit_code(cells.iter().copied(), *k),
                *code,
                "{:?} K={k}",
                cells.iter().map(|c| c.outcome).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn bisect_through_the_vm() {
        // The guest's own answer passes through; 124 (timeout) and 125 (infra)
        // both mean "skip", as do odd codes; a usage error (64) aborts.
        let table = [
            (0, 0),
            (1, 1),
            (125, 125),
            (128, 128),
            (124, 125),
            (64, 128),
            (2, 125),
            (130, 130),
        ];
        for (vm, want) in table {
            assert_eq!(bisect_vm_code(vm), want, "vm exit {vm}");
        }
    }
}
