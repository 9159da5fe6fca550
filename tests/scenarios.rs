//! The catalogue as a test suite, discovered from scenarios/*.toml.
//!
//! Without root: every file loads (parse + validation).
//! With `--features lab` (as root): every cell runs and must PASS; an
//! inconclusive race or a failed expectation fails the test; a missing
//! prerequisite marks the test ignored with the reason printed.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    faultlab::scenario::discover(&[dir.display().to_string()], &dir).expect("scenarios/ exists")
}

fn main() {
    // Scenario helper processes run `faultlab serve ...` as this very executable
    // (/proc/self/exe): in this test binary, serve as the faultlab binary would.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("serve") {
        if let Err(e) = faultlab::traffic::serve_main(&argv) {
            eprintln!("faultlab serve: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    #[cfg(feature = "lab")]
    let mut cells = 0;
    for file in scenario_files() {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let f = file.clone();
        trials.push(Trial::test(format!("load::{stem}"), move || {
            faultlab::scenario::load(&f)
                .map(|_| ())
                .map_err(|e| Failed::from(e.to_string()))
        }));
        #[cfg(feature = "lab")]
        if let Ok(scn) = faultlab::scenario::load(&file) {
            cells += scn.cells.len();
            trials.extend(lab::cell_trials(scn));
        }
    }
    #[cfg(feature = "lab")]
    trials.push(lab::verdict_table_trial(cells));
    libtest_mimic::run(&args, trials).exit();
}

#[cfg(feature = "lab")]
mod lab {
    use faultlab::runner::{self, RunOptions};
    use faultlab::scenario::Scenario;
    use faultlab::verdict::Outcome;
    use libtest_mimic::{Failed, Trial};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// `scenario::cell` → outcome of every cell this process ran.
    static OUTCOMES: Mutex<BTreeMap<String, Outcome>> = Mutex::new(BTreeMap::new());

    /// Runs last (the suite runs with --test-threads=1): pins the whole verdict
    /// table, so a kernel that behaves differently shows as a reviewable diff
    /// of tests/snapshots/scenarios__lab__catalogue_verdicts.snap.
    pub fn verdict_table_trial(cells: usize) -> Trial {
        Trial::test("catalogue::verdict-table", move || {
            let outcomes = OUTCOMES.lock().unwrap().clone();
            if outcomes.len() != cells {
                eprintln!(
                    "verdict table not compared: {} of {cells} cells ran (filtered run)",
                    outcomes.len()
                );
                return Ok(());
            }
            let table: String = outcomes
                .iter()
                .map(|(cell, o)| format!("{cell:<60} {}\n", o.as_str()))
                .collect();
            let result = std::panic::catch_unwind(|| {
                insta::assert_snapshot!("catalogue_verdicts", table);
            });
            result.map_err(|_| Failed::from("the verdict table changed (see the diff above)"))
        })
    }

    pub fn cell_trials(scn: Scenario) -> Vec<Trial> {
        let mut out = Vec::new();
        for cell in &scn.cells {
            let name = format!("{}::{}", scn.name, cell.name);
            let missing = runner::prereq::missing(&cell.requires);
            let scn = scn.clone();
            let cell_name = cell.name.clone();
            let trial = Trial::test(name, move || run_cell(&scn, &cell_name));
            out.push(match missing {
                Some(reason) => {
                    eprintln!("skip {}: {reason}", trial.name());
                    OUTCOMES
                        .lock()
                        .unwrap()
                        .insert(trial.name().to_string(), Outcome::Skip);
                    trial.with_ignored_flag(true)
                }
                None => trial,
            });
        }
        out
    }

    fn run_cell(scn: &Scenario, cell: &str) -> Result<(), Failed> {
        let _ = faultlab::setup::signals::install();
        let tmp = std::env::temp_dir().join("faultlab-test-artifacts");
        let opts = RunOptions {
            cell: Some(cell.to_string()),
            repeat: 1,
            artifacts: tmp,
            slow: 1.0,
        };
        let run_id = faultlab::setup::new_run_id();
        let result = runner::run_scenario(scn, &opts, &run_id);
        let c = result.cells.first().ok_or("the cell did not run")?;
        OUTCOMES
            .lock()
            .unwrap()
            .insert(format!("{}::{cell}", scn.name), c.outcome);
        match c.outcome {
            Outcome::Pass | Outcome::Skip => Ok(()),
            _ => Err(Failed::from(faultlab::report::table(
                std::slice::from_ref(&result),
                false,
            ))),
        }
    }
}
