//! The QEMU command line (pure): q35, no network, serial console on stdio, direct
//! kernel boot, and the two shares (virtio-fs sockets or virtio-9p exports).

use super::guest::{Share, OUT_TAG, ROOT_TAG};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where the shares come from: virtiofsd sockets, or host directories for 9p.
#[derive(Debug, Clone)]
pub enum ShareSource {
    Virtiofs {
        root_socket: PathBuf,
        out_socket: Option<PathBuf>,
    },
    NineP {
        root: PathBuf,
        out: Option<PathBuf>,
    },
}

impl ShareSource {
    pub fn kind(&self) -> Share {
        match self {
            ShareSource::Virtiofs { .. } => Share::Virtiofs,
            ShareSource::NineP { .. } => Share::NineP,
        }
    }
}

#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub accel: Accel,
    pub smp: u32,
    pub memory_mb: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub shares: ShareSource,
    /// Appended to the kernel command line ($FAULTLAB_VM_APPEND, for debugging).
    pub append: String,
}

/// Kernel command line: serial console, reboot (and so QEMU exit) on panic, quiet.
pub fn kernel_cmdline() -> String {
    [
        "console=ttyS0",
        "panic=-1",
        "oops=panic",
        "quiet",
        "loglevel=3",
        "rdinit=/init",
        "mitigations=off",
        "random.trust_cpu=on",
        "nokaslr",
        // Real addresses in trace output (6.1 prints kfree_skb locations with %p),
        // so they can be matched against /proc/kallsyms.
        "no_hash_pointers",
    ]
    .join(" ")
}

pub fn args(c: &QemuConfig) -> Vec<String> {
    let accel = match c.accel {
        Accel::Tcg => "tcg,thread=multi",
        Accel::Kvm => "kvm",
    };
    let mut a: Vec<String> = [
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        "max",
        "-nic",
        "none",
        "-nographic",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&[
        "-smp",
        &c.smp.to_string(),
        "-m",
        &format!("{}M", c.memory_mb),
    ]);
    push(&["-kernel", &c.kernel.display().to_string()]);
    push(&["-initrd", &c.initrd.display().to_string()]);
    let cmdline = format!("{} {}", kernel_cmdline(), c.append);
    push(&["-append", cmdline.trim_end()]);
    match &c.shares {
        ShareSource::Virtiofs {
            root_socket,
            out_socket,
        } => {
            // vhost-user needs guest RAM shared with virtiofsd.
            push(&[
                "-object",
                &format!("memory-backend-memfd,id=mem,size={}M,share=on", c.memory_mb),
                "-numa",
                "node,memdev=mem",
            ]);
            let mut fs = |id: &str, socket: &PathBuf, tag: &str| {
                push(&[
                    "-chardev",
                    &format!("socket,id={id},path={}", socket.display()),
                    "-device",
                    &format!("vhost-user-fs-pci,queue-size=1024,chardev={id},tag={tag}"),
                ]);
            };
            fs("fsroot", root_socket, ROOT_TAG);
            if let Some(s) = out_socket {
                fs("fsout", s, OUT_TAG);
            }
        }
        ShareSource::NineP { root, out } => {
            let mut fs = |id: &str, dir: &PathBuf, tag: &str, ro: bool| {
                push(&[
                    "-fsdev",
                    &format!(
                        "local,id={id},path={},security_model=passthrough,multidevs=remap{}",
                        dir.display(),
                        if ro { ",readonly=on" } else { "" }
                    ),
                    "-device",
                    &format!("virtio-9p-pci,fsdev={id},mount_tag={tag}"),
                ]);
            };
            fs("fsroot", root, ROOT_TAG, true);
            if let Some(d) = out {
                fs("fsout", d, OUT_TAG, false);
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_virtiofs_command_line() {
        let c = QemuConfig {
            accel: Accel::Tcg,
            smp: 2,
            memory_mb: 2048,
            kernel: "/cache/vmlinuz".into(),
            initrd: "/cache/run.cpio".into(),
            shares: ShareSource::Virtiofs {
                root_socket: "/run/fl/root.sock".into(),
                out_socket: Some("/run/fl/out.sock".into()),
            },
            append: String::new(),
        };
        insta::assert_snapshot!(args(&c).join(" "), @"-machine q35 -accel tcg,thread=multi -cpu max -nic none -nographic -no-reboot -smp 2 -m 2048M -kernel /cache/vmlinuz -initrd /cache/run.cpio -append console=ttyS0 panic=-1 oops=panic quiet loglevel=3 rdinit=/init mitigations=off random.trust_cpu=on nokaslr no_hash_pointers -object memory-backend-memfd,id=mem,size=2048M,share=on -numa node,memdev=mem -chardev socket,id=fsroot,path=/run/fl/root.sock -device vhost-user-fs-pci,queue-size=1024,chardev=fsroot,tag=faultlab-root -chardev socket,id=fsout,path=/run/fl/out.sock -device vhost-user-fs-pci,queue-size=1024,chardev=fsout,tag=faultlab-out");
    }

    #[test]
    fn kvm_9p_command_line() {
        let c = QemuConfig {
            accel: Accel::Kvm,
            smp: 1,
            memory_mb: 1024,
            kernel: "/k".into(),
            initrd: "/i".into(),
            shares: ShareSource::NineP {
                root: "/".into(),
                out: None,
            },
            append: "loglevel=7".into(),
        };
        let a = args(&c).join(" ");
        assert!(a.contains("-accel kvm "));
        assert!(a.contains("no_hash_pointers loglevel=7 -fsdev"));
        assert!(a.contains("-fsdev local,id=fsroot,path=/,security_model=passthrough,multidevs=remap,readonly=on -device virtio-9p-pci,fsdev=fsroot,mount_tag=faultlab-root"));
        assert!(!a.contains("memory-backend"));
        assert!(!a.contains("fsout"));
    }
}
