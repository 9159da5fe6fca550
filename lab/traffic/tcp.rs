//! `kind = "tcp"`: TCP connections that each send a number of bytes to a sink, which
//! answers with the byte count it read (so "completed" means delivered end to end).

use super::common::{bind_source, domain, insert_percentiles, ms, ns_of, scaled, unspecified};
use super::connects::{Connects, Outcome};
use super::servers::{TcpMode, TcpServer};
use super::{Metrics, TrafficContext};
use crate::model::steps::TcpParams;
use anyhow::Result;
use socket2::{Protocol, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

#[derive(Default)]
struct Counts {
    connected: u32,
    refused: u32,
    timed_out: u32,
    other: u32,
    given_up: u32,
    reset: u32,
    completed: u32,
    confirmed: u64,
}

pub(crate) fn run(p: &TcpParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let io = scaled(ctx, p.io_timeout_ms);
    let server = match &p.server {
        Some(node) => Some(TcpServer::start(
            Some(ns_of(ctx, node)?),
            SocketAddr::new(unspecified(p.to), p.port),
            TcpMode::Sink,
            io,
        )?),
        None => None,
    };
    let timeout = scaled(ctx, p.connect_timeout_ms);
    let dst = SocketAddr::new(p.to, p.port).into();
    let mut c = Counts::default();
    let mut attempted = 0u32;
    let mut connect_ms = Vec::new();
    // Stop the server on every way out, also when a socket cannot be made or bound.
    let res = (|| -> Result<()> {
        for _ in 0..p.connections {
            if ctx.stop_starting() {
                break;
            }
            attempted += 1;
            let s = crate::netns::run_in(ns, || {
                Ok(Socket::new(
                    domain(p.to),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?)
            })?;
            if let Some(src) = p.src {
                bind_source(&s, src, 0, &p.from)?;
            }
            // Given up when `until` holds (or a `join` with `stop` needs it no longer).
            match Connects::one(s, &dst, timeout, || ctx.stop_starting())? {
                Some((s, Outcome::Connected(took))) => {
                    connect_ms.push(ms(took));
                    c.connected += 1;
                    s.set_nonblocking(false)?;
                    if p.hold_ms > 0 {
                        // Until the cap, or a `join` with `stop` needs it no longer.
                        let never_interrupted = || false;
                        super::common::wait_until(
                            &never_interrupted,
                            scaled(ctx, p.hold_ms),
                            Duration::from_millis(5),
                            || ctx.stop_starting(),
                        );
                    }
                    transfer(s, p.bytes, io, &mut c);
                }
                Some((_, Outcome::TimedOut)) => c.timed_out += 1,
                Some((_, Outcome::Refused)) => c.refused += 1,
                Some((_, Outcome::Failed)) => c.other += 1,
                None => c.given_up += 1,
            }
        }
        Ok(())
    })();
    if let Some(s) = server {
        s.stop();
    }
    res?;
    let mut m = Metrics::new();
    m.insert("attempted".into(), f64::from(attempted));
    m.insert("connected".into(), f64::from(c.connected));
    m.insert(
        "failed".into(),
        f64::from(c.refused + c.timed_out + c.other + c.given_up),
    );
    m.insert("given_up".into(), f64::from(c.given_up));
    m.insert("refused".into(), f64::from(c.refused));
    m.insert("timed_out".into(), f64::from(c.timed_out));
    m.insert("reset".into(), f64::from(c.reset));
    m.insert("completed".into(), f64::from(c.completed));
    m.insert("bytes_confirmed".into(), c.confirmed as f64);
    insert_percentiles(&mut m, "connect_ms", connect_ms);
    Ok(m)
}

fn transfer(s: Socket, bytes: u64, io: Duration, c: &mut Counts) {
    let mut st = std::net::TcpStream::from(s);
    let _ = st.set_read_timeout(Some(io));
    let _ = st.set_write_timeout(Some(io));
    let chunk = vec![b'z'; 65536];
    let mut left = bytes;
    let res = (|| -> std::io::Result<u64> {
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            st.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        st.shutdown(Shutdown::Write)?;
        let mut reply = [0u8; 8];
        st.read_exact(&mut reply)?;
        Ok(u64::from_be_bytes(reply))
    })();
    match res {
        Ok(n) => {
            c.confirmed += n;
            if n == bytes {
                c.completed += 1;
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
            ) =>
        {
            c.reset += 1
        }
        Err(_) => {}
    }
}
