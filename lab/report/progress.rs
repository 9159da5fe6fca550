//! Draws a run's progress events (`runner::progress`): on a terminal an indicatif
//! bar (done / total, the current cell, elapsed, ETA) with one line per finished
//! cell above it; elsewhere only those lines, so CI logs show progress without
//! escape sequences.

use crate::runner::progress::{Event, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

/// The line printed when a cell (or bench step) ends: `[3/12] scn::cell PASS (1.2s)`.
pub fn finished_line(done: usize, total: usize, e: &Event) -> Option<String> {
    let Event::CellFinished {
        id,
        outcome,
        ms,
        reason,
    } = e
    else {
        return None;
    };
    let what = outcome.map_or("done".to_string(), |o| o.as_str().to_uppercase());
    let reason = reason
        .as_ref()
        .map(|r| format!(" — {r}"))
        .unwrap_or_default();
    Some(format!(
        "[{done}/{total}] {id} {what} ({:.1}s){reason}",
        *ms as f64 / 1000.0
    ))
}

/// A bar on stderr when it is a terminal, plain lines otherwise. `unit` names what
/// is counted (`cells`, `rounds`).
pub fn for_stderr(unit: &str) -> Box<dyn Progress> {
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    if std::io::stderr().is_terminal() && !dumb {
        Box::new(Bar::new(ProgressDrawTarget::stderr, unit))
    } else {
        Box::new(Lines::new(std::io::stderr(), unit))
    }
}

/// One line per finished cell, and phase lines; nothing else.
pub struct Lines<W: Write + Send> {
    state: Mutex<(W, usize, usize)>,
}

impl<W: Write + Send> Lines<W> {
    pub fn new(out: W, _unit: &str) -> Self {
        Lines {
            state: Mutex::new((out, 0, 0)),
        }
    }

    pub fn into_inner(self) -> W {
        self.state
            .into_inner()
            .map(|s| s.0)
            .unwrap_or_else(|p| p.into_inner().0)
    }
}

impl<W: Write + Send> Progress for Lines<W> {
    fn event(&self, e: &Event) {
        let Ok(mut s) = self.state.lock() else { return };
        let (out, done, total) = &mut *s;
        let line = match e {
            Event::Phase { what } => Some(what.clone()),
            Event::Planned { cells } => {
                (*done, *total) = (0, *cells);
                None
            }
            Event::CellFinished { .. } => {
                *done += 1;
                finished_line(*done, *total, e)
            }
            Event::CellStarted { .. }
            | Event::CellPhase { .. }
            | Event::Repetition { .. }
            | Event::Finished => None,
        };
        if let Some(l) = line {
            let _ = writeln!(out, "{l}");
            let _ = out.flush();
        }
    }
}

/// The terminal bar. A `Planned` after `Finished` (the next kernel of a `vm` run)
/// starts a new bar. Finished cells are printed above it as in [`Lines`].
pub struct Bar {
    target: Box<dyn Fn() -> ProgressDrawTarget + Send + Sync>,
    bar: Mutex<Option<(ProgressBar, usize)>>,
    counting: ProgressStyle,
    phase: ProgressStyle,
}

impl Bar {
    /// `target` makes the draw target of each bar (`ProgressDrawTarget::stderr`).
    pub fn new(
        target: impl Fn() -> ProgressDrawTarget + Send + Sync + 'static,
        unit: &str,
    ) -> Self {
        let counting = "{spinner} {pos}/{len} UNIT [{bar:20}] {elapsed} · ETA {eta} · {wide_msg}"
            .replace("UNIT", unit);
        Bar {
            target: Box::new(target),
            bar: Mutex::new(None),
            counting: ProgressStyle::with_template(&counting)
                .expect("a valid template")
                .progress_chars("=> "),
            phase: ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
                .expect("a valid template"),
        }
    }

    fn make(&self, style: &ProgressStyle) -> ProgressBar {
        let target = (self.target)();
        let bar = ProgressBar::with_draw_target(None, target).with_style(style.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

impl Progress for Bar {
    fn event(&self, e: &Event) {
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        match e {
            Event::Phase { what } => {
                let (bar, _) = slot.get_or_insert_with(|| (self.make(&self.phase), 0));
                bar.set_message(what.clone());
            }
            Event::Planned { cells } => {
                let (bar, done) = slot.get_or_insert_with(|| (self.make(&self.counting), 0));
                bar.set_style(self.counting.clone());
                bar.set_length(*cells as u64);
                bar.set_position(0);
                bar.reset_eta();
                *done = 0;
            }
            Event::CellStarted { id } => {
                if let Some((bar, _)) = slot.as_ref() {
                    bar.set_message(id.clone());
                }
            }
            Event::CellPhase { id, phase } => {
                if let Some((bar, _)) = slot.as_ref() {
                    bar.set_message(format!("{id}: {phase}"));
                }
            }
            Event::Repetition { id, n, of } => {
                if let Some((bar, _)) = slot.as_ref() {
                    bar.set_message(format!("{id} (repetition {n}/{of})"));
                }
            }
            Event::CellFinished { .. } => {
                if let Some((bar, done)) = slot.as_mut() {
                    *done += 1;
                    let total = bar.length().unwrap_or(0) as usize;
                    bar.inc(1);
                    if let Some(line) = finished_line(*done, total, e) {
                        bar.println(line);
                    }
                }
            }
            Event::Finished => {
                // The finished cells' lines stay; the bar makes room for the table.
                if let Some((bar, _)) = slot.take() {
                    bar.disable_steady_tick();
                    bar.finish_and_clear();
                }
            }
        }
    }

    fn suspend(&self, f: &mut dyn FnMut()) {
        match self
            .bar
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(|(b, _)| b.clone()))
        {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some((bar, _)) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Outcome;

    fn events() -> Vec<Event> {
        let done = |id: &str, outcome, ms, reason: Option<&str>| Event::CellFinished {
            id: id.into(),
            outcome,
            ms,
            reason: reason.map(Into::into),
        };
        vec![
            Event::Phase {
                what: "vm: booting 6.1.0-37-cloud-amd64 under tcg".into(),
            },
            Event::Planned { cells: 3 },
            Event::CellStarted {
                id: "bridge::on".into(),
            },
            done("bridge::on", Some(Outcome::Pass), 1234, None),
            Event::CellStarted {
                id: "bridge::off".into(),
            },
            Event::Repetition {
                id: "bridge::off".into(),
                n: 2,
                of: 5,
            },
            done("bridge::off", Some(Outcome::Skip), 0, Some("not root")),
            Event::CellStarted {
                id: "race::udp".into(),
            },
        ]
    }

    #[test]
    fn plain_lines_one_per_finished_cell() {
        let lines = Lines::new(Vec::new(), "cells");
        for e in events() {
            lines.event(&e);
        }
        lines.event(&Event::CellFinished {
            id: "race::udp".into(),
            outcome: None,
            ms: 50,
            reason: None,
        });
        let text = String::from_utf8(lines.into_inner()).unwrap();
        assert!(!text.contains('\x1b'));
        insta::assert_snapshot!(text, @r"
        vm: booting 6.1.0-37-cloud-amd64 under tcg
        [1/3] bridge::on PASS (1.2s)
        [2/3] bridge::off SKIP (0.0s) — not root
        [3/3] race::udp done (0.1s)
        ");
    }

    #[test]
    fn bar_shows_done_total_current_cell_and_history() {
        let term = indicatif::InMemoryTerm::new(8, 120);
        let screen = term.clone();
        let bar = Bar::new(
            move || ProgressDrawTarget::term_like(Box::new(screen.clone())),
            "cells",
        );
        for e in events() {
            bar.event(&e);
        }
        // The steady tick redraws within 200 ms; the last state is what is on screen.
        std::thread::sleep(Duration::from_millis(450));
        let screen = term.contents();
        let last = screen.lines().last().unwrap_or_default();
        assert!(last.contains("2/3 cells"), "{screen}");
        assert!(last.contains("race::udp"), "{screen}");
        assert!(last.contains("ETA"), "{screen}");
        assert!(screen.contains("[1/3] bridge::on PASS (1.2s)"), "{screen}");
        assert!(
            screen.contains("[2/3] bridge::off SKIP (0.0s) — not root"),
            "{screen}"
        );
        bar.event(&Event::Finished);
        let screen = term.contents();
        assert!(!screen.contains("cells ["), "{screen}");
        assert!(screen.contains("[2/3] bridge::off SKIP"), "{screen}");
        // The next kernel of a `vm` run gets a bar of its own.
        bar.event(&Event::Planned { cells: 1 });
        bar.event(&Event::CellStarted { id: "k2::a".into() });
        std::thread::sleep(Duration::from_millis(450));
        assert!(term.contents().contains("0/1 cells"), "{}", term.contents());
    }
}
