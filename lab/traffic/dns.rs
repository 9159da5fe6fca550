//! `kind = "dns"`: a resolver that behaves like glibc's: A and AAAA back to back from one
//! UDP socket (or the `single-request` / `single-request-reopen` variants), timeout, retry.

use super::common::{
    ms, ns_of, percentile, recv_from, run_id, scaled, sleep_until, udp_bound, unspecified,
};
use super::dnswire::{self, QTYPE_A, QTYPE_AAAA};
use super::servers::DnsServer;
use super::{Metrics, TrafficContext};
use crate::model::steps::DnsParams;
use anyhow::Result;
use socket2::Socket;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Totals {
    queries: u64,
    replies: u64,
}

pub(crate) fn run(p: &DnsParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let server = match (&p.server, p.start_server) {
        (Some(node), true) => Some(DnsServer::start(
            Some(ns_of(ctx, node)?),
            SocketAddr::new(unspecified(p.to), p.port),
        )?),
        _ => None,
    };
    let result = crate::netns::run_in(ns, || lookups(p, ctx));
    let served = server.map(DnsServer::stop);
    let (lat, ok, retried, failed, done, totals) = result?;
    let mut m = Metrics::new();
    m.insert("lookups".into(), f64::from(done));
    m.insert("ok".into(), f64::from(ok));
    m.insert("retried".into(), f64::from(retried));
    m.insert("failed".into(), f64::from(failed));
    m.insert("queries_sent".into(), totals.queries as f64);
    m.insert("replies_received".into(), totals.replies as f64);
    if let Some(q) = served {
        m.insert("server_queries".into(), q as f64);
    }
    if let (Some(p50), Some(p99), Some(max)) =
        (percentile(&lat, 50.0), percentile(&lat, 99.0), lat.last())
    {
        m.insert("latency_p50_ms".into(), p50);
        m.insert("latency_p99_ms".into(), p99);
        m.insert("latency_max_ms".into(), *max);
    }
    Ok(m)
}

type Outcome = (Vec<f64>, u32, u32, u32, u32, Totals);

fn lookups(p: &DnsParams, ctx: &TrafficContext) -> Result<Outcome> {
    let mut t = Totals::default();
    let (mut lat, mut ok, mut retried, mut failed, mut done) = (Vec::new(), 0, 0, 0, 0);
    let mut id = (run_id() & 0xffff) as u16;
    let start = Instant::now();
    for i in 0..p.lookups {
        if i > 0 && !sleep_until(ctx, start + Duration::from_millis(p.interval_ms) * i) {
            break;
        }
        let t0 = Instant::now();
        let mut answered = [false, false];
        let mut attempts = 0;
        while attempts < p.attempts && !answered.iter().all(|a| *a) && !(ctx.interrupted)() {
            attempts += 1;
            attempt(p, ctx, &mut id, &mut answered, &mut t)?;
        }
        done += 1;
        if attempts > 1 {
            retried += 1;
        }
        if answered.iter().all(|a| *a) {
            ok += 1;
            lat.push(ms(t0.elapsed()));
        } else {
            failed += 1;
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat, ok, retried, failed, done, t))
}

fn connected(p: &DnsParams) -> Result<Socket> {
    let s = udp_bound(SocketAddr::new(unspecified(p.to), 0))?;
    s.connect(&SocketAddr::new(p.to, p.port).into())?;
    Ok(s)
}

/// One attempt: sends the still unanswered queries and waits up to timeout_ms.
fn attempt(
    p: &DnsParams,
    ctx: &TrafficContext,
    id: &mut u16,
    answered: &mut [bool; 2],
    t: &mut Totals,
) -> Result<()> {
    let qtypes = [QTYPE_A, QTYPE_AAAA];
    let timeout = scaled(ctx, p.timeout_ms);
    let first = connected(p)?;
    let second = if p.single_request_reopen {
        Some(connected(p)?)
    } else {
        None
    };
    let mut pending: Vec<(u16, usize)> = Vec::new();
    for (q, qtype) in qtypes.iter().enumerate() {
        if answered[q] {
            continue;
        }
        *id = id.wrapping_add(1);
        let sock = if q == 1 {
            second.as_ref().unwrap_or(&first)
        } else {
            &first
        };
        if sock.send(&dnswire::query(*id, &p.qname, *qtype)).is_ok() {
            t.queries += 1;
            pending.push((*id, q));
        }
        if p.single_request {
            wait(&[sock], timeout, ctx, &mut pending, answered, t);
        }
    }
    let socks: Vec<&Socket> = [Some(&first), second.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    wait(&socks, timeout, ctx, &mut pending, answered, t);
    Ok(())
}

/// Collects replies for `pending` queries on `socks` until all arrived or `timeout`.
fn wait(
    socks: &[&Socket],
    timeout: Duration,
    ctx: &TrafficContext,
    pending: &mut Vec<(u16, usize)>,
    answered: &mut [bool; 2],
    t: &mut Totals,
) {
    let end = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    for s in socks {
        let _ = s.set_read_timeout(Some(Duration::from_millis(2)));
    }
    while !pending.is_empty() && Instant::now() < end && !(ctx.interrupted)() {
        for s in socks {
            // ECONNREFUSED (ICMP port unreachable on a connected socket) just means no reply.
            let Ok(Some((n, _))) = recv_from(s, &mut buf) else {
                continue;
            };
            let Some((rid, qtype, true, _)) = dnswire::parse(&buf[..n]) else {
                continue;
            };
            if let Some(pos) = pending
                .iter()
                .position(|&(id, q)| id == rid && [QTYPE_A, QTYPE_AAAA][q] == qtype)
            {
                t.replies += 1;
                answered[pending[pos].1] = true;
                pending.remove(pos);
            }
        }
    }
}
