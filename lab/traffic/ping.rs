//! `kind = "ping"`: ICMP / ICMPv6 echo over raw sockets.

use super::common::{ms, ns_of, recv_from, scaled};
use super::{packet, Metrics, TrafficContext};
use crate::model::steps::PingParams;
use anyhow::Result;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::SocketAddr;
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
        s.set_read_timeout(Some(Duration::from_millis(5)))?;
        Ok(s)
    })?;
    let id = (super::common::run_id() & 0xffff) as u16;
    let dst = SockAddr::from(SocketAddr::new(p.to, 0));
    let interval = scaled(ctx, p.interval_ms);
    let timeout = scaled(ctx, p.timeout_ms);
    let payload = vec![0xa5u8; p.size];

    let mut sent_at: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut rtts: BTreeMap<u16, Duration> = BTreeMap::new();
    let (mut sent, mut errors) = (0u32, 0u32);
    let mut next = Instant::now();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if (ctx.interrupted)() {
            break;
        }
        if sent < p.count && now >= next {
            let seq = sent as u16;
            let msg = packet::icmp_echo_request(v6, id, seq, &payload);
            sent_at.insert(seq, Instant::now());
            if sock.send_to(&msg, &dst).is_ok() {
                sent += 1;
            } else {
                sent_at.remove(&seq);
                sent += 1;
                errors += 1;
            }
            next += interval;
            continue;
        }
        let last = sent_at.values().max().copied();
        let done = sent >= p.count
            && last.is_none_or(|t| now >= t + timeout || rtts.len() == sent_at.len());
        if done {
            break;
        }
        let Some((n, _)) = recv_from(&sock, &mut buf)? else {
            continue;
        };
        match classify(&buf[..n], v6, id) {
            Some(Reply::Echo(seq)) => {
                if let Some(t) = sent_at.get(&seq) {
                    let rtt = t.elapsed();
                    if rtt <= timeout {
                        rtts.entry(seq).or_insert(rtt);
                    }
                }
            }
            Some(Reply::Error) => errors += 1,
            None => {}
        }
    }
    let received = rtts.len() as f64;
    let mut m = Metrics::new();
    m.insert("sent".into(), f64::from(sent));
    m.insert("received".into(), received);
    m.insert("lost".into(), f64::from(sent) - received);
    m.insert("errors".into(), f64::from(errors));
    if !rtts.is_empty() {
        let total: f64 = rtts.values().map(|d| ms(*d)).sum();
        m.insert("rtt_avg_ms".into(), total / received);
    }
    Ok(m)
}

enum Reply {
    Echo(u16),
    Error,
}

/// Classifies a received ICMP message (IPv4 raw sockets deliver the IP header too;
/// IPv6 raw sockets deliver only the ICMPv6 message).
fn classify(buf: &[u8], v6: bool, id: u16) -> Option<Reply> {
    let icmp = if v6 {
        buf
    } else {
        let hl = usize::from(buf.first()? & 0x0f) * 4;
        buf.get(hl..)?
    };
    let (ty, echo_reply, errs): (u8, u8, &[u8]) = if v6 {
        (icmp[0], 129, &[1, 2, 3, 4])
    } else {
        (icmp[0], 0, &[3, 11, 12])
    };
    if ty == echo_reply && icmp.len() >= 8 && u16::from_be_bytes([icmp[4], icmp[5]]) == id {
        return Some(Reply::Echo(u16::from_be_bytes([icmp[6], icmp[7]])));
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
        if inner.len() >= 6 && inner[0] == req && u16::from_be_bytes([inner[4], inner[5]]) == id {
            return Some(Reply::Error);
        }
    }
    None
}
