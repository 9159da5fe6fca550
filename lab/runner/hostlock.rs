//! Host-global sysctls (nf_conntrack_max, ...) reach every namespace on the
//! host, including another run's. A cell that changes them holds the host lock
//! exclusively; every other cell holds it shared. Two runs at the same time
//! then never see each other's host-global settings.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};

const LOCK_PATH: &str = "/run/faultlab/host.lock";

pub struct HostLock {
    _lock: Flock<File>,
}

/// Blocks until the lock is ours: exclusive when `exclusive`, else shared.
pub fn acquire(exclusive: bool) -> anyhow::Result<HostLock> {
    std::fs::create_dir_all("/run/faultlab").context("creating /run/faultlab")?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("opening {LOCK_PATH}"))?;
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    let lock = Flock::lock(file, arg)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {LOCK_PATH}"))?;
    Ok(HostLock { _lock: lock })
}
