//! Root-only: a run signalled at each phase boundary of a cell leaves nothing behind.
//!
//! For the first cell of each catalogue file (scenarios/*.toml), `faultlab run FILE
//! --cell C` runs with FAULTLAB_PROGRESS_MARKER set, so the runner prints a marker
//! line as the cell enters each phase (build, evidence start, traffic, observe,
//! teardown: lab/runner/cell.rs). The moment the marker for phase P appears on
//! stderr the test sends SIGINT, SIGTERM or SIGKILL, then checks:
//! - SIGINT / SIGTERM: the run tears its lab down itself and exits 130;
//! - SIGKILL: it died with a lab standing (its state file existed, for every phase
//!   after build); `faultlab clean` or the next run's sweep (alternately) removes it;
//! - then nothing of the run is left: namespaces, processes, tracefs instances, the
//!   state file in /run/faultlab, scratch dirs, and the host sysctls are the original
//!   ones (checked whenever no other faultlab run is live; the whole root namespace
//!   once more at the end).
//!
//! Every (file, phase, signal) triple is tried: 8 files × 5 phases × 3 signals = 120
//! runs, about 70 s on a loaded 2-core machine.
#![cfg(feature = "lab")]

mod support_lab;

use nix::sys::signal::{kill, Signal};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support_lab::*;

const PHASES: [&str; 5] = ["build", "evidence start", "traffic", "observe", "teardown"];
const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL];
const MARKER: &str = "@@PHASES:";

/// (path, scenario name, first cell) of each catalogue file, sorted.
fn catalogue() -> Vec<(String, String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("scenarios"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let scn = faultlab::scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            let first = scn.cells.first().expect("a cell").name.clone();
            (p.display().to_string(), scn.name, first)
        })
        .collect()
}

struct Signalled {
    pid: u32,
    status: std::process::ExitStatus,
    stderr: String,
    /// The run's state file existed when the signal was sent.
    had_state: bool,
}

/// Runs `cell` of `file` and sends `sig` the moment it reports entering `phase`.
fn signal_at(
    file: &str,
    id_of_cell: &str,
    cell: &str,
    phase: &str,
    sig: Signal,
    id: &str,
) -> Signalled {
    let mut child = faultlab()
        .args(["run", file, "--cell", cell, "--no-results"])
        .env("FAULTLAB_RUN_ID", id)
        .env(faultlab::runner::progress::MARKER_ENV, MARKER)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let want = format!("{id_of_cell}: {phase}");
    let prefix = format!("{MARKER}PROGRESS ");
    let mut lines = Vec::new();
    let mut had_state = None;
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(60).saturating_sub(t0.elapsed())) {
            Ok(line) => {
                let hit = had_state.is_none()
                    && line
                        .strip_prefix(&prefix)
                        .and_then(faultlab::runner::progress::parse_marker)
                        .is_some_and(|e| {
                            e == faultlab::runner::progress::Event::CellPhase {
                                id: id_of_cell.to_string(),
                                phase: phase.to_string(),
                            }
                        });
                if hit {
                    had_state = Some(faultlab::setup::state::state_path(id).exists());
                    kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "{want} ({sig:?}): no end within 60 s:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    reader.join().unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let stderr = lines.join("\n");
    let Some(had_state) = had_state else {
        panic!("{want}: the run never reported that phase ({status:?}):\n{stderr}");
    };
    Signalled {
        pid,
        status,
        stderr,
        had_state,
    }
}

#[test]
fn signals_at_every_phase_boundary_leave_nothing_behind() {
    let files = catalogue();
    let triples: Vec<(usize, &str, Signal)> = (0..files.len())
        .flat_map(|i| PHASES.iter().flat_map(move |p| SIGNALS.map(|s| (i, *p, s))))
        .collect();
    assert!(
        wait_quiet(Duration::from_secs(180)),
        "the machine never got quiet"
    );
    let before = root_snapshot();
    let sysctls = host_sysctls();
    let t0 = Instant::now();
    let (mut swept_by_next_run, mut cleaned, mut sysctl_checks) = (0, 0, 0);
    let mut kills = 0;
    for (n, &(i, phase, sig)) in triples.iter().enumerate() {
        let (file, name, cell) = &files[i];
        let id = run_id("f", n);
        let what = format!("{name}::{cell} at {phase}, {sig:?}");
        let r = signal_at(file, &format!("{name}::{cell}"), cell, phase, sig, &id);
        assert!(!r.stderr.contains("panicked"), "{what}:\n{}", r.stderr);
        if sig == Signal::SIGKILL {
            assert_eq!(r.status.signal(), Some(9), "{what}: {:?}", r.status);
            // Past `build` the lab stands: the kill left something to sweep.
            assert!(
                r.had_state || phase == "build",
                "{what}: no state file when killed"
            );
            kills += 1;
            if kills % 2 == 1 {
                let out = run(&["clean"], &id);
                assert!(out.status.success(), "clean: {}", text(&out.stderr));
                cleaned += 1;
            } else {
                let had_state = faultlab::setup::state::state_path(&id).exists();
                let next = run_id("g", n);
                let out = run(
                    &["run", &fixture("requires-missing.toml"), "--no-results"],
                    &next,
                );
                let err = text(&out.stderr);
                assert_eq!(out.status.code(), Some(4), "{what}: next run: {err}");
                if had_state {
                    assert!(
                        err.contains(&format!("cleaned leftover of an interrupted run: {id}")),
                        "{what}: the next run did not sweep it: {err}"
                    );
                    swept_by_next_run += 1;
                }
                assert_eq!(leftovers(&next), Vec::<String>::new(), "{what}: {next}");
            }
        } else {
            assert_eq!(
                r.status.code(),
                Some(130),
                "{what}: {:?}\n{}",
                r.status,
                r.stderr
            );
        }
        assert_eq!(leftovers(&id), Vec::<String>::new(), "{what} left things");
        assert_eq!(scratch_dirs_of(r.pid), Vec::<String>::new(), "{what}");
        if live_runs(&[]).is_empty() {
            let now = host_sysctls();
            if live_runs(&[]).is_empty() {
                assert_eq!(now, sysctls, "{what}: host sysctls changed");
                sysctl_checks += 1;
            }
        }
    }
    eprintln!(
        "{} (file, phase, signal) triples over {} files in {:.1} s: {cleaned} SIGKILLs \
         cleaned by `faultlab clean`, {swept_by_next_run} swept by the next run; host \
         sysctls checked after {sysctl_checks}",
        triples.len(),
        files.len(),
        t0.elapsed().as_secs_f64(),
    );
    assert!(
        wait_quiet(Duration::from_secs(180)),
        "other faultlab runs stayed live: cannot compare host state"
    );
    let d = diff(&before, &root_snapshot());
    assert!(
        d.is_empty(),
        "the root namespace changed:\n{}",
        d.join("\n")
    );
}
