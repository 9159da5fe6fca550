//! The run state file, `/run/faultlab/<run_id>.json`: everything a run has put on the
//! machine, written before each thing is created, so that a crashed run can be swept.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const STATE_DIR: &str = "/run/faultlab";
pub const TRACEFS_INSTANCES: &str = "/sys/kernel/tracing/instances";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub runner_pid: u32,
    /// Start time of the runner (field 22 of /proc/PID/stat), so a recycled pid is
    /// not mistaken for a live runner.
    #[serde(default)]
    pub runner_start: Option<u64>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub helpers: Vec<Helper>,
    /// Host-global sysctls with the values to put back, in the order they were saved.
    #[serde(default)]
    pub host_sysctls: Vec<SavedSysctl>,
    /// Names under /sys/kernel/tracing/instances.
    #[serde(default)]
    pub tracefs_instances: Vec<String>,
    /// Scratch directories (helper logs), removed with everything in them.
    #[serde(default)]
    pub dirs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Helper {
    pub pid: u32,
    #[serde(default)]
    pub start: Option<u64>,
    /// `node/process`, for reports.
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSysctl {
    pub key: String,
    pub original: String,
}

/// A state file owned by a live run.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: RunState,
}

pub fn state_path(run_id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{run_id}.json"))
}

impl StateFile {
    /// Writes the initial state of run `run_id` (owned by this process).
    pub fn create(run_id: &str) -> Result<Self> {
        if run_id.is_empty() || run_id.contains('/') {
            bail!("invalid run id {run_id:?}");
        }
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("create {STATE_DIR}"))?;
        let path = state_path(run_id);
        let pid = std::process::id();
        let sf = StateFile {
            path,
            state: RunState {
                run_id: run_id.to_string(),
                runner_pid: pid,
                runner_start: process_start_time(pid),
                ..Default::default()
            },
        };
        // The file appears complete or not at all: a concurrent sweep never reads a
        // half-written state. Written aside, then hard-linked into place (which, unlike
        // rename, fails if the name is taken).
        let tmp = sf.tmp_path();
        let text = serde_json::to_vec_pretty(&sf.state)?;
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        let linked = std::fs::hard_link(&tmp, &sf.path);
        let _ = std::fs::remove_file(&tmp);
        linked.with_context(|| {
            format!(
                "create state file {} (is run id `{run_id}` in use?)",
                sf.path.display()
            )
        })?;
        Ok(sf)
    }

    /// `<run_id>.json.<pid>.tmp`: the writer's pid in the name lets a sweep remove the
    /// temp files of dead writers.
    fn tmp_path(&self) -> PathBuf {
        self.path
            .with_extension(format!("json.{}.tmp", std::process::id()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// Applies `f` and rewrites the file (atomically: temp file + rename).
    pub fn update(&mut self, f: impl FnOnce(&mut RunState)) -> Result<()> {
        f(&mut self.state);
        self.write()
    }

    fn write(&self) -> Result<()> {
        let tmp = self.tmp_path();
        let text = serde_json::to_vec_pretty(&self.state)?;
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("rename {} into place", tmp.display()))
    }

    /// Deletes the file (after a clean teardown).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .with_context(|| format!("remove state file {}", self.path.display()))
    }
}

