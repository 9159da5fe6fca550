//! Small helpers shared by the generators: node lookup, timing, payload tags, socket setup.

use super::TrafficContext;
use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The netns name of `node`, or an error naming the node.
pub fn ns_of<'a>(ctx: &'a TrafficContext, node: &str) -> Result<&'a str> {
    ctx.netns
        .get(node)
        .map(String::as_str)
        .ok_or_else(|| anyhow!("traffic references node '{node}', which the lab does not have"))
}

/// `ms` scaled by the context's slowness factor.
pub fn scaled(ctx: &TrafficContext, ms: u64) -> Duration {
    Duration::from_secs_f64(ms as f64 / 1000.0 * ctx.slow.max(0.01))
}

/// How often [`wait_until`] re-checks its condition: short against every cap the
/// scenarios use (the smallest is tens of ms), long enough not to spin.
pub const POLL_EVERY: Duration = Duration::from_millis(2);

/// Waits until `done()` holds, checking every `every`, for at most `cap` (already scaled by
/// `--slow`: caps are the only times `--slow` stretches), and never past an interrupt.
/// True when `done()` held; false at the cap or on interrupt. `done` is checked first, so
/// an outcome that is already known costs no wait at all.
pub fn wait_until(
    interrupted: &dyn Fn() -> bool,
    cap: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + cap;
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= end || interrupted() {
            return false;
        }
        std::thread::sleep(every.min(end - now));
    }
}

/// How long a receiver waits with no new arrival, after the last send, before it
/// takes the count as final (scaled by `--slow`). Lab paths are veth pairs: a
/// packet still on its way lands within microseconds, one that stopped arriving
/// was dropped (a race's loser, a policed packet) and never comes.
const SETTLE_QUIET_MS: u64 = 100;

/// The quiet period of a receiver whose cap is `grace` (both already scaled).
pub fn settle_quiet(ctx: &TrafficContext, grace: Duration) -> Duration {
    scaled(ctx, SETTLE_QUIET_MS).min(grace)
}

/// Waits until `count()` reaches `expected`, or stays unchanged for `quiet`, or `cap`
/// passes: the count is then final. True when `expected` was reached.
pub fn wait_settled(
    cap: Duration,
    quiet: Duration,
    expected: u64,
    mut count: impl FnMut() -> u64,
) -> bool {
    let mut last = count();
    let mut changed = Instant::now();
    wait_until(&|| false, cap, POLL_EVERY, || {
        let now = count();
        if now != last {
            (last, changed) = (now, Instant::now());
        }
        now >= expected || changed.elapsed() >= quiet
    });
    last >= expected
}

/// Sleeps until `until`, waking early when the run is interrupted. Returns false if interrupted.
pub fn sleep_until(ctx: &TrafficContext, until: Instant) -> bool {
    loop {
        if (ctx.interrupted)() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// A per-run identifier carried in payload tags, so stray packets are never counted.
pub fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16) ^ COUNTER.fetch_add(0x9e37, Ordering::Relaxed)
}
use std::sync::atomic::{AtomicU32, Ordering};
static COUNTER: AtomicU32 = AtomicU32::new(1);

pub const TAG_MAGIC: u32 = 0x464c_5442; // "FLTB"
pub const TAG_LEN: usize = 16;

/// Payload of `size` bytes (at least [`TAG_LEN`]) starting with magic, run, flow, seq.
pub fn tagged_payload(run: u32, flow: u32, seq: u32, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(TAG_LEN));
    for w in [TAG_MAGIC, run, flow, seq] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p.resize(size.max(TAG_LEN), b'x');
    p
}

/// `(flow, seq)` of a payload written by [`tagged_payload`] for `run`.
pub fn parse_tag(p: &[u8], run: u32) -> Option<(u32, u32)> {
    let w = |i: usize| u32::from_be_bytes(p[i * 4..i * 4 + 4].try_into().unwrap());
    (p.len() >= TAG_LEN && w(0) == TAG_MAGIC && w(1) == run).then(|| (w(2), w(3)))
}

/// The wildcard address of `ip`'s family.
pub fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

