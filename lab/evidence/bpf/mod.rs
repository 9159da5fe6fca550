//! Exact drop attribution: an eBPF program on `skb:kfree_skb` (kfree_skb.bpf.c) counts
//! drops per (network namespace, reason, location) in a kernel hash map, for the lab's
//! namespaces only; this module loads it, tells it which namespaces are the lab's nodes,
//! and reads the counts when the trace stops.
//!
//! A namespace is identified by its cookie (`SO_NETNS_COOKIE` on a socket made inside it,
//! which is `net->net_cookie` in the kernel), else by its inode number (`ns.inum`, the
//! inode of /run/netns/NAME), which the kernel may reuse after a namespace dies.
//!
//! Nothing is pinned: the program, its link and maps are held by file descriptors of this
//! process only, so they go when the last trace is dropped or the process dies.

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

#[allow(clippy::all, clippy::pedantic)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/kfree_skb.skel.rs"));
}

/// Not defined by every libc crate version; `include/uapi/asm-generic/socket.h`.
const SO_NETNS_COOKIE: libc::c_int = 71;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// How the lab's namespaces are told apart in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceIds {
    /// True: `net_cookie`; false: `ns.inum`.
    pub cookies: bool,
    /// id → node.
    pub nodes: BTreeMap<u64, String>,
}

/// node → namespace id, by cookie where every namespace has one, else by inode.
pub fn namespace_ids(node_netns: &BTreeMap<String, String>) -> Result<NamespaceIds> {
    let mut nodes = BTreeMap::new();
    let mut cookies = true;
    for (node, netns) in node_netns {
        match netns_cookie(netns) {
            Ok(c) => {
                nodes.insert(c, node.clone());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                cookies = false;
                break;
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!("node `{node}`: getsockopt(SO_NETNS_COOKIE) in netns `{netns}`")
                })
            }
        }
    }
    if !cookies {
        nodes.clear();
        for (node, netns) in node_netns {
            let path = crate::netns::path_of(netns)?;
            let ino = std::fs::metadata(&path)
                .with_context(|| format!("node `{node}`: stat {}", path.display()))?
                .ino();
            nodes.insert(ino, node.clone());
        }
    }
    Ok(NamespaceIds { cookies, nodes })
}

fn netns_cookie(netns: &str) -> std::io::Result<u64> {
    crate::netns::run_in(netns, || {
        let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(cookie)
    })
    .map_err(|e| match e.downcast::<std::io::Error>() {
        Ok(io) => io,
        Err(e) => std::io::Error::other(format!("{e:#}")),
    })
}

/// The kernel's drop reasons from BTF (`enum skb_drop_reason`): value → name as the
/// tracepoint prints it (`SKB_DROP_REASON_NO_SOCKET` → `NO_SOCKET`), in the kernel's
/// order, without the non-reasons (`SKB_NOT_DROPPED_YET`, `SKB_CONSUMED`, `..._MAX`).
/// Read once per process: parsing vmlinux's BTF costs tens of ms, which every cell
/// would pay again.
pub fn reason_names() -> Result<Vec<(u32, String)>> {
    static NAMES: std::sync::OnceLock<Result<Vec<(u32, String)>, String>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| read_reason_names().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn read_reason_names() -> Result<Vec<(u32, String)>> {
    let btf = libbpf_rs::btf::Btf::from_vmlinux().context("reading the kernel's BTF")?;
    let reasons: libbpf_rs::btf::types::Enum<'_> = btf
        .type_by_name("skb_drop_reason")
        .ok_or_else(|| anyhow!("the kernel's BTF has no enum skb_drop_reason (< 5.17)"))?;
    // Subsystem reasons (`SKB_DROP_REASON_SUBSYS_MASK` and above) lie past `..._MAX`.
    let max = reasons
        .iter()
        .find(|m| m.name.and_then(|n| n.to_str()) == Some("SKB_DROP_REASON_MAX"))
        .map_or(i64::MAX, |m| m.value);
    Ok(reasons
        .iter()
        .filter(|m| m.value < max)
        .filter_map(|m| {
            let full = m.name?.to_str()?;
            let name = full
                .strip_prefix("SKB_DROP_REASON_")
                .or_else(|| full.strip_prefix("SKB_"))?;
            let value = u32::try_from(m.value).ok()?;
            (!super::drops::NOT_REASONS.contains(&name)).then(|| (value, name.to_string()))
        })
        .collect())
}

/// What the kernel counted, by node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfCounts {
    /// (node, reason value, location address) → drops.
    pub drops: BTreeMap<(String, u32, u64), u64>,
    /// Drops anywhere on the machine whose skb had neither a device nor a socket.
    pub unknown_netns: u64,
    /// Drops in the lab not counted because the kernel map was full.
    pub map_full: u64,
}

