//! Is a recorded process still the one we started? (pid plus its start time, so a
//! recycled pid is not taken for it), and stopping one that is not our child.
use anyhow::{anyhow, Result};
use std::time::{Duration, Instant};

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
}
