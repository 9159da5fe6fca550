//! Packet capture on one device of one namespace: AF_PACKET socket in a thread that has
//! entered the namespace, a pcap file, and named counters over the packets seen.

use super::packet_socket::{sll_header, PacketSocket};
use super::pcap::{LinkType, PcapWriter};
use crate::model::capture::{CaptureSpec, Compiled, DEFAULT_SNAPLEN};
use crate::model::capture_filter::Filter;
use crate::model::packet_info::{Framing, PacketInfo};
use crate::verdict::Observations;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parsed packets kept in memory for tests; the pcap file has them all.
const MAX_KEPT: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// Time since the Unix epoch at which userspace read the packet.
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
    pub pcap: PathBuf,
    /// Packets kept by `filter` (written to the pcap file).
    pub packets: u64,
    /// Every packet read from the device.
    pub seen: u64,
    /// Packets the kernel dropped because the socket buffer was full (PACKET_STATISTICS).
    pub lost: u64,
    pub counts: BTreeMap<String, u64>,
    /// Key fields of the kept packets (the first 100 000).
    pub kept: Vec<CapturedPacket>,
}

impl CaptureSummary {
    /// `capture.<name>.packets`, `.seen`, `.lost` and `.<count-name>`.
    pub fn observations(&self, name: &str) -> Observations {
        let mut obs = Observations::new();
        let mut put = |k: &str, v: u64| obs.insert(format!("capture.{name}.{k}"), v as f64);
        put("packets", self.packets);
        put("seen", self.seen);
        put("lost", self.lost);
        for (k, v) in &self.counts {
            put(k, *v);
        }
        obs
    }
}

/// A running capture; `stop` returns what it saw. Dropping it stops the thread too.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<CaptureSummary>>>,
}

impl Capture {
    /// Returns once the socket is bound: every packet from then on is captured.
    pub fn start(netns: &str, spec: &CaptureSpec, pcap_path: &Path) -> Result<Capture> {
        let Compiled { keep, counts } = spec.compile().map_err(|e| anyhow!(e))?;
        let file = File::create(pcap_path)
            .with_context(|| format!("create pcap file {}", pcap_path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let job = Job {
            netns: netns.to_string(),
            dev: spec.dev.clone(),
            snaplen: spec.snaplen.unwrap_or(DEFAULT_SNAPLEN),
            keep,
            counts,
            summary: CaptureSummary {
                name: spec.name.clone(),
                pcap: pcap_path.to_path_buf(),
                packets: 0,
                seen: 0,
                lost: 0,
                counts: spec.count.keys().map(|k| (k.clone(), 0)).collect(),
                kept: Vec::new(),
            },
        };
        let thread = std::thread::Builder::new()
            .name(format!("capture-{}", spec.name))
            .spawn({
                let stop = stop.clone();
                move || job.run(file, &stop, ready_tx)
            })?;
        match ready_rx.recv() {
            Ok(()) => Ok(Capture {
                stop,
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
    dev: String,
    snaplen: u32,
    keep: Option<Filter>,
    counts: Vec<(String, Filter)>,
    summary: CaptureSummary,
}

impl Job {
    fn run(
        mut self,
        file: File,
        stop: &AtomicBool,
        ready: mpsc::Sender<()>,
    ) -> Result<CaptureSummary> {
        crate::netns::enter(&self.netns)?;
        let sock = PacketSocket::open(&self.dev)?;
        let linktype = if sock.cooked {
            LinkType::LinuxSll
        } else {
            LinkType::Ethernet
        };
        let framing = if sock.cooked {
            Framing::LinuxSll
        } else {
            Framing::Ethernet
        };
        let mut pcap = PcapWriter::new(BufWriter::new(file), linktype, self.snaplen)?;
        let _ = ready.send(());

        let header = if sock.cooked { 16 } else { 0 };
        let mut buf = vec![0u8; header + 65536 + 4096];
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let (len, sll) = match sock.recv(&mut buf[header..], stopping) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stopping {
                        break;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("recvfrom on the packet socket"),
            };
            let outgoing = sll.sll_pkttype == libc::PACKET_OUTGOING;
            // The loopback device shows each packet twice (out, then in); libpcap keeps one.
            if outgoing && sll.sll_ifindex == sock.lo_ifindex {
                continue;
            }
            if sock.cooked {
                buf[..16].copy_from_slice(&sll_header(&sll));
            }
            let caplen = header + len.min(buf.len() - header);
            let frame = &buf[..caplen];
            let orig_len = (header + len) as u32;
            let info = PacketInfo::parse(framing, frame);
            self.summary.seen += 1;
            for (name, f) in &self.counts {
                if f.matches(&info) {
                    *self.summary.counts.entry(name.clone()).or_default() += 1;
                }
            }
            if self.keep.as_ref().is_none_or(|f| f.matches(&info)) {
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                pcap.write_packet(ts, frame, orig_len)?;
                self.summary.packets += 1;
                if self.summary.kept.len() < MAX_KEPT {
                    self.summary.kept.push(CapturedPacket {
                        ts,
                        outgoing,
                        ifindex: sll.sll_ifindex,
                        orig_len,
                        info,
                    });
                }
            }
        }
        self.summary.lost = sock.drops();
        pcap.finish()?;
        Ok(self.summary)
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
            rst_to_remote = "tcp and rst and dst 203.0.113.2"
            redirects = "icmp and icmp-type 5"
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
    fn validate_names_field_and_column() {
        let mut s = spec("name='ext'\nnode='h'\ndev='eth1'\n[count]\nbad='tcp and rts'");
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("capture `ext`: field `count.bad`, column 9: unknown primitive `rts`"),
            "{e}"
        );
        s.count.clear();
        s.filter = Some("port".into());
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("field `filter`, column 5: `port` needs a value, e.g. `port 80`"),
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
            lost: 0,
            counts: BTreeMap::from([("rst_to_remote".into(), 2)]),
            kept: vec![],
        };
        let obs = sum.observations("ext");
        assert_eq!(obs["capture.ext.packets"], 3.0);
        assert_eq!(obs["capture.ext.seen"], 5.0);
        assert_eq!(obs["capture.ext.lost"], 0.0);
        assert_eq!(obs["capture.ext.rst_to_remote"], 2.0);
    }
}
