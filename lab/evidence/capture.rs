//! Packet capture on one device of one namespace: AF_PACKET socket in a thread that has
//! entered the namespace, a pcapng file, and named counters over the packets seen, with
//! the times of their matches (first, last, gaps) relative to the capture's start.
//!
//! Filters are tcpdump's (libpcap-compiled for the link type the socket delivers). The
//! kernel runs their union on the socket, so packets no filter wants never reach
//! userspace; here each filter is matched on its own, on the frame as libpcap would
//! show it (VLAN tag re-inserted).
//!
//! Packet times are the kernel's receive stamps (SO_TIMESTAMPNS), relative to the
//! wall-clock moment the socket was bound; when the kernel gives no stamp, the read
//! time (`recvmsg` returning), which a busy machine can delay by milliseconds.

use super::packet_socket::{sll_header, PacketSocket, Received};
use super::pcap::PcapngWriter;
use super::socket_filter::kernel_program;
use crate::model::capture::{CaptureSpec, Compiled, DEFAULT_SNAPLEN, TIMING_GAPS};
use crate::model::packet_info::{Framing, PacketInfo};
use crate::model::pcap_filter::{LinkType, PcapFilter};
use crate::verdict::Observations;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Parsed packets kept in memory for tests; the pcap file has them all.
const MAX_KEPT: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// Time since the Unix epoch: the kernel's receive stamp, else when userspace read it.
    pub ts: Duration,
    /// Sent by this namespace (PACKET_OUTGOING) rather than received.
    pub outgoing: bool,
    pub ifindex: i32,
    /// Frame length on the wire (including the link-layer or cooked header).
    pub orig_len: u32,
    pub info: PacketInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureSummary {
    pub name: String,
    /// The pcapng file.
    pub pcap: PathBuf,
    /// Packets kept by `filter` (written to the pcapng file).
    pub packets: u64,
    /// Every packet the capture received: all the device's when there is no `filter`,
    /// else those the kernel let through (matched by `filter` or a count).
    pub seen: u64,
    /// Whether the kernel filtered for the capture (false: no `filter`, or a program
    /// the kernel cannot run, and userspace filtered alone).
    #[serde(default)]
    pub kernel_filter: bool,
    /// Packets the kernel dropped because the socket buffer was full (PACKET_STATISTICS).
    pub lost: u64,
    pub counts: BTreeMap<String, u64>,
    /// When each named counter matched, relative to the capture's start.
    #[serde(default)]
    pub timing: BTreeMap<String, CounterTiming>,
    /// Key fields of the kept packets (the first 100 000).
    pub kept: Vec<CapturedPacket>,
}

impl CaptureSummary {
    /// `capture.<name>.packets`, `.seen`, `.lost`, `.<count-name>` and the timing of each
    /// count (see [`CounterTiming::observations`]).
    pub fn observations(&self, name: &str) -> Observations {
        tally_observations(
            name,
            &Tally {
                packets: self.packets,
                seen: self.seen,
                lost: self.lost,
                counts: self.counts.clone(),
                timing: self.timing.clone(),
            },
        )
    }
}

/// When one named counter matched: times since the capture's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterTiming {
    pub first: Option<Duration>,
    pub last: Option<Duration>,
    pub gap_min: Option<Duration>,
    pub gap_max: Option<Duration>,
    /// The first [`TIMING_GAPS`] gaps between consecutive matches.
    pub gaps: Vec<Duration>,
}

impl CounterTiming {
    /// Records one match at `t` (since the capture's start; non-decreasing in practice,
    /// a time before the previous one counts as a gap of 0).
    pub fn record(&mut self, t: Duration) {
        if let Some(last) = self.last {
            let gap = t.saturating_sub(last);
            self.gap_min = Some(self.gap_min.map_or(gap, |g| g.min(gap)));
            self.gap_max = Some(self.gap_max.map_or(gap, |g| g.max(gap)));
            if self.gaps.len() < TIMING_GAPS {
                self.gaps.push(gap);
            }
        }
        self.first.get_or_insert(t);
        self.last = Some(t);
    }

