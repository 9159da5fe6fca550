//! Why packets died: `skb:kfree_skb` (reason + location), attributed to the lab node whose
//! network namespace the skb died in, by the best method the kernel offers:
//!
//! - `bpf` (kernel BTF and the bpf syscall): an eBPF program reads each dropped skb's
//!   namespace in the kernel (that of `skb->dev`, else of `skb->sk`, so output-path drops
//!   count too) and counts drops of the lab's namespaces only (lab/evidence/bpf).
//!   `drops.<REASON>` then counts drops in the lab's namespaces, so concurrent labs do not
//!   see each other's drops.
//! - `tracefs` (fallback): the events in a private tracefs instance, attributed by the last
//!   device the skb was seen on, for device names unique in the lab; `drops.<REASON>`
//!   counts drops anywhere on the machine while the trace ran.
//!
//! The method used is the observation `drops_method.bpf` or `drops_method.tracefs` (1).
//!
//! Reasons that never occurred read 0: when the trace starts it reads the kernel's list
//! of drop reasons (BTF, or the event's format file), and [`DropReport::observations`]
//! gives `drops.<REASON>` and `drops.<node>.<REASON>` for every known reason and every node
//! the trace was told about. `drops.<REASON>@<function>` exists only for what was seen.
//! Consequence for expressions: `sum(drops.x.*) == 0` means "nothing dropped at x",
//! whereas `count(drops.x.*)` and `exists(drops.x.*)` count names, which now include
//! every reason the kernel knows.

use super::bpf::BpfDropTrace;
use super::tracefs::Instance;
use crate::verdict::{DropStat, Observations};
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// kfree_skb is the evidence; the device events give attribution; consume_skb forgets skbs
/// that were freed normally, so a recycled skb address is not blamed on an old device.
const EVENTS: [&str; 4] = [
    "skb/kfree_skb",
    "skb/consume_skb",
    "net/netif_receive_skb",
    "net/net_dev_queue",
];
const BUFFER_SIZE_KB: &str = "4096";
/// Attribution memory bound: skbs freed by paths that fire no tracepoint would pile up.
const MAX_TRACKED_SKBS: usize = 1 << 16;
/// The kfree_skb event's format file, relative to the tracefs (instance) root.
const KFREE_SKB_FORMAT: &str = "events/skb/kfree_skb/format";
/// Entries of the reason enum that are not drop reasons (sentinels, "not dropped").
pub(super) const NOT_REASONS: [&str; 3] = ["NOT_DROPPED_YET", "CONSUMED", "MAX"];

