//! Named network namespaces, created and deleted the way iproute2 does it
//! (`/run/netns/NAME` bind mounts), and ways to run code inside one.

use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where iproute2 keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `/run/netns/NAME`, refusing names that are not a single path component.
pub fn path_of(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        bail!("invalid network namespace name {name:?}");
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// Opens the namespace file of `name` (the fd that `setns` and `IFLA_NET_NS_FD` take).
pub fn open(name: &str) -> Result<File> {
    let path = path_of(name)?;
    File::open(&path).with_context(|| {
        format!(
            "network namespace `{name}` does not exist ({} cannot be opened)",
            path.display()
        )
    })
}

static RUN_DIR_SETUP: Mutex<bool> = Mutex::new(false);

/// Makes /run/netns a shared mount point, as `ip netns add` does, so a namespace mounted
/// here is visible in every mount namespace that later unshares from this one.
fn prepare_run_dir() -> Result<()> {
    let mut done = RUN_DIR_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_RUN_DIR)
        .with_context(|| format!("cannot create {NETNS_RUN_DIR}"))?;
    let mut bound = false;
    loop {
        match mount(
            Some("none"),
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => break,
            // EINVAL: /run/netns is not a mount point yet; bind it on itself and retry.
            Err(nix::errno::Errno::EINVAL) if !bound => {
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .with_context(|| format!("bind mount {NETNS_RUN_DIR} on itself"))?;
                bound = true;
            }
            Err(e) => return Err(anyhow!(e).context(format!("make {NETNS_RUN_DIR} shared"))),
        }
    }
    *done = true;
    Ok(())
}

/// Creates the named namespace `name` (visible to `ip netns list`) with `lo` up.
pub fn create(name: &str) -> Result<()> {
    let path = path_of(name)?;
    prepare_run_dir()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!("network namespace `{name}` already exists")
            } else {
                anyhow!(e).context(format!("create {}", path.display()))
            }
        })?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // This thread alone moves into the new namespace; it ends right after,
            // and the bind mount keeps the namespace alive.
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind mount the new namespace on {}", path.display()))?;
            set_lo_up()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    if let Err(e) = res {
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&path);
        return Err(e.context(format!("create network namespace `{name}`")));
    }
    Ok(())
}

/// `ip link set lo up` for the current thread's namespace, through one ioctl.
fn set_lo_up() -> Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for SIOCSIFFLAGS")?;
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain old data; the name is NUL-terminated and the ioctls only
    // read/write the struct we pass.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("set lo up");
        }
    }
    Ok(())
}

/// Deletes the named namespace (lazy unmount + unlink). Interfaces inside it go away
/// once no process or socket holds the namespace any more.
pub fn delete(name: &str) -> Result<()> {
    let path = path_of(name)?;
    if !path.exists() {
        bail!("network namespace `{name}` does not exist");
    }
    umount2(&path, MntFlags::MNT_DETACH)
        .with_context(|| format!("unmount {} (netns `{name}`)", path.display()))?;
    std::fs::remove_file(&path)
        .with_context(|| format!("remove {} (netns `{name}`)", path.display()))?;
    Ok(())
}

/// Named namespaces under /run/netns, sorted.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// True when `/run/netns/NAME` exists.
pub fn exists(name: &str) -> bool {
    path_of(name).map(|p| p.exists()).unwrap_or(false)
}

/// Moves the CURRENT OS thread into the namespace. Only for threads the caller owns
/// (pinned traffic threads); never from inside a tokio task.
pub fn enter(name: &str) -> Result<()> {
    let f = open(name)?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into network namespace `{name}`"))
}

/// Runs `f` on a fresh OS thread that has entered the namespace, and returns its result.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = open(name)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns into network namespace `{name}`"))?;
            drop(ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
