//! Conntrack entries as plain data, and a small filter language over them.
//!
//! Pure: no syscalls. `crate::netns::ctnetlink` fills [`CtEntry`] from the kernel and
//! takes [`CtInsert`]; [`CtFilter`] selects entries (for `delete`, and for evidence).
//!
//! Filter syntax: whitespace-separated `KEY=VALUE` terms that must all hold (AND);
//! the empty filter matches every entry.
//!
//! | term | holds when |
//! |---|---|
//! | `proto=tcp\|udp\|icmp\|icmpv6\|sctp\|gre\|N` | the layer-4 protocol number is that |
//! | `family=ipv4\|ipv6` | the entry is of that address family |
//! | `orig.src=ADDR[/LEN]`, `orig.dst=…`, `reply.src=…`, `reply.dst=…` | the tuple's address is (in) that |
//! | `orig.sport=N`, `orig.dport=N`, `reply.sport=N`, `reply.dport=N` | the tuple's port is N |
//! | `src`, `dst`, `sport`, `dport` | shorthand for the `orig.` forms |
//! | `status=ASSURED,SEEN_REPLY` | every listed `IPS_*` bit is set |
//! | `!status=DYING` | none of the listed bits is set |
//! | `state=ESTABLISHED` | a TCP entry in that state (conntrack's names) |
//! | `zone=N` | the conntrack zone (of the original direction) is N |
//! | `mark=N`, `mark=N/MASK` | `ctmark & MASK == N` (decimal or `0x` hex; MASK defaults to all ones) |
//!
//! For ICMP and ICMPv6 the tuple's "ports" are what conntrack keys on: `sport` is the
//! echo identifier and `dport` is `type << 8 | code` (so an echo request, type 8 code 0,
//! has `dport=2048` in its original tuple and `dport=0` in its reply tuple).
//! For GRE they are the keys, as ctnetlink reports them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// `IPS_*` status bits (include/uapi/linux/netfilter/nf_conntrack_common.h), without
/// the prefix, in bit order.
pub const STATUS_BITS: &[(&str, u32)] = &[
    ("EXPECTED", 1 << 0),
    ("SEEN_REPLY", 1 << 1),
    ("ASSURED", 1 << 2),
    ("CONFIRMED", 1 << 3),
    ("SRC_NAT", 1 << 4),
    ("DST_NAT", 1 << 5),
    ("SEQ_ADJUST", 1 << 6),
    ("SRC_NAT_DONE", 1 << 7),
    ("DST_NAT_DONE", 1 << 8),
    ("DYING", 1 << 9),
    ("FIXED_TIMEOUT", 1 << 10),
    ("TEMPLATE", 1 << 11),
    ("UNTRACKED", 1 << 12),
    ("HELPER", 1 << 13),
    ("OFFLOAD", 1 << 14),
    ("HW_OFFLOAD", 1 << 15),
];

pub const IPS_SEEN_REPLY: u32 = 1 << 1;
pub const IPS_ASSURED: u32 = 1 << 2;
pub const IPS_CONFIRMED: u32 = 1 << 3;

/// TCP conntrack states as `conntrack -L` prints them, indexed by `TCP_CONNTRACK_*`
/// (include/uapi/linux/netfilter/nf_conntrack_tcp.h; 9 was `LISTEN`, now `SYN_SENT2`).
pub const TCP_STATES: &[&str] = &[
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

pub const TCP_CONNTRACK_ESTABLISHED: u8 = 3;

/// The name conntrack prints for a TCP state number (`UNKNOWN` past `SYN_SENT2`).
pub fn tcp_state_name(state: u8) -> &'static str {
    TCP_STATES.get(state as usize).copied().unwrap_or("UNKNOWN")
}

/// The TCP state number of a conntrack state name (case-insensitive).
pub fn tcp_state_number(name: &str) -> Option<u8> {
    TCP_STATES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
}

/// The bit of an `IPS_*` status name, with or without the `IPS_` prefix (case-insensitive).
pub fn status_bit(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("IPS_").unwrap_or(&upper);
    STATUS_BITS
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(_, bit)| *bit)
}

