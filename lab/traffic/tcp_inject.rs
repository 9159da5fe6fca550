//! `kind = "tcp-inject"` (SCENARIOS.md §3): segments injected from the server node into a
//! live TCP connection, at seq/ack offsets relative to the server socket's live values.

use super::capture::{Capture, Captured};
use super::common::{ns_of, scaled, tcp_listener, unspecified};
use super::packet::{self, TcpFields, TcpSeen};
use super::{Metrics, TrafficContext};
use crate::model::steps::TcpInjectParams;
use anyhow::{anyhow, bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The connection under test and what each side sees.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    client_local: SocketAddr,
    server_local: SocketAddr,
    server_peer: SocketAddr,
}

pub(crate) fn run(p: &TcpInjectParams, ctx: &TrafficContext) -> Result<Metrics> {
    let (cns, sns) = (ns_of(ctx, &p.client)?, ns_of(ctx, &p.server)?);
    let settle = scaled(ctx, p.settle_ms);
    let client_cap = Capture::open_in(cns)?;
    let server_cap = Capture::open_in(sns)?;
    let conn = establish(p, ctx, cns, sns)?;
    let raw = crate::netns::run_in(sns, || {
        let d = if p.to.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        Ok(Socket::new(
            d,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?)
    })?;
    let mut m = Metrics::new();
    let (mut injected, mut reached, mut rsts, mut in_window) = (0u32, 0u32, 0u32, 0u32);
    for (i, inj) in p.injections.iter().enumerate() {
        if (ctx.interrupted)() {
            break;
        }
        let (snd_nxt, rcv_nxt) = live_seqs(&conn.server)?;
        let f = TcpFields {
            sport: conn.server_local.port(),
            dport: conn.server_peer.port(),
            seq: offset(snd_nxt, inj.seq_offset),
            ack: offset(rcv_nxt, inj.ack_offset),
            flags: packet::parse_tcp_flags(&inj.flags).map_err(anyhow::Error::msg)?,
            window: 502,
        };
        let pkt = packet::tcp_packet(
            conn.server_local.ip(),
            conn.server_peer.ip(),
            &f,
            &vec![b'i'; inj.payload],
        );
        client_cap.drain(Duration::from_millis(1), Duration::from_millis(50));
        server_cap.drain(Duration::from_millis(1), Duration::from_millis(50));
        raw.send_to(
            &pkt,
            &SockAddr::from(SocketAddr::new(conn.server_peer.ip(), 0)),
        )
        .with_context(|| format!("inject segment {i}"))?;
        injected += 1;
        let (at_client, at_server) = reactions(ctx, &client_cap, &server_cap, settle, |c, s| {
            let reached = c
                .iter()
                .any(|c| is_injected(c, &f, conn.client_local.port(), p.port, inj.payload));
            outcome_known(reached, s, &conn)
        });
        let hit = at_client
            .iter()
            .any(|c| is_injected(c, &f, conn.client_local.port(), p.port, inj.payload));
        let rst: Vec<TcpSeen> = at_server.iter().filter_map(|c| rst_to(c, &conn)).collect();
        let exact = rst.iter().any(|t| t.seq == rcv_nxt);
        reached += u32::from(hit);
        rsts += u32::from(!rst.is_empty());
        in_window += u32::from(exact);
        m.insert(format!("inj{i}.reached_client"), f64::from(u8::from(hit)));
        m.insert(
            format!("inj{i}.rst_to_server"),
            f64::from(u8::from(!rst.is_empty())),
        );
        m.insert(
            format!("inj{i}.rst_seq_in_window"),
            f64::from(u8::from(exact)),
        );
        if let Some(t) = rst.first() {
            m.insert(
                format!("inj{i}.rst_seq_offset"),
                f64::from(t.seq.wrapping_sub(rcv_nxt) as i32),
            );
        }
    }
    m.insert("injected".into(), f64::from(injected));
    m.insert("reached_client".into(), f64::from(reached));
    m.insert("rst_to_server".into(), f64::from(rsts));
    m.insert("rst_seq_in_window".into(), f64::from(in_window));
    m.insert(
        "server_reset".into(),
        f64::from(u8::from(is_reset(&conn.server))),
    );
    m.insert(
        "client_reset".into(),
        f64::from(u8::from(is_reset(&conn.client))),
    );
    Ok(m)
}

/// How long the captures must stay quiet after the outcome is known: the packet socket
/// sees a segment in `__netif_receive_skb` just before TCP handles it, so this lets the
/// socket state (read by `is_reset`) and any trailing packet catch up.
const QUIET_AFTER_OUTCOME: Duration = Duration::from_millis(5);

/// Collects what both captures see after an injection until `known(at_client, at_server)`
/// holds and the captures then stay quiet for [`QUIET_AFTER_OUTCOME`], or `cap` (the step's
/// `settle_ms`) passes: a segment that draws no reaction at all (dropped as INVALID, or a
/// rate-limited dupack) is the only case that waits the whole cap.
fn reactions(
    ctx: &TrafficContext,
    client_cap: &Capture,
    server_cap: &Capture,
    cap: Duration,
    known: impl Fn(&[Captured], &[Captured]) -> bool,
) -> (Vec<Captured>, Vec<Captured>) {
    let end = Instant::now() + cap;
    let (mut at_client, mut at_server) = (Vec::new(), Vec::new());
    let mut quiet_since: Option<Instant> = None;
    loop {
        let mut new = false;
        while let Some(c) = client_cap.next(Duration::ZERO) {
            at_client.push(c);
            new = true;
        }
        let left = end.saturating_duration_since(Instant::now());
        if let Some(c) = server_cap.next(left.min(Duration::from_millis(1))) {
            at_server.push(c);
            new = true;
        }
        let now = Instant::now();
        if new {
            quiet_since = None;
        }
        if quiet_since.is_none() && known(&at_client, &at_server) {
            quiet_since = Some(now);
        }
        let settled = quiet_since.is_some_and(|t| now >= t + QUIET_AFTER_OUTCOME);
        if settled || now >= end || (ctx.interrupted)() {
            return (at_client, at_server);
        }
    }
}

/// The outcome of one injection is known once the server has a RST from its peer (the
/// host's or the client's), or the segment reached the client and the client answered it
/// (its ACK arrived at the server).
fn outcome_known(reached_client: bool, at_server: &[Captured], conn: &Conn) -> bool {
    let from_peer: Vec<TcpSeen> = at_server
        .iter()
        .filter_map(|c| from_peer(c, conn))
        .collect();
    from_peer.iter().any(|t| t.flags & packet::TCP_RST != 0)
        || reached_client && !from_peer.is_empty()
}

fn offset(base: u32, off: i64) -> u32 {
    (i64::from(base) + off).rem_euclid(1 << 32) as u32
}

/// Opens the connection and exchanges a few bytes each way, so both sides have sent data.
fn establish(p: &TcpInjectParams, ctx: &TrafficContext, cns: &str, sns: &str) -> Result<Conn> {
    let listener = crate::netns::run_in(sns, || {
        tcp_listener(SocketAddr::new(unspecified(p.to), p.port))
    })?;
    let sock = crate::netns::run_in(cns, || {
        Ok(Socket::new(
            super::common::domain(p.to),
            Type::STREAM,
            Some(Protocol::TCP),
        )?)
    })?;
    sock.connect_timeout(
        &SocketAddr::new(p.to, p.port).into(),
        scaled(ctx, p.connect_timeout_ms),
    )
    .with_context(|| {
        format!(
            "tcp-inject: connect from '{}' to {}:{}",
            p.client, p.to, p.port
        )
    })?;
    listener.set_nonblocking(true)?;
    // connect() returned, so the handshake is done: block in accept for at most the cap.
    listener.set_nonblocking(false)?;
    listener.set_read_timeout(Some(scaled(ctx, p.connect_timeout_ms)))?;
    let (server, _) = listener
        .accept()
        .map_err(|e| anyhow!(e).context("tcp-inject: accept"))?;
    server.set_nonblocking(false)?;
    let mut server = TcpStream::from(server);
    let mut client = TcpStream::from(sock);
    let io = Some(scaled(ctx, 3000));
    for s in [&server, &client] {
        s.set_read_timeout(io)?;
        s.set_nodelay(true)?;
    }
    let mut b = [0u8; 5];
    client.write_all(b"hello")?;
    server.read_exact(&mut b)?;
    server.write_all(b"world")?;
    client.read_exact(&mut b)?;
    quickack(&client);
    // Quiescent once both sides have every byte they sent acknowledged (the last ACK has
    // crossed the router's conntrack on its way); at most 50 ms as before.
    super::common::wait_until(
        ctx.interrupted,
        scaled(ctx, 50),
        super::common::POLL_EVERY,
        || unacked(&server) == Some(0) && unacked(&client) == Some(0),
    );
    let (server_local, server_peer) = (server.local_addr()?, server.peer_addr()?);
    Ok(Conn {
        client_local: client.local_addr()?,
        client,
        server,
        server_local,
        server_peer,
    })
}

/// (snd_nxt, rcv_nxt) of a quiescent socket, read through TCP_REPAIR (CAP_NET_ADMIN):
/// TCP_QUEUE_SEQ returns write_seq for the send queue and rcv_nxt for the receive queue
/// (`do_tcp_getsockopt`). Leaving repair mode with TCP_REPAIR_OFF_NO_WP sends nothing.
fn live_seqs(s: &TcpStream) -> Result<(u32, u32)> {
    const TCP_REPAIR_ON: libc::c_int = 1;
    const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
    const TCP_RECV_QUEUE: libc::c_int = 1;
    const TCP_SEND_QUEUE: libc::c_int = 2;
    let fd = s.as_raw_fd();
    let set = |opt, v: libc::c_int| -> Result<()> {
        // SAFETY: setsockopt with an int value.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                opt,
                (&v as *const libc::c_int).cast(),
                4,
            )
        };
        if r < 0 {
            bail!(
                "setsockopt({opt}, {v}): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    };
    let get = || -> Result<u32> {
        let mut v: u32 = 0;
        let mut len: libc::socklen_t = 4;
        // SAFETY: getsockopt into a u32.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUEUE_SEQ,
                (&mut v as *mut u32).cast(),
                &mut len,
            )
        };
        if r < 0 {
            bail!(
                "getsockopt(TCP_QUEUE_SEQ): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(v)
    };
    set(libc::TCP_REPAIR, TCP_REPAIR_ON)
        .context("TCP_REPAIR on the server socket (needs CAP_NET_ADMIN)")?;
    let r = (|| {
        set(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        let snd = get()?;
        set(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        Ok((snd, get()?))
    })();
    set(libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)?;
    // Leaving repair mode sets sk_reuse = SK_NO_REUSE (do_tcp_setsockopt(), TCP_REPAIR
    // case): without SO_REUSEADDR again, a TIME_WAIT this socket ends in refuses the
    // next step's listener on the port (EADDRINUSE; seen when the server side closed
    // first).
    socket2::SockRef::from(s)
        .set_reuse_address(true)
        .context("SO_REUSEADDR on the server socket after TCP_REPAIR")?;
    r
}

/// Is this capture the injected segment arriving at the client's socket?
fn is_injected(
    c: &Captured,
    f: &TcpFields,
    client_port: u16,
    server_port: u16,
    len: usize,
) -> bool {
    !c.outgoing
        && packet::parse_tcp(&c.data).is_some_and(|t| {
            t.dport == client_port
                && t.sport == server_port
                && t.seq == f.seq
                && t.ack == f.ack
                && t.flags == f.flags
                && t.payload_len == len
        })
}

/// A RST arriving at the server's socket address from its peer's address.
fn rst_to(c: &Captured, conn: &Conn) -> Option<TcpSeen> {
    from_peer(c, conn).filter(|t| t.flags & packet::TCP_RST != 0)
}

/// A TCP segment arriving at the server's socket address from its peer's address.
fn from_peer(c: &Captured, conn: &Conn) -> Option<TcpSeen> {
    let t = packet::parse_tcp(&c.data)?;
    let hit = !c.outgoing
        && t.dport == conn.server_local.port()
        && t.sport == conn.server_peer.port()
        && t.dst == conn.server_local.ip()
        && t.src == conn.server_peer.ip();
    hit.then_some(t)
}

/// TCP_QUICKACK: the ACK for what was just read leaves now, not after the delayed-ACK
/// timer (40 ms minimum).
fn quickack(s: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with an int value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
}

/// Segments sent but not yet acknowledged (`tcpi_unacked`), None if TCP_INFO fails.
fn unacked(s: &TcpStream) -> Option<u32> {
    tcp_info(s).map(|i| i.tcpi_unacked)
}

/// True when the socket went to CLOSE (reset) according to TCP_INFO.
fn is_reset(s: &TcpStream) -> bool {
    const TCP_CLOSE: u8 = 7;
    tcp_info(s).is_some_and(|i| i.tcpi_state == TCP_CLOSE)
}

fn tcp_info(s: &TcpStream) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain data; the kernel writes at most len bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid pointers and length.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::offset;

    #[test]
    fn offsets_wrap() {
        assert_eq!(offset(10, -20), u32::MAX - 9);
        assert_eq!(offset(u32::MAX, 1), 0);
        assert_eq!(offset(1000, 0), 1000);
    }
}

#[cfg(all(test, feature = "lab"))]
mod root_tests {
    use super::*;

    /// Reading the live sequence numbers through TCP_REPAIR leaves SO_REUSEADDR on (the
    /// kernel clears it when repair mode ends), so the socket's TIME_WAIT cannot refuse
    /// the next listener on its port.
    #[test]
    fn live_seqs_keeps_so_reuseaddr() {
        let Some(ns) = crate::netns::throwaway::ThrowawayNetns::new("repair") else {
            return;
        };
        let r = crate::netns::run_in(&ns.0, || {
            let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
            let listener = super::super::common::tcp_listener(addr)?;
            let client = std::net::TcpStream::connect(addr)?;
            let (server, _) = listener.accept()?;
            let server = TcpStream::from(server);
            live_seqs(&server)?;
            let reuse = socket2::SockRef::from(&server).reuse_address()?;
            drop(client);
            Ok(reuse)
        });
        assert!(r.unwrap(), "SO_REUSEADDR is off after TCP_REPAIR");
    }
}