/// The drop reasons listed in `events/skb/kfree_skb/format`: the names of the
/// `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)` table, in the kernel's
/// order, without the `MAX` sentinel. Empty for kernels without the reason field (< 5.17).
pub fn parse_reason_list(format: &str) -> Vec<String> {
    let Some(start) = format.find("__print_symbolic(REC->reason") else {
        return Vec::new();
    };
    let rest = &format[start + "__print_symbolic(".len()..];
    // Entries are `{ value, "NAME" }`; the table ends at the first `)` (names have none).
    let table = &rest[..rest.find(')').unwrap_or(rest.len())];
    let mut names: Vec<String> = Vec::new();
    for entry in table.split('{').skip(1) {
        let entry = entry.split('}').next().unwrap_or("");
        let Some(name) = entry.split('"').nth(1) else {
            continue;
        };
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok && !NOT_REASONS.contains(&name) && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    KfreeSkb {
        skbaddr: String,
        /// Function name of the location, without `+off/len` or a module suffix.
        location: String,
        reason: String,
    },
    ConsumeSkb {
        skbaddr: String,
    },
    /// netif_receive_skb or net_dev_queue: the skb is on this device now.
    OnDevice {
        skbaddr: String,
        dev: String,
    },
    /// `CPU:N [LOST M EVENTS]`: the ring buffer overflowed.
    Lost(u64),
}

/// Parses one `trace_pipe` line; None for other events and noise.
pub fn parse_line(line: &str) -> Option<TraceEvent> {
    if let Some(rest) = line.trim().strip_prefix("CPU:") {
        let n = rest.split("[LOST ").nth(1)?.split_whitespace().next()?;
        return Some(TraceEvent::Lost(n.parse().ok()?));
    }
    // The task name before the timestamp may contain anything; `: <event>: ` may not.
    let field = |body: &str, key: &str| -> Option<String> {
        body.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    if let Some((_, body)) = line.split_once(": kfree_skb: ") {
        let location = field(body, "location=")?;
        let function = location.split('+').next().unwrap_or(&location).to_string();
        let reason = body.split_once("reason: ")?.1.split_whitespace().next()?;
        return Some(TraceEvent::KfreeSkb {
            skbaddr: field(body, "skbaddr=")?,
            location: function,
            reason: reason.to_string(),
        });
    }
    if let Some((_, body)) = line.split_once(": consume_skb: ") {
        return Some(TraceEvent::ConsumeSkb {
            skbaddr: field(body, "skbaddr=")?,
        });
    }
    let body = line
        .split_once(": netif_receive_skb: ")
        .or_else(|| line.split_once(": net_dev_queue: "))?
        .1;
    Some(TraceEvent::OnDevice {
        skbaddr: field(body, "skbaddr=")?,
        dev: field(body, "dev=")?,
    })
}

/// Folds trace events into attributed drop counts.
#[derive(Debug, Default)]
pub struct DropAggregator {
    /// device name → lab node, for devices whose name is unique in the lab.
    devices: BTreeMap<String, String>,
    last_dev: HashMap<String, String>,
    counts: BTreeMap<(String, String, Option<String>), u64>,
    pub lost_events: u64,
}

impl DropAggregator {
    pub fn new(devices: BTreeMap<String, String>) -> Self {
        DropAggregator {
            devices,
            ..Default::default()
        }
    }

    pub fn feed_line(&mut self, line: &str) {
        if let Some(ev) = parse_line(line) {
            self.feed(ev);
        }
    }

    pub fn feed(&mut self, ev: TraceEvent) {
        match ev {
            TraceEvent::KfreeSkb {
                skbaddr,
                location,
                reason,
            } => {
                let node = self
                    .last_dev
                    .remove(&skbaddr)
                    .and_then(|dev| self.devices.get(&dev).cloned());
                *self.counts.entry((reason, location, node)).or_default() += 1;
            }
            TraceEvent::ConsumeSkb { skbaddr } => {
                self.last_dev.remove(&skbaddr);
            }
            TraceEvent::OnDevice { skbaddr, dev } => {
                if self.last_dev.len() >= MAX_TRACKED_SKBS {
                    self.last_dev.clear();
                }
                self.last_dev.insert(skbaddr, dev);
            }
            TraceEvent::Lost(n) => self.lost_events += n,
        }
    }

    pub fn stats(&self) -> Vec<DropStat> {
        resolve_locations(&self.counts)
    }
}

/// Counts by (reason, location, node) as [`DropStat`]s, raw location addresses turned
/// into function names through /proc/kallsyms (counts of one function merged).
fn resolve_locations(counts: &BTreeMap<(String, String, Option<String>), u64>) -> Vec<DropStat> {
    let addrs: Vec<u64> = counts
        .keys()
        .filter_map(|(_, loc, _)| super::kallsyms::raw_address(loc))
        .collect();
    let symbols = (!addrs.is_empty())
        .then(|| super::kallsyms::Kallsyms::covering(&addrs))
        .flatten();
    let mut merged: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
    for ((reason, location, node), &count) in counts {
        let function = super::kallsyms::raw_address(location)
            .and_then(|a| symbols.as_ref()?.function_at(a))
            .map(str::to_string)
            .unwrap_or_else(|| location.clone());
        *merged
            .entry((reason.clone(), function, node.clone()))
            .or_default() += count;
    }
    merged
        .into_iter()
        .map(|((reason, location, node), count)| DropStat {
            reason,
            location,
            node,
            count,
        })
        .collect()
}

/// `drops.<REASON>`, `drops.<REASON>@<function>`, `drops.<node>.<REASON>`, for what was
/// seen only (see [`drops_observations_zero_filled`]).
pub fn drops_observations(drops: &[DropStat]) -> Observations {
    let mut obs = Observations::new();
    for d in drops {
        let n = d.count as f64;
        *obs.entry(format!("drops.{}", d.reason)).or_default() += n;
        *obs.entry(format!("drops.{}@{}", d.reason, d.location))
            .or_default() += n;
        if let Some(node) = &d.node {
            *obs.entry(format!("drops.{node}.{}", d.reason)).or_default() += n;
        }
    }
    obs
}

/// [`drops_observations`] plus 0 for `drops.<REASON>` of every `known` reason and
/// `drops.<node>.<REASON>` of every node in `nodes` that was not seen. Location-qualified
/// names (`drops.<REASON>@<function>`) stay those seen.
pub fn drops_observations_zero_filled(
    drops: &[DropStat],
    known: &[String],
    nodes: &[String],
) -> Observations {
    let mut obs = drops_observations(drops);
    for reason in known {
        obs.entry(format!("drops.{reason}")).or_insert(0.0);
        for node in nodes {
            obs.entry(format!("drops.{node}.{reason}")).or_insert(0.0);
        }
    }
    obs
}

/// How drops were attributed to nodes (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropMethod {
    Bpf,
    Tracefs,
}

impl DropMethod {
    pub fn name(self) -> &'static str {
        match self {
            DropMethod::Bpf => "bpf",
            DropMethod::Tracefs => "tracefs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    pub drops: Vec<DropStat>,
    /// Events the ring buffer lost: when non-zero the counts are lower bounds.
    pub lost_events: u64,
    /// The kernel's drop reasons (BTF or the kfree_skb format file), read when the trace
    /// started; empty when they could not be read.
    pub known_reasons: Vec<String>,
    /// The nodes the trace could attribute drops to.
    pub nodes: Vec<String>,
    pub method: DropMethod,
    /// Why the BPF method was not used, when it was not.
    pub bpf_unavailable: Option<String>,
}

impl DropReport {
    /// Zero-filled (see [`drops_observations_zero_filled`]), plus `drops_method.<method>`
    /// = 1 and, when the trace lost events, `drops.lost_events`.
    pub fn observations(&self) -> Observations {
        let mut obs = drops_observations_zero_filled(&self.drops, &self.known_reasons, &self.nodes);
        obs.insert(format!("drops_method.{}", self.method.name()), 1.0);
        if self.lost_events > 0 {
            obs.insert("drops.lost_events".into(), self.lost_events as f64);
        }
        obs
    }
}

/// Where the lab's drops can happen: what each method needs to attribute them.
#[derive(Debug, Clone, Default)]
pub struct DropTargets {
    /// node → its network namespace name (BPF method).
    pub namespaces: BTreeMap<String, String>,
    /// device name → node, for names unique in the lab (tracefs method).
    pub devices: BTreeMap<String, String>,
}

enum Backend {
    Bpf(BpfDropTrace),
    Tracefs(TracefsTrace),
}

/// A running drop trace. Dropping it without `stop` still detaches everything.
pub struct DropTrace {
    backend: Backend,
    known_reasons: Vec<String>,
    nodes: Vec<String>,
    bpf_unavailable: Option<String>,
    /// Reason value → name (BPF method).
    reason_names: BTreeMap<u32, String>,
}

impl DropTrace {
    /// The best method the kernel offers: BPF, else tracefs. `instance_name` (the tracefs
    /// instance, unique per run: `<run_id>-drops`) is used by the fallback only.
    pub fn start(instance_name: &str, targets: &DropTargets) -> Result<DropTrace> {
        Self::start_with(None, instance_name, targets)
    }

    /// `method`: force one (tests), or None for the best available.
    pub fn start_with(
        method: Option<DropMethod>,
        instance_name: &str,
        targets: &DropTargets,
    ) -> Result<DropTrace> {
        let mut bpf_unavailable = None;
        if method != Some(DropMethod::Tracefs) {
            match start_bpf(&targets.namespaces) {
                Ok(t) => return Ok(t),
                Err(e) if method.is_none() => {
                    let why = format!("{e:#}");
                    static SAID: std::sync::Once = std::sync::Once::new();
                    SAID.call_once(|| {
                        eprintln!("faultlab: BPF drop tracer unavailable ({why}); using tracefs")
                    });
                    bpf_unavailable = Some(why);
                }
                Err(e) => return Err(e),
            }
        }
        let (trace, known_reasons) = TracefsTrace::start(instance_name, &targets.devices)?;
        let mut nodes: Vec<String> = targets.devices.values().cloned().collect();
        nodes.sort();
        nodes.dedup();
        Ok(DropTrace {
            backend: Backend::Tracefs(trace),
            known_reasons,
            nodes,
            bpf_unavailable,
            reason_names: BTreeMap::new(),
        })
    }

    pub fn method(&self) -> DropMethod {
        match self.backend {
            Backend::Bpf(_) => DropMethod::Bpf,
            Backend::Tracefs(_) => DropMethod::Tracefs,
        }
    }

    /// Ids of the loaded BPF program and maps (BPF method), for leak checks.
    pub fn bpf_object_ids(&self) -> Option<&super::bpf::ObjectIds> {
        match &self.backend {
            Backend::Bpf(t) => Some(t.object_ids()),
            Backend::Tracefs(_) => None,
        }
    }

    /// The kernel's drop reasons, read at start.
    pub fn known_reasons(&self) -> &[String] {
        &self.known_reasons
    }

    pub fn stop(self) -> Result<Vec<DropStat>> {
        Ok(self.stop_report()?.drops)
    }

    pub fn stop_report(self) -> Result<DropReport> {
        let method = self.method();
        let (drops, lost_events) = match self.backend {
            Backend::Tracefs(t) => {
                let agg = t.stop()?;
                (agg.stats(), agg.lost_events)
            }
            Backend::Bpf(t) => {
                let counts = t.stop()?;
                let mut by_name: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
                for ((node, reason, location), n) in counts.drops {
                    let reason = self
                        .reason_names
                        .get(&reason)
                        .cloned()
                        .unwrap_or_else(|| format!("REASON_{reason:#x}"));
                    *by_name
                        .entry((reason, format!("{location:016x}"), Some(node)))
                        .or_default() += n;
                }
                // A full map is the BPF method's way of losing events.
                (resolve_locations(&by_name), counts.map_full)
            }
        };
        Ok(DropReport {
            drops,
            lost_events,
            known_reasons: self.known_reasons,
            nodes: self.nodes,
            method,
            bpf_unavailable: self.bpf_unavailable,
        })
    }
}

fn start_bpf(namespaces: &BTreeMap<String, String>) -> Result<DropTrace> {
    let reasons = super::bpf::reason_names()?;
    let trace = BpfDropTrace::start(namespaces)?;
    Ok(DropTrace {
        backend: Backend::Bpf(trace),
        known_reasons: reasons.iter().map(|(_, n)| n.clone()).collect(),
        nodes: namespaces.keys().cloned().collect(),
        bpf_unavailable: None,
        reason_names: reasons.into_iter().collect(),
    })
}

/// The tracefs method: a private instance and a thread reading its trace_pipe.
struct TracefsTrace {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<DropAggregator>>>,
    instance: Option<Instance>,
}

impl TracefsTrace {
    /// `lab_devices` maps device names unique within the lab to their node. Returns the
    /// trace and the kernel's drop reasons from the event's format file.
    fn start(
        instance_name: &str,
        lab_devices: &BTreeMap<String, String>,
    ) -> Result<(TracefsTrace, Vec<String>)> {
        let instance = Instance::create(instance_name)?;
        // A kernel whose format file cannot be read still traces; it just zero-fills nothing.
        let known_reasons = instance
            .read(KFREE_SKB_FORMAT)
            .map(|f| parse_reason_list(&f))
            .unwrap_or_default();
        instance.write("tracing_on", "0")?;
        instance.write("buffer_size_kb", BUFFER_SIZE_KB)?;
        // Default 50: poll on trace_pipe would wait for a half-full buffer.
        instance.write("buffer_percent", "0")?;
        for ev in EVENTS {
            instance.write(&format!("events/{ev}/enable"), "1")?;
        }
        let pipe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(instance.path("trace_pipe"))
            .context("open trace_pipe")?;
        let stop = Arc::new(AtomicBool::new(false));
        let agg = DropAggregator::new(lab_devices.clone());
        let reader = std::thread::Builder::new()
            .name(format!("drops-{instance_name}"))
            .spawn({
                let stop = stop.clone();
                move || read_pipe(pipe, agg, &stop)
            })?;
        instance.write("tracing_on", "1")?;
        Ok((
            TracefsTrace {
                stop,
                reader: Some(reader),
                instance: Some(instance),
            },
            known_reasons,
        ))
    }

    fn stop(mut self) -> Result<DropAggregator> {
        let instance = self.instance.take().expect("instance present until stop");
        let off = instance.write("tracing_on", "0");
        let agg = self.join_reader();
        for ev in EVENTS {
            let _ = instance.write(&format!("events/{ev}/enable"), "0");
        }
        let removed = instance.remove();
        off?;
        removed?;
        agg
    }

    fn join_reader(&mut self) -> Result<DropAggregator> {
        self.stop.store(true, Ordering::SeqCst);
        match self.reader.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("trace_pipe reader panicked"))?,
            None => Err(anyhow!("trace_pipe reader already joined")),
        }
    }
}

