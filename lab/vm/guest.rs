//! The guest's two shell scripts (pure text generation):
//! `/init` (in the initramfs: load the share modules, mount the host root read-only
//! under a tmpfs overlay, mount the kernel's modules and the results share, switch
//! root) and stage 2 (in the new root: point modprobe at the kernel's modules, run
//! the command, report its status with a marker, power off). The command's progress
//! events come back as markers too (`FAULTLAB_PROGRESS_MARKER`, runner::progress).

use super::marker;
use std::fmt::Write;
use std::path::PathBuf;

/// How the host's filesystems reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// virtio-fs through virtiofsd (cloud kernels have no 9p).
    Virtiofs,
    /// virtio-9p served by QEMU itself.
    NineP,
}

impl Share {
    pub fn as_str(self) -> &'static str {
        match self {
            Share::Virtiofs => "virtiofs",
            Share::NineP => "9p",
        }
    }

    /// Kernel modules the initramfs must load to mount the shares.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Share::Virtiofs => &["virtio_pci", "virtiofs", "overlay"],
            Share::NineP => &["virtio_pci", "9pnet_virtio", "9p", "overlay"],
        }
    }

    fn mount(self, tag: &str, target: &str, read_only: bool) -> String {
        let ro = if read_only { ",ro" } else { "" };
        match self {
            Share::Virtiofs => format!("mount -t virtiofs -o defaults{ro} {tag} {target}"),
            Share::NineP => {
                let cache = if read_only { ",cache=loose" } else { "" };
                format!(
                    "mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144{cache}{ro} {tag} {target}"
                )
            }
        }
    }
}

pub const ROOT_TAG: &str = "faultlab-root";
pub const OUT_TAG: &str = "faultlab-out";

/// Everything the scripts need to know about one run.
#[derive(Debug, Clone)]
pub struct GuestPlan {
    pub nonce: String,
    pub share: Share,
    /// Module files in /modules/ of the initramfs, in load order.
    pub initramfs_modules: Vec<String>,
    /// The kernel's lib/modules/VERSION on the host, bind-mounted over
    /// /lib/modules/$(uname -r) in the guest.
    pub kernel_modules: Option<PathBuf>,
    /// Host directory mounted writable at the same path (results come back here).
    pub writable: Option<PathBuf>,
    /// Modules to load before the command (beyond what autoloading brings).
    pub preload: Vec<String>,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
    /// Give the command the console as its terminal (else its output goes through a pipe).
    pub tty: bool,
}

/// Single-quote for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=+:,@%".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quoted_path(p: &std::path::Path) -> String {
    sh_quote(&p.display().to_string())
}

