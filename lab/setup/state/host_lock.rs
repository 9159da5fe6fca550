//! The host lock: one lab at a time may change host-global sysctls.
use super::store::STATE_DIR;
use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Exclusive right to change host-global sysctls, held by a [`crate::setup::Lab`] from
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
