//! A bootable kernel: its image, its lib/modules/VERSION tree, and its release.
//! Debian packages are resolved, downloaded and unpacked once, into the cache.

use super::apt::{is_kernel_part, Control, PrivateApt};
use super::modules::ModuleIndex;
use super::spec::KernelSpec;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Kernel {
    /// What the user asked for (`debian:...` or a path).
    pub spec: String,
    /// Packages unpacked for it, `name=version`.
    pub packages: Vec<String>,
    pub image: PathBuf,
    /// lib/modules/VERSION on the host (visible to the guest through the shared root).
    pub modules: Option<PathBuf>,
    /// `uname -r`, when known before booting.
    pub release: Option<String>,
}

impl Kernel {
    pub fn index(&self) -> Result<ModuleIndex> {
        match &self.modules {
            Some(dir) => ModuleIndex::load(dir),
            None => Ok(ModuleIndex::default()),
        }
    }
}

pub fn obtain(
    spec: &KernelSpec,
    modules: Option<&Path>,
    cache: &Path,
    refresh: bool,
) -> Result<Kernel> {
    match spec {
        KernelSpec::File(image) => own_kernel(image, modules, cache),
        KernelSpec::Debian { package, suite } => {
            if modules.is_some() {
                bail!("--modules is for --kernel PATH; a Debian package brings its own modules");
            }
            debian_kernel(package, suite, cache, refresh)
        }
    }
}

fn own_kernel(image: &Path, modules: Option<&Path>, cache: &Path) -> Result<Kernel> {
    let image = std::fs::canonicalize(image)
        .with_context(|| format!("kernel image {} not found", image.display()))?;
    let modules = match modules {
        Some(m) => {
            let m = std::fs::canonicalize(m)
                .with_context(|| format!("--modules {} not found", m.display()))?;
            ensure_depmod(&m, cache)?;
            Some(m)
        }
        None => None,
    };
    let release = modules
        .as_ref()
        .and_then(|m| m.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    Ok(Kernel {
        spec: image.display().to_string(),
        packages: Vec::new(),
        image,
        modules,
        release,
    })
}

fn debian_kernel(package: &str, suite: &str, cache: &Path, refresh: bool) -> Result<Kernel> {
    let apt = PrivateApt::new(cache, suite)?;
    apt.update(refresh)?;
    let parts = resolve(&apt, package)?;
    let tree = cache.join("kernels").join(tree_name(&parts));
    if !tree.join(".complete").exists() {
        let tmp = tree.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for c in &parts {
            let deb = apt.download(c)?;
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))
                .with_context(|| format!("unpacking {}", deb.display()))?;
        }
        std::fs::write(tmp.join(".complete"), "")?;
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(&tmp, &tree)
            .with_context(|| format!("moving {} to {}", tmp.display(), tree.display()))?;
    }
    let (image, release) = find_image(&tree).with_context(|| {
        format!(
            "{package} ({}) brings no kernel image: name a linux-image-* package",
            parts
                .iter()
                .map(|c| c.package.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d).join(&release))
        .find(|d| d.is_dir())
        .with_context(|| format!("{} has no lib/modules/{release}", tree.display()))?;
    ensure_depmod(&modules, cache)?;
    Ok(Kernel {
        spec: KernelSpec::Debian {
            package: package.to_owned(),
            suite: suite.to_owned(),
        }
        .label(),
        packages: parts
            .iter()
            .map(|c| format!("{}={}", c.package, c.version))
            .collect(),
        image,
        modules: Some(modules),
        release: Some(release),
    })
}

/// The package and, transitively, the kernel packages it depends on (a metapackage
/// resolves to the suite's current kernel; from 7.x the image pulls binary and
/// modules packages). The requested package comes first.
fn resolve(apt: &PrivateApt, package: &str) -> Result<Vec<Control>> {
    let mut out: Vec<Control> = Vec::new();
    let mut todo = vec![package.to_owned()];
    while let Some(p) = todo.pop() {
        if out.iter().any(|c| c.package == p) {
            continue;
        }
        let c = apt.show(&p)?;
        todo.extend(c.depends.iter().filter(|d| is_kernel_part(d)).cloned());
        out.push(c);
    }
    Ok(out)
}

/// `<package>_<version>-<hash of every unpacked package=version>`: a change in
/// what the package resolves to is a new tree.
fn tree_name(parts: &[Control]) -> String {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<String> = parts
        .iter()
        .map(|c| format!("{}={}", c.package, c.version))
        .collect();
    names.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut h);
    format!(
        "{}_{}-{:08x}",
        parts[0].package,
        parts[0].version.replace(':', "%3a"),
        h.finish() as u32
    )
}

/// `boot/vmlinuz-RELEASE` (to 6.x), or `usr/lib/modules/RELEASE/vmlinuz` (7.x),
/// in an unpacked package tree.
fn find_image(tree: &Path) -> Result<(PathBuf, String)> {
    let mut found = Vec::new();
    for dir in ["lib/modules", "usr/lib/modules"] {
        let Ok(rd) = std::fs::read_dir(tree.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let image = e.path().join("vmlinuz");
            if image.is_file() {
                found.push((image, e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    for dir in ["boot", "usr/lib/linux"] {
        let Ok(rd) = std::fs::read_dir(tree.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rel) = name.strip_prefix("vmlinuz-") {
                found.push((e.path(), rel.to_owned()));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no boot/vmlinuz-* nor lib/modules/*/vmlinuz in {}",
            tree.display()
        ),
        _ => bail!("several kernel images in {}", tree.display()),
    }
}

/// Debian packages ship no modules.dep (postinst runs depmod): generate it in place.
/// depmod wants BASE/lib/modules/VERSION, so point a private base at the directory.
pub fn ensure_depmod(modules: &Path, cache: &Path) -> Result<()> {
    if modules.join("modules.dep").exists() {
        return Ok(());
    }
    let version = modules
        .file_name()
        .context("--modules must be a lib/modules/VERSION directory")?
        .to_string_lossy()
        .into_owned();
    let base = cache.join("depmod").join(&version);
    let link_dir = base.join("lib/modules");
    std::fs::create_dir_all(&link_dir)?;
    let link = link_dir.join(&version);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(modules, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("depmod is missing: apt-get install kmod (scripts/install-deps.sh)")?;
    run(Command::new(depmod).arg("-b").arg(&base).arg(&version))
        .with_context(|| format!("depmod for {}", modules.display()))?;
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
