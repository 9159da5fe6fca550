//! A kernel's module index (modules.dep, modules.builtin): what is built in, what
//! is a module, and in which order a set of modules and their dependencies loads.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    /// module name → (path relative to `dir`, names of its dependencies)
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// `kernel/fs/fuse/virtiofs.ko.xz` → `virtiofs`; dashes and underscores are one.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

impl ModuleIndex {
    pub fn load(dir: &Path) -> Result<ModuleIndex> {
        let dep = std::fs::read_to_string(dir.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        let mut idx = ModuleIndex::parse(&dep, &builtin);
        idx.dir = dir.to_owned();
        Ok(idx)
    }

    pub fn parse(modules_dep: &str, modules_builtin: &str) -> ModuleIndex {
        let mut modules = BTreeMap::new();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (path.trim().to_owned(), deps));
        }
        let builtin = modules_builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        ModuleIndex {
            dir: PathBuf::new(),
            modules,
            builtin,
        }
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    /// Built in, or available as a module.
    pub fn has(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.builtin.contains(&n) || self.modules.contains_key(&n)
    }

    /// Module files (relative to `dir`) to load, dependencies first, for `wanted`;
    /// built-in ones are left out. Errors name a module the kernel lacks.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let n = w.replace('-', "_");
            if self.builtin.contains(&n) {
                continue;
            }
            if !self.modules.contains_key(&n) {
                bail!("the kernel has no `{w}`: neither built in nor in modules.dep");
            }
            self.visit(&n, &mut seen, &mut order);
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        if let Some((path, deps)) = self.modules.get(name) {
            for d in deps {
                self.visit(d, seen, order);
            }
            order.push(path.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/fuse/fuse.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/fs/overlayfs/overlay.ko.xz:
";

    #[test]
    fn load_order_puts_dependencies_first_once() {
        let idx = ModuleIndex::parse(DEP, "kernel/fs/9p/9p.ko\n");
        let order = idx
            .load_order(&["virtio_pci", "virtiofs", "overlay"])
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/fs/fuse/fuse.ko",
                "kernel/fs/fuse/virtiofs.ko",
                "kernel/fs/overlayfs/overlay.ko.xz",
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped_and_missing_ones_named() {
        let idx = ModuleIndex::parse(DEP, "kernel/fs/9p/9p.ko\n");
        assert!(idx.has("9p") && idx.is_builtin("9p"));
        assert!(idx.load_order(&["9p"]).unwrap().is_empty());
        let err = idx.load_order(&["9pnet_virtio"]).unwrap_err().to_string();
        assert!(err.contains("9pnet_virtio"), "{err}");
    }

    #[test]
    fn names_ignore_compression_and_dashes() {
        assert_eq!(
            module_name("kernel/net/bridge/br_netfilter.ko.zst"),
            "br_netfilter"
        );
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
    }
}
