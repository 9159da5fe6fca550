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

/// SIGTERM while three cells run at once: every lab is torn down, and nothing with the
/// run's id (namespaces, state files) is left.
#[test]
fn sigterm_with_overlapping_cells_leaves_nothing() {
    let run_id = format!("flsc{}", std::process::id() % 100_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "scenarios/bridge-netfilter.toml", "--no-results"])
        .args(["--jobs", "3"])
        .env("FAULTLAB_RUN_ID", &run_id)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ours = || -> Vec<String> {
        let mut v: Vec<String> = faultlab::netns::list()
            .into_iter()
            .filter(|n| n.starts_with(&run_id))
            .collect();
        if let Ok(rd) = std::fs::read_dir(faultlab::setup::state::STATE_DIR) {
            v.extend(
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&run_id)),
            );
        }
        v
    };
    // Wait until at least two cells' labs exist at once (proof of overlap), then stop.
    let t0 = Instant::now();
    let mut labs = 0;
    while t0.elapsed().as_secs() < 30 {
        let cells: std::collections::BTreeSet<String> = faultlab::netns::list()
            .into_iter()
            .filter(|n| n.starts_with(&run_id))
            .filter_map(|n| n.split('-').next().map(str::to_string))
            .collect();
        labs = labs.max(cells.len());
        if labs >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(labs >= 2, "never saw two labs of {run_id} at once");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted run does not succeed");
    assert_eq!(ours(), Vec::<String>::new(), "left behind by {run_id}");
}

/// A cell that only sleeps does not hold the CPUs: the race cells (quiet) run during its
/// sleep instead of after it, and still prove that their race fired.
#[test]
fn quiet_cells_run_while_a_waiting_cell_sleeps() {
    let dir = std::env::temp_dir().join(format!("faultlab-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let waiter = dir.join("waiter.toml");
    std::fs::write(
        &waiter,
        r#"name = "waiter"
about = "pings itself, then sleeps 3 s"
[nodes.a]
[[traffic]]
kind = "ping"
from = "a"
to = "127.0.0.1"
count = 1
[[traffic]]
kind = "sleep"
ms = 3000
[[cells]]
name = "sleeps"
expect = ["ping.received == 1"]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("run")
        .arg(&waiter)
        .args(["scenarios/conntrack-race-calico-dnat.toml", "--no-results"])
        .args(["--format", "json", "--jobs", "2"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("4 run quiet"), "{stderr}");
    // One JSON document per scenario.
    let scenarios: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(scenarios.len(), 2);
    for scn in &scenarios {
        for c in scn["cells"].as_array().unwrap() {
            assert_eq!(c["outcome"], "pass", "{c}");
        }
    }
    // Cells are reported as they end: every race cell ended during the 3 s sleep. Were
    // they held until the waiter ended, its line would come first.
    let ended: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("::"))
        .collect();
    let waiter_at = ended.iter().position(|l| l.contains("waiter::sleeps"));
    assert_eq!(waiter_at, Some(4), "{ended:#?}");
}
