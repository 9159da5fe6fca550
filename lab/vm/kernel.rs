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
        KernelSpec::File(dir) if dir.is_dir() => tree_kernel(dir, modules, cache),
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

/// Where a build tree keeps its image (x86).
pub const TREE_IMAGE: &str = "arch/x86/boot/bzImage";

/// A kernel build tree (in-tree or `make O=DIR`), as virtme-ng takes one: the
/// image, the release, and the modules `modules.order` lists (none when
/// everything is built in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTree {
    pub root: PathBuf,
    pub image: PathBuf,
    /// include/config/kernel.release.
    pub release: String,
    /// Module files relative to `root` (`net/bridge/br_netfilter.ko`), in
    /// modules.order's order.
    pub modules: Vec<String>,
}

/// Recognise a build tree; errors say what is missing and how to get it.
pub fn discover_tree(dir: &Path) -> Result<BuildTree> {
    let image = dir.join(TREE_IMAGE);
    if !image.is_file() {
        let what = if dir.join("vmlinux").is_file() {
            "it has a vmlinux but no bzImage: run `make bzImage` there"
        } else if dir.join(".config").is_file() {
            "it is configured but not built: run `make bzImage` there"
        } else {
            "not a kernel build tree"
        };
        bail!(
            "--kernel {}: a directory must be a kernel build tree with {TREE_IMAGE} ({what})",
            dir.display()
        );
    }
    let release = std::fs::read_to_string(dir.join("include/config/kernel.release"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .with_context(|| {
            format!(
                "{} has {TREE_IMAGE} but no include/config/kernel.release",
                dir.display()
            )
        })?;
    let order = std::fs::read_to_string(dir.join("modules.order")).unwrap_or_default();
    // Old kernels list `kernel/net/...`; a module of the source's own kernel/
    // directory (kernel/kheaders.ko) keeps its prefix.
    let modules = parse_modules_order(&order)
        .into_iter()
        .map(|rel| match rel.strip_prefix("kernel/") {
            Some(s) if !dir.join(&rel).exists() && dir.join(s).exists() => s.to_owned(),
            _ => rel,
        })
        .collect();
    Ok(BuildTree {
        root: dir.to_owned(),
        image,
        release,
        modules,
    })
}

/// modules.order lines as module files relative to the tree, `.o` entries (6.4
/// and later) named as their `.ko`, each once.
pub fn parse_modules_order(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let rel = match line.strip_suffix(".o") {
            Some(stem) => format!("{stem}.ko"),
            None => line.to_owned(),
        };
        if !out.contains(&rel) {
            out.push(rel);
        }
    }
    out
}

fn tree_kernel(dir: &Path, modules: Option<&Path>, cache: &Path) -> Result<Kernel> {
    if modules.is_some() {
        bail!(
            "--modules goes with a bzImage; the build tree {} brings its own (modules.order)",
            dir.display()
        );
    }
    let root = std::fs::canonicalize(dir)
        .with_context(|| format!("kernel build tree {} not found", dir.display()))?;
    let tree = discover_tree(&root)?;
    let modules = stage_tree_modules(&tree, cache)?;
    Ok(Kernel {
        spec: tree.root.display().to_string(),
        packages: Vec::new(),
        image: tree.image,
        modules: Some(modules),
        release: Some(tree.release),
    })
}

/// A lib/modules/RELEASE directory for a build tree, in the cache: modules.order,
/// modules.builtin(.modinfo) and, under kernel/, a symbolic link to each built
/// module (the guest sees the tree at the same path through the shared root),
/// then depmod. Even a tree without modules gets one: modules.builtin is what
/// tells the share chooser and the guest's modprobe what is built in. Keyed by
/// the tree's path and the state of its module lists and image, so a rebuild
/// gets a fresh directory and concurrent boots never share a half-written one.
pub fn stage_tree_modules(tree: &BuildTree, cache: &Path) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tree.root.hash(&mut h);
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
        TREE_IMAGE,
    ] {
        if let Ok(m) = std::fs::metadata(tree.root.join(f)) {
            (f, m.len(), m.modified().ok()).hash(&mut h);
        }
    }
    let base = cache
        .join("trees")
        .join(format!("{}-{:016x}", tree.release, h.finish()));
    let dir = base.join("lib/modules").join(&tree.release);
    if base.join(".complete").exists() {
        return Ok(dir);
    }
    for rel in &tree.modules {
        if !tree.root.join(rel).is_file() {
            bail!(
                "{} lists {rel} in modules.order but it is not built: run `make modules` in the tree",
                tree.root.display()
            );
        }
    }
    let tmp = base.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tmp_dir = tmp.join("lib/modules").join(&tree.release);
    std::fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    for f in ["modules.builtin", "modules.builtin.modinfo"] {
        let from = tree.root.join(f);
        if from.is_file() {
            std::fs::copy(&from, tmp_dir.join(f))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let mut order = String::new();
    for rel in &tree.modules {
        let link = tmp_dir.join("kernel").join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(tree.root.join(rel), &link)
            .with_context(|| format!("linking {}", link.display()))?;
        order.push_str(&format!("kernel/{rel}\n"));
    }
    std::fs::write(tmp_dir.join("modules.order"), order)?;
    ensure_depmod(&tmp_dir, cache)?;
    std::fs::write(tmp.join(".complete"), "")?;
    if std::fs::rename(&tmp, &base).is_err() {
        // Another boot of the same tree finished first: use its directory.
        let _ = std::fs::remove_dir_all(&tmp);
        if !base.join(".complete").exists() {
            bail!("cannot move {} to {}", tmp.display(), base.display());
        }
    }
    Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::modules::ModuleIndex;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("faultlab-tree-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        fn file(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fake_tree(name: &str, modules_order: &str) -> Scratch {
        let t = Scratch::new(name);
        t.file(TREE_IMAGE, "not really a kernel");
        t.file("vmlinux", "");
        t.file(".config", "CONFIG_9P_FS=y\n");
        t.file("include/config/kernel.release", "6.1.192-faultlab\n");
        t.file("modules.order", modules_order);
        t.file(
            "modules.builtin",
            "kernel/fs/9p/9p.ko\nkernel/net/9p/9pnet_virtio.ko\nkernel/net/bridge/br_netfilter.ko\n",
        );
        t
    }

    #[test]
    fn modules_order_entries_become_module_files() {
        assert_eq!(
            parse_modules_order(
                "net/bridge/br_netfilter.ko\nkernel/fs/9p/9p.ko\n\nfs/overlayfs/overlay.o\nfs/overlayfs/overlay.o\n"
            ),
            [
                "net/bridge/br_netfilter.ko",
                "kernel/fs/9p/9p.ko",
                "fs/overlayfs/overlay.ko"
            ]
        );
        assert!(parse_modules_order("").is_empty());
    }

    #[test]
    fn discovers_a_build_tree() {
        let t = fake_tree(
            "discover",
            "net/netfilter/nf_conntrack.ko\nkernel/kheaders.ko\nkernel/fs/9p/9p.ko\n",
        );
        t.file("kernel/kheaders.ko", "");
        t.file("fs/9p/9p.ko", "");
        let tree = discover_tree(&t.0).unwrap();
        assert_eq!(tree.image, t.0.join("arch/x86/boot/bzImage"));
        assert_eq!(tree.release, "6.1.192-faultlab");
        assert_eq!(
            tree.modules,
            [
                "net/netfilter/nf_conntrack.ko",
                "kernel/kheaders.ko",
                "fs/9p/9p.ko"
            ]
        );
        // A built-in-only tree has an empty (or no) modules.order.
        std::fs::remove_file(t.0.join("modules.order")).unwrap();
        assert!(discover_tree(&t.0).unwrap().modules.is_empty());
    }

    #[test]
    fn a_directory_that_is_no_build_tree_says_what_is_missing() {
        let t = Scratch::new("not-a-tree");
        let e = discover_tree(&t.0).unwrap_err().to_string();
        assert!(e.contains("not a kernel build tree"), "{e}");
        t.file(".config", "");
        let e = discover_tree(&t.0).unwrap_err().to_string();
        assert!(e.contains("make bzImage"), "{e}");
        t.file(TREE_IMAGE, "");
        let e = discover_tree(&t.0).unwrap_err().to_string();
        assert!(e.contains("kernel.release"), "{e}");
    }

    #[test]
    fn a_built_in_tree_boots_with_what_it_has_built_in() {
        if !Path::new("/usr/sbin/depmod").exists() && !Path::new("/sbin/depmod").exists() {
            return; // kmod missing: nothing to stage with
        }
        let t = fake_tree("builtin", "");
        let cache = Scratch::new("builtin-cache");
        let spec = KernelSpec::parse(&t.0.display().to_string()).unwrap();
        let k = obtain(&spec, None, &cache.0, false).unwrap();
        assert_eq!(k.release.as_deref(), Some("6.1.192-faultlab"));
        assert_eq!(
            k.image,
            std::fs::canonicalize(t.0.join(TREE_IMAGE)).unwrap()
        );
        let dir = k.modules.clone().unwrap();
        assert!(dir.starts_with(&cache.0) && dir.ends_with("lib/modules/6.1.192-faultlab"));
        let idx: ModuleIndex = k.index().unwrap();
        assert!(idx.is_builtin("9p") && idx.is_builtin("9pnet_virtio"));
        assert!(idx.load_order(&["9p", "br_netfilter"]).unwrap().is_empty());
        // Staged once per tree state; a second boot reuses it.
        assert_eq!(
            obtain(&spec, None, &cache.0, false).unwrap().modules,
            Some(dir)
        );
        let e = obtain(&spec, Some(Path::new("/lib/modules")), &cache.0, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("brings its own"), "{e}");
    }

    #[test]
    fn tree_modules_are_linked_from_the_tree() {
        if !Path::new("/usr/sbin/depmod").exists() && !Path::new("/sbin/depmod").exists() {
            return;
        }
        let t = fake_tree("with-modules", "net/netfilter/nf_conntrack.ko\n");
        let cache = Scratch::new("with-modules-cache");
        let tree = discover_tree(&t.0).unwrap();
        let e = stage_tree_modules(&tree, &cache.0).unwrap_err().to_string();
        assert!(e.contains("make modules"), "{e}");
        t.file("net/netfilter/nf_conntrack.ko", "");
        let tree = discover_tree(&t.0).unwrap();
        let Ok(dir) = stage_tree_modules(&tree, &cache.0) else {
            return; // depmod refused the fake module: the layout is what is tested below
        };
        let link = dir.join("kernel/net/netfilter/nf_conntrack.ko");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            t.0.join("net/netfilter/nf_conntrack.ko")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("modules.order")).unwrap(),
            "kernel/net/netfilter/nf_conntrack.ko\n"
        );
    }
}