/// Status bits as `A|B|C` (bit order); unnamed bits as hex; `0` when none.
pub fn status_names(status: u32) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = status;
    for (name, bit) in STATUS_BITS {
        if status & bit != 0 {
            parts.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join("|")
    }
}

/// The protocol's name in filters (`tcp` ...), or its number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        IPPROTO_SCTP => "sctp".into(),
        IPPROTO_GRE => "gre".into(),
        n => n.to_string(),
    }
}

/// One direction of a connection. For ICMP/ICMPv6 `sport` is the identifier and
/// `dport` is `type << 8 | code` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl CtTuple {
    /// The tuple the kernel expects for the other direction: addresses and ports
    /// swapped; for ICMP/ICMPv6 the same identifier and the answering type
    /// (echo request ↔ reply, timestamp, info, address mask; ICMPv6 echo, node info).
    pub fn inverse(&self, proto: u8) -> CtTuple {
        let (sport, dport) = match proto {
            IPPROTO_ICMP | IPPROTO_ICMPV6 => {
                let (ty, code) = ((self.dport >> 8) as u8, self.dport as u8);
                let inv = match (proto, ty) {
                    (IPPROTO_ICMP, 8) => 0,
                    (IPPROTO_ICMP, 0) => 8,
                    (IPPROTO_ICMP, 13) => 14,
                    (IPPROTO_ICMP, 14) => 13,
                    (IPPROTO_ICMP, 15) => 16,
                    (IPPROTO_ICMP, 16) => 15,
                    (IPPROTO_ICMP, 17) => 18,
                    (IPPROTO_ICMP, 18) => 17,
                    (IPPROTO_ICMPV6, 128) => 129,
                    (IPPROTO_ICMPV6, 129) => 128,
                    (IPPROTO_ICMPV6, 139) => 140,
                    (IPPROTO_ICMPV6, 140) => 139,
                    (_, t) => t,
                };
                (self.sport, (inv as u16) << 8 | code as u16)
            }
            _ => (self.dport, self.sport),
        };
        CtTuple {
            src: self.dst,
            dst: self.src,
            sport,
            dport,
        }
    }
}

impl fmt::Display for CtTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "src={} dst={} sport={} dport={}",
            self.src, self.dst, self.sport, self.dport
        )
    }
}

/// One conntrack entry as ctnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtEntry {
    /// 4 or 6.
    pub family: u8,
    /// Layer-4 protocol number (`IPPROTO_*`).
    pub proto: u8,
    pub orig: CtTuple,
    pub reply: CtTuple,
    /// `IPS_*` bits.
    pub status: u32,
    /// `TCP_CONNTRACK_*` for TCP entries (see [`tcp_state_name`]).
    pub tcp_state: Option<u8>,
    /// Seconds left (0 for offloaded entries, which report none).
    pub timeout: u32,
    pub mark: u32,
    /// The zone of the original direction: what a lookup of `orig` uses (a zone set
    /// for the reply direction only shows as 0 here).
    pub zone: u16,
    /// ctnetlink's id of the entry (`CTA_ID`), stable while the entry lives.
    pub id: u32,
}

impl CtEntry {
    /// Numeric observation fields: `family`, `proto`, `timeout`, `mark`, `zone`, `id`,
    /// `orig.sport` … `reply.dport`, `status.NAME` (0/1, one per [`STATUS_BITS`] name),
    /// and for TCP entries `state.NAME` (0/1, one per [`TCP_STATES`] name).
    pub fn fields(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = vec![
            ("family".into(), self.family as f64),
            ("proto".into(), self.proto as f64),
            ("timeout".into(), self.timeout as f64),
            ("mark".into(), self.mark as f64),
            ("zone".into(), self.zone as f64),
            ("id".into(), self.id as f64),
            ("orig.sport".into(), self.orig.sport as f64),
            ("orig.dport".into(), self.orig.dport as f64),
            ("reply.sport".into(), self.reply.sport as f64),
            ("reply.dport".into(), self.reply.dport as f64),
        ];
        for (name, bit) in STATUS_BITS {
            let set = self.status & bit != 0;
            out.push((format!("status.{name}"), set as u8 as f64));
        }
        if self.proto == IPPROTO_TCP {
            for (i, name) in TCP_STATES.iter().enumerate() {
                let is = self.tcp_state == Some(i as u8);
                out.push((format!("state.{name}"), is as u8 as f64));
            }
        }
        out
    }
}

