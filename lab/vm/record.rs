//! results/<kernel-release>/vm.json: how the kernel was obtained and booted, and
//! how long booting and running took.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "vm.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub kernel_release: String,
    /// `debian:PACKAGE/SUITE` or the image path.
    pub kernel: String,
    /// Debian packages unpacked for it, `name=version`.
    pub packages: Vec<String>,
    pub accel: String,
    pub share: String,
    pub smp: u32,
    pub memory_mb: u32,
    /// Timing multiplier passed to the inner run.
    pub slow: f64,
    /// The command run in the guest (after faultlab's path).
    pub command: Vec<String>,
    pub exit_code: i32,
    /// `exited`, `timeout` or `infra`.
    pub outcome: String,
    #[serde(default)]
    pub infra_reason: Option<String>,
    /// Launch to the command starting.
    pub boot_ms: Option<u64>,
    /// The command's own run time.
    pub run_ms: Option<u64>,
    pub total_ms: u64,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub host_kernel: String,
    pub qemu: String,
}

pub fn path(results_root: &Path, release: &str) -> PathBuf {
    results_root.join(release).join(FILE)
}

pub fn write(results_root: &Path, r: &VmRecord) -> Result<PathBuf> {
    let p = path(results_root, &r.kernel_release);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(r)? + "\n";
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

pub fn read(p: &Path) -> Result<VmRecord> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}
