//! `kind = "multiflow"`: UDP over many flows (SCENARIOS.md §6: which ECMP paths are bad).

use super::common::{
    ensure_nofile, ns_of, run_id, scaled, sleep_until, tagged_payload, udp_bound, unspecified,
};
use super::servers::{UdpCount, UdpCounter};
use super::{Metrics, TrafficContext};
use crate::model::steps::MultiflowParams;
use anyhow::{Context, Result};
use socket2::SockAddr;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One flow: the sender socket it leaves from and the destination port it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    /// Index into [`Plan::binds`].
    pub sock: usize,
    pub dport: u16,
}

/// What a multiflow step sends: the sender sockets' bind addresses and the flows over them.
/// Flow ids (the tags' flow field) are indices into `flows`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub binds: Vec<SocketAddr>,
    pub flows: Vec<Flow>,
}

impl Plan {
    /// Flows of `p`: without port lists flow f leaves `sources[f % len]`:`sport_base + f`
    /// for `port`; with `sports`/`dports` every source × sport × dport (in that order), one
    /// socket per source address and source port.
    pub fn of(p: &MultiflowParams) -> Plan {
        let any = unspecified(p.to);
        let sources: Vec<IpAddr> = if p.sources.is_empty() {
            vec![any]
        } else {
            p.sources.clone()
        };
        let n = p.flow_count() as usize;
        if !p.is_product() {
            let binds = (0..n)
                .map(|f| SocketAddr::new(sources[f % sources.len()], p.sport_base + f as u16))
                .collect();
            let flows = (0..n)
                .map(|f| Flow {
                    sock: f,
                    dport: p.port,
                })
                .collect();
            return Plan { binds, flows };
        }
        let dports = if p.dports.is_empty() {
            vec![p.port]
        } else {
            p.dports.clone()
        };
        let (mut binds, mut flows) = (Vec::new(), Vec::with_capacity(n));
        for &src in &sources {
            if p.sports.is_empty() {
                // Every flow its own source port, as without lists.
                for &dport in &dports {
                    let f = flows.len();
                    binds.push(SocketAddr::new(src, p.sport_base + f as u16));
                    flows.push(Flow { sock: f, dport });
                }
            } else {
                for &sport in &p.sports {
                    let sock = binds.len();
                    binds.push(SocketAddr::new(src, sport));
                    flows.extend(dports.iter().map(|&dport| Flow { sock, dport }));
                }
            }
        }
        Plan { binds, flows }
    }

    /// The distinct destination ports, in first-use order.
    pub fn dports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = Vec::new();
        for f in &self.flows {
            if !v.contains(&f.dport) {
                v.push(f.dport);
            }
        }
        v
    }
}

pub(crate) fn run(p: &MultiflowParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let rns = ns_of(ctx, &p.receiver)?;
    let run = run_id();
    let plan = Plan::of(p);
    let dports = plan.dports();
    // One descriptor per sender socket and per receiver: 16000 flows need more than the
    // usual soft limit of 1024.
    ensure_nofile((plan.binds.len() + dports.len()) as u64)?;
    let mut counters = Vec::with_capacity(dports.len());
    for &dport in &dports {
        match UdpCounter::start(rns, SocketAddr::new(unspecified(p.to), dport), run, false) {
            Ok(c) => counters.push(c),
            Err(e) => {
                finish_all(counters, &[], Duration::ZERO, Duration::ZERO);
                return Err(e.context(format!("receiver on node '{}'", p.receiver)));
            }
        }
    }
    let socks = crate::netns::run_in(ns, || {
        plan.binds
            .iter()
            .enumerate()
            .map(|(i, &bind)| {
                let s = udp_bound(bind).with_context(|| {
                    format!(
                        "sender socket {i}: is {} configured on node '{}'?",
                        bind.ip(),
                        p.from
                    )
                })?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()
    });
    let socks = match socks {
        Ok(s) => s,
        Err(e) => {
            finish_all(counters, &[], Duration::ZERO, Duration::ZERO);
            return Err(e);
        }
    };
    let dsts: BTreeMap<u16, SockAddr> = dports
        .iter()
        .map(|&d| (d, SocketAddr::new(p.to, d).into()))
        .collect();
    let gap = Duration::from_secs_f64(p.gap_us as f64 / 1e6 * ctx.slow.max(0.01));
    let nflows = plan.flows.len();
    let mut sent = vec![0u64; nflows];
    // Successful sends per destination port (what each receiver should see).
    let mut delivered = vec![0u64; dports.len()];
    let port_of: Vec<usize> = plan
        .flows
        .iter()
        .map(|fl| dports.iter().position(|&d| d == fl.dport).unwrap_or(0))
        .collect();
    let mut errors = 0u64;
    let start = Instant::now();
    let mut n = 0u32;
    // Round-robin over flows so every flow sees the same conditions over time.
    'outer: for j in 0..p.packets_per_flow {
        for (f, flow) in plan.flows.iter().enumerate() {
            if !gap.is_zero() && !sleep_until(ctx, start + gap * n) || (ctx.interrupted)() {
                break 'outer;
            }
            n += 1;
            // A failed send (e.g. a local unreachable route) still counts as sent-and-lost.
            sent[f] += 1;
            let ok = socks[flow.sock]
                .send_to(
                    &tagged_payload(run, f as u32, j, p.size),
                    &dsts[&flow.dport],
                )
                .is_ok();
            if ok {
                delivered[port_of[f]] += 1;
            } else {
                errors += 1;
            }
        }
    }
    drop(socks);
    let total_sent: u64 = sent.iter().sum();
    let grace = scaled(ctx, p.timeout_ms);
    let quiet = super::common::settle_quiet(ctx, grace);
    let got = finish_all(counters, &delivered, grace, quiet);
    let (mut lossless, mut lossy, mut dead) = (0u32, 0u32, 0u32);
    for (f, &s) in sent.iter().enumerate() {
        let r = got.per_flow.get(&(f as u32)).copied().unwrap_or(0);
        match r {
            0 => dead += 1,
            r if r >= s => lossless += 1,
            _ => lossy += 1,
        }
    }
    let mut m = Metrics::new();
    m.insert("flows".into(), nflows as f64);
    m.insert("packets_sent".into(), total_sent as f64);
    m.insert("packets_received".into(), got.unique as f64);
    m.insert("send_errors".into(), errors as f64);
    m.insert("flows_lossless".into(), f64::from(lossless));
    m.insert("flows_lossy".into(), f64::from(lossy));
    m.insert("flows_dead".into(), f64::from(dead));
    if total_sent > 0 {
        m.insert(
            "loss_fraction".into(),
            total_sent.saturating_sub(got.unique) as f64 / total_sent as f64,
        );
    }
    m.insert("dead_fraction".into(), f64::from(dead) / nflows as f64);
    Ok(m)
}

/// Stops every receiver, each once it saw `expected[i]` datagrams or the shared `grace`
/// ran out, and merges what they counted (flow ids never repeat across ports).
fn finish_all(
    counters: Vec<UdpCounter>,
    expected: &[u64],
    grace: Duration,
    quiet: Duration,
) -> UdpCount {
    let end = Instant::now() + grace;
    let mut all = UdpCount::default();
    for (i, c) in counters.into_iter().enumerate() {
        let left = end.saturating_duration_since(Instant::now());
        let got = c.finish(expected.get(i).copied().unwrap_or(0), left, quiet);
        all.unique += got.unique;
        all.datagrams += got.datagrams;
        for (f, k) in got.per_flow {
            *all.per_flow.entry(f).or_default() += k;
        }
    }
    all
}