impl fmt::Display for CtEntry {
    /// One line in the spirit of `conntrack -L`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", proto_name(self.proto), self.timeout)?;
        if let Some(s) = self.tcp_state {
            write!(f, " {}", tcp_state_name(s))?;
        }
        write!(
            f,
            " {} | {} [{}] mark={}",
            self.orig,
            self.reply,
            status_names(self.status),
            self.mark
        )?;
        if self.zone != 0 {
            write!(f, " zone={}", self.zone)?;
        }
        write!(f, " id={}", self.id)
    }
}

/// An entry to create with `ctnetlink::insert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtInsert {
    pub orig: CtTuple,
    /// Default: `orig.inverse(proto)`.
    #[serde(default)]
    pub reply: Option<CtTuple>,
    pub proto: u8,
    /// Seconds. The kernel refuses a new entry without one.
    pub timeout: u32,
    /// `IPS_*` bits to set. `CONFIRMED` is always added (the kernel sets it on every
    /// entry it creates from netlink and refuses a status that would clear it);
    /// bits userspace may not change (NAT, `EXPECTED`, `DYING`, `OFFLOAD` ...) are ignored.
    #[serde(default)]
    pub status: u32,
    /// TCP state; `None` on a TCP entry means `ESTABLISHED`.
    #[serde(default)]
    pub tcp_state: Option<u8>,
    #[serde(default)]
    pub mark: u32,
    #[serde(default)]
    pub zone: u16,
}

impl CtInsert {
    /// An entry with no status bits, mark 0, zone 0 and the default reply tuple.
    pub fn new(proto: u8, orig: CtTuple, timeout: u32) -> CtInsert {
        CtInsert {
            orig,
            reply: None,
            proto,
            timeout,
            status: 0,
            tcp_state: None,
            mark: 0,
            zone: 0,
        }
    }

    pub fn reply_tuple(&self) -> CtTuple {
        self.reply.unwrap_or_else(|| self.orig.inverse(self.proto))
    }

    /// 4 or 6, from the original source address.
    pub fn family(&self) -> u8 {
        if self.orig.src.is_ipv4() {
            4
        } else {
            6
        }
    }

    /// The TCP state sent to the kernel: `None` for other protocols.
    pub fn effective_tcp_state(&self) -> Option<u8> {
        (self.proto == IPPROTO_TCP).then(|| self.tcp_state.unwrap_or(TCP_CONNTRACK_ESTABLISHED))
    }
}

/// Which tuple a term looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    Orig,
    Reply,
}

/// Which end of a tuple a term looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    Src,
    Dst,
}

/// One term of a [`CtFilter`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CtTerm {
    Proto(u8),
    /// 4 or 6.
    Family(u8),
    /// Address in `addr/prefix` (prefix = full length for a single address).
    Addr {
        dir: Dir,
        end: End,
        addr: IpAddr,
        prefix: u8,
    },
    Port {
        dir: Dir,
        end: End,
        port: u16,
    },
    /// `status=` (`set`: every bit set) or `!status=` (no bit set).
    Status {
        bits: u32,
        set: bool,
    },
    State(u8),
    Zone(u16),
    Mark {
        value: u32,
        mask: u32,
    },
}

impl CtTerm {
    /// Canonical order of terms: the order of keys in the module table.
    fn rank(&self) -> (u8, u8) {
        let tuple_rank = |dir: &Dir, end: &End, port: bool| -> u8 {
            let d = if *dir == Dir::Orig { 0 } else { 4 };
            let e = if *end == End::Src { 0 } else { 1 };
            d + e + if port { 2 } else { 0 }
        };
        match self {
            CtTerm::Proto(_) => (0, 0),
            CtTerm::Family(_) => (1, 0),
            CtTerm::Addr { dir, end, .. } => (2, tuple_rank(dir, end, false)),
            CtTerm::Port { dir, end, .. } => (2, tuple_rank(dir, end, true)),
            CtTerm::Status { set: true, .. } => (3, 0),
            CtTerm::Status { set: false, .. } => (3, 1),
            CtTerm::State(_) => (4, 0),
            CtTerm::Zone(_) => (5, 0),
            CtTerm::Mark { .. } => (6, 0),
        }
    }