    /// `<prefix>.first_ms`, `.last_ms` (one match or more), `.gap_min_ms`, `.gap_max_ms`
    /// and `.gap1_ms` ... `.gapN_ms` (two or more; N ≤ 32): what was not measured is
    /// absent. Milliseconds, microsecond resolution.
    pub fn observations(&self, prefix: &str, obs: &mut Observations) {
        let mut put = |k: &str, d: Option<Duration>| {
            if let Some(d) = d {
                obs.insert(format!("{prefix}.{k}"), ms(d));
            }
        };
        put("first_ms", self.first);
        put("last_ms", self.last);
        put("gap_min_ms", self.gap_min);
        put("gap_max_ms", self.gap_max);
        for (i, g) in self.gaps.iter().enumerate() {
            put(&format!("gap{}_ms", i + 1), Some(*g));
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The counters a running capture shares with [`Capture::counts_now`].
#[derive(Debug, Clone, Default)]
struct Tally {
    packets: u64,
    seen: u64,
    lost: u64,
    counts: BTreeMap<String, u64>,
    timing: BTreeMap<String, CounterTiming>,
}

fn tally_observations(name: &str, t: &Tally) -> Observations {
    let mut obs = Observations::new();
    let mut put = |k: &str, v: u64| obs.insert(format!("capture.{name}.{k}"), v as f64);
    put("packets", t.packets);
    put("seen", t.seen);
    put("lost", t.lost);
    for (k, v) in &t.counts {
        put(k, *v);
    }
    for (k, timing) in &t.timing {
        timing.observations(&format!("capture.{name}.{k}"), &mut obs);
    }
    obs
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running capture; `stop` returns what it saw, `counts_now` what it has seen so far.
/// Dropping it stops the thread too.
pub struct Capture {
    name: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<JoinHandle<Result<CaptureSummary>>>,
}

impl Capture {
    /// Returns once the socket is bound: every packet from then on is captured.
    pub fn start(netns: &str, spec: &CaptureSpec, pcap_path: &Path) -> Result<Capture> {
        spec.validate().map_err(|e| anyhow!(e))?;
        let file = File::create(pcap_path)
            .with_context(|| format!("create pcap file {}", pcap_path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally {
            counts: spec.count.keys().map(|k| (k.clone(), 0)).collect(),
            ..Tally::default()
        }));
        let (ready_tx, ready_rx) = mpsc::channel();
        let job = Job {
            netns: netns.to_string(),
            spec: spec.clone(),
            snaplen: spec.snaplen.unwrap_or(DEFAULT_SNAPLEN),
            tally: tally.clone(),
            name: spec.name.clone(),
            pcap: pcap_path.to_path_buf(),
            kept: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("capture-{}", spec.name))
            .spawn({
                let stop = stop.clone();
                move || job.run(file, &stop, ready_tx)
            })?;
        match ready_rx.recv() {
            Ok(()) => Ok(Capture {
                name: spec.name.clone(),
                stop,
                tally,
                thread: Some(thread),
            }),
            // The thread failed before binding: its error says why.
            Err(_) => {
                let _ = std::fs::remove_file(pcap_path);
                Err(join(thread)
                    .err()
                    .unwrap_or_else(|| anyhow!("capture thread ended before it was ready"))
                    .context(format!("capture `{}` on {netns}:{}", spec.name, spec.dev)))
            }
        }
    }

    /// The observations `stop` would give (same names) for the packets seen so far;
    /// `lost` is brought up to date whenever the socket has been idle for 50 ms. Cheap
    /// enough for a `wait` step to poll: the counters are copied under a lock the capture
    /// thread holds only to bump them, and named outside it.
    pub fn counts_now(&self) -> Observations {
        let tally = lock(&self.tally).clone();
        tally_observations(&self.name, &tally)
    }

    pub fn stop(mut self) -> Result<CaptureSummary> {
        self.stop.store(true, Ordering::SeqCst);
        join(self.thread.take().expect("thread present until stop"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = join(t);
        }
    }
}

fn join(t: JoinHandle<Result<CaptureSummary>>) -> Result<CaptureSummary> {
    t.join().map_err(|_| anyhow!("capture thread panicked"))?
}

struct Job {
    netns: String,
    spec: CaptureSpec,
    snaplen: u32,
    tally: Arc<Mutex<Tally>>,
    name: String,
    pcap: PathBuf,
    kept: Vec<CapturedPacket>,
}

/// The pcapng interfaces of a capture: its device, or for `any` each device packets
/// arrive on, named `node:dev` with the namespace in the description.
struct Interfaces {
    node: String,
    netns: String,
    link: LinkType,
    /// Interface id by ifindex (one entry, ifindex 0, unless the device is `any`).
    ids: BTreeMap<i32, u32>,
}

impl Interfaces {
    fn id<W: std::io::Write>(
        &mut self,
        out: &mut PcapngWriter<W>,
        ifindex: i32,
        dev: &str,
    ) -> Result<u32> {
        if let Some(id) = self.ids.get(&ifindex) {
            return Ok(*id);
        }
        let dev = if ifindex == 0 {
            dev.to_string()
        } else {
            nix::net::if_::if_indextoname(ifindex as u32)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|_| format!("ifindex{ifindex}"))
        };
        let id = out.add_interface(
            &format!("{}:{dev}", self.node),
            &format!("netns {}", self.netns),
            self.link,
        )?;
        self.ids.insert(ifindex, id);
        Ok(id)
    }
}

/// The frame as libpcap shows it: the tag the kernel took off put back after the MAC
/// addresses (Ethernet) or in place of the protocol field (cooked, libpcap's
/// `vlan_offset` 14), the original protocol after it.
fn with_vlan_tag(frame: &[u8], link: LinkType, tag: [u8; 4]) -> Vec<u8> {
    let at = match link {
        LinkType::Ethernet => 12,
        LinkType::LinuxSll => 14,
    }
    .min(frame.len());
    let mut f = Vec::with_capacity(frame.len() + 4);
    f.extend_from_slice(&frame[..at]);
    f.extend_from_slice(&tag);
    f.extend_from_slice(&frame[at..]);
    f
}

impl Job {
    fn run(
        mut self,
        file: File,
        stop: &AtomicBool,
        ready: mpsc::Sender<()>,
    ) -> Result<CaptureSummary> {
        crate::netns::enter(&self.netns)?;
        let dev = self.spec.dev.clone();
        let cooked = PacketSocket::is_cooked(&dev)?;
        let (link, framing) = if cooked {
            (LinkType::LinuxSll, Framing::LinuxSll)
        } else {
            (LinkType::Ethernet, Framing::Ethernet)
        };
        let Compiled { keep, counts } = self
            .spec
            .compile(link)
            .map_err(|e| anyhow!("{e} (device `{dev}` delivers {link:?} frames)"))?;
        let kernel = keep.as_ref().and_then(|k| {
            let all: Vec<&PcapFilter> = std::iter::once(k)
                .chain(counts.iter().map(|(_, f)| f))
                .collect();
            kernel_program(&all, link)
        });
        let sock = PacketSocket::open(&dev, kernel.as_deref())?;
        let mut pcap = PcapngWriter::new(BufWriter::new(file), self.snaplen)?;
        let mut interfaces = Interfaces {
            node: self.spec.node.clone(),
            netns: self.netns.clone(),
            link,
            ids: BTreeMap::new(),
        };
        if dev != "any" {
            interfaces.id(&mut pcap, 0, &dev)?;
        }
        // Time zero of the counters' timing: the socket is bound, every packet from now on
        // is seen.
        let t0 = Instant::now();
        let wall0 = std::time::SystemTime::now();
        let _ = ready.send(());

        let header = if sock.cooked { 16 } else { 0 };
        let mut buf = vec![0u8; header + 65536 + 4096];
        let mut matched: Vec<&(String, PcapFilter)> = Vec::with_capacity(counts.len());
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let (got, at) = match sock.recv(&mut buf[header..], stopping) {
                Ok(r) => {
                    let at = r
                        .stamp
                        .and_then(|t| t.duration_since(wall0).ok())
                        .unwrap_or_else(|| t0.elapsed());
                    (r, at)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Idle: a cheap moment to publish the kernel's drop count.
                    let lost = sock.drops();
                    if lost > 0 {
                        lock(&self.tally).lost += lost;
                    }
                    if stopping {
                        break;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("recvmsg on the packet socket"),
            };
            let Received {
                len,
                sll,
                stamp,
                vlan,
            } = got;
            let outgoing = sll.sll_pkttype == libc::PACKET_OUTGOING;
            // The loopback device shows each packet twice (out, then in); libpcap keeps one.
            if outgoing && sll.sll_ifindex == sock.lo_ifindex {
                continue;
            }
            if sock.cooked {
                buf[..16].copy_from_slice(&sll_header(&sll));
            }
            let caplen = header + len.min(buf.len() - header);
            let untagged = &buf[..caplen];
            let tagged = vlan.map(|tag| with_vlan_tag(untagged, link, tag));
            let frame = tagged.as_deref().unwrap_or(untagged);
            let orig_len = (header + len + if vlan.is_some() { 4 } else { 0 }) as u32;
            let kept = keep.as_ref().is_none_or(|f| f.matches(frame, orig_len));
            matched.clear();
            matched.extend(counts.iter().filter(|(_, f)| f.matches(frame, orig_len)));
            {
                let mut tally = lock(&self.tally);
                tally.seen += 1;
                tally.packets += u64::from(kept);
                for (name, _) in &matched {
                    match tally.counts.get_mut(name) {
                        Some(n) => *n += 1,
                        None => {
                            tally.counts.insert(name.clone(), 1);
                        }
                    }
                    match tally.timing.get_mut(name) {
                        Some(t) => t.record(at),
                        None => {
                            let mut t = CounterTiming::default();
                            t.record(at);
                            tally.timing.insert(name.clone(), t);
                        }
                    }
                }
            }
            if kept {
                let ts = stamp
                    .unwrap_or_else(SystemTime::now)
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let ifindex = if dev == "any" { sll.sll_ifindex } else { 0 };
                let iface = interfaces.id(&mut pcap, ifindex, &dev)?;
                pcap.write_packet(iface, ts, frame, orig_len)?;
                if self.kept.len() < MAX_KEPT {
                    self.kept.push(CapturedPacket {
                        ts,
                        outgoing,
                        ifindex: sll.sll_ifindex,
                        orig_len,
                        info: PacketInfo::parse(framing, untagged),
                    });
                }
            }
        }
        pcap.finish()?;
        let t = {
            let mut tally = lock(&self.tally);
            tally.lost += sock.drops();
            std::mem::take(&mut *tally)
        };
        Ok(CaptureSummary {
            name: self.name,
            pcap: self.pcap,
            packets: t.packets,
            seen: t.seen,
            kernel_filter: kernel.is_some(),
            lost: t.lost,
            counts: t.counts,
            timing: t.timing,
            kept: self.kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> CaptureSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn deserializes_scenario_syntax() {
        let s = spec(
            r#"
            name = "ext"
            node = "host"
            dev = "eth1"
            filter = "tcp or icmp"
            [count]
            rst_to_remote = "tcp[tcpflags] & tcp-rst != 0 and dst host 203.0.113.2"
            redirects = "icmp[icmptype] == icmp-redirect"
            "#,
        );
        assert_eq!(s.count.len(), 2);
        assert_eq!(s.snaplen, None);
        s.validate().unwrap();
        assert!(
            toml::from_str::<CaptureSpec>("name='a'\nnode='n'\ndev='d'\nfliter='tcp'").is_err()
        );
    }

    #[test]
    fn validate_names_field_and_libpcap_message() {
        let mut s = spec("name='ext'\nnode='h'\ndev='eth1'\n[count]\nbad='tcp prot 80'");
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("capture `ext`: field `count.bad` = \"tcp prot 80\": libpcap: ")
                && e.contains("syntax error"),
            "{e}"
        );
        s.count.clear();
        s.filter = Some("port 70000".into());
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("field `filter` = \"port 70000\": libpcap: illegal port number 70000"),
            "{e}"
        );
        s.filter = None;
        s.count.insert("packets".into(), "tcp".into());
        assert!(s.validate().unwrap_err().contains("rename it"));
        s.count.clear();
        s.dev = "a-very-long-device-name".into();
        assert!(s.validate().unwrap_err().contains("field `dev`"));
    }

    #[test]
    fn observation_names() {
        let sum = CaptureSummary {
            name: "ext".into(),
            pcap: "x.pcap".into(),
            packets: 3,
            seen: 5,
            kernel_filter: true,
            lost: 0,
            counts: BTreeMap::from([("rst_to_remote".into(), 2), ("none".into(), 0)]),
            timing: BTreeMap::from([("rst_to_remote".into(), timing(&[5_000, 25_250]))]),
            kept: vec![],
        };
        let obs = sum.observations("ext");
        let want: Observations = [
            ("capture.ext.packets", 3.0),
            ("capture.ext.seen", 5.0),
            ("capture.ext.lost", 0.0),
            ("capture.ext.none", 0.0),
            ("capture.ext.rst_to_remote", 2.0),
            ("capture.ext.rst_to_remote.first_ms", 5.0),
            ("capture.ext.rst_to_remote.last_ms", 25.25),
            ("capture.ext.rst_to_remote.gap_min_ms", 20.25),
            ("capture.ext.rst_to_remote.gap_max_ms", 20.25),
            ("capture.ext.rst_to_remote.gap1_ms", 20.25),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(obs, want);
    }

    /// Matches at these microseconds since the start.
    fn timing(us: &[u64]) -> CounterTiming {
        let mut t = CounterTiming::default();
        for &u in us {
            t.record(Duration::from_micros(u));
        }
        t
    }

    fn timing_obs(us: &[u64]) -> Observations {
        let mut obs = Observations::new();
        timing(us).observations("c", &mut obs);
        obs
    }

    #[test]
    fn gaps_of_a_doubling_backoff() {
        // ICMP-redirect-like: 20 ms, doubling.
        let obs = timing_obs(&[3_000, 23_000, 63_000, 143_000, 303_000]);
        assert_eq!(obs["c.first_ms"], 3.0);
        assert_eq!(obs["c.last_ms"], 303.0);
        assert_eq!(obs["c.gap1_ms"], 20.0);
        assert_eq!(obs["c.gap2_ms"], 40.0);
        assert_eq!(obs["c.gap3_ms"], 80.0);
        assert_eq!(obs["c.gap4_ms"], 160.0);
        assert!(!obs.contains_key("c.gap5_ms"));
        assert_eq!(obs["c.gap_min_ms"], 20.0);
        assert_eq!(obs["c.gap_max_ms"], 160.0);
        let e = crate::judge::Expectation::parse("c.gap2_ms >= 1.8 * c.gap1_ms").unwrap();
        assert!(e.eval(&obs).unwrap().0);
    }

    #[test]
    fn unmeasured_metrics_are_absent() {
        assert!(timing_obs(&[]).is_empty());
        let one = timing_obs(&[1_500]);
        assert_eq!(one.keys().collect::<Vec<_>>(), ["c.first_ms", "c.last_ms"]);
        assert_eq!((one["c.first_ms"], one["c.last_ms"]), (1.5, 1.5));
        let two = timing_obs(&[1_000, 1_000]);
        assert_eq!(two["c.gap1_ms"], 0.0);
        assert_eq!(two["c.gap_min_ms"], 0.0);
    }

    #[test]
    fn only_the_first_32_gaps_but_min_max_over_all() {
        let mut us: Vec<u64> = (0..40).map(|i| i * 1_000).collect();
        us.push(39_000 + 500); // gap 40: 0.5 ms
        us.push(39_500 + 9_000); // gap 41: 9 ms
        let obs = timing_obs(&us);
        assert!(obs.contains_key(&format!("c.gap{TIMING_GAPS}_ms")));
        assert!(!obs.contains_key(&format!("c.gap{}_ms", TIMING_GAPS + 1)));
        assert_eq!(obs["c.gap_min_ms"], 0.5);
        assert_eq!(obs["c.gap_max_ms"], 9.0);
        // An out-of-order time (never from one clock) is a gap of 0, not a panic.
        let back = timing_obs(&[5_000, 4_000]);
        assert_eq!(back["c.gap1_ms"], 0.0);
    }
}
