//! `kind = "churn"`: many short TCP connections (SCENARIOS.md §2, conntrack table full).

use super::common::{
    bind_source, domain, insert_percentiles, ms, ns_of, scaled, sleep_until, unspecified,
};
use super::servers::{TcpMode, TcpServer};
use super::{Metrics, TrafficContext};
use crate::model::steps::{ChurnParams, CloseMode};
use anyhow::Result;
use socket2::{Protocol, Socket, Type};
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) fn run(p: &ChurnParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let io = scaled(ctx, 2000);
    let server = match &p.server {
        Some(node) => Some(TcpServer::start(
            Some(ns_of(ctx, node)?),
            SocketAddr::new(unspecified(p.to), p.port),
            TcpMode::Churn {
                first: p.server_closes_first,
            },
            io,
        )?),
        None => None,
    };
    let timeout = scaled(ctx, p.connect_timeout_ms);
    let dst = SocketAddr::new(p.to, p.port).into();
    let res = crate::netns::run_in(ns, || {
        let mut c = [0u32; 5]; // attempted, connected, timed_out, refused, other
        let mut connect_ms = Vec::with_capacity(p.connections as usize);
        let start = Instant::now();
        for i in 0..p.connections {
            if p.rate > 0.0
                && !sleep_until(ctx, start + Duration::from_secs_f64(f64::from(i) / p.rate))
            {
                break;
            }
            if ctx.stop_starting() {
                break;
            }
            c[0] += 1;
            let s = Socket::new(domain(p.to), Type::STREAM, Some(Protocol::TCP))?;
            if let Some(src) = p.src {
                bind_source(&s, src, 0, &p.from)?;
            }
            let t0 = Instant::now();
            match s.connect_timeout(&dst, timeout) {
                Ok(()) => {
                    connect_ms.push(ms(t0.elapsed()));
                    c[1] += 1;
                    close(s, p, io);
                }
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    c[2] += 1
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => c[3] += 1,
                Err(_) => c[4] += 1,
            }
        }
        Ok((c, connect_ms))
    });
    let (counts, connect_ms) = match res {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = server {
                s.stop();
            }
            return Err(e);
        }
    };
    let accepted = server.map(|s| {
        // Let the server see the last connections before counting.
        super::common::wait_until(
            ctx.interrupted,
            scaled(ctx, 200),
            super::common::POLL_EVERY,
            || s.accepted() >= u64::from(counts[1]),
        );
        let n = s.accepted();
        s.stop();
        n
    });
    let mut m = Metrics::new();
    for (k, v) in ["attempted", "connected", "timed_out", "refused"]
        .iter()
        .zip(counts)
    {
        m.insert((*k).into(), f64::from(v));
    }
    m.insert("failed".into(), f64::from(counts[0] - counts[1]));
    if let Some(a) = accepted {
        m.insert("server_accepted".into(), a as f64);
    }
    insert_percentiles(&mut m, "connect_ms", connect_ms);
    Ok(m)
}

fn close(s: Socket, p: &ChurnParams, io: Duration) {
    if p.server_closes_first {
        // Wait for the server's FIN so the server side holds TIME_WAIT.
        let _ = s.set_read_timeout(Some(io));
        let mut b = [0u8; 64];
        while matches!((&s).read(&mut b), Ok(n) if n > 0) {}
    }
    if p.close == CloseMode::Rst {
        let _ = s.set_linger(Some(Duration::ZERO));
    }
    drop(s);
}