    pub fn matches(&self, e: &CtEntry) -> bool {
        let tuple = |dir: &Dir| if *dir == Dir::Orig { &e.orig } else { &e.reply };
        match self {
            CtTerm::Proto(p) => e.proto == *p,
            CtTerm::Family(f) => e.family == *f,
            CtTerm::Addr {
                dir,
                end,
                addr,
                prefix,
            } => {
                let t = tuple(dir);
                let a = if *end == End::Src { t.src } else { t.dst };
                in_prefix(a, *addr, *prefix)
            }
            CtTerm::Port { dir, end, port } => {
                let t = tuple(dir);
                (if *end == End::Src { t.sport } else { t.dport }) == *port
            }
            CtTerm::Status { bits, set: true } => e.status & bits == *bits,
            CtTerm::Status { bits, set: false } => e.status & bits == 0,
            CtTerm::State(s) => e.proto == IPPROTO_TCP && e.tcp_state == Some(*s),
            CtTerm::Zone(z) => e.zone == *z,
            CtTerm::Mark { value, mask } => e.mark & mask == *value,
        }
    }
}

fn in_prefix(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl fmt::Display for CtTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir_name = |d: &Dir| if *d == Dir::Orig { "orig" } else { "reply" };
        match self {
            CtTerm::Proto(p) => write!(f, "proto={}", proto_name(*p)),
            CtTerm::Family(4) => write!(f, "family=ipv4"),
            CtTerm::Family(_) => write!(f, "family=ipv6"),
            CtTerm::Addr {
                dir,
                end,
                addr,
                prefix,
            } => {
                let e = if *end == End::Src { "src" } else { "dst" };
                write!(f, "{}.{e}={addr}", dir_name(dir))?;
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if *prefix != full {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
            CtTerm::Port { dir, end, port } => {
                let e = if *end == End::Src { "sport" } else { "dport" };
                write!(f, "{}.{e}={port}", dir_name(dir))
            }
            CtTerm::Status { bits, set } => {
                let names: Vec<&str> = STATUS_BITS
                    .iter()
                    .filter(|(_, b)| bits & b != 0)
                    .map(|(n, _)| *n)
                    .collect();
                write!(
                    f,
                    "{}status={}",
                    if *set { "" } else { "!" },
                    names.join(",")
                )
            }
            CtTerm::State(s) => write!(f, "state={}", tcp_state_name(*s)),
            CtTerm::Zone(z) => write!(f, "zone={z}"),
            CtTerm::Mark { value, mask } => {
                write!(f, "mark={value:#x}")?;
                if *mask != u32::MAX {
                    write!(f, "/{mask:#x}")?;
                }
                Ok(())
            }
        }
    }
}

/// A conntrack filter: terms that must all hold. Parsed terms are kept in canonical
/// order without duplicates, so `CtFilter::parse(&f.to_string()) == Ok(f)`.
/// Serialized as its canonical text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CtFilter {
    pub terms: Vec<CtTerm>,
}

const KEYS_HELP: &str =
    "proto, family, src, dst, sport, dport, orig.*, reply.*, status, state, zone, mark";

const ALL_KEYS: &[&str] = &[
    "proto",
    "family",
    "src",
    "dst",
    "sport",
    "dport",
    "orig.src",
    "orig.dst",
    "orig.sport",
    "orig.dport",
    "reply.src",
    "reply.dst",
    "reply.sport",
    "reply.dport",
    "status",
    "state",
    "zone",
    "mark",
];

