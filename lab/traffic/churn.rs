//! `kind = "churn"`: many short TCP connections (SCENARIOS.md §2, conntrack table full).

use super::common::{bind_source, domain, insert_percentiles, ms, ns_of, scaled, unspecified};
use super::connects::{Connects, Outcome};
use super::servers::{TcpMode, TcpServer};
use super::{Metrics, TrafficContext};
use crate::model::steps::{ChurnParams, CloseMode};
use anyhow::Result;
use socket2::{Protocol, Socket, Type};
use std::io::Read;
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
        let mut in_flight = Connects::default();
        let slowest_ok = std::cell::Cell::new(Duration::ZERO);
        let mut finish = |s: Socket, outcome: Outcome| match outcome {
            Outcome::Connected(took) => {
                slowest_ok.set(slowest_ok.get().max(took));
                connect_ms.push(ms(took));
                c[1] += 1;
                let _ = s.set_nonblocking(false);
                close(s, p, io);
            }
            Outcome::TimedOut => c[2] += 1,
            Outcome::Refused => c[3] += 1,
            Outcome::Failed => c[4] += 1,
        };
        let start = Instant::now();
        let due = |i: u32| start + Duration::from_secs_f64(f64::from(i) / p.rate);
        let (mut started, mut given_up) = (0u32, 0usize);
        loop {
            if ctx.stop_starting() {
                // `until` holds: the outcome is known, so are the connects in flight.
                given_up = in_flight.give_up();
                break;
            }
            // Start every connection that is due, as long as there is room in flight and
            // the connects in flight are left waiting (see `ChurnParams::in_flight`).
            while started < p.connections && in_flight.len() < p.in_flight as usize {
                if p.rate > 0.0 && Instant::now() < due(started) {
                    break;
                }
                if in_flight
                    .youngest_waited()
                    .is_some_and(|w| w < left_waiting(slowest_ok.get()))
                {
                    break;
                }
                if ctx.stop_starting() {
                    break;
                }
                started += 1;
                let s = Socket::new(domain(p.to), Type::STREAM, Some(Protocol::TCP))?;
                if let Some(src) = p.src {
                    bind_source(&s, src, 0, &p.from)?;
                }
                if let Some((s, outcome)) = in_flight.start(s, &dst, timeout) {
                    finish(s, outcome);
                }
            }
            let more = started < p.connections;
            if !more && in_flight.is_empty() {
                break;
            }
            if ctx.stop_starting() {
                continue; // gives up what is in flight, above
            }
            // Until a connect ends, the next one is due, or 20 ms (to see `until`, an interrupt).
            let mut wait = Duration::from_millis(20);
            if more && in_flight.len() < p.in_flight as usize {
                if p.rate > 0.0 {
                    wait = wait.min(due(started).saturating_duration_since(Instant::now()));
                }
                if let Some(w) = in_flight.youngest_waited() {
                    wait = wait.min(left_waiting(slowest_ok.get()).saturating_sub(w));
                }
            }
            for (s, outcome) in in_flight.wait(wait)? {
                finish(s, outcome);
            }
        }
        c[0] = started;
        Ok((c, connect_ms, given_up))
    });
    let (counts, connect_ms, given_up) = match res {
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
    m.insert("given_up".into(), given_up as f64);
    if let Some(a) = accepted {
        m.insert("server_accepted".into(), a as f64);
    }
    insert_percentiles(&mut m, "connect_ms", connect_ms);
    Ok(m)
}

/// When a connect in flight counts as left waiting, so that the next may start beside
/// it: after twice the slowest successful connect so far (at least a millisecond).
/// Connects that succeed thus stay one after the other (each entry a middle box
/// tracks is ASSURED before the next SYN arrives), and only those whose SYN got no
/// answer overlap.
fn left_waiting(slowest_ok: Duration) -> Duration {
    (slowest_ok * 2).max(Duration::from_millis(1))
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
