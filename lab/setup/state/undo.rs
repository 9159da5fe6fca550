//! Undoing what a state file lists: helpers, namespaces (even half-made ones),
//! tracefs instances, scratch directories, host sysctls.
use super::liveness::{is_alive, terminate};
use super::store::RunState;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use std::time::Duration;

pub const TRACEFS_INSTANCES: &str = "/sys/kernel/tracing/instances";

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
