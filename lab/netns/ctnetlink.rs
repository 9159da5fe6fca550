//! Conntrack in-process over ctnetlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_CTNETLINK`): dump, delete, flush, insert and the statistics that
//! `conntrack -L/-D/-F/-I/-C/-S` give, without the `conntrack` binary.
//!
//! Own encoder/decoder, not a crate: `netlink-packet-netfilter` (rust-netlink, 0.4)
//! decodes tuples, status, timeout, mark and TCP protoinfo, but not `CTA_ZONE`,
//! `CTA_ID`, `CTA_TUPLE_ZONE` or the ICMP tuple attributes, and has no
//! `IPCTNL_MSG_CT_GET_STATS` / `GET_STATS_CPU` messages; it brings no socket layer
//! either, and pulls in zerocopy, derive_more 0.99 and bitflags. The subset used here
//! is a few dozen attributes, so it is written out below against
//! include/uapi/linux/netfilter/nfnetlink_conntrack.h and
//! net/netfilter/nf_conntrack_netlink.c, over a raw netlink socket (libc).
//!
//! Wire format: netlink header (host order), `struct nfgenmsg` (family, version 0,
//! big-endian res_id), then attributes whose headers are host order and whose
//! payloads are network order.
//!
//! Every operation runs on a thread inside the named network namespace
//! ([`crate::netns::run_in`]) with a socket of its own. Kernel behaviour worth knowing:
//! - A new entry needs `CTA_TIMEOUT` (else `EINVAL`). The kernel sets `CONFIRMED` on it
//!   before applying `CTA_STATUS`, and refuses (`EBUSY`) a status that would clear
//!   `CONFIRMED`, set `EXPECTED`/`DYING`, so [`insert`] always adds `CONFIRMED`.
//! - `CTA_ZONE` is only reported for a non-default zone; mark is always reported.
//! - `GET_STATS` answers with `NLM_F_MULTI` set but no `NLMSG_DONE`; the ACK ends it.
//! - The conntrack hash table is shared by all namespaces: a dump walks every bucket,
//!   so its cost grows with the host's entries, not only this namespace's.

use crate::model::ct_filter::{
    proto_name, CtEntry, CtFilter, CtInsert, CtTuple, IPPROTO_ICMP, IPPROTO_ICMPV6, IPS_CONFIRMED,
};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

// --- include/uapi/linux/netlink.h -------------------------------------------------

const NETLINK_NETFILTER: libc::c_int = 12;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// In an `NLMSG_ERROR`: the echoed request is only its header (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// In an `NLMSG_ERROR`: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// --- include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h ---------------

const NFGENMSG_LEN: usize = 4;
const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;

const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
const IPCTNL_MSG_CT_GET_STATS: u8 = 5;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_MARK_MASK: u16 = 21;
const CTA_ZONE: u16 = 18;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;

const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;

const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;

/// `IPS_EXPECTED | IPS_DYING`: bits the kernel refuses to take from userspace.
const IPS_REFUSED: u32 = (1 << 0) | (1 << 9);

/// `CTA_STATS_*` attribute → the `/proc/net/stat/nf_conntrack` column with the same
/// per-CPU counter → the name `conntrack -S` prints. [`stats_per_cpu`] keys its maps
/// by the procfs column, so they line up with [`crate::observe::ConntrackStat`].
/// Attributes 1, 3, 5, 6, 7 are no longer sent by current kernels.
pub const STATS_CPU_FIELDS: &[(u16, &str, &str)] = &[
    (1, "searched", "searched"),
    (2, "found", "found"),
    (3, "new", "new"),
    (4, "invalid", "invalid"),
    (5, "ignore", "ignore"),
    (6, "delete", "delete"),
    (7, "delete_list", "delete_list"),
    (8, "insert", "insert"),
    (9, "insert_failed", "insert_failed"),
    (10, "drop", "drop"),
    (11, "early_drop", "early_drop"),
    (12, "icmp_error", "error"),
    (13, "search_restart", "search_restart"),
    (14, "clashres", "clash_resolve"),
    (15, "chainlength", "chaintoolong"),
];

// --- public API -------------------------------------------------------------------

/// All conntrack entries of the namespace, IPv4 and IPv6 (`conntrack -L`).
pub fn dump(netns: &str) -> Result<Vec<CtEntry>> {
    in_netns(netns, "dump", dump_on)
}

/// Deletes every entry `filter` matches (`conntrack -D`) and returns how many the
/// kernel deleted. An entry that vanished between the dump and its delete (timed out,
/// or its tuple reused by a new entry: the delete carries the entry's id) is not
/// counted and not an error.
pub fn delete(netns: &str, filter: &CtFilter) -> Result<usize> {
    in_netns(netns, &format!("delete (filter `{filter}`)"), |s| {
        let entries = dump_on(s)?;
        let matching: Vec<&CtEntry> = entries.iter().filter(|e| filter.matches(e)).collect();
        delete_entries(s, &matching)
    })
}

/// Deletes every entry of the namespace, both families (`conntrack -F`).
pub fn flush(netns: &str) -> Result<()> {
    in_netns(netns, "flush", |s| {
        let req = Request::new(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, libc::AF_UNSPEC as u8);
        s.transact(req, false, |_| Ok(()))
            .map_err(|e| e.into_anyhow("flush"))
    })
}

/// Flushes, in the kernel, the entries of one zone and/or with a mark: a DELETE
/// without a tuple, carrying only `CTA_ZONE` / `CTA_MARK` + `CTA_MARK_MASK`
/// (`ctnetlink_flush_conntrack`, what conntrack_dump_flush.c tests). A kernel that
/// ignores `CTA_ZONE` on a flush (zone filtering came with v6.8) flushes every
/// entry: that is the regression a zone flush must show.
pub fn flush_filtered(netns: &str, zone: Option<u16>, mark: Option<(u32, u32)>) -> Result<()> {
    in_netns(netns, "flush (kernel-side filter)", move |s| {
        let mut req = Request::new(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, libc::AF_UNSPEC as u8);
        if let Some(z) = zone {
            req.be16(CTA_ZONE, z);
        }
        if let Some((m, mask)) = mark {
            req.be32(CTA_MARK, m);
            req.be32(CTA_MARK_MASK, mask);
        }
        s.transact(req, false, |_| Ok(()))
            .map_err(|e| e.into_anyhow("flush"))
    })
}