const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn init_script(p: &GuestPlan) -> String {
    let mut s = String::new();
    let m = marker::prefix(&p.nonce);
    let _ = write!(
        s,
        r#"#!/bin/sh
# faultlab vm guest init (generated): host root read-only under a tmpfs overlay.
export PATH=/bin
M='{m}'
infra() {{ echo "${{M}}INFRA $*"; sync; poweroff -f; sleep 5; reboot -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "${{M}}BOOTED $(uname -r)"
"#
    );
    for module in &p.initramfs_modules {
        let q = sh_quote(module);
        let _ = writeln!(s, "insmod /modules/{q} || infra \"insmod {q} failed\"");
    }
    // /run gets a fresh tmpfs (the host's run state must stay invisible); /tmp
    // does not: the overlay already makes it writable, and a checkout under the
    // host's /tmp (as CI clones) must stay reachable from the guest.
    let root_mount = p.share.mount(ROOT_TAG, "/lower", true);
    let _ = write!(
        s,
        r#"mkdir -p /lower /rw /newroot
{root_mount} || infra "cannot mount the host root ({share} tag {ROOT_TAG})"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir -p /rw/upper /rw/work || infra "cannot mount the overlay tmpfs"
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || infra "cannot mount the overlay root"
R=/newroot
mount -t proc proc $R/proc && mount -t sysfs sysfs $R/sys && mount -t devtmpfs devtmpfs $R/dev || infra "cannot mount proc, sys or dev"
mkdir -p $R/dev/pts $R/dev/shm
# devtmpfs has no /dev/fd, /dev/std* links (udev makes them): kselftest's runner.sh
# writes to /dev/stdout.
ln -sf /proc/self/fd $R/dev/fd && ln -sf /proc/self/fd/0 $R/dev/stdin && ln -sf /proc/self/fd/1 $R/dev/stdout && ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t devpts -o ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run || infra "cannot mount /run"
mount -t tracefs tracefs $R/sys/kernel/tracing || infra "cannot mount tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
"#,
        share = p.share.as_str(),
    );
    if let Some(km) = &p.kernel_modules {
        let q = quoted_path(km);
        let _ = writeln!(
            s,
            "mkdir -p \"$R/lib/modules/$(uname -r)\" && mount --bind \"$R\"{q} \"$R/lib/modules/$(uname -r)\" || infra \"cannot bind-mount the kernel modules from {}\"",
            km.display()
        );
    }
    if let Some(w) = &p.writable {
        let q = quoted_path(w);
        let mount = p.share.mount(OUT_TAG, &format!("\"$R\"{q}"), false);
        let _ = writeln!(
            s,
            "mkdir -p \"$R\"{q} && {mount} || infra \"cannot mount the results share at {}\"",
            w.display()
        );
    }
    s.push_str(
        "mkdir -p $R/run/faultlab && cp /bin/busybox /stage2 $R/run/faultlab/ || infra \"cannot stage busybox\"\n\
         exec switch_root $R /run/faultlab/busybox sh /run/faultlab/stage2\n\
         infra \"switch_root failed\"\n",
    );
    s
}

/// Base chains at every netfilter hook of the guest's own root namespace (a VM's,
/// never the host's), loaded before the command.
///
/// Under multi-threaded TCG a vCPU can execute the int3 of a jump label that another
/// vCPU is patching after text_poke_bp() has finished with it: "Oops: int3" at the
/// nf_hook() static branch in __ip_local_out, reproduced in seconds on Debian 6.12 by
/// adding and deleting an output chain in a loop beside a ping flood, never with
/// `-accel tcg,thread=single`. Each (family, hook) has one static key
/// (nf_hooks_needed[pf][hook], changed in __nf_register_net_hook() /
/// __nf_unregister_net_hook() when the first/last hook of any namespace comes or
/// goes): with these chains standing, no lab's rulesets, conntrack or br_netfilter
/// hooks flip them. They see only the root namespace's packets, which carry no lab
/// traffic. Each table alone when the batch fails (a kernel without the bridge or
/// arp family).
///
/// Two more keys flipped at hot patch sites in a catalogue run (counted with a kprobe
/// on arch_jump_label_transform_queue in the 6.12 guest): nft_counters_enabled
/// (nft_do_chain; on while any base chain has counters, which iptables-nft gives
/// its built-in chains: nf_tables_addchain()) and netstamp_needed_key
/// (netif_receive_skb_list_internal, tpacket_rcv; on while any socket asks for
/// receive timestamps: sock_enable_timestamp()). A policy set with iptables-nft and a
/// sleeping socket with SO_TIMESTAMP (perl, killed by its pid after the command)
/// hold them on.
fn pin_hook_keys() -> String {
    const IP_HOOKS: &[&str] = &["prerouting", "input", "forward", "output", "postrouting"];
    const FAMILIES: &[(&str, &[&str])] = &[
        ("inet", IP_HOOKS),
        ("arp", &["input", "output"]),
        ("bridge", IP_HOOKS),
    ];
    let mut s = String::new();
    for (family, hooks) in FAMILIES {
        let chains: String = hooks
            .iter()
            .map(|h| {
                // One-letter chain names, as before: p i f o q.
                let name = if *h == "postrouting" {
                    'q'
                } else {
                    h.chars().next().unwrap_or('c')
                };
                format!("chain {name} {{ type filter hook {h} priority 0; }}; ")
            })
            .collect();
        let _ = writeln!(
            s,
            "pin_{family}='table {family} faultlab_pin_hook_keys {{ {chains}}}'"
        );
    }
    let all: Vec<String> = FAMILIES.iter().map(|(f, _)| format!("$pin_{f}")).collect();
    let _ = write!(
        s,
        r#"if command -v nft >/dev/null; then
  nft "{joined}" 2>/dev/null || for t in {each}; do nft "$t" 2>/dev/null || echo "faultlab vm: warning: cannot pin the netfilter hook keys: nft '${{t%% \{{*}}' failed"; done
else
  echo "faultlab vm: warning: no nft: the netfilter hook keys are not pinned (TCG guests may crash with Oops: int3)"
fi
command -v iptables-nft >/dev/null && iptables-nft -P OUTPUT ACCEPT 2>/dev/null
tspid=
if command -v perl >/dev/null; then perl -e 'socket(my $s, 2, 2, 0) or die; setsockopt($s, 1, 29, pack("i", 1)) or die; sleep' & tspid=$!; fi
"#,
        joined = all.join("; "),
        each = all
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(" "),
    );
    s
}

pub fn stage2_script(p: &GuestPlan) -> String {
    let mut s = String::new();
    let m = marker::prefix(&p.nonce);
    let _ = write!(
        s,
        r#"# faultlab vm stage 2 (generated): runs as PID 1 in the overlay root.
B=/run/faultlab/busybox
M='{m}'
infra() {{ echo "${{M}}INFRA $*"; $B sync; $B poweroff -f; $B sleep 5; $B reboot -f; }}
export PATH={GUEST_PATH}
# Module autoloading: the kernel runs this modprobe, which finds the kernel's
# modules under /lib/modules/$(uname -r) (bind-mounted from the host). A kernel
# without module support (CONFIG_MODULES off) has no /proc/sys/kernel/modprobe.
if [ -x /sbin/modprobe ]; then MP=/sbin/modprobe; else $B ln -s busybox /run/faultlab/modprobe; MP=/run/faultlab/modprobe; fi
if [ -e /proc/sys/kernel/modprobe ]; then echo $MP > /proc/sys/kernel/modprobe || infra "cannot set /proc/sys/kernel/modprobe"; fi
$B hostname faultlab-vm
"#
    );
    if !p.preload.is_empty() {
        // One modprobe for all (a process costs hundreds of ms under TCG); one per
        // module only to name the ones that failed.
        let all: Vec<String> = p.preload.iter().map(|m| sh_quote(m)).collect();
        let _ = writeln!(
            s,
            "$MP -a -q {} || for m in {}; do $MP -q $m || echo \"faultlab vm: warning: cannot load module $m\"; done",
            all.join(" "),
            all.join(" ")
        );
    }
    s.push_str(&pin_hook_keys());
    let cwd = quoted_path(&p.cwd);
    let argv: Vec<String> = p.argv.iter().map(|a| sh_quote(a)).collect();
    let env = format!(
        "$B env -i PATH={GUEST_PATH} HOME=/root LANG=C.UTF-8 TERM={} FAULTLAB_VM=1 {}=\"$M\"",
        if p.tty { "linux" } else { "dumb" },
        crate::runner::progress::MARKER_ENV
    );
    let _ = write!(
        s,
        "cd {cwd} || infra \"cannot enter {}\"\n\
         echo \"${{M}}START\"\n",
        p.cwd.display()
    );
    if p.tty {
        let _ = writeln!(s, "{env} {} </dev/null", argv.join(" "));
    } else {
        let _ = writeln!(
            s,
            "set -o pipefail\n{env} {} </dev/null 2>&1 | $B cat",
            argv.join(" ")
        );
    }
    s.push_str(
        "rc=$?\n\
         if [ -n \"$tspid\" ]; then kill $tspid; fi\n\
         mods=; if [ -r /proc/modules ]; then while read -r n _; do mods=\"$mods $n\"; done </proc/modules; fi\n\
         echo \"${M}MODULES$mods\"\n\
         echo \"${M}EXIT $rc\"\n\
         $B sync\n\
         $B poweroff -f\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(share: Share) -> GuestPlan {
        GuestPlan {
            nonce: "n0nce".into(),
            share,
            initramfs_modules: vec!["virtio_ring.ko".into(), "virtiofs.ko".into()],
            kernel_modules: Some(
                "/var/cache/faultlab/kernels/linux-image-cloud-amd64_6.1.140-1/lib/modules/6.1.0-37-cloud-amd64".into(),
            ),
            writable: Some("/work/main/results".into()),
            preload: vec!["br_netfilter".into()],
            cwd: "/work/main".into(),
            argv: vec![
                "/work/main/target/release/faultlab".into(),
                "run".into(),
                "scenarios/bridge netfilter.toml".into(),
                "it's".into(),
            ],
            tty: false,
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn init_script_virtiofs() {
        insta::assert_snapshot!(init_script(&plan(Share::Virtiofs)));
    }

    #[test]
    fn init_script_9p_without_results_share() {
        let mut p = plan(Share::NineP);
        p.writable = None;
        p.kernel_modules = None;
        p.initramfs_modules.clear();
        let s = init_script(&p);
        assert!(s.contains("mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro faultlab-root /lower"));
        assert!(!s.contains("faultlab-out"));
        assert!(!s.contains("insmod"));
    }

    #[test]
    fn stage2_script_runs_the_command_and_reports_its_status() {
        insta::assert_snapshot!(stage2_script(&plan(Share::Virtiofs)));
    }

    #[test]
    fn stage2_on_a_tty_keeps_the_console() {
        let mut p = plan(Share::Virtiofs);
        p.tty = true;
        let s = stage2_script(&p);
        assert!(s.contains("TERM=linux"));
        assert!(!s.contains("| $B cat"));
    }

    #[test]
    fn scripts_parse_as_sh() {
        for text in [
            init_script(&plan(Share::NineP)),
            stage2_script(&plan(Share::Virtiofs)),
        ] {
            let Ok(out) = std::process::Command::new("sh")
                .arg("-nc")
                .arg(&text)
                .output()
            else {
                return;
            };
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
