//! Runs scenarios cell by cell and collects verdicts.

pub mod cell;
pub mod collectors;
mod configure;
pub mod gate;
pub mod kernel;
pub mod live;
pub mod prereq;
pub mod progress;
pub mod results;
pub mod schedule;
pub mod timeline;

use crate::model::CellPlan;
use crate::scenario::Scenario;
use crate::verdict::{CellResult, Outcome, ScenarioResult};
use progress::{Event, Progress};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct RunOptions {
    /// Only cells with this name (any scenario).
    pub cell: Option<String>,
    /// Multiplies each cell's own `repeat`.
    pub repeat: u32,
    /// Where pcaps and other files go (`results/<kernel>/artifacts/<scenario>`).
    pub artifacts: PathBuf,
    /// Timing multiplier for emulated kernels.
    pub slow: f64,
}

/// The cells of `scn` a run with `opts` runs, in order.
pub fn selected<'a>(scn: &'a Scenario, opts: &RunOptions) -> Vec<&'a CellPlan> {
    scn.cells
        .iter()
        .filter(|c| opts.cell.as_ref().is_none_or(|n| n == &c.name))
        .collect()
}

pub fn run_scenario(scn: &Scenario, opts: &RunOptions, run_id: &str) -> ScenarioResult {
    run_scenario_reporting(scn, opts, run_id, &progress::Silent)
}

/// As `run_scenario`, telling `progress` as each cell starts and ends (the caller
/// sends `Planned` and `Finished`: a run may span scenarios).
pub fn run_scenario_reporting(
    scn: &Scenario,
    opts: &RunOptions,
    run_id: &str,
    progress: &dyn Progress,
) -> ScenarioResult {
    let started = Instant::now();
    crate::setup::caps::set_slow(opts.slow);
    let kernel = kernel::release();
    let artifacts = opts.artifacts.join(&scn.name);
    let mut results = Vec::new();
    for cell in selected(scn, opts) {
        if crate::setup::signals::interrupted() {
            break;
        }
        let id = format!("{}::{}", scn.name, cell.name);
        progress.event(&Event::CellStarted { id: id.clone() });
        let t0 = Instant::now();
        let reps = cell.repeat.max(1) * opts.repeat.max(1);
        let result = if let Some(reason) = prereq::missing(&cell.requires) {
            CellResult {
                name: cell.name.clone(),
                about: cell.about.clone(),
                outcome: Outcome::Skip,
                reason: Some(reason),
                trigger: None,
                checks: vec![],
                observations: Default::default(),
                drops: vec![],
                captures: vec![],
                repetitions: vec![],
                splats: vec![],
                duration_ms: 0,
                phases_ms: Default::default(),
            }
        } else {
            let _ = std::fs::create_dir_all(&artifacts);
            let env = cell::CellEnv {
                run_id,
                kernel: &kernel,
                artifacts: &artifacts,
                slow: opts.slow,
                id: &id,
                progress,
            };
            let mut outcomes = Vec::new();
            let mut phases = std::collections::BTreeMap::new();
            let mut worst: Option<cell::RepetitionResult> = None;
            for rep in 0..reps {
                if crate::setup::signals::interrupted() {
                    break;
                }
                if reps > 1 {
                    progress.event(&Event::Repetition {
                        id: id.clone(),
                        n: rep + 1,
                        of: reps,
                    });
                }
                // A bug in one cell fails that cell (its lab torn down by unwinding),
                // not the run.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    cell::run_once(cell, &env)
                }))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    cell::RepetitionResult::error(
                        Outcome::Fail,
                        format!("faultlab bug: panicked: {msg}"),
                    )
                });
                // Cut short by SIGINT/SIGTERM: whatever it measured proves nothing.
                let r = if crate::setup::signals::interrupted() {
                    cell::RepetitionResult::error(
                        Outcome::Skip,
                        "interrupted (SIGINT/SIGTERM): not judged".into(),
                    )
                } else {
                    r
                };
                outcomes.push(r.outcome);
                for (phase, ms) in &r.phases_ms {
                    *phases.entry(phase.clone()).or_insert(0) += ms;
                }
                if worst.as_ref().is_none_or(|w| r.outcome > w.outcome) {
                    worst = Some(r);
                }
            }
            let worst = worst.unwrap_or_else(|| {
                cell::RepetitionResult::error(
                    Outcome::Inconclusive,
                    "interrupted before it ran".into(),
                )
            });
            CellResult {
                name: cell.name.clone(),
                about: cell.about.clone(),
                outcome: worst.outcome,
                reason: worst.reason,
                trigger: worst.trigger,
                checks: worst.checks,
                observations: worst.observations,
                drops: worst.drops,
                captures: worst.captures,
                repetitions: if reps > 1 { outcomes } else { vec![] },
                splats: worst.splats,
                duration_ms: t0.elapsed().as_millis() as u64,
                phases_ms: phases,
            }
        };
        progress.event(&Event::CellFinished {
            id,
            outcome: Some(result.outcome),
            ms: t0.elapsed().as_millis() as u64,
            reason: result.reason.clone(),
        });
        results.push(result);
    }
    ScenarioResult {
        scenario: scn.name.clone(),
        about: scn.about.clone(),
        file: scn.file.clone(),
        kernel_release: kernel,
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        duration_ms: started.elapsed().as_millis() as u64,
        cells: results,
    }
}
