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
    let args = Arguments::from_args();
    let mut trials = Vec::new();
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
            trials.extend(lab::cell_trials(scn));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

#[cfg(feature = "lab")]
mod lab {
    use faultlab::runner::{self, RunOptions};
    use faultlab::scenario::Scenario;
    use faultlab::verdict::Outcome;
    use libtest_mimic::{Failed, Trial};

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
                    trial.with_ignored_flag(true)
                }
                None => trial,
            });
        }
        out
    }

    fn run_cell(scn: &Scenario, cell: &str) -> Result<(), Failed> {
        let _ = faultlab::build::signals::install();
        let tmp = std::env::temp_dir().join("faultlab-test-artifacts");
        let opts = RunOptions {
            cell: Some(cell.to_string()),
            repeat: 1,
            artifacts: tmp,
            slow: 1.0,
            progress: false,
        };
        let run_id = faultlab::build::new_run_id();
        let result = runner::run_scenario(scn, &opts, &run_id);
        let c = result.cells.first().ok_or("the cell did not run")?;
        match c.outcome {
            Outcome::Pass | Outcome::Skip => Ok(()),
            _ => Err(Failed::from(faultlab::report::table(
                std::slice::from_ref(&result),
                false,
            ))),
        }
    }
}
