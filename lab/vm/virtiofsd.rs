//! virtiofsd daemons serving the host root (read-only) and the results directory
//! (writable) to the guest. Dropping a guard stops its daemon and removes its socket.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Rust virtiofsd: $FAULTLAB_VIRTIOFSD, then PATH, ~/.cargo/bin, /usr/libexec.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FAULTLAB_VIRTIOFSD") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.push("/root/.cargo/bin".into());
    dirs.push("/usr/libexec".into());
    dirs.into_iter()
        .map(|d| d.join("virtiofsd"))
        .find(|p| p.is_file())
}

pub const INSTALL_HINT: &str = "install the Rust virtiofsd: apt-get install libcap-ng-dev libseccomp-dev && cargo install virtiofsd \
     (or set FAULTLAB_VIRTIOFSD), or use --share 9p with a kernel that has 9p";

pub struct Virtiofsd {
    child: Child,
    pub socket: PathBuf,
}

impl Virtiofsd {
    pub fn start(bin: &Path, shared: &Path, socket: &Path, read_only: bool) -> Result<Virtiofsd> {
        let _ = std::fs::remove_file(socket);
        let mut cmd = Command::new(bin);
        cmd.arg("--shared-dir")
            .arg(shared)
            .arg("--socket-path")
            .arg(socket)
            .args([
                "--cache",
                "auto",
                "--sandbox",
                "namespace",
                "--log-level",
                "error",
            ])
            // Submounts announced to the guest would stop the overlay (EREMOTE) at
            // /proc, /sys and /dev; the guest mounts its own over them anyway.
            .arg("--no-announce-submounts")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if read_only {
            cmd.arg("--readonly");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({INSTALL_HINT})", bin.display()))?;
        let mut d = Virtiofsd {
            child,
            socket: socket.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = d.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = d.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!(
                    "virtiofsd for {} exited ({status}) before listening: {}",
                    shared.display(),
                    err.trim()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "virtiofsd for {} did not create {} within 10 s",
                    shared.display(),
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(d)
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        // It exits by itself when QEMU disconnects; give it a moment, then make sure.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