pub fn domain(ip: IpAddr) -> Domain {
    if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// A UDP socket bound to `addr` (SO_REUSEADDR, big receive buffer), in the calling thread's netns.
pub fn udp_bound(addr: SocketAddr) -> Result<Socket> {
    let s = Socket::new(domain(addr.ip()), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())
        .with_context(|| format!("bind udp {addr}"))?;
    Ok(s)
}

/// A listening TCP socket on `addr`, in the calling thread's netns.
///
/// A step's listener on the port the previous step closed can meet EADDRINUSE even with
/// SO_REUSEADDR: a child that another thread is spawning at that moment holds a copy
/// of every descriptor from fork until exec closes the O_CLOEXEC ones, so the closed
/// listener stays in LISTEN for that long (inet_csk_bind_conflict() refuses a second
/// listener whatever SO_REUSEADDR says). Measured here: 316 of 3000 rebinds failed
/// while two threads spawned /bin/true, 0 without; so the bind is retried for up to a
/// second. A failure names the sockets still on the port.
pub fn tcp_listener(addr: SocketAddr) -> Result<Socket> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let s = Socket::new(domain(addr.ip()), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        match s.bind(&addr.into()) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && Instant::now() < until => {
                std::thread::sleep(POLL_EVERY);
            }
            r => {
                r.with_context(|| {
                    format!(
                        "bind tcp {addr} (sockets on port {} here: {})",
                        addr.port(),
                        tcp_sockets_on(addr.port())
                    )
                })?;
                s.listen(1024)?;
                return Ok(s);
            }
        }
    }
}

/// The TCP sockets of the calling thread's network namespace bound to `port`, with
/// their state, from /proc/thread-self/net/tcp{,6}: what an EADDRINUSE collided with.
fn tcp_sockets_on(port: u16) -> String {
    const STATES: [&str; 13] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    let mut found = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text =
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let bound = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if bound == Some(port) {
                let st = usize::from_str_radix(st, 16).unwrap_or(0);
                let name = STATES.get(st).copied().unwrap_or("?");
                found.push(format!("{file} {name} inode {inode}"));
            }
        }
    }
    if found.is_empty() {
        "none listed".into()
    } else {
        found.join(", ")
    }
}