impl Drop for TracefsTrace {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.join_reader();
        }
        // Instance's own Drop removes the directory.
        self.instance.take();
    }
}

/// Reads until asked to stop, then drains what is left (tracing is off by then).
fn read_pipe(mut pipe: File, mut agg: DropAggregator, stop: &AtomicBool) -> Result<DropAggregator> {
    let mut buf = vec![0u8; 1 << 16];
    let mut partial = String::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match pipe.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = partial.find('\n') {
                    agg.feed_line(&partial[..i]);
                    partial.drain(..=i);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("read trace_pipe"),
        }
        if stopping {
            agg.feed_line(&partial);
            return Ok(agg);
        }
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 50) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's (6.18) `events/skb/kfree_skb/format`.
    const FORMAT: &str = include_str!("testdata/kfree_skb_format.txt");

    #[test]
    fn reason_list_from_the_format_file() {
        let r = parse_reason_list(FORMAT);
        assert_eq!(r.len(), 127, "{r:?}");
        assert_eq!(r[0], "NOT_SPECIFIED");
        assert_eq!(r[1], "NO_SOCKET");
        assert_eq!(r.last().unwrap(), "SKB_RX_HEADROOM");
        for name in ["NETFILTER_DROP", "IP_INADDRERRORS", "TCP_RFC7323_PAWS"] {
            assert!(r.iter().any(|x| x == name), "{name}");
        }
        assert!(!r.iter().any(|x| x == "MAX"));
    }

    #[test]
    fn reason_list_edge_cases() {
        // 5.17-style: enum names instead of numbers, NOT_DROPPED_YET absent or present.
        let old = r#"print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { SKB_DROP_REASON_NOT_SPECIFIED, "NOT_SPECIFIED" }, { SKB_DROP_REASON_NO_SOCKET, "NO_SOCKET" }, { SKB_DROP_REASON_MAX, "MAX" })"#;
        assert_eq!(parse_reason_list(old), ["NOT_SPECIFIED", "NO_SOCKET"]);
        // < 5.17: no reason field at all.
        let older = r#"print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location"#;
        assert!(parse_reason_list(older).is_empty());
        // A later __print_symbolic of another field is not read as reasons.
        let two = r#"__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }), __print_symbolic(REC->other, { 1, "OTHER" })"#;
        assert_eq!(parse_reason_list(two), ["NOT_SPECIFIED"]);
        assert!(parse_reason_list("").is_empty());
    }

    #[test]
    fn zero_fill() {
        let known: Vec<String> = ["NOT_SPECIFIED", "NO_SOCKET", "NETFILTER_DROP"]
            .map(String::from)
            .to_vec();
        let nodes = vec!["b".to_string(), "r".to_string()];
        let seen = [
            DropStat {
                reason: "NETFILTER_DROP".into(),
                location: "nft_do_chain".into(),
                node: Some("b".into()),
                count: 3,
            },
            // Seen but not in the kernel's list (a subsystem reason): kept as seen.
            DropStat {
                reason: "OVS_UNKNOWN".into(),
                location: "ovs_dp_process_packet".into(),
                node: None,
                count: 1,
            },
        ];
        let obs = drops_observations_zero_filled(&seen, &known, &nodes);
        let want: Observations = [
            ("drops.NETFILTER_DROP", 3.0),
            ("drops.NETFILTER_DROP@nft_do_chain", 3.0),
            ("drops.b.NETFILTER_DROP", 3.0),
            ("drops.r.NETFILTER_DROP", 0.0),
            ("drops.NOT_SPECIFIED", 0.0),
            ("drops.b.NOT_SPECIFIED", 0.0),
            ("drops.r.NOT_SPECIFIED", 0.0),
            ("drops.NO_SOCKET", 0.0),
            ("drops.b.NO_SOCKET", 0.0),
            ("drops.r.NO_SOCKET", 0.0),
            ("drops.OVS_UNKNOWN", 1.0),
            ("drops.OVS_UNKNOWN@ovs_dp_process_packet", 1.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(obs, want);
        let report = DropReport {
            drops: seen.to_vec(),
            lost_events: 0,
            known_reasons: known.clone(),
            nodes: nodes.clone(),
            method: DropMethod::Tracefs,
            bpf_unavailable: None,
        };
        let mut with_method = obs.clone();
        with_method.insert("drops_method.tracefs".into(), 1.0);
        assert_eq!(report.observations(), with_method);
        // Nothing known, nothing seen: nothing (tracefs without reasons).
        assert!(drops_observations_zero_filled(&[], &[], &nodes).is_empty());
    }

    /// How the catalogue's kinds of expression read zero-filled observations.
    #[test]
    fn globs_over_zero_filled_names() {
        let known = parse_reason_list(FORMAT);
        let nodes = vec!["sw".to_string(), "r".to_string()];
        let eval = |src: &str, drops: &[DropStat]| {
            let obs = drops_observations_zero_filled(drops, &known, &nodes);
            crate::judge::Expectation::parse(src)
                .unwrap()
                .eval(&obs)
                .map(|r| r.0)
                .map_err(|e| e.to_string())
        };
        let none: &[DropStat] = &[];
        // A name that was not seen reads 0 instead of failing to evaluate.
        assert_eq!(eval("drops.sw.NETFILTER_DROP == 0", none), Ok(true));
        assert_eq!(eval("drops.NO_SOCKET == 0", none), Ok(true));
        // A typo is still caught: only the kernel's reasons are filled.
        assert!(eval("drops.sw.NETFILTER_DORP == 0", none).is_err());
        // `sum` means what it meant and no longer errors on an empty set.
        assert_eq!(eval("sum(drops.sw.*) == 0", none), Ok(true));
        // `count` and `exists` count names: every known reason now.
        assert_eq!(eval("count(drops.sw.*) == 0", none), Ok(false));
        assert_eq!(eval("exists(drops.sw.*)", none), Ok(true));
        // Location-qualified names are never filled.
        assert_eq!(eval("exists(drops.*@*)", none), Ok(false));
        assert_eq!(eval("count(drops.*@*) == 0", none), Ok(true));
    }

    // Real trace lines (kernel 6.18): a -> r -> b over veths flevT-a0/r0 and flevT-r1/b0,
    // UDP from a to a blackhole route on r and to an nft `udp dport 9 drop` input rule on b.
    const LINES: &str = include_str!("testdata/trace_pipe.txt");

    #[test]
    fn parses_real_lines() {
        let evs: Vec<TraceEvent> = LINES.lines().filter_map(parse_line).collect();
        assert!(evs.iter().any(|e| matches!(e,
            TraceEvent::KfreeSkb { location, reason, .. }
                if location == "ip_error" && reason == "NOT_SPECIFIED")));
        assert!(evs.iter().any(|e| matches!(e,
            TraceEvent::KfreeSkb { location, reason, .. }
                if location == "nft_do_chain" && reason == "NETFILTER_DROP")));
        assert!(evs
            .iter()
            .any(|e| matches!(e, TraceEvent::OnDevice { dev, .. } if dev == "flevT-r0")));
    }

    #[test]
    fn attributes_by_last_unique_device() {
        let devices = BTreeMap::from([
            ("flevT-r0".to_string(), "r".to_string()),
            ("flevT-b0".to_string(), "b".to_string()),
        ]);
        let mut agg = DropAggregator::new(devices);
        for l in LINES.lines() {
            agg.feed_line(l);
        }
        let stats = agg.stats();
        let find = |reason: &str, node: Option<&str>| {
            stats
                .iter()
                .filter(|d| d.reason == reason && d.node.as_deref() == node)
                .map(|d| d.count)
                .sum::<u64>()
        };
        assert!(find("NOT_SPECIFIED", Some("r")) >= 1, "{stats:?}");
        assert!(find("NETFILTER_DROP", Some("b")) >= 1, "{stats:?}");
    }

    #[test]
    fn unknown_and_recycled_skbs_are_unattributed() {
        let devices = BTreeMap::from([("veth-a".to_string(), "a".to_string())]);
        let mut agg = DropAggregator::new(devices);
        let l = |s: &str| format!("          <idle>-0       [001] ..s2.   100.000001: {s}");
        agg.feed_line(&l(
            "netif_receive_skb: dev=veth-a skbaddr=00000000aaaa len=84",
        ));
        agg.feed_line(&l(
            "consume_skb: skbaddr=00000000aaaa location=icmp_rcv+0x1/0x2",
        ));
        agg.feed_line(&l(
            "netif_receive_skb: dev=eth0 skbaddr=00000000bbbb len=84",
        ));
        let drop = |a: &str| {
            l(&format!(
                "kfree_skb: skbaddr={a} rx_sk=0000000000000000 protocol=2048 \
                 location=nft_do_chain+0x3a/0x5e0 [nf_tables] reason: NETFILTER_DROP"
            ))
        };
        agg.feed_line(&drop("00000000aaaa"));
        agg.feed_line(&drop("00000000bbbb"));
        agg.feed_line("CPU:1 [LOST 7 EVENTS]");
        assert_eq!(
            agg.stats(),
            vec![DropStat {
                reason: "NETFILTER_DROP".into(),
                location: "nft_do_chain".into(),
                node: None,
                count: 2
            }]
        );
        assert_eq!(agg.lost_events, 7);
    }

    #[test]
    fn observation_names() {
        let d = |reason: &str, loc: &str, node: Option<&str>, count| DropStat {
            reason: reason.into(),
            location: loc.into(),
            node: node.map(Into::into),
            count,
        };
        let obs = drops_observations(&[
            d("NETFILTER_DROP", "nft_do_chain", Some("b"), 3),
            d("NETFILTER_DROP", "nft_do_chain", None, 2),
            d("NOT_SPECIFIED", "ip_error", Some("r"), 5),
        ]);
        let want: Observations = [
            ("drops.NETFILTER_DROP", 5.0),
            ("drops.NETFILTER_DROP@nft_do_chain", 5.0),
            ("drops.b.NETFILTER_DROP", 3.0),
            ("drops.NOT_SPECIFIED", 5.0),
            ("drops.NOT_SPECIFIED@ip_error", 5.0),
            ("drops.r.NOT_SPECIFIED", 5.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(obs, want);
    }
}
