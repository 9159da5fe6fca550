//! sysctls through /proc/sys. The network part of /proc/sys follows the namespace of
//! the calling THREAD, so namespace-local access runs on a thread inside the namespace.

pub use crate::model::sysctl_key::key_to_path;
use anyhow::{Context, Result};

/// Writes `value` to `key` in the namespace of the calling thread.
pub fn write_here(key: &str, value: &str) -> Result<()> {
    let path = key_to_path(key)?;
    std::fs::write(&path, value.as_bytes()).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                " (no such sysctl here: misspelt, device missing, or not per-namespace)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (read-only here: host-global keys belong in the host sysctls)"
            }
            _ => "",
        };
        anyhow::anyhow!(e).context(format!(
            "sysctl {key}={value}: write {}{hint}",
            path.display()
        ))
    })
}

/// Reads `key` (trimmed) in the namespace of the calling thread.
pub fn read_here(key: &str) -> Result<String> {
    let path = key_to_path(key)?;
    let s = std::fs::read_to_string(&path)
        .with_context(|| format!("sysctl {key}: read {}", path.display()))?;
    Ok(s.trim().to_string())
}

/// Writes `key = value` inside the namespace `netns`.
pub fn sysctl_write(netns: &str, key: &str, value: &str) -> Result<()> {
    super::run_in(netns, || write_here(key, value)).with_context(|| format!("in netns `{netns}`"))
}

/// Reads `key` inside the namespace `netns`.
pub fn sysctl_read(netns: &str, key: &str) -> Result<String> {
    super::run_in(netns, || read_here(key)).with_context(|| format!("in netns `{netns}`"))
}
