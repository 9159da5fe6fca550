//! `faultlab run --jobs N` against the real kernel: the verdicts equal `--jobs 1`'s, and
//! the cells did overlap. Needs root:
//! `cargo test --features lab --test lab_schedule -- --test-threads=1`.
#![cfg(feature = "lab")]

use std::process::Command;
use std::time::Instant;

/// (cell, outcome) of each cell, the sum of the cells' durations, and the wall time.
fn run(jobs: u32) -> (Vec<(String, String)>, f64, f64) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "scenarios/bridge-netfilter.toml", "--no-results"])
        .args(["--format", "json", "--jobs", &jobs.to_string()])
        .output()
        .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cells = v["cells"].as_array().expect("one scenario's cells");
    let verdicts = cells
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let busy: f64 = cells
        .iter()
        .map(|c| c["duration_ms"].as_f64().unwrap() / 1000.0)
        .sum();
    (verdicts, busy, wall)
}

#[test]
fn jobs_give_the_same_verdicts_and_overlap() {
    let (one, _, _) = run(1);
    let (three, busy, wall) = run(3);
    assert!(one.len() >= 4, "{one:?}");
    assert_eq!(one, three);
    assert!(one.iter().all(|(_, o)| o == "pass"), "{one:?}");
    // Proof the cells overlapped: the run took less than the time its cells spent.
    assert!(
        wall < 0.8 * busy,
        "--jobs 3 took {wall:.1} s for {busy:.1} s of cells: nothing overlapped"
    );
}
