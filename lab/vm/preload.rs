//! Which modules a guest loads before its command: `--preload` (default br_netfilter,
//! nf_conntrack) and, unless `--no-preload-learned`, every module the last boot of the
//! same kernel release ended with loaded (`<cache>/modules-loaded/<release>`, written
//! after each boot from the guest's /proc/modules). The guest loads them with one
//! `modprobe -a`. (It was opt-in while a TCG guest crash, "Oops: int3", was not
//! understood; that crash came without it too, and its cause is pinned in
//! `guest::pin_hook_keys`.)
//!
//! Why: under TCG each module the kernel autoloads costs a usermode-helper modprobe
//! process (measured with Debian trixie's 6.12: `/bin/true` 372 ms, `modprobe nft_ct`
//! 828 ms, one `modprobe -a` of eight modules 1113 ms), and a catalogue run autoloads
//! dozens, one at a time, inside its cells' builds. Loaded up front they cost one
//! process, and the guest matches the host, where they are built in.

use super::modules::ModuleIndex;
use std::path::{Path, PathBuf};

/// `<cache>/modules-loaded/<release>` (a release with `/` in it is not a file name).
pub fn learned_path(cache: &Path, release: &str) -> Option<PathBuf> {
    if release.is_empty() || release.contains('/') || release.starts_with('.') {
        return None;
    }
    Some(cache.join("modules-loaded").join(release))
}

/// The modules to load: `defaults`, then the learned ones this kernel has as modules
/// (built-in and unknown names are dropped), each once, in that order.
pub fn plan(defaults: &[String], learned: &[String], index: &ModuleIndex) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |m: &str| {
        let m = super::modules::module_name(m);
        if !out.contains(&m) {
            out.push(m);
        }
    };
    for m in defaults {
        add(m);
    }
    for m in learned {
        if index.has(m) && !index.is_builtin(m) {
            add(m);
        }
    }
    out
}

/// Reads a learned list (one module per line); none when there is no file.
pub fn read_learned(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Records what a guest had loaded when its command ended (sorted, one per line).
pub fn write_learned(path: &Path, loaded: &[String]) -> std::io::Result<()> {
    let mut names: Vec<&str> = loaded.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, names.join("\n") + "\n")?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_first_then_learned_modules_of_this_kernel_once_each() {
        let index = ModuleIndex::parse(
            "kernel/net/netfilter/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko.xz\n\
             kernel/net/netfilter/nft_numgen.ko.xz: kernel/net/netfilter/nf_tables.ko.xz\n\
             kernel/net/netfilter/nf_tables.ko.xz:\n\
             kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\n",
            "kernel/drivers/net/veth.ko\n",
        );
        let defaults = vec!["br_netfilter".to_string(), "nf-conntrack".to_string()];
        let learned: Vec<String> = [
            "nft_numgen",
            "veth",
            "gone_since",
            "nf_conntrack",
            "nf_tables",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            plan(&defaults, &learned, &index),
            ["br_netfilter", "nf_conntrack", "nft_numgen", "nf_tables"]
        );
    }

    #[test]
    fn learned_lists_round_trip_and_odd_releases_have_none() {
        let dir = std::env::temp_dir().join(format!("flpreload{}", std::process::id()));
        let path = learned_path(&dir, "6.12.118+deb13-cloud-amd64").unwrap();
        assert_eq!(read_learned(&path), Vec::<String>::new());
        write_learned(
            &path,
            &["nf_tables".into(), "bridge".into(), "nf_tables".into()],
        )
        .unwrap();
        assert_eq!(read_learned(&path), ["bridge", "nf_tables"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(learned_path(&dir, "../x"), None);
        assert_eq!(learned_path(&dir, ""), None);
    }
}