/// Ids of the tracer's kernel objects, for leak checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIds {
    pub prog: u32,
    pub maps: Vec<u32>,
}

/// One lab's view of the drop counter: its namespaces are in `lab_netns` from `start`
/// to `stop`, and `stop` takes out exactly their counts.
///
/// The program is loaded once per process and shared by every trace running at once
/// (and kept loaded between cells while a [`KeepLoaded`] lives): loading and verifying
/// it costs tens of milliseconds on the host and far more under TCG, and its map is
/// keyed by namespace anyway, so concurrent labs never see each other's drops. When the
/// last user goes, the program, its link and maps are closed.
pub struct BpfDropTrace {
    ids: Option<NamespaceIds>,
    objects: ObjectIds,
    misses_at_start: [u64; 2],
}

impl BpfDropTrace {
    pub fn start(node_netns: &BTreeMap<String, String>) -> Result<BpfDropTrace> {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            bail!("{VMLINUX_BTF} missing: the kernel has no BTF (CONFIG_DEBUG_INFO_BTF)");
        }
        let ids = namespace_ids(node_netns)?;
        let objects = acquire(ids.cookies)?;
        let added = ask(|reply| Command::Add(ids.nodes.keys().copied().collect(), reply));
        match added {
            Ok(misses_at_start) => Ok(BpfDropTrace {
                ids: Some(ids),
                objects,
                misses_at_start,
            }),
            Err(e) => {
                release();
                Err(e)
            }
        }
    }

    pub fn object_ids(&self) -> &ObjectIds {
        &self.objects
    }

    /// Whether namespaces are told apart by cookie (else by inode number).
    pub fn by_cookie(&self) -> bool {
        self.ids.as_ref().is_some_and(|i| i.cookies)
    }

    /// Takes this lab's counts out of the kernel map; closes every kernel object when
    /// no other trace (or [`KeepLoaded`]) uses them.
    pub fn stop(mut self) -> Result<BpfCounts> {
        self.finish()
    }

    fn finish(&mut self) -> Result<BpfCounts> {
        let ids = self
            .ids
            .take()
            .ok_or_else(|| anyhow!("BPF drop trace already stopped"))?;
        let taken = ask(|reply| Command::Take(ids.nodes, reply));
        release();
        let (mut counts, misses) = taken?;
        counts.unknown_netns = misses[0].saturating_sub(self.misses_at_start[0]);
        counts.map_full = misses[1].saturating_sub(self.misses_at_start[1]);
        Ok(counts)
    }
}

impl Drop for BpfDropTrace {
    fn drop(&mut self) {
        if self.ids.is_some() {
            let _ = self.finish();
        }
    }
}

/// Keeps the shared program loaded while it lives, so cells run one after another do
/// not each load it again. Loads nothing itself: the first trace does.
pub struct KeepLoaded(());

impl KeepLoaded {
    pub fn new() -> KeepLoaded {
        shared().users += 1;
        KeepLoaded(())
    }
}

impl Default for KeepLoaded {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeepLoaded {
    fn drop(&mut self) {
        release();
    }
}

/// What a trace asks of the holder thread.
enum Command {
    /// Count drops in these namespaces from now on; replies with the miss counters.
    Add(Vec<u64>, mpsc::Sender<Result<[u64; 2]>>),
    /// Stop counting these namespaces and take their counts out of the map; replies
    /// with them and the miss counters.
    Take(
        BTreeMap<u64, String>,
        mpsc::Sender<Result<(BpfCounts, [u64; 2])>>,
    ),
}

/// The loaded program, owned by its holder thread (the skeleton borrows its object
/// storage, so one thread keeps both).
struct Loaded {
    commands: mpsc::Sender<Command>,
    holder: JoinHandle<()>,
    objects: ObjectIds,
    cookies: bool,
}

/// Users: live traces plus live [`KeepLoaded`]s.
struct Shared {
    users: usize,
    loaded: Option<Loaded>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    users: 0,
    loaded: None,
});

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one more user, loading the program if none is loaded.
fn acquire(cookies: bool) -> Result<ObjectIds> {
    let mut sh = shared();
    if sh.loaded.is_none() {
        sh.loaded = Some(load_and_attach(cookies)?);
    }
    let loaded = sh.loaded.as_ref().expect("just loaded");
    if loaded.cookies != cookies {
        bail!("the loaded drop tracer tells namespaces apart by a different id (cookie vs inode)");
    }
    let objects = loaded.objects.clone();
    sh.users += 1;
    Ok(objects)
}

