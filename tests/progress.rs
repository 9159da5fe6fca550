//! `faultlab run` progress: a bar under a pseudo-terminal (util-linux `script`),
//! plain lines without one, marker lines inside a `vm` guest. The fixture's two
//! cells skip at once (a required path is absent), so no root and no lab.

use faultlab::runner::progress::{parse_marker, Event, MARKER_ENV};
use std::process::{Command, Output};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/progress-skip.toml"
);

fn faultlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_faultlab"));
    // One job: the lines come in file order (with more, in the order cells end).
    c.args(["run", FIXTURE, "--no-results", "--jobs", "1"])
        .env_remove(MARKER_ENV)
        .env("TERM", "xterm");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_terminal_gets_a_bar() {
    let cmd = format!(
        "stty cols 160 rows 40; {} run {FIXTURE} --no-results --jobs 1",
        env!("CARGO_BIN_EXE_faultlab")
    );
    // -e: script exits with the command's status; the pty is both stdout and stderr.
    let out: Output = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove(MARKER_ENV)
        .env("TERM", "xterm")
        .output()
        .expect("util-linux `script` runs (apt-get install bsdutils)");
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{screen}");
    // The bar (done/total and the unit only it prints), redrawn after each cell,
    // with the finished cells' lines above it, all drawn with escape sequences.
    assert!(screen.contains("1/2 cells ["), "{screen:?}");
    assert!(screen.contains("2/2 cells ["), "{screen:?}");
    assert!(screen.contains("ETA"), "{screen:?}");
    assert!(
        screen.contains("[1/2] progress-skip::first SKIP"),
        "{screen:?}"
    );
    assert!(
        screen.contains("[2/2] progress-skip::second SKIP"),
        "{screen:?}"
    );
    assert!(screen.contains("\x1b["), "{screen:?}");
}

#[test]
fn without_a_terminal_plain_lines_and_no_escapes() {
    let out = faultlab().output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("[1/2] progress-skip::first SKIP (0.0s) — "),
        "{err}"
    );
    assert!(
        lines[1].starts_with("[2/2] progress-skip::second SKIP (0.0s) — "),
        "{err}"
    );
    assert!(
        !err.contains('\x1b') && !text(&out.stdout).contains('\x1b'),
        "{err:?}"
    );
    assert!(!err.contains("cells ["), "{err}");
}

#[test]
fn inside_a_vm_guest_progress_is_marker_lines() {
    let out = faultlab()
        .env(MARKER_ENV, "@@FAULTLAB:t1:")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    let events: Vec<Event> = err
        .lines()
        .filter_map(|l| l.strip_prefix("@@FAULTLAB:t1:PROGRESS "))
        .map(|p| parse_marker(p).unwrap_or_else(|| panic!("bad payload {p}")))
        .collect();
    assert_eq!(events.first(), Some(&Event::Planned { cells: 2 }), "{err}");
    assert_eq!(events.last(), Some(&Event::Finished), "{err}");
    let finished: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::CellFinished { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["progress-skip::first", "progress-skip::second"]);
    // The host draws them: no plain lines of its own.
    assert!(!err.lines().any(|l| l.starts_with("[1/2]")), "{err}");
}