/// Start time of `pid` in clock ticks since boot, if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// (state char, starttime) from a /proc/PID/stat line; comm may contain spaces and ')'.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// True when `pid` runs (not a zombie) and, if `start` is known, is the same process.
pub fn is_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    match parse_stat(&stat) {
        Some(('Z', _)) | Some(('X', _)) | None => false,
        Some((_, s)) => start.is_none_or(|want| want == s),
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL. For processes that are not our
/// children (reaping is their parent's job); a zombie counts as gone.
pub fn terminate(pid: u32, start: Option<u64>, grace: Duration) -> Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if !is_alive(pid, start) {
        return Ok(());
    }
    let p = Pid::from_raw(pid as i32);
    // Helpers lead their own process group; take the whole group while the leader is
    // verified to be the process we started.
    let _ = nix::sys::signal::killpg(p, Signal::SIGTERM);
    match kill(p, Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => return Err(anyhow!("SIGTERM pid {pid}: {e}")),
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(pid, start) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !is_alive(pid, start) {
        return Ok(());
    }
    let _ = nix::sys::signal::killpg(p, Signal::SIGKILL);
    match kill(p, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(anyhow!("SIGKILL pid {pid}: {e}")),
    }
}

/// Removes a tracefs instance; a missing one is not an error. Goes through the same
/// tracefs view the drop tracer uses (the mounted one, or a detached mount when
/// tracefs is not mounted), so instances made through a detached mount are found.
pub fn remove_tracefs_instance(name: &str) -> Result<bool> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("invalid tracefs instance name {name:?}");
    }
    let dir = Path::new(TRACEFS_INSTANCES).join(name);
    if dir.is_dir() {
        return match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow!(e).context(format!("rmdir {}", dir.display()))),
        };
    }
    match crate::evidence::tracefs::remove_instance(name) {
        Ok(removed) => Ok(removed),
        // Without tracefs in the kernel no instance can exist.
        Err(_) if !kernel_has_tracefs() => Ok(false),
        Err(e) => Err(e),
    }
}

fn kernel_has_tracefs() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("tracefs"))
        })
        .unwrap_or(true)
}

/// Deletes a leftover namespace, including one whose runner died between creating
/// `/run/netns/NAME` and bind-mounting the namespace on it (a plain file then).
fn delete_netns_leftover(name: &str) -> Result<()> {
    use nix::mount::{umount2, MntFlags};
    let path = crate::netns::path_of(name)?;
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never bound); ENOENT: already gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(anyhow!(e).context(format!("unmount {} (netns `{name}`)", path.display())))
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("remove {} (netns `{name}`)", path.display()))),
    }
}

/// Writes a host-global (root namespace) sysctl.
pub fn write_host_sysctl(key: &str, value: &str) -> Result<()> {
    crate::netns::sysctl::write_here(key, value).context("host sysctl")
}