impl CtFilter {
    /// The filter that matches every entry.
    pub fn all() -> CtFilter {
        CtFilter::default()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn parse(text: &str) -> Result<CtFilter, String> {
        let mut terms = Vec::new();
        for word in text.split_whitespace() {
            terms.push(parse_term(word)?);
        }
        Ok(CtFilter::from_terms(terms))
    }

    /// Canonical order (stable within one key), exact duplicates removed.
    pub fn from_terms(mut terms: Vec<CtTerm>) -> CtFilter {
        terms.sort_by_key(|t| t.rank());
        let mut out: Vec<CtTerm> = Vec::with_capacity(terms.len());
        for t in terms {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        CtFilter { terms: out }
    }

    pub fn matches(&self, e: &CtEntry) -> bool {
        self.terms.iter().all(|t| t.matches(e))
    }
}

impl fmt::Display for CtFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for CtFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CtFilter::parse(s)
    }
}

impl TryFrom<String> for CtFilter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CtFilter::parse(&s)
    }
}

impl From<CtFilter> for String {
    fn from(f: CtFilter) -> String {
        f.to_string()
    }
}

fn parse_term(word: &str) -> Result<CtTerm, String> {
    let Some((raw_key, value)) = word.split_once('=') else {
        return Err(format!(
            "term `{word}` has no `=`: write KEY=VALUE (e.g. `proto=udp`), keys: {KEYS_HELP}"
        ));
    };
    let (negated, key) = match raw_key.strip_prefix('!') {
        Some(k) => (true, k),
        None => (false, raw_key),
    };
    let key_lc = key.to_ascii_lowercase();
    if negated && key_lc != "status" {
        return Err(format!(
            "`!` in `{word}` negates only status (e.g. `!status=ASSURED`); \
             write the other keys without it"
        ));
    }
    if value.is_empty() {
        return Err(format!(
            "term `{word}` has no value after `=`: {}",
            value_help(&key_lc)
        ));
    }
    let bad = |what: &str| -> String { format!("bad {what} in `{word}`: {}", value_help(&key_lc)) };
    let (dir, field) = match key_lc.split_once('.') {
        Some(("orig", f)) => (Some(Dir::Orig), f),
        Some(("reply", f)) => (Some(Dir::Reply), f),
        Some(_) => (None, key_lc.as_str()),
        None => (Some(Dir::Orig), key_lc.as_str()),
    };
    let tuple_field = |f: &str| matches!(f, "src" | "dst" | "sport" | "dport");
    if let Some(dir) = dir {
        if tuple_field(field) {
            let end = if field.starts_with('s') {
                End::Src
            } else {
                End::Dst
            };
            if field.ends_with("port") {
                let port = value.parse::<u16>().map_err(|_| bad("port"))?;
                return Ok(CtTerm::Port { dir, end, port });
            }
            let (addr, prefix) = parse_addr(value).ok_or_else(|| bad("address"))?;
            return Ok(CtTerm::Addr {
                dir,
                end,
                addr,
                prefix,
            });
        }
        if key_lc.contains('.') {
            return Err(format!(
                "unknown key `{key}`: after `{}.` use src, dst, sport or dport",
                if dir == Dir::Orig { "orig" } else { "reply" }
            ));
        }
    }
    match key_lc.as_str() {
        "proto" => parse_proto(value)
            .map(CtTerm::Proto)
            .ok_or_else(|| bad("protocol")),
        "family" => match value.to_ascii_lowercase().as_str() {
            "ipv4" | "ip" | "inet" | "4" => Ok(CtTerm::Family(4)),
            "ipv6" | "ip6" | "inet6" | "6" => Ok(CtTerm::Family(6)),
            _ => Err(bad("family")),
        },
        "status" => {
            let mut bits = 0;
            for name in value.split(',') {
                bits |= status_bit(name).ok_or_else(|| {
                    format!(
                        "unknown status bit `{name}` in `{word}`: {}",
                        value_help("status")
                    )
                })?;
            }
            Ok(CtTerm::Status {
                bits,
                set: !negated,
            })
        }
        "state" => tcp_state_number(value).map(CtTerm::State).ok_or_else(|| {
            format!(
                "unknown TCP state `{value}` in `{word}`: {}",
                value_help("state")
            )
        }),
        "zone" => parse_u32(value)
            .and_then(|z| u16::try_from(z).ok())
            .map(CtTerm::Zone)
            .ok_or_else(|| bad("zone")),
        "mark" => {
            let (v, m) = match value.split_once('/') {
                Some((v, m)) => (v, Some(m)),
                None => (value, None),
            };
            let value_n = parse_u32(v).ok_or_else(|| bad("mark"))?;
            let mask = match m {
                Some(m) => parse_u32(m).ok_or_else(|| bad("mark mask"))?,
                None => u32::MAX,
            };
            if value_n & !mask != 0 {
                return Err(format!(
                    "`{word}` can never match: the mark has bits outside the mask; \
                     write mark={:#x}/{mask:#x}",
                    value_n & mask
                ));
            }
            Ok(CtTerm::Mark {
                value: value_n,
                mask,
            })
        }
        _ => {
            let mut msg = format!("unknown key `{key}`: use one of {KEYS_HELP}");
            if let Some(s) = closest_key(&key_lc) {
                msg.push_str(&format!(" (did you mean `{s}`?)"));
            }
            Err(msg)
        }
    }
}