/// Creates an entry (`conntrack -I`); fails if one with the same tuple exists in the zone.
pub fn insert(netns: &str, e: &CtInsert) -> Result<()> {
    let req = encode_insert(e)?;
    let what = format!("insert ({} {})", proto_name(e.proto), e.orig);
    in_netns(netns, &what, move |s| {
        s.transact(req, false, |_| Ok(()))
            .map_err(|err| err.into_anyhow("insert"))
    })
}

/// The number of entries in the namespace (`conntrack -C`).
pub fn count(netns: &str) -> Result<u64> {
    in_netns(netns, "count", |s| {
        let req = Request::new(IPCTNL_MSG_CT_GET_STATS, NLM_F_ACK, libc::AF_UNSPEC as u8);
        let mut entries = None;
        s.transact(req, false, |m| {
            if m.ty == msg_type(IPCTNL_MSG_CT_GET_STATS) {
                entries = Some(decode_stats_entries(m.payload)?);
            }
            Ok(())
        })
        .map_err(|e| e.into_anyhow("count"))?;
        entries.ok_or_else(|| anyhow!("the kernel sent no CTA_STATS_GLOBAL_ENTRIES"))
    })
}

/// Per-CPU conntrack statistics (`conntrack -S`), one map per possible CPU in CPU
/// order, keyed like the `/proc/net/stat/nf_conntrack` columns (see
/// [`STATS_CPU_FIELDS`]): found, invalid, insert, insert_failed, drop, early_drop,
/// icmp_error, search_restart, clashres, chainlength.
pub fn stats_per_cpu(netns: &str) -> Result<Vec<BTreeMap<String, u64>>> {
    in_netns(netns, "stats", |s| {
        let req = Request::new(
            IPCTNL_MSG_CT_GET_STATS_CPU,
            NLM_F_DUMP,
            libc::AF_UNSPEC as u8,
        );
        let mut cpus: Vec<(u16, BTreeMap<String, u64>)> = Vec::new();
        s.transact(req, true, |m| {
            if m.ty == msg_type(IPCTNL_MSG_CT_GET_STATS_CPU) {
                cpus.push(decode_stats_cpu(m.payload)?);
            }
            Ok(())
        })
        .map_err(|e| e.into_anyhow("stats"))?;
        cpus.sort_by_key(|(cpu, _)| *cpu);
        Ok(cpus.into_iter().map(|(_, m)| m).collect())
    })
}

// --- operations on an open socket -------------------------------------------------

fn in_netns<T: Send>(
    netns: &str,
    op: &str,
    f: impl FnOnce(&mut Socket) -> Result<T> + Send,
) -> Result<T> {
    crate::netns::run_in(netns, || {
        let mut s = Socket::open().map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPROTONOSUPPORT) => {
                    ": this kernel has no NETLINK_NETFILTER (CONFIG_NETFILTER_NETLINK)"
                }
                Some(libc::EPERM) | Some(libc::EACCES) => ": permission denied (run as root)",
                _ => "",
            };
            anyhow!(e).context(format!("open a ctnetlink socket{hint}"))
        })?;
        f(&mut s)
    })
    .with_context(|| format!("conntrack {op} in netns `{netns}`"))
}

/// Dumps any nfnetlink subsystem's `msg` in `netns` (family AF_UNSPEC: every family)
/// and hands each reply's (nfgenmsg family, attributes) to `on_msg`; the nf_tables
/// counter reader (`observe::nft_netlink`) uses this socket layer too.
pub fn nfnl_dump(
    netns: &str,
    subsys: u16,
    msg: u8,
    mut on_msg: impl FnMut(u8, &[(u16, &[u8])]) -> Result<(), String> + Send,
) -> Result<()> {
    in_netns(netns, "nfnetlink dump", |s| {
        let mut req = Request::new(msg, NLM_F_DUMP, libc::AF_UNSPEC as u8);
        req.buf[4..6].copy_from_slice(&((subsys << 8) | u16::from(msg)).to_ne_bytes());
        s.transact(req, true, |m| {
            let family = *m.payload.first().ok_or("reply without nfgenmsg")?;
            let a = attrs(m.payload.get(NFGENMSG_LEN..).unwrap_or_default())?;
            on_msg(family, &a)
        })
        .map_err(|e| e.into_anyhow("dump"))
    })
}

/// The attributes in `buf` as (type without flags, payload).
pub fn nested_attrs(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    attrs(buf)
}

fn dump_on(s: &mut Socket) -> Result<Vec<CtEntry>> {
    let req = Request::new(IPCTNL_MSG_CT_GET, NLM_F_DUMP, libc::AF_UNSPEC as u8);
    let mut out = Vec::new();
    s.transact(req, true, |m| {
        if m.ty == msg_type(IPCTNL_MSG_CT_NEW) {
            out.push(decode_entry(m.payload)?);
        }
        Ok(())
    })
    .map_err(|e| e.into_anyhow("dump"))?;
    Ok(out)
}

/// Deletes each entry by its original tuple, zone and id; ENOENT (gone) is skipped.
fn delete_entries(s: &mut Socket, entries: &[&CtEntry]) -> Result<usize> {
    let mut deleted = 0;
    for e in entries {
        match s.transact(encode_delete(e), false, |_| Ok(())) {
            Ok(()) => deleted += 1,
            Err(NlError::Kernel { errno, .. }) if errno == libc::ENOENT => {}
            Err(err) => return Err(err.into_anyhow("delete").context(format!("entry {e}"))),
        }
    }
    Ok(deleted)
}

// --- encoding ---------------------------------------------------------------------

fn msg_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg as u16
}