/// One user fewer; the last one closes the program.
fn release() {
    let closing = {
        let mut sh = shared();
        sh.users = sh.users.saturating_sub(1);
        if sh.users == 0 {
            sh.loaded.take()
        } else {
            None
        }
    };
    if let Some(l) = closing {
        drop(l.commands);
        let _ = l.holder.join();
    }
}

fn ask<T>(command: impl FnOnce(mpsc::Sender<Result<T>>) -> Command) -> Result<T> {
    let commands = shared()
        .loaded
        .as_ref()
        .map(|l| l.commands.clone())
        .ok_or_else(|| anyhow!("the BPF drop tracer is not loaded"))?;
    let (tx, rx) = mpsc::channel();
    commands
        .send(command(tx))
        .map_err(|_| anyhow!("the BPF drop tracer's thread has ended"))?;
    rx.recv()
        .map_err(|_| anyhow!("the BPF drop tracer's thread ended without replying"))?
}

fn load_and_attach(cookies: bool) -> Result<Loaded> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (commands, commands_rx) = mpsc::channel();
    let holder = std::thread::Builder::new()
        .name("drops-bpf".into())
        .spawn(move || hold(cookies, ready_tx, commands_rx))?;
    match ready_rx.recv() {
        Ok(Ok(objects)) => Ok(Loaded {
            commands,
            holder,
            objects,
            cookies,
        }),
        Ok(Err(e)) => {
            let _ = holder.join();
            Err(e)
        }
        Err(_) => {
            let _ = holder.join();
            Err(anyhow!(
                "the BPF drop tracer's thread ended before attaching"
            ))
        }
    }
}

/// libbpf's warnings of the current load attempt (the verifier log on failure).
static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn keep_libbpf_log(_level: libbpf_rs::PrintLevel, msg: String) {
    let mut log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() < 64 * 1024 {
        log.push_str(&msg);
    }
}