/// Receives one datagram, waiting at most the socket's read timeout. `None` on timeout.
pub fn recv_from(s: &Socket, buf: &mut [u8]) -> std::io::Result<Option<(usize, SockAddr)>> {
    // SAFETY: MaybeUninit<u8> has the same layout as u8; recv only writes initialized bytes.
    let ubuf = unsafe {
        std::slice::from_raw_parts_mut(
            buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
            buf.len(),
        )
    };
    match s.recv_from(ubuf) {
        Ok(r) => Ok(Some(r)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

/// The source address the kernel would pick toward `to`, as seen from the current netns.
pub fn route_source(to: IpAddr) -> Result<IpAddr> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(unspecified(to), 0))?;
    s.connect(SocketAddr::new(to, 9))
        .with_context(|| format!("no route to {to}"))?;
    Ok(s.local_addr()?.ip())
}

/// Binds `s` (created in the sender's netns) to `src`:`port` before it connects or sends.
/// For a TCP socket with port 0 the port is chosen at connect time
/// (IP_BIND_ADDRESS_NO_PORT), so many connections from one address do not run out of
/// ports on bind.
pub fn bind_source(s: &Socket, src: IpAddr, port: u16, node: &str) -> Result<()> {
    if port == 0 && s.r#type().ok() == Some(Type::STREAM) {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option on a socket we own.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(s),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let addr = SocketAddr::new(src, port);
    s.bind(&addr.into()).with_context(|| {
        format!("src = {src}: cannot bind {addr}; is {src} configured on node '{node}'?")
    })
}

/// Makes room for `needed` more descriptors: when the soft RLIMIT_NOFILE is lower than
/// what is open plus `needed`, raises it to the hard limit (so at most once per process
/// unless something lowers it again). Errors when even the hard limit is too low.
pub fn ensure_nofile(needed: u64) -> Result<()> {
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64);
    let want = open + needed + 16;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if r.rlim_cur >= want {
        return Ok(());
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
        r.rlim_cur = r.rlim_max;
    }
    if r.rlim_cur < want {
        anyhow::bail!(
            "this step needs {needed} sockets but the open-file limit is {} ({open} already open): raise the hard limit (ulimit -Hn {want}) or send fewer flows",
            r.rlim_cur
        );
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `<prefix>_p50`, `<prefix>_p99` and `<prefix>_max` of `values` into `m`; nothing when
/// `values` is empty (a latency that was never measured is absent, not zero).
pub fn insert_percentiles(m: &mut super::Metrics, prefix: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    for (suffix, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
        if let Some(v) = percentile(&values, p) {
            m.insert(format!("{prefix}_{suffix}"), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trip_and_foreign_run_rejected() {
        let p = tagged_payload(7, 3, 9, 4);
        assert_eq!(p.len(), TAG_LEN);
        assert_eq!(parse_tag(&p, 7), Some((3, 9)));
        assert_eq!(parse_tag(&p, 8), None);
        assert_eq!(parse_tag(&p[..10], 7), None);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 100.0), Some(100.0));
    }

    #[test]
    fn percentile_metrics_are_ordered_or_absent() {
        let mut m = super::super::Metrics::new();
        insert_percentiles(&mut m, "connect_ms", vec![]);
        assert!(m.is_empty());
        insert_percentiles(&mut m, "connect_ms", vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(m["connect_ms_p50"], 3.0);
        assert_eq!(m["connect_ms_p99"], 5.0);
        assert_eq!(m["connect_ms_max"], 5.0);
    }

    fn ctx_with(slow: f64, interrupted: &(dyn Fn() -> bool + Sync)) -> TrafficContext<'_> {
        static NETNS: std::sync::OnceLock<std::collections::BTreeMap<String, String>> =
            std::sync::OnceLock::new();
        TrafficContext {
            netns: NETNS.get_or_init(Default::default),
            artifacts: std::path::Path::new("/nonexistent"),
            interrupted,
            enough: &crate::traffic::never,
            slow,
        }
    }

    #[test]
    fn wait_until_returns_as_soon_as_the_condition_holds() {
        let t0 = Instant::now();
        let mut calls = 0;
        let held = wait_until(&|| false, Duration::from_secs(10), POLL_EVERY, || {
            calls += 1;
            calls == 3
        });
        assert!(held);
        assert_eq!(calls, 3);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[test]
    fn wait_until_gives_up_at_the_cap() {
        let t0 = Instant::now();
        let held = wait_until(&|| false, Duration::from_millis(60), POLL_EVERY, || false);
        let took = t0.elapsed();
        assert!(!held);
        assert!(took >= Duration::from_millis(60), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
    }

    #[test]
    fn wait_until_stops_on_interrupt() {
        let t0 = Instant::now();
        assert!(!wait_until(
            &|| true,
            Duration::from_secs(10),
            POLL_EVERY,
            || false
        ));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn slow_stretches_the_cap_but_not_an_early_outcome() {
        let no = || false;
        let slow = ctx_with(4.0, &no);
        assert_eq!(scaled(&slow, 50), Duration::from_millis(200));
        assert_eq!(scaled(&ctx_with(1.0, &no), 50), Duration::from_millis(50));
        // A known outcome ends the wait at once however slow the machine is said to be.
        let t0 = Instant::now();
        assert!(wait_until(
            &no,
            scaled(&ctx_with(1000.0, &no), 1000),
            POLL_EVERY,
            || true
        ));
        assert!(t0.elapsed() < Duration::from_millis(100));
        // Without it the stretched cap is waited out in full.
        let t0 = Instant::now();
        assert!(!wait_until(&no, scaled(&slow, 20), POLL_EVERY, || false));
        assert!(
            t0.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t0.elapsed()
        );
    }
}

#[cfg(all(test, feature = "lab"))]
mod root_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Rebinding a just-closed listener while other threads spawn processes: plain
    /// bind()s do fail (the race fired), tcp_listener never does.
    #[test]
    fn a_listener_rebinds_while_children_are_spawned() {
        let Some(tns) = crate::netns::throwaway::ThrowawayNetns::new("bind") else {
            return;
        };
        let ns = &tns.0;
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let stop = AtomicBool::new(false);
        let (plain_failed, ours_failed) = std::thread::scope(|s| {
            // The lab's own way of spawning (fork, setns, exec), as other cells do.
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = crate::netns::exec::command(ns, &["true"]).status();
                    }
                });
            }
            let r = crate::netns::run_in(ns, || {
                let (mut plain, mut ours) = (0, 0);
                // Until the race has fired a few times, for at most 20 s.
                let until = Instant::now() + Duration::from_secs(20);
                while plain < 5 && Instant::now() < until {
                    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                    s.set_reuse_address(true)?;
                    if s.bind(&addr.into()).and_then(|()| s.listen(16)).is_err() {
                        plain += 1;
                    }
                    drop(s);
                    match tcp_listener(addr) {
                        Ok(l) => drop(l),
                        Err(_) => ours += 1,
                    }
                }
                Ok((plain, ours))
            });
            stop.store(true, Ordering::Relaxed);
            r
        })
        .unwrap();
        assert!(
            plain_failed > 0,
            "the race never fired: no plain bind failed"
        );
        assert_eq!(ours_failed, 0, "{plain_failed} plain binds failed");
    }
}
