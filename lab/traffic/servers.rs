//! Receivers and servers: threads the generators start inside a node (bound before the
//! sender starts), and the `faultlab serve KIND` helper processes built on the same loops.

use super::common::{parse_tag, recv_from, tcp_listener, udp_bound, wait_settled};
use super::dnswire;
use anyhow::{anyhow, bail, Context, Result};
use socket2::Socket;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// Spawns `body` on a thread inside `ns` (or the current netns when `ns` is None); `setup`
/// runs first in that thread and its error is returned here, so when this returns Ok the
/// socket is bound.
fn spawn_in<S, R>(
    ns: Option<&str>,
    setup: impl FnOnce() -> Result<S> + Send + 'static,
    body: impl FnOnce(S) -> R + Send + 'static,
) -> Result<JoinHandle<Option<R>>>
where
    R: Send + 'static,
{
    let ns = ns.map(str::to_string);
    let (tx, rx) = mpsc::channel::<Result<()>>();
    let h = std::thread::spawn(move || {
        let s = ns
            .as_deref()
            .map_or(Ok(()), crate::netns::enter)
            .and_then(|()| setup());
        match s {
            Ok(s) => {
                let _ = tx.send(Ok(()));
                Some(body(s))
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => {
            let _ = h.join();
            Err(e)
        }
        Err(_) => Err(anyhow!("server thread did not start within 30 s")),
    }
}

/// What a UDP counter saw.
#[derive(Debug, Default, Clone)]
pub struct UdpCount {
    /// Distinct tagged datagrams of this run.
    pub unique: u64,
    /// Tagged datagrams of this run including duplicates.
    pub datagrams: u64,
    /// Distinct datagrams per flow id.
    pub per_flow: BTreeMap<u32, u64>,
}

/// A UDP receiver thread that counts datagrams tagged for one run (and optionally echoes).
pub struct UdpCounter {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    handle: JoinHandle<Option<UdpCount>>,
}

impl UdpCounter {
    /// Binds `bind` inside `ns` and starts counting; returns once bound.
    pub fn start(ns: &str, bind: SocketAddr, run: u32, echo: bool) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (st, se) = (stop.clone(), seen.clone());
        let handle = spawn_in(
            Some(ns),
            move || {
                let s = udp_bound(bind)?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            },
            move |s: Socket| {
                let mut c = UdpCount::default();
                let mut ids = HashSet::new();
                let mut buf = vec![0u8; 65536];
                let deadline = Instant::now() + Duration::from_secs(3600);
                while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(Some((n, from))) = recv_from(&s, &mut buf) else {
                        continue;
                    };
                    let Some((flow, seq)) = parse_tag(&buf[..n], run) else {
                        continue;
                    };
                    c.datagrams += 1;
                    if ids.insert((flow, seq)) {
                        c.unique += 1;
                        *c.per_flow.entry(flow).or_default() += 1;
                        se.store(c.unique, Ordering::Relaxed);
                    }
                    if echo {
                        let _ = s.send_to(&buf[..n], &from);
                    }
                }
                c
            },
        )?;
        Ok(UdpCounter { stop, seen, handle })
    }

    /// Distinct datagrams counted so far.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Waits until `expected` distinct datagrams arrived, or none arrived for `quiet`,
    /// or `grace` passed (see [`wait_settled`]), then stops.
    pub fn finish(self, expected: u64, grace: Duration, quiet: Duration) -> UdpCount {
        wait_settled(grace, quiet, expected, || self.seen());
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten().unwrap_or_default()
    }
}

/// How a TCP server treats each accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    /// Read to EOF, then answer the byte count as 8 bytes big-endian, then close.
    Sink,
    /// Echo everything back until EOF.
    Echo,
    /// Churn: close at once (`first = true`), or wait for the client's close then close.
    Churn { first: bool },
}

/// A TCP server thread in a node.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    handle: JoinHandle<Option<()>>,
}

