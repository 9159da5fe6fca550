//! The sweeper: finds the state files of dead (or, for `faultlab clean --force`, live)
//! runs and undoes what they list; removes dead runners' scratch directories.
use super::host_lock::HostLock;
use super::liveness::{is_alive, process_start_time, terminate};
use super::store::{RunState, STATE_DIR};
use super::undo::clean;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A state file, or the temp file of a writer (`<run_id>.json.<pid>.tmp`).
enum Entry {
    State(PathBuf, Result<RunState>),
    Temp(PathBuf, Option<u32>),
}

fn read_states() -> Result<Vec<Entry>> {
    let rd = match std::fs::read_dir(STATE_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!(e).context(format!("read {STATE_DIR}"))),
    };
    let mut out = Vec::new();
    for entry in rd {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(rest) = name.strip_suffix(".tmp") {
            let pid = rest.rsplit('.').next().and_then(|p| p.parse().ok());
            out.push(Entry::Temp(path, pid));
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        out.push(Entry::State(path.clone(), parse_state(&path)));
    }
    out.sort_by(|a, b| {
        let p = |e: &Entry| match e {
            Entry::State(p, _) | Entry::Temp(p, _) => p.clone(),
        };
        p(a).cmp(&p(b))
    });
    Ok(out)
}

fn parse_state(path: &Path) -> Result<RunState> {
    std::fs::read(path)
        .map_err(anyhow::Error::from)
        .and_then(|b| serde_json::from_slice::<RunState>(&b).map_err(anyhow::Error::from))
        .with_context(|| format!("parse state file {}", path.display()))
}

/// Cleans every run whose runner is dead. Returns a report line per action.
pub fn sweep_dead() -> Result<Vec<String>> {
    sweep(false, false)
}

/// `faultlab clean`: cleans dead runs, and with `force` live ones too (the caller's
/// own run excepted).
pub fn sweep_all(force: bool) -> Result<Vec<String>> {
    sweep(force, false)
}

/// The sweep a run does right after taking the [`HostLock`], before it saves the
/// host's sysctls: a run that died holding the lock has left its values in place, and
/// they must be put back first or they would be saved as the originals.
pub fn sweep_dead_holding(_lock: &HostLock) -> Result<Vec<String>> {
    // A runner killed while holding the lock releases it (exit_files) a moment before
    // it shows as a zombie: give such runners a moment to be seen dead.
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let dying = read_states()?.into_iter().any(|e| match e {
            Entry::State(_, Ok(st)) => {
                st.runner_pid != me
                    && !st.host_sysctls.is_empty()
                    && is_alive(st.runner_pid, st.runner_start)
            }
            _ => false,
        });
        if !dying {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sweep(false, true)
}

/// How long a sweep waits for a live run to finish with the host sysctls before it
/// restores a dead run's (it then leaves them for a later sweep).
const HOST_LOCK_WAIT: Duration = Duration::from_secs(15);

/// Names a runner's scratch directory for artifacts (`--no-results`) after the runner
/// (pid and start time), so a sweep can tell a dead runner's directory without any
/// state file: a run killed before it built its first lab has none.
pub const SCRATCH_PREFIX: &str = "faultlab-artifacts-";

/// `$TMPDIR/faultlab-artifacts-<pid>-<start>` of this process (not created).
pub fn scratch_dir() -> PathBuf {
    let pid = std::process::id();
    std::env::temp_dir().join(format!(
        "{SCRATCH_PREFIX}{pid}-{}",
        process_start_time(pid).unwrap_or(0)
    ))
}

/// Removes the scratch directories of dead runners.
fn sweep_scratch(report: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(SCRATCH_PREFIX) else {
            continue;
        };
        let mut parts = rest.splitn(2, '-');
        let (Some(Ok(pid)), Some(Ok(start))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        if !is_alive(pid, Some(start)) && std::fs::remove_dir_all(e.path()).is_ok() {
            report.push(format!("removed {}", e.path().display()));
        }
    }
}

fn sweep(force: bool, holding_host_lock: bool) -> Result<Vec<String>> {
    let me = std::process::id();
    let mut report = Vec::new();
    let mut errors = Vec::new();
    sweep_scratch(&mut report);
    for entry in read_states()? {
        let (path, st) = match entry {
            Entry::Temp(path, pid) => {
                // A writer killed between writing and renaming; a live one's is left alone.
                if pid.is_some_and(|p| p != me && !is_alive(p, None))
                    && std::fs::remove_file(&path).is_ok()
                {
                    report.push(format!("removed {}", path.display()));
                }
                continue;
            }
            Entry::State(path, st) => (path, st),
        };
        let st = match st {
            Ok(st) => st,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let alive = is_alive(st.runner_pid, st.runner_start);
        if alive && (!force || st.runner_pid == me) {
            continue;
        }
        if alive {
            if let Err(e) = terminate(st.runner_pid, st.runner_start, Duration::from_secs(2)) {
                errors.push(e.context(format!("{}: stop runner", st.run_id)));
            }
        }
        let _lock = if st.host_sysctls.is_empty() || holding_host_lock {
            None
        } else {
            match HostLock::acquire(HOST_LOCK_WAIT, &crate::setup::signals::interrupted)? {
                Some(l) => Some(l),
                None => {
                    report.push(format!(
                        "{}: left for a later sweep (another run is changing host sysctls)",
                        st.run_id
                    ));
                    continue;
                }
            }
        };
        // Someone else may have swept it while we waited for the lock.
        let st = match parse_state(&path) {
            Ok(st) => st,
            Err(_) if !path.exists() => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (done, errs) = clean(&st);
        report.extend(done);
        if errs.is_empty() {
            // A forced runner may have torn down and removed its file itself.
            match std::fs::remove_file(&path) {
                Ok(()) => report.push(format!("{}: removed {}", st.run_id, path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(anyhow!(e).context(format!("remove {}", path.display()))),
            }
        } else {
            errors.extend(errs);
        }
    }
    if !errors.is_empty() {
        let msg = errors
            .iter()
            .map(|e| format!("{e:#}"))
            .collect::<Vec<_>>()
            .join("; ");
        bail!(
            "sweep left things behind ({msg}); cleaned so far: {}",
            if report.is_empty() {
                "nothing".to_string()
            } else {
                report.join(", ")
            }
        );
    }
    Ok(report)
}
