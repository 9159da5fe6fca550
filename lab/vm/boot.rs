//! Launch QEMU and follow the serial console: markers give the boot time, the
//! command's status and infrastructure failures; the deadlines are enforced here.

use super::marker::{self, Marker};
use crate::runner::progress::{Event as Progressed, Progress};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Exit status for a command that ran out of time (as timeout(1)).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status for a failure of the VM machinery itself, never the command's.
pub const EXIT_INFRA: i32 = 125;

#[derive(Debug, Clone, PartialEq)]
pub enum GuestOutcome {
    /// The command ran and exited with this status.
    Exited(i32),
    /// The command was still running at the deadline.
    TimedOut,
    /// The guest never got to (or through) the command: what went wrong.
    Infra(String),
}

impl GuestOutcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            GuestOutcome::Exited(c) => *c,
            GuestOutcome::TimedOut => EXIT_TIMEOUT,
            GuestOutcome::Infra(_) => EXIT_INFRA,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BootReport {
    pub outcome: GuestOutcome,
    /// `uname -r` as the guest reported it.
    pub release: Option<String>,
    /// Launch to the command starting.
    pub boot: Option<Duration>,
    /// Command start to its exit marker.
    pub run: Option<Duration>,
    pub total: Duration,
    /// Last console lines before the command started (for failure reports).
    pub console_tail: Vec<String>,
    /// Modules loaded when the command ended (empty: not reported).
    pub modules: Vec<String>,
}

pub struct Limits {
    /// Launch → command start; exceeding it is an infrastructure failure.
    pub boot: Duration,
    /// Launch → command exit; exceeding it is a timeout (124).
    pub total: Duration,
}

/// Where console output goes: the command's lines, and boot lines when verbose.
pub struct Echo {
    pub command: bool,
    pub boot: bool,
    /// Collect the command's lines here instead of printing them (guests booted at
    /// once print each one's output whole, when it ends).
    pub into: Option<std::sync::Arc<std::sync::Mutex<String>>>,
}

enum Event {
    Line(String),
    Eof,
}

const TAIL: usize = 60;

/// Boot and follow the console; the command's progress markers go to `progress`,
/// and so do the boot's phases.
pub fn boot(
    mut cmd: Command,
    nonce: &str,
    limits: &Limits,
    echo: &Echo,
    progress: &dyn Progress,
) -> Result<BootReport> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(Event::Line(marker::clean_line(&buf))).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Event::Eof);
    });
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut report = BootReport {
        outcome: GuestOutcome::Infra("the guest stopped without reporting a status".into()),
        release: None,
        boot: None,
        run: None,
        total: Duration::ZERO,
        console_tail: Vec::new(),
        modules: Vec::new(),
    };
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut crash = KernelCrash::default();
    let mut started_cmd: Option<Instant> = None;
    let mut finished = false;
    let stdout = std::io::stdout();
    loop {
        let now = Instant::now();
        let deadline = if started_cmd.is_some() {
            started + limits.total
        } else {
            started + limits.boot.min(limits.total)
        };
        if finished {
            // The guest powers off right after its exit marker.
            if wait_exit(&mut child, Duration::from_secs(20)).is_none() {
                kill(&mut child);
            }
            break;
        }
        if now >= deadline {
            kill(&mut child);
            report.outcome = if started_cmd.is_some() {
                GuestOutcome::TimedOut
            } else {
                GuestOutcome::Infra(format!(
                    "the guest did not start the command within {} s of launch{}",
                    limits.boot.min(limits.total).as_secs(),
                    if report.release.is_some() {
                        ""
                    } else {
                        " (the kernel printed no init marker)"
                    }
                ))
            };
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(Event::Eof) => {
                match wait_exit(&mut child, Duration::from_secs(5)) {
                    Some(status) => {
                        report.outcome = GuestOutcome::Infra(format!(
                            "QEMU exited ({status}) before the guest reported {}",
                            if started_cmd.is_some() {
                                "the command's status"
                            } else {
                                "the command starting"
                            }
                        ))
                    }
                    None => kill(&mut child),
                }
                break;
            }
            Ok(Event::Line(line)) => {
                crash.see(&line);
                match marker::parse(&line, nonce) {
                    Some(Marker::Booted(r)) => {
                        progress.event(&Progressed::Phase {
                            what: format!("vm: {r} is up, mounting the host root"),
                        });
                        report.release = Some(r);
                    }
                    Some(Marker::Progress(e)) => progress.event(&e),
                    Some(Marker::Start) => {
                        progress.event(&Progressed::Phase {
                            what: "vm: the command started".into(),
                        });
                        let t = Instant::now();
                        report.boot = Some(t - started);
                        started_cmd = Some(t);
                    }
                    Some(Marker::Modules(m)) => report.modules = m,
                    Some(Marker::Exit(code)) => {
                        report.run = started_cmd.map(|s| s.elapsed());
                        report.outcome = GuestOutcome::Exited(code);
                        finished = true;
                    }
                    Some(Marker::Infra(what)) => {
                        report.outcome = GuestOutcome::Infra(format!("guest setup failed: {what}"));
                        finished = true;
                    }
                    None if started_cmd.is_some() => match (&echo.into, echo.command) {
                        (Some(into), true) => {
                            let mut b = into.lock().unwrap_or_else(|e| e.into_inner());
                            b.push_str(&line);
                            b.push('\n');
                        }
                        (None, true) => progress.suspend(&mut || {
                            let _ = writeln!(stdout.lock(), "{line}");
                        }),
                        (_, false) => {}
                    },
                    None => {
                        if echo.boot {
                            progress.suspend(&mut || eprintln!("{line}"));
                        }
                        tail.push_back(line);
                        if tail.len() > TAIL {
                            tail.pop_front();
                        }
                    }
                }
            }
        }
    }
    let _ = reader.join();
    let qemu_err = err_reader.join().unwrap_or_default();
    report.total = started.elapsed();
    report.console_tail = tail.into_iter().collect();
    if let (GuestOutcome::Infra(msg), Some(what)) = (&mut report.outcome, crash.summary()) {
        *msg = format!("the guest kernel crashed ({what}); {msg}");
    }
    if let GuestOutcome::Infra(msg) = &mut report.outcome {
        let qemu_err = qemu_err.trim();
        if !qemu_err.is_empty() {
            msg.push_str(&format!("; qemu: {qemu_err}"));
        }
    }
    Ok(report)
}

