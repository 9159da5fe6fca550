//! `kind = "race"`: the same-5-tuple race of SCENARIOS.md §1. Every iteration sends K
//! packets with one identical 5-tuple at the same instant; the source port moves on by one
//! per iteration so each iteration races for a fresh conntrack entry.

use super::capture::Capture;
use super::common::{
    ms, ns_of, parse_tag, route_source, run_id, scaled, tagged_payload, udp_bound, unspecified,
};
use super::packet::{self, TcpFields};
use super::servers::UdpCounter;
use super::{Metrics, TrafficContext};
use crate::model::steps::{RaceMode, RaceParams, RaceProto};
use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seq of the SYN sent by `thread` in `iteration`: unique per packet (the tuple stays the
/// same), so a capture can tell copies of one packet from distinct packets.
fn syn_seq(run: u32, k: usize, iteration: u32, thread: usize) -> u32 {
    run.wrapping_mul(0x9e37_79b1) ^ (iteration * k as u32 + thread as u32)
}

struct Sent {
    sent: u64,
    errors: u64,
    iterations: u32,
    elapsed: Duration,
}

pub(crate) fn run(p: &RaceParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let k = p
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let run = run_id();
    let rport = p.receiver_port.unwrap_or(p.dport);
    enum Rx {
        Udp(UdpCounter),
        Syn(Box<SynCounter>),
    }
    let rx = match &p.receiver {
        None => None,
        Some(r) => {
            let rns = ns_of(ctx, r)?;
            Some(match p.proto {
                RaceProto::Udp => Rx::Udp(UdpCounter::start(
                    rns,
                    SocketAddr::new(unspecified(p.to), rport),
                    run,
                    false,
                )?),
                proto => Rx::Syn(Box::new(SynCounter::start(
                    rns,
                    Matcher {
                        proto,
                        port: rport,
                        run,
                        base: syn_seq(run, k, 0, 0),
                        k,
                    },
                    k,
                    p.iterations,
                )?)),
            })
        }
    };
    let s = match p.mode {
        RaceMode::Raw => send_raw(p, ctx, ns, k, run)?,
        RaceMode::Socket | RaceMode::Sendmmsg => send_socket(p, ctx, ns, k, run)?,
    };
    let mut m = Metrics::new();
    m.insert("iterations".into(), f64::from(s.iterations));
    m.insert("sent".into(), s.sent as f64);
    m.insert("send_errors".into(), s.errors as f64);
    m.insert("threads".into(), k as f64);
    if s.elapsed > Duration::ZERO {
        m.insert("pps".into(), s.sent as f64 / s.elapsed.as_secs_f64());
    }
    let grace = scaled(ctx, p.timeout_ms);
    let quiet = super::common::settle_quiet(ctx, grace);
    let per_iter = match rx {
        None => None,
        Some(Rx::Udp(c)) => {
            let got = c.finish(s.sent, grace, quiet);
            Some((
                got.unique,
                got.per_flow.values().filter(|&&n| n as usize >= k).count(),
            ))
        }
        Some(Rx::Syn(c)) => Some(c.finish(s.sent, grace, quiet)),
    };
    if let Some((received, complete)) = per_iter {
        m.insert("received".into(), received as f64);
        m.insert("received_iterations_complete".into(), complete as f64);
    }
    m.insert("send_ms".into(), ms(s.elapsed));
    Ok(m)
}

/// Mode "raw": K pinned threads, each with its own IPPROTO_RAW socket in the node.
fn send_raw(p: &RaceParams, ctx: &TrafficContext, ns: &str, k: usize, run: u32) -> Result<Sent> {
    let src = match p.src {
        Some(s) => s,
        None => crate::netns::run_in(ns, || route_source(p.to))?,
    };
    let cpus = allowed_cpus();
    let barrier = SpinBarrier::new(k, k <= cpus.len());
    let (stop, failed) = (AtomicBool::new(false), AtomicBool::new(false));
    let (sent, errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let iterations = AtomicU64::new(0);
    let gap = Duration::from_millis(p.gap_ms);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..k {
            let (barrier, stop, failed, sent, errors, first_error, iterations, cpus) = (
                &barrier,
                &stop,
                &failed,
                &sent,
                &errors,
                &first_error,
                &iterations,
                &cpus,
            );
            scope.spawn(move || {
                let setup = (|| -> Result<Socket> {
                    crate::netns::enter(ns)?;
                    pin_to(cpus[t % cpus.len()])?;
                    let d = if src.is_ipv4() {
                        Domain::IPV4
                    } else {
                        Domain::IPV6
                    };
                    // IPPROTO_RAW implies IP_HDRINCL, for AF_INET6 too (inet6_create).
                    Socket::new(d, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                        .context("raw socket")
                })();
                let sock = match setup {
                    Ok(s) => Some(s),
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        first_error.lock().unwrap().get_or_insert(e);
                        None
                    }
                };
                barrier.wait();
                let Some(sock) = sock.filter(|_| !failed.load(Ordering::SeqCst)) else {
                    return;
                };
                let dst = SockAddr::from(SocketAddr::new(p.to, 0));
                for i in 0..p.iterations {
                    // Two barriers: the leader decides whether to go on, then all send at once.
                    if barrier.wait() {
                        stop.store(ctx.stop_starting() || barrier.broken(), Ordering::SeqCst);
                    }
                    let pkt = build(p, src, run, k, i, t);
                    barrier.wait();
                    if stop.load(Ordering::SeqCst) || barrier.broken() {
                        return;
                    }
                    match sock.send_to(&pkt, &dst) {
                        Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    if t == 0 {
                        iterations.fetch_add(1, Ordering::Relaxed);
                    }
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e.context(format!("race: thread setup in node '{}'", p.from)));
    }
    Ok(Sent {
        sent: sent.into_inner(),
        errors: errors.into_inner(),
        iterations: iterations.into_inner() as u32,
        elapsed,
    })
}

/// A barrier whose waiters spin instead of sleeping in a futex: a futex wake-up adds tens
/// of microseconds of skew between threads, enough for one packet to be confirmed before
/// its twin reaches conntrack. Spins only while every thread has its own CPU; waits are
/// bounded (10 s), after which the barrier is broken and everyone stops.
struct SpinBarrier {
    n: usize,
    spin: bool,
    count: AtomicUsize,
    generation: AtomicUsize,
    broken: AtomicBool,
}

impl SpinBarrier {
    fn new(n: usize, spin: bool) -> Self {
        SpinBarrier {
            n,
            spin,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        }
    }

    /// Returns true for exactly one thread per round (the last to arrive).
    fn wait(&self) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return true;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == g && !self.broken() {
            spins = spins.wrapping_add(1);
            if self.spin {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            if spins % 4096 == 0 && start.elapsed() > Duration::from_secs(10) {
                self.broken.store(true, Ordering::SeqCst);
            }
        }
        false
    }

    fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

/// The packet thread `t` sends in iteration `i`: same tuple for all t, distinct payload/seq.
fn build(p: &RaceParams, src: IpAddr, run: u32, k: usize, i: u32, t: usize) -> Vec<u8> {
    let sport = p.sport + i as u16;
    match p.proto {
        RaceProto::Udp => packet::udp_packet(
            src,
            p.to,
            sport,
            p.dport,
            &tagged_payload(run, i, t as u32, p.payload),
        ),
        RaceProto::IcmpEcho => {
            let v6 = src.is_ipv6();
            let seq = (i as usize * k + t) as u16;
            let mut m = packet::icmp_echo_request(
                v6,
                sport,
                seq,
                &tagged_payload(run, i, t as u32, p.payload),
            );
            let proto = if v6 {
                // IPPROTO_RAW sends the packet as is: the ICMPv6 checksum is ours.
                let c = packet::l4_checksum(src, p.to, PROTO_ICMPV6, &m);
                m[2..4].copy_from_slice(&c.to_be_bytes());
                PROTO_ICMPV6
            } else {
                PROTO_ICMP
            };
            packet::ip_packet(src, p.to, proto, 64, &m)
        }
        RaceProto::SctpInit => packet::ip_packet(
            src,
            p.to,
            PROTO_SCTP,
            64,
            &sctp_init(sport, p.dport, syn_seq(run, k, i, t)),
        ),
        RaceProto::Gre => {
            let pl = tagged_payload(run, i, t as u32, p.payload);
            let mut g = vec![0x20, 0x01, 0x88, 0x0b];
            g.extend_from_slice(&(pl.len() as u16).to_be_bytes());
            g.extend_from_slice(&sport.to_be_bytes());
            g.extend_from_slice(&pl);
            packet::ip_packet(src, p.to, PROTO_GRE, 64, &g)
        }
        RaceProto::TcpSyn => {
            let f = TcpFields {
                sport,
                dport: p.dport,
                seq: syn_seq(run, k, i, t),
                ack: 0,
                flags: packet::TCP_SYN,
                window: 64240,
            };
            packet::tcp_packet(src, p.to, &f, &[])
        }
    }
}

const PROTO_ICMP: u8 = 1;
const PROTO_GRE: u8 = 47;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

/// An SCTP packet with one INIT chunk (verification tag 0, initiate tag `tag`).
fn sctp_init(sport: u16, dport: u16, tag: u32) -> Vec<u8> {
    let mut s = Vec::with_capacity(32);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0; 8]); // verification tag 0, checksum (below)
    s.extend_from_slice(&[1, 0, 0, 20]); // INIT, flags, length
    s.extend_from_slice(&tag.to_be_bytes());
    s.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    s.extend_from_slice(&[0, 10, 0, 10]); // outbound / inbound streams
    s.extend_from_slice(&tag.to_be_bytes()); // initial TSN
    let c = crc32c(&s);
    // The CRC32c goes on the wire least significant byte first (RFC 4960 appendix B).
    s[8..12].copy_from_slice(&c.to_le_bytes());
    s
}

/// CRC32c (Castagnoli, reflected, as SCTP uses it).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The IP protocol and L4 bytes of an IPv4/IPv6 packet (no IPv6 extension headers).
fn l4_of(l3: &[u8]) -> Option<(u8, &[u8])> {
    match l3.first()? >> 4 {
        4 => {
            let hl = usize::from(l3[0] & 0x0f) * 4;
            let tl = usize::from(u16::from_be_bytes([*l3.get(2)?, *l3.get(3)?])).min(l3.len());
            let frag = u16::from_be_bytes([*l3.get(6)?, *l3.get(7)?]) & 0x1fff;
            (frag == 0).then_some(())?;
            Some((*l3.get(9)?, l3.get(hl..tl)?))
        }
        6 => Some((*l3.get(6)?, l3.get(40..)?)),
        _ => None,
    }
}

/// Recognises one raced packet in a capture and returns its index (iteration * K + thread).
struct Matcher {
    proto: RaceProto,
    port: u16,
    run: u32,
    base: u32,
    k: usize,
}

impl Matcher {
    fn index(&self, l3: &[u8]) -> Option<usize> {
        let tag =
            |pl: &[u8]| parse_tag(pl, self.run).map(|(i, t)| i as usize * self.k + t as usize);
        match self.proto {
            RaceProto::Udp => None,
            RaceProto::TcpSyn => {
                let t = packet::parse_tcp(l3)?;
                (t.dport == self.port
                    && t.flags & (packet::TCP_SYN | packet::TCP_ACK) == packet::TCP_SYN)
                    .then_some((t.seq ^ self.base) as usize)
            }
            RaceProto::IcmpEcho => match l4_of(l3)? {
                (PROTO_ICMP, m) if m.first() == Some(&8) => tag(m.get(8..)?),
                (PROTO_ICMPV6, m) if m.first() == Some(&128) => tag(m.get(8..)?),
                _ => None,
            },
            RaceProto::SctpInit => match l4_of(l3)? {
                (PROTO_SCTP, s)
                    if s.len() >= 32
                        && s[12] == 1
                        && u16::from_be_bytes([s[2], s[3]]) == self.port =>
                {
                    let tag = u32::from_be_bytes([s[16], s[17], s[18], s[19]]);
                    Some((tag ^ self.base) as usize)
                }
                _ => None,
            },
            RaceProto::Gre => match l4_of(l3)? {
                (PROTO_GRE, g) if g.len() >= 8 && g[..4] == [0x20, 0x01, 0x88, 0x0b] => {
                    tag(&g[8..])
                }
                _ => None,
            },
        }
    }
}

/// Modes "socket" and "sendmmsg": one connected UDP socket per iteration, K datagrams.
fn send_socket(p: &RaceParams, ctx: &TrafficContext, ns: &str, k: usize, run: u32) -> Result<Sent> {
    let gap = Duration::from_millis(p.gap_ms);
    let mmsg = p.mode == RaceMode::Sendmmsg;
    crate::netns::run_in(ns, || {
        let (mut sent, mut errors, mut iterations) = (0u64, 0u64, 0u32);
        let start = Instant::now();
        for i in 0..p.iterations {
            if ctx.stop_starting() {
                break;
            }
            let s = udp_bound(SocketAddr::new(unspecified(p.to), p.sport + i as u16))?;
            s.connect(&SocketAddr::new(p.to, p.dport).into())?;
            let payloads: Vec<Vec<u8>> = (0..k)
                .map(|t| tagged_payload(run, i, t as u32, p.payload))
                .collect();
            if mmsg {
                let n = sendmmsg(&s, &payloads);
                sent += n as u64;
                errors += (k - n) as u64;
            } else {
                for pl in &payloads {
                    match s.send(pl) {
                        Ok(_) => sent += 1,
                        Err(_) => errors += 1,
                    }
                }
            }
            iterations += 1;
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
        Ok(Sent {
            sent,
            errors,
            iterations,
            elapsed: start.elapsed(),
        })
    })
}

/// One sendmmsg() call on a connected socket; returns how many datagrams the kernel took.
fn sendmmsg(s: &Socket, payloads: &[Vec<u8>]) -> usize {
    let mut iovs: Vec<libc::iovec> = payloads
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: zeroed msghdr is valid (no name, no control); iov outlives the call.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: msgs and the buffers they point to are valid for the duration of the call.
    let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    n.max(0) as usize
}

/// CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok();
    let v: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.as_ref().is_some_and(|s| s.is_set(c).unwrap_or(false)))
        .collect();
    if v.is_empty() {
        vec![0]
    } else {
        v
    }
}

fn pin_to(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(|e| anyhow!("cpu {cpu}: {e}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pin to cpu {cpu}"))
}

/// Counts raced non-UDP packets arriving in a node with an AF_PACKET capture (by their
/// unique SYN seq / SCTP initiate tag / payload tag, which NAT leaves alone), so no
/// listener has to answer them.
struct SynCounter {
    stop: std::sync::Arc<AtomicBool>,
    seen: std::sync::Arc<AtomicU64>,
    handle: std::thread::JoinHandle<(u64, usize)>,
}

impl SynCounter {
    fn start(ns: &str, matcher: Matcher, k: usize, iterations: u32) -> Result<Self> {
        let cap = Capture::open_in(ns)?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let seen = std::sync::Arc::new(AtomicU64::new(0));
        let (st, se) = (stop.clone(), seen.clone());
        let handle = std::thread::spawn(move || {
            let mut got = HashSet::new();
            let mut per_iter = vec![0usize; iterations as usize];
            let deadline = Instant::now() + Duration::from_secs(3600);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Some(pkt) = cap.next(Duration::from_millis(20)) else {
                    continue;
                };
                if pkt.outgoing {
                    continue;
                }
                let Some(idx) = matcher.index(&pkt.data) else {
                    continue;
                };
                if idx < k * iterations as usize && got.insert(idx) {
                    per_iter[idx / k] += 1;
                    se.store(got.len() as u64, Ordering::Relaxed);
                }
            }
            (
                got.len() as u64,
                per_iter.iter().filter(|&&n| n >= k).count(),
            )
        });
        Ok(SynCounter { stop, seen, handle })
    }

    fn finish(self, expected: u64, grace: Duration, quiet: Duration) -> (u64, usize) {
        super::common::wait_settled(grace, quiet, expected, || self.seen.load(Ordering::Relaxed));
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn raced_packets_are_recognised() {
        let (src, dst): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let k = 2;
        for proto in [
            RaceProto::TcpSyn,
            RaceProto::IcmpEcho,
            RaceProto::SctpInit,
            RaceProto::Gre,
        ] {
            let p: RaceParams = toml::from_str(&format!(
                "from = \"a\"\nto = \"{dst}\"\nproto = \"{}\"",
                proto.as_str()
            ))
            .unwrap();
            let m = Matcher {
                proto,
                port: 53,
                run: 7,
                base: syn_seq(7, k, 0, 0),
                k,
            };
            assert_eq!(m.index(&build(&p, src, 7, k, 5, 1)), Some(11), "{proto:?}");
        }
    }

    #[test]
    fn syn_seqs_unique_and_decodable() {
        let k = 3;
        let base = syn_seq(42, k, 0, 0);
        let mut seen = HashSet::new();
        for i in 0..100 {
            for t in 0..k {
                let s = syn_seq(42, k, i, t);
                assert!(seen.insert(s));
                assert_eq!((s ^ base) as usize, i as usize * k + t);
            }
        }
    }
}