fn last_libbpf_lines() -> String {
    let log = LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// The holder thread: load (with the tracepoint's 4th argument rx_sk if the kernel has
/// it, else without), attach, report ready, serve commands until every sender is gone,
/// close.
fn hold(cookies: bool, ready: mpsc::Sender<Result<ObjectIds>>, commands: mpsc::Receiver<Command>) {
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, keep_libbpf_log)));
    let mut last_err = None;
    for has_rx_sk in [true, false] {
        LIBBPF_LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut storage = MaybeUninit::uninit();
        let skel = match load(&mut storage, cookies, has_rx_sk) {
            Ok(s) => s,
            Err(e) => {
                // Kernels before 6.12 have no rx_sk argument: the verifier refuses ctx[3]
                // (the second attempt's error, without rx_sk, is the one reported).
                last_err = Some(e);
                continue;
            }
        };
        let attached = (|| -> Result<_> {
            let link = skel
                .progs
                .count_drop
                .attach()
                .context("attaching to tp_btf/kfree_skb")?;
            let obj = ObjectIds {
                prog: fd_id(skel.progs.count_drop.as_fd().as_raw_fd(), "prog_id")?,
                maps: [&skel.maps.drops, &skel.maps.lab_netns, &skel.maps.misses]
                    .iter()
                    .map(|m| fd_id(m.as_fd().as_raw_fd(), "map_id"))
                    .collect::<Result<_>>()?,
            };
            Ok((link, obj))
        })();
        let link = match attached {
            Ok((link, obj)) => {
                let _ = ready.send(Ok(obj));
                link
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        for command in commands.iter() {
            match command {
                Command::Add(ids, reply) => {
                    let _ = reply.send(add_netns(&skel, &ids).and_then(|()| read_misses(&skel)));
                }
                Command::Take(nodes, reply) => {
                    let taken =
                        take_counts(&skel, &nodes).and_then(|c| Ok((c, read_misses(&skel)?)));
                    let _ = reply.send(taken);
                }
            }
        }
        drop(link);
        return;
    }
    let e = last_err.unwrap_or_else(|| anyhow!("no load attempt"));
    let _ = ready.send(Err(e));
}

fn load(
    storage: &mut MaybeUninit<libbpf_rs::OpenObject>,
    use_cookie: bool,
    has_rx_sk: bool,
) -> Result<skel::KfreeSkbSkel<'_>> {
    let mut open = skel::KfreeSkbSkelBuilder::default()
        .open(storage)
        .context("opening the BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
    rodata.use_cookie = use_cookie;
    rodata.has_rx_sk = has_rx_sk;
    open.load()
        .map_err(|e| anyhow!("loading the BPF program: {e} ({})", last_libbpf_lines()))
}

fn add_netns(skel: &skel::KfreeSkbSkel<'_>, ids: &[u64]) -> Result<()> {
    for id in ids {
        skel.maps
            .lab_netns
            .update(&id.to_ne_bytes(), &[1u8], MapFlags::ANY)
            .context("filling the lab_netns map")?;
    }
    Ok(())
}

/// These namespaces' counts, taken out of the map (their `lab_netns` entries first, so
/// nothing more is counted for them).
fn take_counts(skel: &skel::KfreeSkbSkel<'_>, nodes: &BTreeMap<u64, String>) -> Result<BpfCounts> {
    for id in nodes.keys() {
        // ENOENT only if it was never added: nothing to undo.
        let _ = skel.maps.lab_netns.delete(&id.to_ne_bytes());
    }
    let mut counts = BpfCounts::default();
    let drops = &skel.maps.drops;
    let keys: Vec<Vec<u8>> = drops.keys().collect();
    for key in keys {
        let Some(k) = parse_key(&key) else {
            bail!("drops map: key of {} bytes", key.len());
        };
        let Some(node) = nodes.get(&k.0) else {
            continue; // another lab's
        };
        let Some(value) = drops
            .lookup(&key, MapFlags::ANY)
            .context("reading the drops map")?
        else {
            continue;
        };
        let n =
            read_u64(&value).ok_or_else(|| anyhow!("drops map: value of {} bytes", value.len()))?;
        *counts.drops.entry((node.clone(), k.2, k.1)).or_default() += n;
        let _ = drops.delete(&key);
    }
    Ok(counts)
}

/// The machine-wide miss counters (see `misses` in kfree_skb.bpf.c).
fn read_misses(skel: &skel::KfreeSkbSkel<'_>) -> Result<[u64; 2]> {
    let mut out = [0u64; 2];
    for (i, slot) in out.iter_mut().enumerate() {
        let v = skel
            .maps
            .misses
            .lookup(&(i as u32).to_ne_bytes(), MapFlags::ANY)
            .context("reading the misses map")?;
        *slot = v.as_deref().and_then(read_u64).unwrap_or(0);
    }
    Ok(out)
}

/// `struct drop_key` of kfree_skb.bpf.c: (netns, location, reason).
fn parse_key(b: &[u8]) -> Option<(u64, u64, u32)> {
    if b.len() != 24 {
        return None;
    }
    let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
    let reason = u32::from_ne_bytes(b[16..20].try_into().unwrap());
    Some((u64_at(0), u64_at(8), reason))
}

fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
}

/// `prog_id:` / `map_id:` of a BPF fd, from /proc/self/fdinfo.
fn fd_id(fd: i32, field: &str) -> Result<u32> {
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("{path}: no `{field}:` line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_matches_the_c_struct() {
        let mut b = Vec::new();
        b.extend_from_slice(&7u64.to_ne_bytes());
        b.extend_from_slice(&0xffff_ffff_8100_0000u64.to_ne_bytes());
        b.extend_from_slice(&77u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        assert_eq!(parse_key(&b), Some((7, 0xffff_ffff_8100_0000, 77)));
        assert_eq!(parse_key(&b[..20]), None);
        assert_eq!(read_u64(&5u64.to_ne_bytes()), Some(5));
        assert_eq!(read_u64(&[1, 2]), None);
    }
}