fn value_help(key: &str) -> String {
    let field = key.rsplit('.').next().unwrap_or(key);
    match field {
        "proto" => "use tcp, udp, icmp, icmpv6, sctp, gre or a number 0-255".into(),
        "family" => "use ipv4 or ipv6".into(),
        "src" | "dst" => "use an IPv4 or IPv6 address, optionally /PREFIXLEN".into(),
        "sport" | "dport" => "use a port number 0-65535 (for ICMP: id, type<<8|code)".into(),
        "status" => format!(
            "use comma-separated names of {}",
            STATUS_BITS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "state" => format!("use one of {}", TCP_STATES.join(" ")),
        "zone" => "use a zone number 0-65535".into(),
        "mark" => "use mark=N or mark=N/MASK, decimal or 0x hex, 32 bits".into(),
        _ => format!("keys: {KEYS_HELP}"),
    }
}

fn parse_proto(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "tcp" => Some(IPPROTO_TCP),
        "udp" => Some(IPPROTO_UDP),
        "icmp" => Some(IPPROTO_ICMP),
        "icmpv6" | "ipv6-icmp" => Some(IPPROTO_ICMPV6),
        "sctp" => Some(IPPROTO_SCTP),
        "gre" => Some(IPPROTO_GRE),
        n => n.parse().ok(),
    }
}

fn parse_u32(v: &str) -> Option<u32> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn parse_addr(v: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        Some(p) => p.parse::<u8>().ok().filter(|n| *n <= full)?,
        None => full,
    };
    Some((addr, prefix))
}