impl TcpServer {
    /// Listens on `bind` inside `ns` (None: current netns); returns once listening.
    pub fn start(
        ns: Option<&str>,
        bind: SocketAddr,
        mode: TcpMode,
        io_timeout: Duration,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (st, acc) = (stop.clone(), accepted.clone());
        let handle = spawn_in(
            ns,
            move || {
                let l = tcp_listener(bind)?;
                l.set_nonblocking(true)?;
                Ok(std::net::TcpListener::from(l))
            },
            move |l: std::net::TcpListener| {
                let deadline = Instant::now() + Duration::from_secs(3600);
                while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let c = match l.accept() {
                        Ok((c, _)) => c,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            wait_readable(&l, POLL);
                            continue;
                        }
                        Err(_) => {
                            std::thread::sleep(POLL);
                            continue;
                        }
                    };
                    acc.fetch_add(1, Ordering::Relaxed);
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(io_timeout));
                    let _ = c.set_write_timeout(Some(io_timeout));
                    match mode {
                        TcpMode::Sink | TcpMode::Echo => {
                            let _ =
                                std::thread::Builder::new().spawn(move || serve_stream(c, mode));
                        }
                        TcpMode::Churn { first: true } => drop(c),
                        TcpMode::Churn { first: false } => {
                            let mut c = c;
                            let mut b = [0u8; 512];
                            while matches!(c.read(&mut b), Ok(n) if n > 0) {}
                        }
                    }
                }
            },
        )?;
        Ok(TcpServer {
            stop,
            accepted,
            handle,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops accepting.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn wait_readable(fd: &impl std::os::fd::AsRawFd, t: Duration) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, t.as_millis() as i32) };
}

fn serve_stream(mut c: std::net::TcpStream, mode: TcpMode) {
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                if mode == TcpMode::Echo && c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    if mode == TcpMode::Sink {
        let _ = c.write_all(&total.to_be_bytes());
    }
    let _ = c.shutdown(Shutdown::Both);
}

/// A DNS responder thread: A → 192.0.2.1, AAAA → 2001:db8::1, anything else → no answer.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Option<u64>>,
}

impl DnsServer {
    /// Binds `bind` inside `ns` (None: current netns); returns once bound.
    pub fn start(ns: Option<&str>, bind: SocketAddr) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let handle = spawn_in(
            ns,
            move || {
                let s = udp_bound(bind)?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            },
            move |s: Socket| {
                let mut queries = 0u64;
                let mut buf = vec![0u8; 4096];
                let deadline = Instant::now() + Duration::from_secs(3600);
                while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(Some((n, from))) = recv_from(&s, &mut buf) else {
                        continue;
                    };
                    if let Some(resp) = dnswire::answer(&buf[..n]) {
                        queries += 1;
                        let _ = s.send_to(&resp, &from);
                    }
                }
                queries
            },
        )?;
        Ok(DnsServer { stop, handle })
    }

    /// Stops; returns the number of queries answered.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten().unwrap_or(0)
    }
}

/// A UDP echo loop in the current netns (for `faultlab serve udp-echo`).
fn udp_echo(bind: SocketAddr, until: Instant) -> Result<()> {
    let s = udp_bound(bind)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < until {
        if let Some((n, from)) = recv_from(&s, &mut buf)? {
            let _ = s.send_to(&buf[..n], &from);
        }
    }
    Ok(())
}

/// `faultlab serve KIND [--port N] [--bind ADDR] [--seconds S]`: runs a helper server in the
/// current network namespace until killed or S seconds (default 3600) pass.
/// KIND: udp-echo (port 9000), tcp-echo (8080), tcp-sink (8080; answers the byte count), dns (53).
pub fn serve_main(args: &[String]) -> Result<()> {
    let mut it = args.iter().skip_while(|a| a.as_str() == "serve");
    let kind = it.next().ok_or_else(|| anyhow!("usage: faultlab serve udp-echo|tcp-echo|tcp-sink|dns [--port N] [--bind ADDR] [--seconds S]"))?.clone();
    let (mut port, mut bind, mut seconds): (Option<u16>, IpAddr, u64) = (None, "::".parse()?, 3600);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--port" => port = Some(val()?.parse().context("--port")?),
            "--bind" => bind = val()?.parse().context("--bind")?,
            "--seconds" => seconds = val()?.parse().context("--seconds")?,
            other => bail!("unknown option {other} for faultlab serve"),
        }
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let default_port = match kind.as_str() {
        "udp-echo" => 9000,
        "tcp-echo" | "tcp-sink" => 8080,
        "dns" => 53,
        other => bail!("unknown server kind {other:?}: use udp-echo, tcp-echo, tcp-sink or dns"),
    };
    let addr = SocketAddr::new(bind, port.unwrap_or(default_port));
    let park = || {
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    match kind.as_str() {
        "udp-echo" => udp_echo(addr, until),
        "tcp-echo" | "tcp-sink" => {
            let mode = if kind == "tcp-echo" {
                TcpMode::Echo
            } else {
                TcpMode::Sink
            };
            let s = TcpServer::start(None, addr, mode, Duration::from_secs(30))?;
            park();
            s.stop();
            Ok(())
        }
        _ => {
            let s = DnsServer::start(None, addr)?;
            park();
            s.stop();
            Ok(())
        }
    }
}