/// The guest kernel's own crash lines on the console: the first oops or BUG line and
/// the panic line (a panicking guest powers off, `panic=-1`, before any exit marker).
#[derive(Default)]
struct KernelCrash {
    first: Option<String>,
    panic: Option<String>,
}

impl KernelCrash {
    fn see(&mut self, line: &str) {
        // Past the "[   40.042607] " timestamp.
        let text = match line.split_once("] ") {
            Some((ts, rest)) if ts.trim_start().starts_with('[') => rest,
            _ => line,
        };
        if self.first.is_none()
            && [
                "Oops: ",
                "BUG: ",
                "kernel BUG at ",
                "general protection fault",
            ]
            .iter()
            .any(|p| text.starts_with(p))
        {
            self.first = Some(text.trim().to_owned());
        }
        if self.panic.is_none() && text.starts_with("Kernel panic - not syncing") {
            self.panic = Some(text.trim().to_owned());
        }
    }

    fn summary(&self) -> Option<String> {
        match (&self.first, &self.panic) {
            (Some(f), Some(p)) => Some(format!("{f}; {p}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::progress::Markers;
    use crate::verdict::Outcome;
    use std::sync::Mutex;

    #[test]
    fn a_guest_kernel_crash_is_named_by_its_own_lines() {
        let mut c = KernelCrash::default();
        for l in [
            "[   39.9] veth0: entered promiscuous mode",
            "[   40.042607] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
            "[   40.043887] RIP: 0010:__ip_local_out+0x9d/0x180",
            "[   40.049037] Oops: a second one",
            "[   40.049675] Kernel panic - not syncing: Fatal exception in interrupt",
        ] {
            c.see(l);
        }
        assert_eq!(
            c.summary().as_deref(),
            Some("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI; Kernel panic - not syncing: Fatal exception in interrupt")
        );
        let mut quiet = KernelCrash::default();
        quiet.see("faultlab: BUG: in a program's output, not the kernel's [x] ");
        assert_eq!(quiet.summary(), None);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Progressed>>);

    impl Progress for Recorder {
        fn event(&self, e: &Progressed) {
            self.0.lock().unwrap().push(e.clone());
        }
    }

    /// A stand-in for QEMU: prints what a guest prints on its console, with the
    /// inner run's progress encoded by the same `Markers` the guest's faultlab uses.
    #[test]
    fn the_inner_runs_progress_reaches_the_host() {
        let prefix = marker::prefix("n1");
        let inner = [
            Progressed::Planned { cells: 2 },
            Progressed::CellStarted { id: "s::a".into() },
            Progressed::CellFinished {
                id: "s::a".into(),
                outcome: Some(Outcome::Pass),
                ms: 5,
                reason: None,
            },
            Progressed::Finished,
        ];
        let mut buf = Vec::new();
        let enc = Markers::new(&prefix, &mut buf);
        for e in &inner {
            enc.event(e);
        }
        drop(enc);
        let console = format!(
            "[    0.5] Linux version 6.1.0-test\n{prefix}BOOTED 6.1.0-test\n{prefix}START\nthe command's own output\n{}{prefix}EXIT 4\n",
            String::from_utf8(buf).unwrap()
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("cat <<'EOF'\n{console}EOF"));
        let rec = Recorder::default();
        let report = boot(
            cmd,
            "n1",
            &Limits {
                boot: Duration::from_secs(10),
                total: Duration::from_secs(10),
            },
            &Echo {
                command: false,
                boot: false,
                into: None,
            },
            &rec,
        )
        .unwrap();
        assert_eq!(report.outcome, GuestOutcome::Exited(4));
        let got = rec.0.into_inner().unwrap();
        let mut want = vec![
            Progressed::Phase {
                what: "vm: 6.1.0-test is up, mounting the host root".into(),
            },
            Progressed::Phase {
                what: "vm: the command started".into(),
            },
        ];
        want.extend(inner);
        assert_eq!(got, want);
    }
}
