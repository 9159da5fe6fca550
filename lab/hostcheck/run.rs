//! Runs a prepared cell through the existing runner and reads its outcome as a
//! verdict: pass of `affected` → affected, a failed `affected` → not affected,
//! inconclusive (the trigger did not fire), skip or a lab error → cannot tell.

use super::lab_cell::{self, Prepared};
use super::reader::HostReading;
use super::{HostVerdict, Verdict};
use crate::model::host_check::HostCheck;
use crate::runner::{self, RunOptions};
use crate::scenario::Scenario;
use crate::verdict::{CellResult, Outcome};
use std::path::Path;

pub fn check_scenario(
    scn: &Scenario,
    hc: &HostCheck,
    host: &HostReading,
    run_id: &str,
    artifacts: &Path,
) -> HostVerdict {
    let prepared = lab_cell::prepare(scn, hc, host);
    let one = Scenario {
        file: scn.file.clone(),
        name: scn.name.clone(),
        about: scn.about.clone(),
        seed: scn.seed.clone(),
        cells: vec![prepared.cell.clone()],
        host_check: None,
    };
    let opts = RunOptions {
        cell: None,
        repeat: 1,
        artifacts: artifacts.to_path_buf(),
        slow: 1.0,
    };
    let result = runner::run_scenario(&one, &opts, run_id);
    let cell = result
        .cells
        .into_iter()
        .next()
        .expect("one cell in, one result out");
    verdict_of(scn, hc, prepared, &cell)
}

/// The verdict of one cell result (pure: tested without root).
pub fn verdict_of(scn: &Scenario, hc: &HostCheck, p: Prepared, cell: &CellResult) -> HostVerdict {
    let mut evidence: Vec<String> = cell
        .trigger
        .iter()
        .map(|t| {
            format!(
                "trigger {}: {}",
                if t.ok { "held" } else { "did not hold" },
                t.detail
            )
        })
        .collect();
    evidence.extend(
        cell.checks
            .iter()
            .map(|c| format!("{} ({})", c.expr, c.detail)),
    );
    let (verdict, reason) = match cell.outcome {
        Outcome::Pass => (Verdict::Affected, None),
        Outcome::Fail if !cell.checks.is_empty() && cell.splats.is_empty() => {
            (Verdict::NotAffected, None)
        }
        Outcome::Fail if !cell.splats.is_empty() => (
            Verdict::CannotTell,
            Some(format!("the kernel logged a bug report: {}", cell.splats.join("; "))),
        ),
        Outcome::Fail => (
            Verdict::CannotTell,
            Some(format!(
                "the lab with this machine's settings did not run: {}",
                cell.reason.clone().unwrap_or_default()
            )),
        ),
        Outcome::Inconclusive => (
            Verdict::CannotTell,
            Some(format!(
                "the trigger did not fire with this machine's settings, so the run says nothing: {}",
                cell.reason.clone().unwrap_or_default()
            )),
        ),
        Outcome::Skip => (
            Verdict::CannotTell,
            Some(format!(
                "skipped: {}",
                cell.reason.clone().unwrap_or_default()
            )),
        ),
    };
    let mut deciding = p.settings;
    deciding.extend(p.rules);
    HostVerdict {
        scenario: scn.name.clone(),
        cell: hc.cell.clone(),
        node: hc.node.clone(),
        verdict,
        says: hc.says.clone(),
        reason,
        deciding,
        evidence,
        fix: hc.fix.clone(),
        notes: p.notes,
        duration_ms: cell.duration_ms,
    }
}

/// Every sysctl key the scenarios' `[host_check]` tables take from the machine.
pub fn sysctls_taken(scenarios: &[Scenario]) -> Vec<String> {
    scenarios
        .iter()
        .filter_map(|s| s.host_check.as_ref())
        .flat_map(|h| h.sysctls.iter().cloned())
        .collect()
}

/// Reads the machine, runs every scenario that has a `[host_check]`, and (with
/// `prove_unchanged`) compares the root namespace before and after.
pub fn check_host(
    scenarios: &[Scenario],
    src: &dyn super::reader::HostSource,
    prove_unchanged: bool,
) -> super::HostReport {
    let extra = sysctls_taken(scenarios);
    // Shared, like every lab, and taken before the first snapshot: no other run may
    // change host-global sysctls meanwhile, so the lab sees the machine's own
    // values and the two snapshots compare what this run did.
    let lock = crate::setup::state::HostLock::acquire_shared(
        std::time::Duration::from_secs(600),
        &crate::setup::signals::interrupted,
    );
    let before = prove_unchanged.then(super::snapshot::take);
    let reading = HostReading::read(src, &extra);
    let mut report = super::HostReport::from_reading(&reading);
    let run_id = crate::setup::run_id_from_env();
    let scratch = crate::setup::state::scratch_dir();
    for scn in scenarios {
        let Some(hc) = &scn.host_check else { continue };
        if crate::setup::signals::interrupted() {
            break;
        }
        let v = check_scenario(scn, hc, &reading, &run_id, &scratch);
        report.verdicts.push(v);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some(before) = before {
        report.host_changes = Some(super::snapshot::diff(&before, &super::snapshot::take()));
    }
    drop(lock);
    report
}
