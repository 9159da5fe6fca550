//! What a run reports while it goes. The runner (and `vm`, and the benches) emit
//! [`Event`]s into a [`Progress`]; `report::progress` draws them (a bar on a
//! terminal, one line per finished cell otherwise). Nothing here draws.
//! `Progress` is `Send + Sync`: cells running on several threads report into one.

use crate::verdict::Outcome;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A stage before or between cells (`vm`: fetching the kernel, booting); the
    /// text is complete (`vm: booting ...`).
    Phase { what: String },
    /// A cell entered one of its phases (build, evidence start, traffic, observe,
    /// teardown); only the marker output sends it (`Progress::cell_phase`).
    CellPhase { id: String, phase: String },
    /// This many cells will run (sent once, before the first; again for each kernel
    /// of a `vm` run).
    Planned { cells: usize },
    /// `id` is `scenario::cell` (benches: what the step measures).
    CellStarted { id: String },
    /// Repetition `n` (1-based) of `of` of a cell with `repeat`.
    Repetition { id: String, n: u32, of: u32 },
    /// `outcome` is None for steps that are not judged (benches).
    CellFinished {
        id: String,
        outcome: Option<Outcome>,
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Every planned cell has been reported (or the run was interrupted).
    Finished,
}

pub trait Progress: Send + Sync {
    fn event(&self, e: &Event);

    /// The cell `id` (`scenario::cell`) enters `phase` of a repetition: `build`,
    /// `evidence start`, `traffic`, `observe`, `teardown`. Only [`Markers`] reports
    /// it (as a `Phase` event, `{id}: {phase}`), so a test can signal a run at each
    /// phase boundary; a bar or plain lines would only flicker.
    fn cell_phase(&self, _id: &str, _phase: &str) {}

    /// Run `f`, which writes to the terminal, without it tearing through whatever
    /// this reporter draws there.
    fn suspend(&self, f: &mut dyn FnMut()) {
        f()
    }
}

/// Reports nothing (library callers, tests).
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: &Event) {}
}

/// Events as marker lines, `PREFIX PROGRESS {json}`: how the run inside a
/// `faultlab vm` guest reports to the host over the serial console (the host
/// parses them in `vm::marker`). `PREFIX` is the boot's marker prefix.
pub struct Markers<W: Write + Send> {
    prefix: String,
    out: Mutex<W>,
}

/// Environment variable the `vm` guest sets to the marker prefix for the inner run.
pub const MARKER_ENV: &str = "FAULTLAB_PROGRESS_MARKER";

impl<W: Write + Send> Markers<W> {
    pub fn new(prefix: &str, out: W) -> Self {
        Markers {
            prefix: prefix.to_owned(),
            out: Mutex::new(out),
        }
    }
}

impl<W: Write + Send> Progress for Markers<W> {
    fn event(&self, e: &Event) {
        let json = serde_json::to_string(e).expect("events serialize");
        if let Ok(mut out) = self.out.lock() {
            // One write per line, so lines of concurrent cells do not interleave.
            let _ = out.write_all(format!("{}PROGRESS {json}\n", self.prefix).as_bytes());
            let _ = out.flush();
        }
    }

    fn cell_phase(&self, id: &str, phase: &str) {
        self.event(&Event::CellPhase {
            id: id.to_string(),
            phase: phase.to_string(),
        });
    }
}

/// The payload of a `PROGRESS` marker line.
pub fn parse_marker(payload: &str) -> Option<Event> {
    serde_json::from_str(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let events = vec![
            Event::Planned { cells: 2 },
            Event::CellStarted { id: "s::a".into() },
            Event::Repetition {
                id: "s::a".into(),
                n: 1,
                of: 3,
            },
            Event::CellFinished {
                id: "s::a".into(),
                outcome: Some(Outcome::Inconclusive),
                ms: 12,
                reason: Some("race did not fire".into()),
            },
            Event::Finished,
        ];
        let m = Markers::new("@@FAULTLAB:n1:", Vec::new());
        for e in &events {
            m.event(e);
        }
        m.cell_phase("s::a", "traffic");
        let events = [
            events,
            vec![Event::CellPhase {
                id: "s::a".into(),
                phase: "traffic".into(),
            }],
        ]
        .concat();
        let text = String::from_utf8(m.out.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().count(), events.len());
        let back: Vec<Event> = text
            .lines()
            .map(|l| {
                let payload = l.strip_prefix("@@FAULTLAB:n1:PROGRESS ").expect(l);
                parse_marker(payload).expect(payload)
            })
            .collect();
        assert_eq!(back, events);
        assert!(text.contains(r#"{"event":"planned","cells":2}"#), "{text}");
    }
}