/// Undoes everything `state` lists. Returns what was done and what failed; never
/// stops at the first error.
pub fn clean(state: &RunState) -> (Vec<String>, Vec<anyhow::Error>) {
    let id = &state.run_id;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for h in &state.helpers {
        if is_alive(h.pid, h.start) {
            match terminate(h.pid, h.start, Duration::from_secs(1)) {
                Ok(()) => done.push(format!("{id}: stopped {} (pid {})", h.what, h.pid)),
                Err(e) => errors.push(e.context(format!("{id}: stop {}", h.what))),
            }
        }
    }
    let prefix = format!("{id}-");
    for ns in state.namespaces.iter().rev() {
        if !ns.starts_with(&prefix) {
            errors.push(anyhow!(
                "{id}: refusing to delete netns `{ns}`: not named after the run"
            ));
            continue;
        }
        if crate::netns::exists(ns) {
            match delete_netns_leftover(ns) {
                Ok(()) => done.push(format!("{id}: deleted netns {ns}")),
                Err(e) => errors.push(e.context(format!("{id}: delete netns"))),
            }
        }
    }
    for t in &state.tracefs_instances {
        match remove_tracefs_instance(t) {
            Ok(true) => done.push(format!("{id}: removed tracefs instance {t}")),
            Ok(false) => {}
            Err(e) => errors.push(e.context(format!("{id}: remove tracefs instance"))),
        }
    }
    for d in &state.dirs {
        let p = Path::new(d);
        // Only our own scratch directories, whatever the file says.
        let ours = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("faultlab-"))
            && p.is_absolute();
        if !ours {
            errors.push(anyhow!(
                "{id}: refusing to remove {d}: not a faultlab scratch dir"
            ));
            continue;
        }
        match std::fs::remove_dir_all(p) {
            Ok(()) => done.push(format!("{id}: removed {d}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(anyhow!(e).context(format!("{id}: remove {d}"))),
        }
    }
    for s in state.host_sysctls.iter().rev() {
        match write_host_sysctl(&s.key, &s.original) {
            Ok(()) => done.push(format!("{id}: restored {} = {}", s.key, s.original)),
            Err(e) => errors.push(e.context(format!("{id}: restore {}", s.key))),
        }
    }
    (done, errors)
}

/// Exclusive right to change host-global sysctls, held by a [`crate::build::Lab`] from
/// saving the originals until they are restored (and by a sweep restoring a dead run's).
/// Without it two concurrent runs would save each other's values as "original". Every
/// other lab holds it shared for its lifetime: host-global values (nf_conntrack_max)
/// reach every namespace, so no lab may run while another has them changed. It is
/// an `flock`, so the kernel releases it when its holder dies, however it dies.
#[derive(Debug)]
pub struct HostLock {
    _file: std::fs::File,
}

pub const HOST_LOCK_FILE: &str = "host-sysctls.lock";

impl HostLock {
    /// The lock if nobody holds it, None if someone does.
    pub fn try_acquire() -> Result<Option<HostLock>> {
        Self::try_acquire_mode(libc::LOCK_EX)
    }

    fn try_acquire_mode(mode: libc::c_int) -> Result<Option<HostLock>> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(STATE_DIR).with_context(|| format!("create {STATE_DIR}"))?;
        let path = Path::new(STATE_DIR).join(HOST_LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock(2) on a file descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(HostLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(anyhow!(e).context(format!("flock {}", path.display())))
        }
    }

    /// Waits up to `timeout` for the lock (None on timeout or when `stop` says so).
    /// The wait is a blocking flock(2) on a helper thread, so the kernel hands the lock
    /// over as soon as it is released: polling would starve behind a run that releases
    /// and re-takes it cell after cell.
    pub fn acquire(timeout: Duration, stop: &dyn Fn() -> bool) -> Result<Option<HostLock>> {
        Self::acquire_mode(libc::LOCK_EX, timeout, stop)
    }

    /// The shared form: many labs at once, none while a lab changes host sysctls.
    pub fn acquire_shared(timeout: Duration, stop: &dyn Fn() -> bool) -> Result<Option<HostLock>> {
        Self::acquire_mode(libc::LOCK_SH, timeout, stop)
    }

    fn acquire_mode(
        mode: libc::c_int,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<HostLock>> {
        if let Some(l) = Self::try_acquire_mode(mode)? {
            return Ok(Some(l));
        }
        let path = Path::new(STATE_DIR).join(HOST_LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: flock(2) on a file descriptor this thread owns.
            let r = loop {
                let r = unsafe { libc::flock(file.as_raw_fd(), mode) };
                if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break r;
                }
            };
            let msg = if r == 0 {
                Ok(HostLock { _file: file })
            } else {
                Err(std::io::Error::last_os_error())
            };
            // Nobody waits any more: dropping the message releases the lock.
            let _ = tx.send(msg);
        });
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(l)) => return Ok(Some(l)),
                Ok(Err(e)) => return Err(anyhow!(e).context(format!("flock {}", path.display()))),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => return Err(anyhow!(e).context("host-sysctl lock waiter")),
            }
            if Instant::now() >= deadline || stop() {
                return Ok(None);
            }
        }
    }
}

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
            match HostLock::acquire(HOST_LOCK_WAIT, &crate::build::signals::interrupted)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_comm() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id();
        let start = process_start_time(me);
        assert!(start.is_some());
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start.map(|s| s + 1)));
    }

    #[test]
    fn state_roundtrips_and_tolerates_missing_fields() {
        let st: RunState = serde_json::from_str(r#"{"run_id":"fl00001","runner_pid":1}"#).unwrap();
        assert_eq!(st.run_id, "fl00001");
        assert!(st.namespaces.is_empty());
        let back: RunState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }
}
