//! Private tracefs instances (`instances/<name>`), always removed.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root: a mounted one, or else a detached mount made with the new mount API
/// (fsopen/fsmount), which changes no mount table. Instances live in the kernel, not in the
/// mount, so both views see the same instances.
pub struct Tracefs {
    base: PathBuf,
    _detached: Option<OwnedFd>,
}

impl Tracefs {
    pub fn open() -> Result<Tracefs> {
        for m in MOUNTS {
            if Path::new(m).join("instances").is_dir() {
                return Ok(Tracefs {
                    base: PathBuf::from(m),
                    _detached: None,
                });
            }
        }
        let fd = detached_mount().context(
            "tracefs is not mounted and a detached tracefs mount failed (need root; \
             or mount it: mount -t tracefs nodev /sys/kernel/tracing)",
        )?;
        // /proc/self/fd/N is a magic link: walking through it enters the detached mount.
        let base = PathBuf::from(format!("/proc/self/fd/{}", raw(&fd)));
        if !base.join("instances").is_dir() {
            bail!("detached tracefs mount has no instances/ directory");
        }
        Ok(Tracefs {
            base,
            _detached: Some(fd),
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

fn detached_mount() -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: the syscall returned a new file descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
        }
    };
    // SAFETY: plain syscalls with a NUL-terminated string and null optional arguments.
    unsafe {
        let fsfd = check(libc::syscall(
            libc::SYS_fsopen,
            c"tracefs".as_ptr(),
            FSOPEN_CLOEXEC,
        ))?;
        let fs = raw(&fsfd);
        let nul = std::ptr::null::<libc::c_char>();
        if libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, nul, nul, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0))
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        bail!("tracefs instance name `{name}` must be non-empty [A-Za-z0-9._-]");
    }
    Ok(())
}

/// A tracefs instance created by us; dropping it removes it.
pub struct Instance {
    fs: Tracefs,
    name: String,
    removed: bool,
}

impl Instance {
    pub fn create(name: &str) -> Result<Instance> {
        check_name(name)?;
        let fs = Tracefs::open()?;
        let dir = fs.path(&format!("instances/{name}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(
                "tracefs instance `{name}` already exists (left by an interrupted run? \
                 remove it with evidence::remove_instance or rmdir {})",
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("mkdir {}", dir.display())),
        }
        Ok(Instance {
            fs,
            name: name.to_string(),
            removed: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.fs.path(&format!("instances/{}/{rel}", self.name))
    }

    pub fn write(&self, rel: &str, value: &str) -> Result<()> {
        fs::write(self.path(rel), value)
            .with_context(|| format!("write `{value}` to tracefs instances/{}/{rel}", self.name))
    }

    pub fn read(&self, rel: &str) -> Result<String> {
        fs::read_to_string(self.path(rel))
            .with_context(|| format!("read tracefs instances/{}/{rel}", self.name))
    }

    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        rmdir_retry(&self.fs, &self.name)
            .with_context(|| format!("rmdir tracefs instance {}", self.name))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.removed {
            let _ = rmdir_retry(&self.fs, &self.name);
        }
    }
}

/// rmdir fails with EBUSY while a reader still holds a file of the instance open.
fn rmdir_retry(fs: &Tracefs, name: &str) -> io::Result<()> {
    let dir = fs.path(&format!("instances/{name}"));
    let mut tries = 0;
    loop {
        match fs::remove_dir(&dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes a leftover instance; Ok(false) if there was none.
pub fn remove_instance(name: &str) -> Result<bool> {
    check_name(name)?;
    let fs = Tracefs::open()?;
    if !fs.path(&format!("instances/{name}")).exists() {
        return Ok(false);
    }
    rmdir_retry(&fs, name).with_context(|| format!("rmdir tracefs instance {name}"))?;
    Ok(true)
}

/// Names of all tracefs instances (ours and others'), for a sweeper to pick its own.
pub fn list_instances() -> Result<Vec<String>> {
    let fs = Tracefs::open()?;
    let mut names: Vec<String> = fs::read_dir(fs.path("instances"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}
