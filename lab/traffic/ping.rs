//! `kind = "ping"`: ICMP / ICMPv6 echo over raw sockets.

use super::common::{ms, ns_of, recv_from, scaled};
use super::{packet, Metrics, TrafficContext};
use crate::model::steps::PingParams;
use anyhow::{bail, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub(crate) fn run(p: &PingParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let v6 = p.to.is_ipv6();
    let sock = crate::netns::run_in(ns, || {
        let s = if v6 {
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?
        } else {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?
        };
        if p.broadcast {
            s.set_broadcast(true)?;
        }
        s.set_read_timeout(Some(Duration::from_millis(5)))?;
        Ok(s)
    })?;
    let ids = Ids {
        base: (super::common::run_id() & 0xffff) as u16,
        fresh: p.fresh_id,
    };
    let dst = SockAddr::from(SocketAddr::new(p.to, 0));
    let interval = Duration::from_millis(p.interval_ms);
    let timeout = scaled(ctx, p.timeout_ms);
    let payload = vec![0xa5u8; p.size];

    let mut sent_at: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut rtts: BTreeMap<u16, Duration> = BTreeMap::new();
    let mut responders: HashSet<IpAddr> = HashSet::new();
    // Requests an ICMP error quoted (unreachable, too big, time exceeded): the
    // packet was dropped on the way, so no echo reply can follow.
    let mut refused: HashSet<u16> = HashSet::new();
    let (mut attempts, mut sent, mut send_errors, mut errors, mut replies) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut next = Instant::now();
    // `until` lowers the cap to what was sent when it starts to hold.
    let mut cap = p.count;
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if (ctx.interrupted)() {
            break;
        }
        if attempts < cap && now >= next && (ctx.enough)() {
            cap = attempts;
        }
        if attempts < cap && now >= next {
            let seq = attempts as u16;
            attempts += 1;
            let msg = packet::icmp_echo_request(v6, ids.of(seq), seq, &payload);
            let at = Instant::now();
            match sock.send_to(&msg, &dst) {
                Ok(_) => {
                    sent += 1;
                    sent_at.insert(seq, at);
                }
                // Only a broadcast route without SO_BROADCAST refuses a raw send with EACCES.
                Err(e) if e.raw_os_error() == Some(libc::EACCES) && !p.broadcast => bail!(
                    "to = {} is a broadcast address (the kernel refuses to send to it): set broadcast = true to ping every host on that link, or use a node's address",
                    p.to
                ),
                Err(_) => send_errors += 1,
            }
            next += interval;
            continue;
        }
        let last = sent_at.values().max().copied();
        // A broadcast may draw answers from hosts not heard yet: wait the full timeout.
        let all_answered = !p.broadcast
            && sent_at
                .keys()
                .all(|s| rtts.contains_key(s) || refused.contains(s));
        let done = attempts >= cap && last.is_none_or(|t| now >= t + timeout || all_answered);
        if done {
            break;
        }
        let Some((n, from)) = recv_from(&sock, &mut buf)? else {
            continue;
        };
        match classify(&buf[..n], v6) {
            Some(Reply::Echo { id, seq }) if ids.ours(id, seq) => {
                if let Some(t) = sent_at.get(&seq) {
                    let rtt = t.elapsed();
                    if rtt <= timeout {
                        replies += 1;
                        rtts.entry(seq).or_insert(rtt);
                        if let Some(a) = from.as_socket() {
                            responders.insert(a.ip());
                        }
                    }
                }
            }
            Some(Reply::Error { id, seq }) if ids.ours(id, seq) => {
                errors += 1;
                refused.insert(seq);
            }
            _ => {}
        }
    }
    let received = rtts.len() as f64;
    let mut m = Metrics::new();
    m.insert("sent".into(), f64::from(sent));
    m.insert("send_errors".into(), f64::from(send_errors));
    m.insert("received".into(), received);
    m.insert("lost".into(), f64::from(sent) - received);
    m.insert("replies".into(), f64::from(replies));
    m.insert("responders".into(), responders.len() as f64);
    m.insert("errors".into(), f64::from(errors));
    if !rtts.is_empty() {
        let total: f64 = rtts.values().map(|d| ms(*d)).sum();
        m.insert("rtt_avg_ms".into(), total / received);
    }
    Ok(m)
}

/// The ICMP identifiers of one run: one for all requests, or with `fresh` one per request
/// (base + sequence number), so each request is its own conntrack entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids {
    pub base: u16,
    pub fresh: bool,
}

impl Ids {
    /// The identifier of request `seq`.
    pub fn of(self, seq: u16) -> u16 {
        if self.fresh {
            self.base.wrapping_add(seq)
        } else {
            self.base
        }
    }

    /// Whether an echo (or quoted echo) with `id` and `seq` is one of ours.
    pub fn ours(self, id: u16, seq: u16) -> bool {
        id == self.of(seq)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Echo { id: u16, seq: u16 },
    Error { id: u16, seq: u16 },
}

/// Classifies a received ICMP message (IPv4 raw sockets deliver the IP header too;
/// IPv6 raw sockets deliver only the ICMPv6 message): an echo reply, or an error that
/// quotes an echo request, with that echo's identifier and sequence number.
pub(super) fn classify(buf: &[u8], v6: bool) -> Option<Reply> {
    let icmp = if v6 {
        buf
    } else {
        let hl = usize::from(buf.first()? & 0x0f) * 4;
        buf.get(hl..)?
    };
    let (echo_reply, errs): (u8, &[u8]) = if v6 {
        (129, &[1, 2, 3, 4])
    } else {
        (0, &[3, 11, 12])
    };
    let id_seq = |h: &[u8]| {
        (
            u16::from_be_bytes([h[4], h[5]]),
            u16::from_be_bytes([h[6], h[7]]),
        )
    };
    let ty = *icmp.first()?;
    if ty == echo_reply && icmp.len() >= 8 {
        let (id, seq) = id_seq(icmp);
        return Some(Reply::Echo { id, seq });
    }
    if errs.contains(&ty) {
        // The quoted packet: IP header of our request, then our echo header.
        let quoted = icmp.get(8..)?;
        let inner = if v6 {
            quoted.get(40..)?
        } else {
            quoted.get(usize::from(quoted.first()? & 0x0f) * 4..)?
        };
        let req = if v6 { 128 } else { 8 };
        if inner.len() >= 8 && inner[0] == req {
            let (id, seq) = id_seq(inner);
            return Some(Reply::Error { id, seq });
        }
    }
    None
}
