//! The guest's initramfs: a cached base (busybox-static and the modules that mount
//! the shares, per kernel and share kind) plus a small per-run archive with the
//! generated scripts, concatenated (the kernel unpacks both).

use super::cpio::Cpio;
use super::guest::{init_script, stage2_script, GuestPlan, Share};
use super::modules::ModuleIndex;
use anyhow::{bail, Context, Result};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BUSYBOX: &str = "/bin/busybox";

/// The module files (names inside /modules/) the base archive carries, in load order.
pub fn share_modules(index: &ModuleIndex, share: Share) -> Result<Vec<String>> {
    if index.dir.as_os_str().is_empty() {
        return Ok(Vec::new()); // no module tree: everything must be built in
    }
    index
        .load_order(share.modules())
        .with_context(|| format!("the kernel cannot mount a {} share", share.as_str()))
}

fn file_name(rel: &str) -> String {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    format!("{}.ko", base.split(".ko").next().unwrap_or(base))
}

/// Build (or reuse) the base archive; returns its path and the module load order.
pub fn base(
    cache: &Path,
    release: &str,
    index: &ModuleIndex,
    share: Share,
) -> Result<(PathBuf, Vec<String>)> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX}: apt-get install busybox-static"))?;
    if busybox
        .windows(17)
        .take(8192)
        .any(|w| w == b"ld-linux-x86-64.")
    {
        bail!("{BUSYBOX} is dynamically linked: apt-get install busybox-static");
    }
    let modules = share_modules(index, share)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        release,
        share.as_str(),
        &modules,
        busybox.len(),
        init_format_version(),
    )
        .hash(&mut h);
    let dir = cache.join("initramfs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "{release}-{}-{:016x}.cpio",
        share.as_str(),
        h.finish()
    ));
    let names: Vec<String> = modules.iter().map(|m| file_name(m)).collect();
    if path.exists() {
        return Ok((path, names));
    }
    let mut c = Cpio::new();
    for d in [
        "bin", "dev", "proc", "sys", "modules", "lower", "rw", "newroot",
    ] {
        c.dir(d);
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.char_dev("dev/null", 0o666, 1, 3);
    c.file("bin/busybox", 0o755, &busybox);
    for applet in [
        "sh",
        "mount",
        "mkdir",
        "insmod",
        "cp",
        "switch_root",
        "poweroff",
        "reboot",
        "sync",
        "sleep",
        "uname",
        "echo",
    ] {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    for (rel, name) in modules.iter().zip(&names) {
        let data = read_module(&index.dir.join(rel))?;
        c.file(&format!("modules/{name}"), 0o644, &data);
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, c.finish()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)?;
    Ok((path, names))
}

/// Bump when the base layout changes, so cached archives are rebuilt.
fn init_format_version() -> u32 {
    1
}

/// A module file, decompressed (busybox insmod takes plain .ko files).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| {
            format!(
                "running {tool} to decompress {} (apt-get install {})",
                path.display(),
                if tool == "xz" { "xz-utils" } else { tool }
            )
        })?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The per-run archive: base + /init + /stage2, written to `path`.
pub fn for_run(base: &Path, plan: &GuestPlan, path: &Path) -> Result<()> {
    let mut bytes = std::fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    let mut c = Cpio::new();
    c.file("init", 0o755, init_script(plan).as_bytes());
    c.file("stage2", 0o755, stage2_script(plan).as_bytes());
    bytes.extend_from_slice(&c.finish());
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_file_names_drop_compression() {
        assert_eq!(file_name("kernel/fs/fuse/virtiofs.ko.xz"), "virtiofs.ko");
        assert_eq!(file_name("kernel/fs/overlayfs/overlay.ko"), "overlay.ko");
    }
}
