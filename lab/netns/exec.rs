//! Running programs inside a namespace: the child enters it between fork and exec.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};

/// Why a program run inside a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` not found: install {package} (scripts/install-deps.sh)")]
    NotInstalled {
        program: String,
        package: &'static str,
    },
    #[error("`{program}` in netns `{netns}` could not be started: {source}")]
    Spawn {
        program: String,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` in netns `{netns}` failed ({status}): {stderr}")]
    Failed {
        program: String,
        command: String,
        netns: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// The distribution package that provides `program`, for "not installed" messages.
pub fn package_of(program: &str) -> &'static str {
    match program.rsplit('/').next().unwrap_or(program) {
        "nft" => "nftables",
        p if p.starts_with("iptables") || p.starts_with("ip6tables") => "iptables",
        "ip" | "tc" | "ss" | "bridge" => "iproute2",
        "ping" => "iputils-ping",
        "tcpdump" => "tcpdump",
        "conntrack" => "conntrack",
        _ => "it",
    }
}

/// A `Command` for `argv` whose child enters the network namespace `name` before exec.
/// The namespace file is opened now, in the parent; if that fails, spawning fails.
pub fn command<S: AsRef<OsStr>>(name: &str, argv: &[S]) -> Command {
    let mut cmd = Command::new(argv.first().map(|s| s.as_ref()).unwrap_or(OsStr::new("")));
    cmd.args(argv.iter().skip(1));
    let ns = std::fs::File::open(super::path_of(name).unwrap_or_default())
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL));
    // SAFETY: between fork and exec the closure only calls setns(2), which is
    // async-signal-safe, on an fd opened before fork; it does not allocate.
    unsafe {
        cmd.pre_exec(move || match &ns {
            Ok(f) => {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            }
            Err(errno) => Err(std::io::Error::from_raw_os_error(*errno)),
        });
    }
    cmd
}

/// A program that could not be started: not installed, or another spawn failure.
fn spawn_error(program: &str, netns: &str, e: std::io::Error) -> ExecError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ExecError::NotInstalled {
            package: package_of(program),
            program: program.to_string(),
        }
    } else {
        ExecError::Spawn {
            program: program.to_string(),
            netns: netns.to_string(),
            source: e,
        }
    }
}

/// What a program that failed said: its stderr, else its stdout, trimmed.
pub fn said(stderr: &str, stdout: &str) -> String {
    let err = stderr.trim();
    let text = if err.is_empty() { stdout.trim() } else { err };
    if text.is_empty() {
        "(no output)".into()
    } else {
        text.to_string()
    }
}

/// Runs `argv` in the namespace, feeding `stdin` if given, and returns its output.
/// A non-zero exit status is an error carrying the program's stderr.
pub fn output_in<S: AsRef<OsStr>>(
    name: &str,
    argv: &[S],
    stdin: Option<&str>,
) -> Result<Output, ExecError> {
    let program = argv
        .first()
        .map(|s| s.as_ref().to_string_lossy().into_owned())
        .unwrap_or_default();
    let command_line = argv
        .iter()
        .map(|s| s.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    if !super::exists(name) {
        return Err(ExecError::Spawn {
            program,
            netns: name.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("network namespace `{name}` does not exist"),
            ),
        });
    }
    let mut cmd = command(name, argv);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(&program, name, e))?;
    let output = std::thread::scope(|s| {
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A separate writer: a loader that fills its stdout pipe before reading all
            // of stdin would otherwise deadlock against us.
            s.spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        child.wait_with_output()
    })
    .map_err(|e| ExecError::Spawn {
        program: program.clone(),
        netns: name.to_string(),
        source: e,
    })?;
    if !output.status.success() {
        let stderr = said(
            &String::from_utf8_lossy(&output.stderr),
            &String::from_utf8_lossy(&output.stdout),
        );
        return Err(ExecError::Failed {
            program,
            command: command_line,
            netns: name.to_string(),
            status: output.status,
            stderr,
        });
    }
    Ok(output)
}

/// How a program run by [`run_bounded`] ended.
#[derive(Debug)]
pub struct Bounded {
    /// None: it was still running at the deadline and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: std::time::Duration,
}

/// Runs `argv` in the namespace with no stdin until it exits or `timeout` passes; then
/// it is killed by its pid. It also dies with the calling thread (PR_SET_PDEATHSIG).
/// Unlike [`output_in`], any exit status is a result, not an error.
pub fn run_bounded<S: AsRef<OsStr>>(
    name: &str,
    argv: &[S],
    timeout: std::time::Duration,
) -> Result<Bounded, ExecError> {
    use std::io::Read;
    let program = argv
        .first()
        .map(|s| s.as_ref().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = command(name, argv);
    // SAFETY: prctl(2) and setpgid(2) are async-signal-safe and allocate nothing.
    // Its own process group: a timeout kills what a `sh -c` started too.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = std::time::Instant::now();
    let mut child = cmd.spawn().map_err(|e| spawn_error(&program, name, e))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut pause = std::time::Duration::from_millis(1);
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| spawn_error(&program, name, e))?
        {
            break Some(st);
        }
        let left = timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            // The group the child leads (its pid is the group's id).
            // SAFETY: kill(2) with a negative pid signals that process group only.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    };
    let elapsed = t0.elapsed();
    Ok(Bounded {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    })
}