/// The known key within edit distance 2 of `key`, if one is clearly closest.
fn closest_key(key: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for k in ALL_KEYS {
        let d = edit_distance(key, k);
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn udp_entry() -> CtEntry {
        let orig = CtTuple {
            src: v4("10.0.0.1"),
            dst: v4("10.0.0.2"),
            sport: 40000,
            dport: 53,
        };
        CtEntry {
            family: 4,
            proto: IPPROTO_UDP,
            orig,
            reply: orig.inverse(IPPROTO_UDP),
            status: IPS_CONFIRMED | IPS_SEEN_REPLY,
            tcp_state: None,
            timeout: 30,
            mark: 0x1234,
            zone: 0,
            id: 7,
        }
    }

    fn tcp_entry() -> CtEntry {
        let orig = CtTuple {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            sport: 50000,
            dport: 443,
        };
        CtEntry {
            family: 6,
            proto: IPPROTO_TCP,
            orig,
            reply: orig.inverse(IPPROTO_TCP),
            status: IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED,
            tcp_state: Some(TCP_CONNTRACK_ESTABLISHED),
            timeout: 432000,
            mark: 0,
            zone: 5,
            id: 8,
        }
    }

    fn err(text: &str) -> String {
        CtFilter::parse(text).unwrap_err()
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = CtFilter::parse("  ").unwrap();
        assert!(f.is_empty());
        assert!(f.matches(&udp_entry()) && f.matches(&tcp_entry()));
        assert_eq!(f.to_string(), "");
    }

    #[test]
    fn unknown_key_names_the_term_and_the_keys() {
        let e = err("proto=udp dprt=53");
        assert!(
            e.starts_with(
                "unknown key `dprt`: use one of proto, family, src, dst, sport, dport, \
                 orig.*, reply.*, status, state, zone, mark"
            ),
            "{e}"
        );
        assert!(e.contains("did you mean `dport`?"), "{e}");
        let e = err("orig.prt=1");
        assert!(
            e.contains("after `orig.` use src, dst, sport or dport"),
            "{e}"
        );
        let e = err("foo.src=1.2.3.4");
        assert!(e.contains("unknown key `foo.src`"), "{e}");
    }

    #[test]
    fn bad_values_say_what_to_write() {
        assert!(err("proto=tpc").contains("use tcp, udp, icmp"));
        assert!(err("dport=65536").contains("bad port in `dport=65536`"));
        assert!(err("src=10.0.0.300").contains("bad address"));
        assert!(err("src=10.0.0.0/33").contains("bad address"));
        assert!(err("family=ipx").contains("use ipv4 or ipv6"));
        let e = err("status=ASSURED,SEEN");
        assert!(e.contains("unknown status bit `SEEN`"), "{e}");
        assert!(e.contains("SEEN_REPLY"), "{e}");
        assert!(err("state=OPEN").contains("use one of NONE SYN_SENT"));
        assert!(err("zone=70000").contains("bad zone"));
        assert!(err("mark=0x11/0xf").contains("write mark=0x1/0xf"));
        assert!(err("mark=zz").contains("bad mark"));
        assert!(err("udp").contains("has no `=`"));
        assert!(err("dport=").contains("has no value"));
        assert!(err("!proto=udp").contains("negates only status"));
    }

    #[test]
    fn terms_match_as_documented() {
        let u = udp_entry();
        let t = tcp_entry();
        let m = |f: &str, e: &CtEntry| CtFilter::parse(f).unwrap().matches(e);
        assert!(m("proto=udp dport=53 src=10.0.0.1", &u));
        assert!(!m("proto=udp dport=54", &u));
        assert!(m("proto=17 family=ipv4", &u));
        assert!(m("reply.sport=53 reply.dport=40000 reply.src=10.0.0.2", &u));
        assert!(m("orig.dst=10.0.0.0/24", &u) && !m("orig.dst=10.0.1.0/24", &u));
        assert!(!m("src=fd00::1", &u), "family mismatch never matches");
        assert!(m("src=fd00::/64 family=ipv6", &t));
        assert!(m("status=SEEN_REPLY", &u) && !m("status=SEEN_REPLY,ASSURED", &u));
        assert!(m("status=seen_reply,ASSURED", &t));
        assert!(m("!status=ASSURED", &u) && !m("!status=ASSURED", &t));
        assert!(m("!status=DYING,ASSURED", &u));
        assert!(m("state=ESTABLISHED", &t) && !m("state=ESTABLISHED", &u));
        assert!(!m("state=TIME_WAIT", &t));
        assert!(m("zone=5", &t) && m("zone=0", &u));
        assert!(m("mark=0x1234", &u) && m("mark=4660", &u) && !m("mark=0x1235", &u));
        assert!(m("mark=0x1200/0xff00", &u) && !m("mark=0x1300/0xff00", &u));
        assert!(m("mark=0/0", &t));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let f = CtFilter::parse(
            "mark=16 zone=3 state=established !status=dying status=SEEN_REPLY,ASSURED \
             reply.dport=9 dport=53 src=10.0.0.0/8 family=4 proto=17 proto=17",
        )
        .unwrap();
        assert_eq!(
            f.to_string(),
            "proto=udp family=ipv4 orig.src=10.0.0.0/8 orig.dport=53 reply.dport=9 \
             status=SEEN_REPLY,ASSURED !status=DYING state=ESTABLISHED zone=3 mark=0x10"
        );
        assert_eq!(CtFilter::parse(&f.to_string()).unwrap(), f);
        for text in [
            "",
            "proto=200 mark=0x1/0xff",
            "reply.src=fd00::1 orig.dst=::1/128 proto=icmpv6",
            "status=EXPECTED,HW_OFFLOAD zone=65535",
        ] {
            let f = CtFilter::parse(text).unwrap();
            assert_eq!(CtFilter::parse(&f.to_string()).unwrap(), f, "{text}");
        }
        assert_eq!(
            CtFilter::parse("orig.dst=::1/128").unwrap().to_string(),
            "orig.dst=::1"
        );
    }

    #[test]
    fn serde_uses_the_canonical_text() {
        let f: CtFilter = serde_json::from_str("\"dport=53 proto=udp\"").unwrap();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            "\"proto=udp orig.dport=53\""
        );
        let e = serde_json::from_str::<CtFilter>("\"dprt=53\"").unwrap_err();
        assert!(e.to_string().contains("unknown key `dprt`"), "{e}");
    }

    #[test]
    fn names_and_bits() {
        assert_eq!(tcp_state_name(3), "ESTABLISHED");
        assert_eq!(tcp_state_name(9), "SYN_SENT2");
        assert_eq!(tcp_state_name(42), "UNKNOWN");
        assert_eq!(tcp_state_number("time_wait"), Some(7));
        assert_eq!(status_bit("ASSURED"), Some(4));
        assert_eq!(status_bit("IPS_SEEN_REPLY"), Some(2));
        assert_eq!(status_bit("offload"), Some(1 << 14));
        assert_eq!(status_bit("NOPE"), None);
        assert_eq!(status_names(0), "0");
        assert_eq!(
            status_names(0xe | 1 << 20),
            "SEEN_REPLY|ASSURED|CONFIRMED|0x100000"
        );
    }

    #[test]
    fn icmp_inverse_keeps_id_and_answers_the_type() {
        let echo = CtTuple {
            src: v4("10.0.0.1"),
            dst: v4("10.0.0.2"),
            sport: 0x77,
            dport: 8 << 8,
        };
        let r = echo.inverse(IPPROTO_ICMP);
        assert_eq!(
            (r.src, r.dst, r.sport, r.dport),
            (echo.dst, echo.src, 0x77, 0)
        );
        let v6 = CtTuple {
            dport: 128 << 8,
            ..echo
        };
        assert_eq!(v6.inverse(IPPROTO_ICMPV6).dport, 129 << 8);
        let udp = echo.inverse(IPPROTO_UDP);
        assert_eq!((udp.sport, udp.dport), (8 << 8, 0x77));
    }

    #[test]
    fn fields_are_numeric_observations() {
        let u: std::collections::BTreeMap<String, f64> = udp_entry().fields().into_iter().collect();
        assert_eq!(u["timeout"], 30.0);
        assert_eq!(u["mark"], 0x1234 as f64);
        assert_eq!(u["orig.dport"], 53.0);
        assert_eq!(u["reply.sport"], 53.0);
        assert_eq!(u["status.SEEN_REPLY"], 1.0);
        assert_eq!(u["status.ASSURED"], 0.0);
        assert_eq!(u["proto"], 17.0);
        assert!(
            !u.keys().any(|k| k.starts_with("state.")),
            "no TCP state for UDP"
        );
        assert_eq!(
            u.keys().filter(|k| k.starts_with("status.")).count(),
            STATUS_BITS.len()
        );
        let t: std::collections::BTreeMap<String, f64> = tcp_entry().fields().into_iter().collect();
        assert_eq!(t["state.ESTABLISHED"], 1.0);
        assert_eq!(t["state.TIME_WAIT"], 0.0);
        assert_eq!(t["zone"], 5.0);
        assert_eq!(t["family"], 6.0);
    }

    #[test]
    fn insert_defaults() {
        let orig = CtTuple {
            src: v4("10.0.0.1"),
            dst: v4("10.0.0.2"),
            sport: 1,
            dport: 2,
        };
        let i = CtInsert::new(IPPROTO_TCP, orig, 60);
        assert_eq!(i.reply_tuple(), orig.inverse(IPPROTO_TCP));
        assert_eq!(i.effective_tcp_state(), Some(TCP_CONNTRACK_ESTABLISHED));
        assert_eq!(i.family(), 4);
        assert_eq!(
            CtInsert::new(IPPROTO_UDP, orig, 60).effective_tcp_state(),
            None
        );
    }
}
