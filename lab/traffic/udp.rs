//! `kind = "udp"`: tagged UDP datagrams, counted at a receiver node and/or echoed back.

use super::common::{
    ns_of, recv_from, run_id, scaled, settle_quiet, sleep_until, tagged_payload, udp_bound,
    unspecified, wait_settled,
};
use super::servers::UdpCounter;
use super::{Metrics, TrafficContext};
use crate::model::steps::UdpParams;
use anyhow::{Context, Result};
use socket2::SockAddr;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) fn run(p: &UdpParams, ctx: &TrafficContext) -> Result<Metrics> {
    let ns = ns_of(ctx, &p.from)?;
    let run = run_id();
    let counter = match &p.receiver {
        Some(r) => Some(UdpCounter::start(
            ns_of(ctx, r)?,
            SocketAddr::new(unspecified(p.to), p.port),
            run,
            p.echo,
        )?),
        None => None,
    };
    let sock = crate::netns::run_in(ns, || {
        let bind = SocketAddr::new(p.src.unwrap_or(unspecified(p.to)), p.src_port.unwrap_or(0));
        let s = udp_bound(bind).with_context(|| match p.src {
            Some(src) => format!("src = {src}: is it configured on node '{}'?", p.from),
            None => format!("sender on node '{}'", p.from),
        })?;
        s.set_nonblocking(true)?;
        Ok(s)
    });
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            if let Some(c) = counter {
                c.finish(0, Duration::ZERO, Duration::ZERO);
            }
            return Err(e);
        }
    };
    let dst = SockAddr::from(SocketAddr::new(p.to, p.port));
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut replies = HashSet::new();
    let mut buf = vec![0u8; 65536];
    let mut drain = |replies: &mut HashSet<u32>| {
        while let Ok(Some((n, _))) = recv_from(&sock, &mut buf) {
            if let Some((_, seq)) = super::common::parse_tag(&buf[..n], run) {
                replies.insert(seq);
            }
        }
    };
    let interval = Duration::from_millis(p.interval_ms);
    let start = Instant::now();
    for i in 0..p.count {
        if ctx.stop_starting() {
            break;
        }
        match sock.send_to(&p.payload(run, i, tagged_payload), &dst) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Socket buffer full: wait a moment and count it as a failed send.
                std::thread::sleep(Duration::from_micros(200));
                errors += 1;
            }
            Err(_) => errors += 1,
        }
        drain(&mut replies);
        if !interval.is_zero() && !sleep_until(ctx, start + interval * (i + 1)) {
            break;
        }
    }
    let grace = scaled(ctx, p.timeout_ms);
    let quiet = settle_quiet(ctx, grace);
    let want_replies = (p.receiver.is_none() || p.echo) && p.text.is_none();
    if want_replies && !(ctx.interrupted)() {
        wait_settled(grace, quiet, sent, || {
            drain(&mut replies);
            replies.len() as u64
        });
    }
    let mut m = Metrics::new();
    m.insert("sent".into(), sent as f64);
    m.insert("send_errors".into(), errors as f64);
    m.insert("replies".into(), replies.len() as f64);
    if let Some(c) = counter {
        let got = if want_replies {
            c.finish(sent, Duration::ZERO, Duration::ZERO)
        } else {
            c.finish(sent, grace, quiet)
        };
        m.insert("received".into(), got.unique as f64);
        m.insert("duplicates".into(), (got.datagrams - got.unique) as f64);
    }
    Ok(m)
}