fn af_of(family: u8) -> u8 {
    if family == 4 {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

/// A request under construction: netlink header, nfgenmsg, attributes. The length
/// and sequence number are filled in by [`Request::finish`].
#[derive(Debug, Clone)]
struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// `flags` beyond `NLM_F_REQUEST`, which is always set.
    fn new(msg: u8, flags: u16, family: u8) -> Request {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish
        buf.extend_from_slice(&msg_type(msg).to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq, set in finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it
        buf.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
        Request { buf }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = (NLA_HDRLEN + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    fn be16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Request)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn encode_tuple(r: &mut Request, ty: u16, t: &CtTuple, proto: u8) {
    r.nest(ty, |r| {
        r.nest(CTA_TUPLE_IP, |r| match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                r.attr(CTA_IP_V4_SRC, &s.octets());
                r.attr(CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                r.attr(CTA_IP_V6_SRC, &v6_octets(s));
                r.attr(CTA_IP_V6_DST, &v6_octets(d));
            }
        });
        r.nest(CTA_TUPLE_PROTO, |r| {
            r.u8(CTA_PROTO_NUM, proto);
            let (id, ty, code) = match proto {
                IPPROTO_ICMP => (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE),
                IPPROTO_ICMPV6 => (
                    CTA_PROTO_ICMPV6_ID,
                    CTA_PROTO_ICMPV6_TYPE,
                    CTA_PROTO_ICMPV6_CODE,
                ),
                _ => {
                    r.be16(CTA_PROTO_SRC_PORT, t.sport);
                    r.be16(CTA_PROTO_DST_PORT, t.dport);
                    return;
                }
            };
            r.be16(id, t.sport);
            r.u8(ty, (t.dport >> 8) as u8);
            r.u8(code, t.dport as u8);
        });
    });
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

fn encode_delete(e: &CtEntry) -> Request {
    let mut r = Request::new(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, af_of(e.family));
    encode_tuple(&mut r, CTA_TUPLE_ORIG, &e.orig, e.proto);
    if e.zone != 0 {
        r.be16(CTA_ZONE, e.zone);
    }
    r.be32(CTA_ID, e.id);
    r
}

fn encode_insert(e: &CtInsert) -> Result<Request> {
    let reply = e.reply_tuple();
    let v4 = e.orig.src.is_ipv4();
    if [e.orig.dst, reply.src, reply.dst]
        .iter()
        .any(|a| a.is_ipv4() != v4)
    {
        anyhow::bail!(
            "conntrack insert: mixed IPv4 and IPv6 addresses in {} / {}: use one family",
            e.orig,
            reply
        );
    }
    let mut r = Request::new(
        IPCTNL_MSG_CT_NEW,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        af_of(e.family()),
    );
    encode_tuple(&mut r, CTA_TUPLE_ORIG, &e.orig, e.proto);
    encode_tuple(&mut r, CTA_TUPLE_REPLY, &reply, e.proto);
    r.be32(CTA_TIMEOUT, e.timeout);
    r.be32(CTA_STATUS, (e.status & !IPS_REFUSED) | IPS_CONFIRMED);
    if e.mark != 0 {
        r.be32(CTA_MARK, e.mark);
    }
    if e.zone != 0 {
        r.be16(CTA_ZONE, e.zone);
    }
    if let Some(state) = e.effective_tcp_state() {
        r.nest(CTA_PROTOINFO, |r| {
            r.nest(CTA_PROTOINFO_TCP, |r| r.u8(CTA_PROTOINFO_TCP_STATE, state));
        });
    }
    Ok(r)
}

// --- decoding ---------------------------------------------------------------------

/// One netlink message of a reply.
#[derive(Debug, Clone, Copy)]
struct NlMsg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn ne_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn split_messages(mut buf: &[u8]) -> Result<Vec<NlMsg<'_>>, String> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = ne_u32(&buf[0..4]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(format!(
                "netlink message of length {len} in {} bytes",
                buf.len()
            ));
        }
        out.push(NlMsg {
            ty: ne_u16(&buf[4..6]),
            flags: ne_u16(&buf[6..8]),
            seq: ne_u32(&buf[8..12]),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The attributes in `buf` as (type without flags, payload).
fn attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = ne_u16(&buf[0..2]) as usize;
        let ty = ne_u16(&buf[2..4]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(format!(
                "attribute {ty} of length {len} in {} bytes",
                buf.len()
            ));
        }
        out.push((ty, &buf[NLA_HDRLEN..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

fn get_u8(ty: u16, v: &[u8]) -> Result<u8, String> {
    v.first()
        .copied()
        .ok_or_else(|| format!("attribute {ty}: empty"))
}

fn get_be16(ty: u16, v: &[u8]) -> Result<u16, String> {
    v.get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("attribute {ty}: {} bytes for a u16", v.len()))
}

fn get_be32(ty: u16, v: &[u8]) -> Result<u32, String> {
    v.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("attribute {ty}: {} bytes for a u32", v.len()))
}

fn get_addr(ty: u16, v: &[u8]) -> Result<IpAddr, String> {
    match v.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(v);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        n => Err(format!("attribute {ty}: {n} bytes for an address")),
    }
}

/// A decoded `CTA_TUPLE_*`: the tuple, its protocol number and its zone, if any.
fn decode_tuple(buf: &[u8]) -> Result<(CtTuple, u8, Option<u16>), String> {
    let (mut src, mut dst, mut proto, mut zone) = (None, None, 0u8, None);
    let (mut sport, mut dport, mut icmp_type, mut icmp_code) = (0u16, 0u16, 0u8, 0u8);
    for (ty, v) in attrs(buf)? {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, v) in attrs(v)? {
                    match ty {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(get_addr(ty, v)?),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(get_addr(ty, v)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, v) in attrs(v)? {
                    match ty {
                        CTA_PROTO_NUM => proto = get_u8(ty, v)?,
                        CTA_PROTO_SRC_PORT | CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                            sport = get_be16(ty, v)?
                        }
                        CTA_PROTO_DST_PORT => dport = get_be16(ty, v)?,
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => icmp_type = get_u8(ty, v)?,
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => icmp_code = get_u8(ty, v)?,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_ZONE => zone = Some(get_be16(ty, v)?),
            _ => {}
        }
    }
    if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 {
        dport = (icmp_type as u16) << 8 | icmp_code as u16;
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err("tuple without addresses".into());
    };
    Ok((
        CtTuple {
            src,
            dst,
            sport,
            dport,
        },
        proto,
        zone,
    ))
}

/// An `IPCTNL_MSG_CT_NEW` message (what dumps are made of), payload after the
/// netlink header.
fn decode_entry(payload: &[u8]) -> Result<CtEntry, String> {
    if payload.len() < NFGENMSG_LEN {
        return Err("conntrack message shorter than nfgenmsg".into());
    }
    let family = match payload[0] as libc::c_int {
        libc::AF_INET => 4,
        libc::AF_INET6 => 6,
        f => return Err(format!("conntrack entry of address family {f}")),
    };
    let (mut orig, mut reply) = (None, None);
    let mut e = CtEntry {
        family,
        proto: 0,
        orig: CtTuple {
            src: Ipv4Addr::UNSPECIFIED.into(),
            dst: Ipv4Addr::UNSPECIFIED.into(),
            sport: 0,
            dport: 0,
        },
        reply: CtTuple {
            src: Ipv4Addr::UNSPECIFIED.into(),
            dst: Ipv4Addr::UNSPECIFIED.into(),
            sport: 0,
            dport: 0,
        },
        status: 0,
        tcp_state: None,
        timeout: 0,
        mark: 0,
        zone: 0,
        id: 0,
    };
    let mut zone = None;
    for (ty, v) in attrs(&payload[NFGENMSG_LEN..])? {
        match ty {
            CTA_TUPLE_ORIG => orig = Some(decode_tuple(v)?),
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(v)?),
            CTA_STATUS => e.status = get_be32(ty, v)?,
            CTA_TIMEOUT => e.timeout = get_be32(ty, v)?,
            CTA_MARK => e.mark = get_be32(ty, v)?,
            CTA_ID => e.id = get_be32(ty, v)?,
            CTA_ZONE => zone = Some(get_be16(ty, v)?),
            CTA_PROTOINFO => {
                for (ty, v) in attrs(v)? {
                    if ty == CTA_PROTOINFO_TCP {
                        for (ty, v) in attrs(v)? {
                            if ty == CTA_PROTOINFO_TCP_STATE {
                                e.tcp_state = Some(get_u8(ty, v)?);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let (orig, proto, orig_zone) = orig.ok_or("conntrack entry without CTA_TUPLE_ORIG")?;
    let (reply, _, _) = reply.ok_or("conntrack entry without CTA_TUPLE_REPLY")?;
    e.orig = orig;
    e.reply = reply;
    e.proto = proto;
    // CTA_ZONE is a zone of both directions; CTA_TUPLE_ZONE one of a single direction.
    e.zone = zone.or(orig_zone).unwrap_or(0);
    Ok(e)
}

fn decode_stats_entries(payload: &[u8]) -> Result<u64, String> {
    let a = attrs(payload.get(NFGENMSG_LEN..).unwrap_or_default())?;
    let (ty, v) = a
        .into_iter()
        .find(|(ty, _)| *ty == CTA_STATS_GLOBAL_ENTRIES)
        .ok_or("stats reply without CTA_STATS_GLOBAL_ENTRIES")?;
    Ok(get_be32(ty, v)? as u64)
}

/// One `IPCTNL_MSG_CT_GET_STATS_CPU` message: (cpu from res_id, counters).
fn decode_stats_cpu(payload: &[u8]) -> Result<(u16, BTreeMap<String, u64>), String> {
    if payload.len() < NFGENMSG_LEN {
        return Err("stats message shorter than nfgenmsg".into());
    }
    let cpu = u16::from_be_bytes([payload[2], payload[3]]);
    let mut out = BTreeMap::new();
    for (ty, v) in attrs(&payload[NFGENMSG_LEN..])? {
        let name = STATS_CPU_FIELDS
            .iter()
            .find(|(t, _, _)| *t == ty)
            .map(|(_, procfs, _)| (*procfs).to_string())
            .unwrap_or_else(|| format!("cta_stats_{ty}"));
        out.insert(name, get_be32(ty, v)? as u64);
    }
    Ok((cpu, out))
}

/// An `NLMSG_ERROR` payload: errno (0 = ACK) and the extended-ack message, if any.
fn decode_error(m: &NlMsg) -> Result<(i32, Option<String>), String> {
    if m.payload.len() < 4 + NLMSG_HDRLEN {
        return Err("short NLMSG_ERROR".into());
    }
    let errno = -(ne_u32(&m.payload[0..4]) as i32);
    let mut text = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if m.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            ne_u32(&m.payload[4..8]) as usize
        };
        if let Some(tlvs) = m.payload.get(4 + align4(echoed)..) {
            for (ty, v) in attrs(tlvs)? {
                if ty == NLMSGERR_ATTR_MSG {
                    let s = String::from_utf8_lossy(v);
                    text = Some(s.trim_end_matches('\0').to_string());
                }
            }
        }
    }
    Ok((errno, text))
}

// --- the socket -------------------------------------------------------------------

/// Why a request failed.
#[derive(Debug)]
enum NlError {
    /// The kernel answered with this (positive) errno.
    Kernel {
        errno: i32,
        msg: Option<String>,
    },
    Io(std::io::Error),
    Decode(String),
}

impl NlError {
    fn into_anyhow(self, op: &str) -> anyhow::Error {
        match self {
            NlError::Kernel { errno, msg } => {
                let io = std::io::Error::from_raw_os_error(errno);
                let what = match (errno, op) {
                    (libc::EPERM, _) => {
                        "permission denied: ctnetlink needs CAP_NET_ADMIN in the namespace \
                         (run as root)"
                            .to_string()
                    }
                    (libc::ENOENT, _) => "no such conntrack entry".to_string(),
                    (libc::EEXIST, _) => {
                        "an entry with this tuple already exists in this zone: delete it \
                         first or use another tuple/zone"
                            .to_string()
                    }
                    (libc::EINVAL, "insert") => format!(
                        "the kernel refused the entry as invalid ({io}): check the timeout, \
                         the ports, the ICMP type/code and that orig/reply have the same protocol"
                    ),
                    (libc::EBUSY, "insert") => format!(
                        "the kernel refused the status bits ({io}): only ASSURED, SEEN_REPLY, \
                         FIXED_TIMEOUT and the like may be set from userspace"
                    ),
                    (libc::EOPNOTSUPP, _) => format!(
                        "not supported by this kernel ({io}): conntrack zones, marks or \
                         ctnetlink may be compiled out"
                    ),
                    _ => io.to_string(),
                };
                match msg {
                    Some(m) if !m.is_empty() => anyhow!("{what} (kernel: {m})"),
                    _ => anyhow!("{what}"),
                }
            }
            NlError::Io(e) => anyhow!(e).context("ctnetlink socket"),
            NlError::Decode(e) => anyhow!("cannot decode the kernel's answer: {e}"),
        }
    }
}

const RECV_TIMEOUT: Duration = Duration::from_secs(10);
const RECV_BUF: usize = 64 * 1024;

struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    fn open() -> std::io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        // Best effort: error messages from the kernel, and errors without the echoed request.
        let one: libc::c_int = 1;
        let _ = setsockopt(&fd, SOL_NETLINK, NETLINK_EXT_ACK, &one);
        let _ = setsockopt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, &one);
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid "any port" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Socket {
            fd,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            buf: vec![0; RECV_BUF],
        })
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; pid 0 is the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: bytes and kernel are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr() as *const libc::c_void,
                    bytes.len(),
                    0,
                    &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one datagram into `self.buf`; returns its length.
    fn recv(&mut self) -> std::io::Result<usize> {
        loop {
            // SAFETY: self.buf is valid for its length; MSG_TRUNC makes recv return the
            // datagram's real length so truncation is detected.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > self.buf.len() {
                    return Err(std::io::Error::other(format!(
                        "netlink datagram of {n} bytes exceeds the {}-byte buffer",
                        self.buf.len()
                    )));
                }
                return Ok(n);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {RECV_TIMEOUT:?}"),
                    ))
                }
                _ => return Err(e),
            }
        }
    }

    /// Sends `req` and hands every reply message to `on_msg`, until the ACK (requests)
    /// or `NLMSG_DONE` (dumps). Messages of other sequence numbers are ignored.
    fn transact(
        &mut self,
        req: Request,
        dump: bool,
        mut on_msg: impl FnMut(&NlMsg) -> Result<(), String>,
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&req.finish(seq)).map_err(NlError::Io)?;
        loop {
            let n = self.recv().map_err(NlError::Io)?;
            for m in split_messages(&self.buf[..n]).map_err(NlError::Decode)? {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let (errno, msg) = decode_error(&m).map_err(NlError::Decode)?;
                        if errno != 0 {
                            return Err(NlError::Kernel { errno, msg });
                        }
                        if !dump {
                            return Ok(());
                        }
                    }
                    NLMSG_DONE => {
                        // A dump may end with a negative errno in the DONE payload.
                        if let Some(b) = m.payload.get(..4) {
                            let errno = -(ne_u32(b) as i32);
                            if errno > 0 {
                                return Err(NlError::Kernel { errno, msg: None });
                            }
                        }
                        return Ok(());
                    }
                    NLMSG_OVERRUN => {
                        return Err(NlError::Decode("netlink overrun: data lost".into()))
                    }
                    _ => on_msg(&m).map_err(NlError::Decode)?,
                }
            }
        }
    }
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: value points to a T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ct_filter::{IPPROTO_TCP, IPPROTO_UDP, IPS_ASSURED, IPS_SEEN_REPLY};

    fn tuple(src: &str, dst: &str, sport: u16, dport: u16) -> CtTuple {
        CtTuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
        }
    }

    /// Wraps request bytes as if the kernel had sent them back as a dump message.
    fn as_reply(req: Request) -> Vec<u8> {
        req.finish(9)
    }

    #[test]
    fn request_header_and_padding() {
        let mut r = Request::new(IPCTNL_MSG_CT_GET, NLM_F_DUMP, libc::AF_UNSPEC as u8);
        r.u8(CTA_PROTO_NUM, 17);
        let b = r.finish(42);
        assert_eq!(b.len(), 16 + 4 + 8, "u8 attribute padded to 8 bytes");
        assert_eq!(ne_u32(&b[0..4]), b.len() as u32);
        assert_eq!(ne_u16(&b[4..6]), 0x0101, "CTNETLINK << 8 | CT_GET");
        assert_eq!(ne_u16(&b[6..8]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(ne_u32(&b[8..12]), 42);
        assert_eq!(&b[16..20], &[0, 0, 0, 0], "AF_UNSPEC, v0, res_id 0");
        assert_eq!(ne_u16(&b[20..22]), 5);
        assert_eq!(ne_u16(&b[22..24]), CTA_PROTO_NUM);
        assert_eq!(&b[24..28], &[17, 0, 0, 0]);
    }

    #[test]
    fn insert_encoding_decodes_back_as_an_entry() {
        let mut ins = CtInsert::new(IPPROTO_TCP, tuple("10.1.2.3", "10.9.8.7", 40000, 80), 120);
        ins.status = IPS_ASSURED | IPS_SEEN_REPLY | 1; // EXPECTED is dropped
        ins.mark = 0xdead;
        ins.zone = 7;
        let b = as_reply(encode_insert(&ins).unwrap());
        let msgs = split_messages(&b).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(
            msgs[0].flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        let e = decode_entry(msgs[0].payload).unwrap();
        assert_eq!(e.family, 4);
        assert_eq!(e.proto, IPPROTO_TCP);
        assert_eq!(e.orig, ins.orig);
        assert_eq!(e.reply, tuple("10.9.8.7", "10.1.2.3", 80, 40000));
        assert_eq!(e.status, IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED);
        assert_eq!(e.timeout, 120);
        assert_eq!(e.mark, 0xdead);
        assert_eq!(e.zone, 7);
        assert_eq!(e.tcp_state, Some(3), "TCP defaults to ESTABLISHED");
    }

    #[test]
    fn icmp_and_ipv6_tuples_round_trip() {
        let ins = CtInsert::new(
            IPPROTO_ICMP,
            tuple("10.0.0.1", "10.0.0.2", 0x1234, 8 << 8),
            30,
        );
        let e = decode_entry(
            split_messages(&as_reply(encode_insert(&ins).unwrap())).unwrap()[0].payload,
        )
        .unwrap();
        assert_eq!(e.orig, ins.orig);
        assert_eq!(e.reply, tuple("10.0.0.2", "10.0.0.1", 0x1234, 0));
        assert_eq!(e.tcp_state, None);

        let ins = CtInsert::new(IPPROTO_UDP, tuple("fd00::1", "fd00::2", 5353, 53), 30);
        let e = decode_entry(
            split_messages(&as_reply(encode_insert(&ins).unwrap())).unwrap()[0].payload,
        )
        .unwrap();
        assert_eq!(e.family, 6);
        assert_eq!(e.orig, ins.orig);
        assert_eq!(e.reply, tuple("fd00::2", "fd00::1", 53, 5353));
    }

    #[test]
    fn insert_rejects_mixed_families() {
        let mut ins = CtInsert::new(IPPROTO_UDP, tuple("10.0.0.1", "fd00::2", 1, 2), 30);
        assert!(encode_insert(&ins)
            .unwrap_err()
            .to_string()
            .contains("mixed IPv4 and IPv6"));
        ins.orig = tuple("10.0.0.1", "10.0.0.2", 1, 2);
        ins.reply = Some(tuple("fd00::2", "10.0.0.1", 2, 1));
        assert!(encode_insert(&ins).is_err());
    }

    #[test]
    fn delete_carries_tuple_zone_and_id() {
        let orig = tuple("10.0.0.1", "10.0.0.2", 1000, 53);
        let e = CtEntry {
            family: 4,
            proto: IPPROTO_UDP,
            orig,
            reply: orig.inverse(IPPROTO_UDP),
            status: 0,
            tcp_state: None,
            timeout: 0,
            mark: 0,
            zone: 3,
            id: 0xabcdef,
        };
        let b = encode_delete(&e).finish(1);
        let m = split_messages(&b).unwrap()[0];
        assert_eq!(m.ty, msg_type(IPCTNL_MSG_CT_DELETE));
        assert_eq!(m.payload[0], libc::AF_INET as u8);
        let a = attrs(&m.payload[NFGENMSG_LEN..]).unwrap();
        let types: Vec<u16> = a.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, vec![CTA_TUPLE_ORIG, CTA_ZONE, CTA_ID]);
        assert_eq!(decode_tuple(a[0].1).unwrap(), (orig, IPPROTO_UDP, None));
        assert_eq!(get_be32(CTA_ID, a[2].1).unwrap(), 0xabcdef);
    }

    /// The first datagram of a dump on kernel 6.18: one UDP entry, 127.0.0.1:33000 →
    /// 127.0.0.1:9, unreplied (captured in a test namespace; counters and timestamps
    /// are off, so there are no CTA_COUNTERS_* / CTA_TIMESTAMP).
    #[rustfmt::skip]
    const KERNEL_UDP_ENTRY: &[u8] = &[
        // nlmsghdr: len 164, CT_NEW, NLM_F_MULTI, seq 1, pid
        0xa4, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00,
        0xc0, 0x03, 0x00, 0x00,
        // nfgenmsg: AF_INET, v0, res_id 0
        0x02, 0x00, 0x00, 0x00,
        // CTA_TUPLE_ORIG (nested): IP 127.0.0.1 → 127.0.0.1, PROTO udp 33000 → 9
        0x34, 0x00, 0x01, 0x80, 0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00,
        0x7f, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x7f, 0x00, 0x00, 0x01,
        0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x02, 0x00, 0x80, 0xe8, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00,
        0x00, 0x09, 0x00, 0x00,
        // CTA_TUPLE_REPLY (nested): 127.0.0.1 → 127.0.0.1, udp 9 → 33000
        0x34, 0x00, 0x02, 0x80, 0x14, 0x00, 0x01, 0x80, 0x08, 0x00, 0x01, 0x00,
        0x7f, 0x00, 0x00, 0x01, 0x08, 0x00, 0x02, 0x00, 0x7f, 0x00, 0x00, 0x01,
        0x1c, 0x00, 0x02, 0x80, 0x05, 0x00, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x02, 0x00, 0x00, 0x09, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00,
        0x80, 0xe8, 0x00, 0x00,
        // CTA_STATUS: CONFIRMED
        0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x08,
        // CTA_MARK: 0
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00,
        // CTA_ID
        0x08, 0x00, 0x0c, 0x00, 0x8a, 0xa0, 0x21, 0x30,
        // CTA_USE: 1
        0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x01,
        // CTA_TIMEOUT: 30
        0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x1e,
    ];

    #[test]
    #[cfg(target_endian = "little")] // netlink headers are in host order
    fn decodes_a_kernel_dump_message() {
        let msgs = split_messages(KERNEL_UDP_ENTRY).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].ty, msg_type(IPCTNL_MSG_CT_NEW));
        let e = decode_entry(msgs[0].payload).unwrap();
        assert_eq!(e.orig, tuple("127.0.0.1", "127.0.0.1", 33000, 9));
        assert_eq!(e.reply, tuple("127.0.0.1", "127.0.0.1", 9, 33000));
        assert_eq!(
            (e.status, e.timeout, e.mark, e.zone),
            (IPS_CONFIRMED, 30, 0, 0)
        );
        assert_eq!(e.id, 0x8aa02130);
        assert_eq!(e.proto, IPPROTO_UDP);
    }

    #[test]
    fn decodes_errors_with_and_without_ext_ack() {
        // NLMSG_ERROR, capped, with an NLMSGERR_ATTR_MSG "bad".
        let mut b = Vec::new();
        b.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
        b.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        b.extend_from_slice(b"bad\0");
        let m = NlMsg {
            ty: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 1,
            payload: &b,
        };
        assert_eq!(
            decode_error(&m).unwrap(),
            (libc::EEXIST, Some("bad".into()))
        );
        let m = NlMsg {
            flags: 0,
            payload: &b[..4 + NLMSG_HDRLEN],
            ..m
        };
        assert_eq!(decode_error(&m).unwrap(), (libc::EEXIST, None));
        let err = NlError::Kernel {
            errno: libc::EEXIST,
            msg: None,
        }
        .into_anyhow("insert");
        assert!(err.to_string().contains("already exists"), "{err}");
        let err = NlError::Kernel {
            errno: libc::EPERM,
            msg: None,
        }
        .into_anyhow("dump");
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    }

    #[test]
    fn decodes_stats_messages() {
        let mut r = Request::new(IPCTNL_MSG_CT_GET_STATS_CPU, 0, 0);
        r.buf[18..20].copy_from_slice(&1u16.to_be_bytes()); // res_id = cpu 1
        r.be32(2, 5); // found
        r.be32(12, 2); // error → icmp_error
        r.be32(14, 3); // clash_resolve → clashres
        r.be32(99, 1);
        let b = r.finish(1);
        let (cpu, m) = decode_stats_cpu(split_messages(&b).unwrap()[0].payload).unwrap();
        assert_eq!(cpu, 1);
        assert_eq!(m["found"], 5);
        assert_eq!(m["icmp_error"], 2);
        assert_eq!(m["clashres"], 3);
        assert_eq!(m["cta_stats_99"], 1);

        let mut r = Request::new(IPCTNL_MSG_CT_GET_STATS, 0, 0);
        r.be32(CTA_STATS_GLOBAL_ENTRIES, 41);
        r.be32(2, 65536);
        let b = r.finish(1);
        assert_eq!(
            decode_stats_entries(split_messages(&b).unwrap()[0].payload).unwrap(),
            41
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(split_messages(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(attrs(&[0x40, 0, 1, 0]).is_err());
        assert!(decode_entry(&[2, 0, 0, 0]).is_err(), "no tuples");
        assert!(decode_entry(&[7, 0, 0, 0]).is_err(), "bad family");
        assert!(decode_tuple(&[8, 0, 1, 0x80, 8, 0, 1, 0]).is_err());
        for cut in 0..KERNEL_UDP_ENTRY.len() {
            if let Ok(msgs) = split_messages(&KERNEL_UDP_ENTRY[..cut]) {
                for m in msgs {
                    let _ = decode_entry(m.payload);
                }
            }
            if cut >= 16 {
                // A truncated payload under an intact header.
                let _ = decode_entry(&KERNEL_UDP_ENTRY[16..cut]);
            }
        }
    }
}

#[cfg(all(test, feature = "lab"))]
mod lab_tests {
    use super::*;
    use crate::model::ct_filter::{IPPROTO_TCP, IPPROTO_UDP, IPS_ASSURED, IPS_SEEN_REPLY};
    use std::net::UdpSocket;
    use std::time::Instant;

    /// A throwaway namespace, deleted on drop (also when the test panics).
    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Ns {
            let name = format!("fltest-ct-{}-{tag}", std::process::id());
            if crate::netns::exists(&name) {
                let _ = crate::netns::delete(&name);
            }
            crate::netns::create(&name).expect("create test netns");
            Ns(name)
        }

        /// Loads a ruleset that makes the namespace track locally sent packets.
        fn track_output(&self) {
            crate::netns::output_in(
                &self.0,
                &["nft", "-f", "-"],
                Some("table inet t {\n  chain c {\n    type filter hook output priority 0;\n    ct state new counter\n  }\n}\n"),
            )
            .expect("load nft ruleset");
        }

        /// Sends one datagram from each of `n` fresh sockets to 127.0.0.1:`port`;
        /// returns their source ports.
        fn udp_flows(&self, n: usize, port: u16) -> Vec<u16> {
            crate::netns::run_in(&self.0, || {
                let mut ports = Vec::new();
                for _ in 0..n {
                    let s = UdpSocket::bind("127.0.0.1:0")?;
                    s.send_to(b"x", ("127.0.0.1", port))?;
                    ports.push(s.local_addr()?.port());
                }
                Ok(ports)
            })
            .unwrap()
        }

        /// A request and its answer through a UDP echo on 127.0.0.1:`port`: SEEN_REPLY.
        fn udp_exchange(&self, port: u16) -> u16 {
            crate::netns::run_in(&self.0, || {
                let server = UdpSocket::bind(("127.0.0.1", port))?;
                let client = UdpSocket::bind("127.0.0.1:0")?;
                client.set_read_timeout(Some(Duration::from_secs(2)))?;
                client.send_to(b"ping", ("127.0.0.1", port))?;
                let mut buf = [0u8; 16];
                let (_, from) = server.recv_from(&mut buf)?;
                server.send_to(b"pong", from)?;
                client.recv_from(&mut buf)?;
                Ok(client.local_addr()?.port())
            })
            .unwrap()
        }

        fn name(&self) -> &str {
            &self.0
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            if let Err(e) = crate::netns::delete(&self.0) {
                eprintln!("cleanup of {}: {e:#}", self.0);
            }
        }
    }

    fn udp_insert(src: &str, sport: u16, dport: u16) -> CtInsert {
        CtInsert::new(
            IPPROTO_UDP,
            CtTuple {
                src: src.parse().unwrap(),
                dst: src.parse().unwrap(),
                sport,
                dport,
            },
            300,
        )
    }

    fn filter(s: &str) -> CtFilter {
        CtFilter::parse(s).unwrap()
    }

    #[test]
    fn dump_count_and_delete_traffic_entries() {
        let ns = Ns::new("dump");
        assert_eq!(
            count(ns.name()).unwrap(),
            0,
            "a fresh namespace tracks nothing"
        );
        ns.track_output();
        let ports = ns.udp_flows(3, 9);
        let replied = ns.udp_exchange(7777);

        let all = dump(ns.name()).unwrap();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert_eq!(count(ns.name()).unwrap(), 4);
        let unreplied: Vec<&CtEntry> = all
            .iter()
            .filter(|e| filter("proto=udp dport=9").matches(e))
            .collect();
        assert_eq!(unreplied.len(), 3);
        for e in &unreplied {
            assert!(ports.contains(&e.orig.sport), "{e}");
            assert_eq!(e.family, 4);
            assert_eq!(e.orig.src, IpAddr::from([127, 0, 0, 1]));
            assert_eq!(e.reply.sport, 9);
            assert_eq!(e.reply.dport, e.orig.sport);
            assert!(
                e.status & IPS_CONFIRMED != 0 && e.status & IPS_SEEN_REPLY == 0,
                "{e}"
            );
            assert!(e.timeout > 0 && e.timeout <= 30, "{e}");
            assert_ne!(e.id, 0);
        }
        let seen: Vec<&CtEntry> = all
            .iter()
            .filter(|e| filter("status=SEEN_REPLY").matches(e))
            .collect();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].orig.sport, seen[0].orig.dport), (replied, 7777));

        assert_eq!(delete(ns.name(), &filter("dport=9")).unwrap(), 3);
        assert_eq!(delete(ns.name(), &filter("dport=9")).unwrap(), 0);
        let left = dump(ns.name()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].orig.dport, 7777);
        assert_eq!(count(ns.name()).unwrap(), 1);

        // A stale entry (already deleted) is skipped, not an error.
        crate::netns::run_in(ns.name(), || {
            let mut s = Socket::open()?;
            let gone = unreplied[0];
            assert_eq!(delete_entries(&mut s, &[gone])?, 0);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn insert_dump_round_trip_and_errors() {
        let ns = Ns::new("insert");
        let mut tcp = CtInsert::new(
            IPPROTO_TCP,
            CtTuple {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                sport: 40000,
                dport: 443,
            },
            600,
        );
        tcp.status = IPS_ASSURED | IPS_SEEN_REPLY;
        tcp.mark = 0x42;
        insert(ns.name(), &tcp).unwrap();

        let mut zoned = tcp.clone();
        zoned.zone = 7;
        zoned.tcp_state = Some(7); // TIME_WAIT
        insert(ns.name(), &zoned).unwrap();

        let v6 = udp_insert("fd00::1", 5353, 53);
        insert(ns.name(), &v6).unwrap();
        let icmp = CtInsert::new(
            IPPROTO_ICMP,
            CtTuple {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                sport: 0x99,
                dport: 8 << 8,
            },
            30,
        );
        insert(ns.name(), &icmp).unwrap();

        let err = insert(ns.name(), &tcp).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("already exists"), "{text}");
        assert!(text.contains(ns.name()), "{text}");
        assert!(text.contains("conntrack insert"), "{text}");

        let all = dump(ns.name()).unwrap();
        assert_eq!(all.len(), 4, "{all:#?}");
        let t = all
            .iter()
            .find(|e| filter("proto=tcp zone=0").matches(e))
            .unwrap();
        assert_eq!(t.orig, tcp.orig);
        assert_eq!(t.reply, tcp.orig.inverse(IPPROTO_TCP));
        assert_eq!(t.tcp_state, Some(3));
        assert_eq!(t.mark, 0x42);
        assert_eq!(
            t.status & (IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED),
            IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED
        );
        assert!(t.timeout > 590 && t.timeout <= 600, "{t}");
        let z = all.iter().find(|e| filter("zone=7").matches(e)).unwrap();
        assert_eq!(z.tcp_state, Some(7));
        assert!(filter("state=TIME_WAIT mark=0x42 proto=tcp").matches(z));
        let u = all.iter().find(|e| e.family == 6).unwrap();
        assert_eq!((u.orig, u.proto), (v6.orig, IPPROTO_UDP));
        let i = all.iter().find(|e| e.proto == IPPROTO_ICMP).unwrap();
        assert_eq!(i.orig, icmp.orig);
        assert_eq!(i.reply.dport, 0, "echo reply, code 0");
        assert_eq!(i.reply.sport, 0x99);

        assert_eq!(delete(ns.name(), &filter("zone=7")).unwrap(), 1);
        assert_eq!(delete(ns.name(), &filter("family=ipv6")).unwrap(), 1);
        assert_eq!(count(ns.name()).unwrap(), 2);
        flush(ns.name()).unwrap();
        assert_eq!(count(ns.name()).unwrap(), 0);
        assert!(dump(ns.name()).unwrap().is_empty());
    }

    #[test]
    fn flush_removes_both_families_and_traffic_entries() {
        let ns = Ns::new("flush");
        ns.track_output();
        ns.udp_flows(2, 9);
        insert(ns.name(), &udp_insert("fd00::1", 1, 2)).unwrap();
        assert_eq!(count(ns.name()).unwrap(), 3);
        flush(ns.name()).unwrap();
        assert_eq!(count(ns.name()).unwrap(), 0);
    }

    #[test]
    fn stats_per_cpu_agree_with_procfs() {
        let ns = Ns::new("stats");
        ns.track_output();
        ns.udp_flows(5, 9);
        insert(ns.name(), &udp_insert("10.0.0.1", 1, 2)).unwrap();
        let _ = insert(ns.name(), &udp_insert("10.0.0.1", 1, 2)); // EEXIST
        let read_procfs = || {
            crate::netns::run_in(ns.name(), || {
                let text = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")?;
                Ok(crate::observe::ConntrackStat::parse(&text)?)
            })
            .unwrap()
        };
        let before = read_procfs();
        let nl = stats_per_cpu(ns.name()).unwrap();
        let after = read_procfs();
        assert_eq!(before, after, "the namespace is idle");
        assert_eq!(nl.len(), after.cpus.len(), "one row per possible CPU");
        let fields = [
            "found",
            "invalid",
            "insert",
            "insert_failed",
            "drop",
            "early_drop",
            "icmp_error",
            "search_restart",
            "clashres",
            "chainlength",
        ];
        for field in fields {
            let col = after
                .fields
                .iter()
                .position(|f| f == field)
                .unwrap_or_else(|| panic!("procfs has no {field}"));
            for (cpu, row) in after.cpus.iter().enumerate() {
                assert_eq!(
                    nl[cpu].get(field).copied(),
                    Some(row[col]),
                    "cpu {cpu} {field}: {nl:?}"
                );
            }
        }
        let inserted: u64 = nl.iter().map(|m| m["insert"]).sum();
        eprintln!("per-cpu stats {nl:?}; insert sum {inserted}");
        assert_eq!(
            after.cpus[0][0],
            count(ns.name()).unwrap(),
            "procfs entries column"
        );
    }

    #[test]
    fn errors_name_the_operation_and_netns() {
        let err = dump("fltest-ct-does-not-exist").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("conntrack dump in netns `fltest-ct-does-not-exist`"),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
    }

    #[test]
    fn dump_and_delete_many_entries_timed() {
        const N: u16 = 5000;
        let ns = Ns::new("many");
        let t0 = Instant::now();
        crate::netns::run_in(ns.name(), || {
            // One socket for all inserts: what insert() costs minus the thread per call.
            let mut s = Socket::open()?;
            for p in 0..N {
                let req = encode_insert(&udp_insert("10.0.0.1", 10000 + p, 53))?;
                s.transact(req, false, |_| Ok(()))
                    .map_err(|e| e.into_anyhow("insert"))?;
            }
            Ok(())
        })
        .unwrap();
        let inserted = t0.elapsed();
        let t1 = Instant::now();
        let all = dump(ns.name()).unwrap();
        let dumped = t1.elapsed();
        assert_eq!(all.len(), N as usize);
        let t2 = Instant::now();
        let c = count(ns.name()).unwrap();
        let counted = t2.elapsed();
        assert_eq!(c, N as u64);
        let t3 = Instant::now();
        assert_eq!(delete(ns.name(), &filter("sport=10000")).unwrap(), 1);
        let one = t3.elapsed();
        let t4 = Instant::now();
        assert_eq!(delete(ns.name(), &CtFilter::all()).unwrap(), N as usize - 1);
        let deleted = t4.elapsed();
        eprintln!(
            "{N} entries: insert {inserted:?}, dump {dumped:?}, count {counted:?}, \
             delete 1 (dump+filter) {one:?}, delete rest {deleted:?}"
        );
    }
}
