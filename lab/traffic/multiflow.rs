//! `kind = "multiflow"`: UDP over many flows (SCENARIOS.md §6: which ECMP paths are bad).

use super::common::{ns_of, run_id, scaled, sleep_until, tagged_payload, udp_bound, unspecified};
use super::servers::UdpCounter;
use super::{Metrics, TrafficContext};
use crate::model::steps::MultiflowParams;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Instant;

pub(crate) fn run(p: &MultiflowParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let run = run_id();
    let counter = UdpCounter::start(
        ns_of(ctx, &p.receiver)?,
        SocketAddr::new(unspecified(p.to), p.port),
        run,
        false,
    )?;
    let socks = crate::netns::run_in(ns, || {
        (0..p.flows)
            .map(|f| {
                let src = p
                    .sources
                    .get(f as usize % p.sources.len().max(1))
                    .copied()
                    .unwrap_or(unspecified(p.to));
                let bind = SocketAddr::new(src, p.sport_base + f as u16);
                let s = udp_bound(bind).with_context(|| {
                    format!("flow {f}: is {src} configured on node '{}'?", p.from)
                })?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()
    });
    let socks = match socks {
        Ok(s) => s,
        Err(e) => {
            counter.finish(0, std::time::Duration::ZERO);
            return Err(e);
        }
    };
    let dst = SocketAddr::new(p.to, p.port).into();
    let gap = std::time::Duration::from_secs_f64(p.gap_us as f64 / 1e6 * ctx.slow.max(0.01));
    let mut sent = vec![0u64; p.flows as usize];
    let mut errors = 0u64;
    let start = Instant::now();
    let mut n = 0u32;
    // Round-robin over flows so every flow sees the same conditions over time.
    'outer: for j in 0..p.packets_per_flow {
        for (f, s) in socks.iter().enumerate() {
            if !gap.is_zero() && !sleep_until(ctx, start + gap * n) || (ctx.interrupted)() {
                break 'outer;
            }
            n += 1;
            // A failed send (e.g. a local unreachable route) still counts as sent-and-lost.
            sent[f] += 1;
            if s.send_to(&tagged_payload(run, f as u32, j, p.size), &dst)
                .is_err()
            {
                errors += 1;
            }
        }
    }
    let total_sent: u64 = sent.iter().sum();
    let got = counter.finish(total_sent - errors, scaled(ctx, p.timeout_ms));
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
    m.insert("flows".into(), f64::from(p.flows));
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
    m.insert("dead_fraction".into(), f64::from(dead) / f64::from(p.flows));
    Ok(m)
}
