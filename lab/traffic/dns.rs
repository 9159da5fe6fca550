//! `kind = "dns"`: a resolver that behaves like glibc's: A and AAAA back to back from one
//! UDP socket (or the `single-request` / `single-request-reopen` variants), timeout, retry.

use super::common::{
    ms, ns_of, percentile, recv_from, run_id, scaled, sleep_until, udp_bound, unspecified,
};
use super::dnswire::{self, QTYPE_A, QTYPE_AAAA};
use super::servers::DnsServer;
use super::{check, Metrics, TrafficContext};
use anyhow::Result;
use socket2::Socket;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// glibc-like lookups. Metrics: `lookups`, `ok` (both answers), `retried` (ok or not, needed
/// more than one attempt), `failed`, `latency_p50_ms` / `latency_p99_ms` / `latency_max_ms`
/// (over ok lookups), `queries_sent`, `replies_received`, `server_queries` (answered by the
/// generator's own responder).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsParams {
    /// Observation prefix (default "dns").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that resolves.
    pub from: String,
    /// Address of the DNS server (IPv4 or IPv6), as the client sees it.
    pub to: IpAddr,
    /// Server port (default 53).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Node where the generator starts its responder (needed unless start_server = false).
    #[serde(default)]
    pub server: Option<String>,
    /// Start the responder thread in `server` (default true); false expects a running
    /// `faultlab serve dns`.
    #[serde(default = "d_true")]
    pub start_server: bool,
    /// Name queried (default "svc.lab.test").
    #[serde(default = "d_qname")]
    pub qname: String,
    /// Number of lookups (default 20).
    #[serde(default = "d_lookups")]
    pub lookups: u32,
    /// Gap between lookup starts in milliseconds (default 50).
    #[serde(default = "d_interval")]
    pub interval_ms: u64,
    /// Per-attempt timeout like glibc's `options timeout:` in ms (default 5000).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Attempts per lookup like glibc's `options attempts:` (default 2).
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    /// glibc `single-request`: send A, wait for its answer, then AAAA (default false).
    #[serde(default)]
    pub single_request: bool,
    /// glibc `single-request-reopen`: AAAA from a new socket (new source port) (default false).
    #[serde(default)]
    pub single_request_reopen: bool,
}
fn d_port() -> u16 {
    53
}
fn d_true() -> bool {
    true
}
fn d_qname() -> String {
    "svc.lab.test".into()
}
fn d_lookups() -> u32 {
    20
}
fn d_interval() -> u64 {
    50
}
fn d_timeout() -> u64 {
    5000
}
fn d_attempts() -> u32 {
    2
}

impl DnsParams {
    pub(crate) fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        check::unicast("to", self.to)?;
        match (&self.server, self.start_server) {
            (Some(s), _) => check::node("server", s)?,
            (None, true) => {
                return Err("server is not set: name the node for the responder, or set start_server = false if `faultlab serve dns` runs there".into())
            }
            (None, false) => {}
        }
        check::range("port", self.port, 1, 65535)?;
        check::range("lookups", self.lookups, 1, 100_000)?;
        check::range("interval_ms", self.interval_ms, 0, 60_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 60_000)?;
        check::range("attempts", self.attempts, 1, 5)?;
        if self.single_request && self.single_request_reopen {
            return Err(
                "single_request and single_request_reopen are both true: choose one".into(),
            );
        }
        if self.qname.is_empty() || self.qname.split('.').any(|l| l.len() > 63) {
            return Err(format!(
                "qname = {:?} is not a valid name: use labels of 1-63 characters",
                self.qname
            ));
        }
        Ok(())
    }
}

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
        if i > 0 && !sleep_until(ctx, start + scaled(ctx, p.interval_ms) * i) {
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
