//! `kind = "multiflow"`: UDP over many flows (SCENARIOS.md §6: which ECMP paths are bad).

use super::common::{ns_of, run_id, scaled, sleep_until, tagged_payload, udp_bound, unspecified};
use super::servers::UdpCounter;
use super::{check, Metrics, TrafficContext};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Many UDP flows. Flow f uses source port `sport_base + f` and source address
/// `sources[f % len]`. Metrics: `flows`, `packets_sent`, `packets_received`,
/// `flows_lossless` (all packets arrived), `flows_lossy` (some but not all),
/// `flows_dead` (none), `loss_fraction` (lost / sent), `dead_fraction` (dead / flows),
/// `send_errors` (sends the sender's own kernel refused; counted as sent and lost).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiflowParams {
    /// Observation prefix (default "multiflow").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that sends.
    pub from: String,
    /// Destination address (IPv4 or IPv6).
    pub to: IpAddr,
    /// Destination port (default 9000).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Node where a receiver counts packets per flow.
    pub receiver: String,
    /// Number of flows (default 64).
    #[serde(default = "d_flows")]
    pub flows: u32,
    /// Packets per flow (default 10).
    #[serde(default = "d_ppf")]
    pub packets_per_flow: u32,
    /// Source port of flow 0 (default 20000).
    #[serde(default = "d_sport")]
    pub sport_base: u16,
    /// Source addresses to rotate through; each must be configured on `from` (default: the
    /// route's source address).
    #[serde(default)]
    pub sources: Vec<IpAddr>,
    /// Payload bytes, at least 16 (default 64).
    #[serde(default = "d_size")]
    pub size: usize,
    /// Gap between packets of the whole run in microseconds (default 100).
    #[serde(default = "d_gap")]
    pub gap_us: u64,
    /// How long the receiver waits for stragglers, ms (default 1000).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
}
fn d_port() -> u16 {
    9000
}
fn d_flows() -> u32 {
    64
}
fn d_ppf() -> u32 {
    10
}
fn d_sport() -> u16 {
    20000
}
fn d_size() -> usize {
    64
}
fn d_gap() -> u64 {
    100
}
fn d_timeout() -> u64 {
    1000
}

impl MultiflowParams {
    pub(crate) fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        check::node("receiver", &self.receiver)?;
        check::unicast("to", self.to)?;
        for s in &self.sources {
            check::same_family("sources", *s, "to", self.to)?;
            check::unicast("sources", *s)?;
        }
        check::range("port", self.port, 1, 65535)?;
        check::range("flows", self.flows, 1, 60_000)?;
        check::range("packets_per_flow", self.packets_per_flow, 1, 100_000)?;
        check::range("sport_base", self.sport_base, 1, 65535)?;
        let last = u32::from(self.sport_base) + self.flows - 1;
        if last > 65535 {
            return Err(format!(
                "sport_base = {} with flows = {} needs source ports up to {last}: lower sport_base or flows",
                self.sport_base, self.flows
            ));
        }
        check::range("size", self.size, 16, 65000)?;
        check::range("gap_us", self.gap_us, 0, 1_000_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 600_000)
    }
}

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
