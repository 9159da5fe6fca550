//! Helper processes of a lab: started inside a node's namespace, logged to a file,
//! waited for until their port is bound, stopped by their own pid.

use crate::model::ProcessPlan;
use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to bind its `ready_port`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running helper process of the lab.
#[derive(Debug)]
pub struct LabProcess {
    pub node: String,
    pub name: String,
    pub pid: u32,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    /// None for a process a fake [`Kernel`](super::seam::Kernel) only pretended to start.
    pub(crate) child: Option<Child>,
}

const SELF_EXE: &str = "/proc/self/exe";

/// argv with a first word of `faultlab` replaced by this executable.
pub fn resolve_argv(argv: &[String]) -> Result<Vec<String>> {
    let Some(first) = argv.first() else {
        bail!("empty argv");
    };
    let mut out = argv.to_vec();
    if first == "faultlab" {
        // /proc/self/exe, not current_exe(): a rebuild that replaces the binary while a
        // run goes on leaves current_exe() naming `... (deleted)`, which cannot be
        // exec'd; the forked child's /proc/self/exe is still this very image.
        out[0] = if Path::new(SELF_EXE).exists() {
            SELF_EXE.to_string()
        } else {
            std::env::current_exe()
                .context("locate the faultlab executable")?
                .to_string_lossy()
                .into_owned()
        };
    }
    Ok(out)
}

/// Starts `p` in `netns`, output to `log_dir/<node>-<name>.log`.
pub fn start(node: &str, netns: &str, p: &ProcessPlan, log_dir: &Path) -> Result<LabProcess> {
    let argv = resolve_argv(&p.argv)?;
    let log = log_dir.join(format!("{node}-{}.log", p.name));
    let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = crate::netns::command(netns, &argv);
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a terminal's Ctrl-C reaches the runner only, which then
        // stops helpers in order.
        .process_group(0);
    // Dies with the runner: a runner killed between this spawn and recording the pid in
    // the state file would otherwise leave the helper running, and holding the netns.
    // (PR_SET_PDEATHSIG follows the spawning thread: labs are built and dropped on one.)
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "`{}` not found: install {} (scripts/install-deps.sh)",
                argv[0],
                crate::netns::exec::package_of(&argv[0])
            )
        } else {
            anyhow!(e).context(format!("spawn `{}`", argv.join(" ")))
        }
    })?;
    Ok(LabProcess {
        node: node.to_string(),
        name: p.name.clone(),
        pid: child.id(),
        log,
        child: Some(child),
    })
}

/// Local ports (TCP in LISTEN, any UDP) in a /proc/net/{tcp,udp}[6] table.
pub fn bound_ports(table: &str, tcp: bool) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let state = f.get(3)?;
            if tcp && *state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// True when `port` is bound in the namespace of `pid` (its /proc/PID/net view).
pub fn port_bound(pid: u32, port: u16) -> bool {
    [
        ("tcp", true),
        ("tcp6", true),
        ("udp", false),
        ("udp6", false),
    ]
    .iter()
    .any(|(t, tcp)| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .map(|s| bound_ports(&s, *tcp).contains(&port))
            .unwrap_or(false)
    })
}

/// Last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if tail.trim().is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// Waits until the process has bound `port`, or fails if it exits or times out.
pub fn wait_ready(p: &mut LabProcess, port: u16, timeout: Duration) -> Result<()> {
    if p.child.is_none() {
        return Err(no_child(p));
    }
    let child = p.child.as_mut().expect("checked above");
    let deadline = Instant::now() + timeout;
    loop {
        if port_bound(p.pid, port) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "exited ({status}) before binding port {port}; log {}:\n{}",
                p.log.display(),
                log_tail(&p.log, 20)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "port {port} not bound after {:?}: does the program listen on it? log {}:\n{}",
                timeout,
                p.log.display(),
                log_tail(&p.log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn no_child(p: &LabProcess) -> anyhow::Error {
    anyhow!(
        "{}/{} (pid {}) was not started by this process",
        p.node,
        p.name,
        p.pid
    )
}

/// SIGTERM, up to `grace` to exit, SIGKILL, reap. Signals go to the process group the
/// helper leads (it was started as one), so children of a `sh -c` wrapper go too and
/// do not keep the namespace alive.
pub fn stop(p: &mut LabProcess, grace: Duration) -> Result<()> {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(p.pid as i32);
    let signal = |sig: Signal| match killpg(pid, sig) {
        Err(nix::errno::Errno::ESRCH) => kill(pid, sig),
        r => r,
    };
    if p.child.is_none() {
        return Err(no_child(p));
    }
    let child = p.child.as_mut().expect("checked above");
    if child.try_wait()?.is_none() {
        let _ = signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && child.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The leader may be gone while others of its group still run.
    match signal(Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => bail!("SIGKILL {}/{} (pid {}): {e}", p.node, p.name, p.pid),
    }
    child
        .wait()
        .with_context(|| format!("reap {}/{} (pid {})", p.node, p.name, p.pid))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert_eq!(bound_ports(tcp, true), vec![8080]);
        assert_eq!(bound_ports(tcp, false), vec![8080, 80]);
    }

    #[test]
    fn faultlab_argv_is_this_executable() {
        let a = resolve_argv(&["faultlab".into(), "serve".into()]).unwrap();
        assert_eq!(a[0], SELF_EXE);
        assert_eq!(a[1], "serve");
        assert_eq!(resolve_argv(&["sleep".into()]).unwrap(), vec!["sleep"]);
        assert!(resolve_argv(&[]).is_err());
    }
}
