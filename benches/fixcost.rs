//! What each fix costs, measured side by side in one run (run as root):
//! 1. `nat`: UDP pps (18-byte payloads, 256 flows) forwarded through a MASQUERADE
//!    namespace: no netfilter at all / conntrack + NAT / NOTRACK in the raw table.
//! 2. `bridge`: the same traffic bridged through a namespace whose FORWARD chain has
//!    Neutron-like stateful rules, with net.bridge.bridge-nf-call-iptables 0 vs 1.
//! 3. conntrack chain length (seed 003): with the table filled, pps of packets that hit
//!    existing entries and the rate of new connections, for entries/buckets = 1, 4,
//!    16, 64 (nf_conntrack_buckets and nf_conntrack_max are host-global: they are set
//!    through the lab's `host_sysctls`, so they are restored even on a panic).
//!
//! Not criterion: criterion measures variants one after the other, and on a shared
//! 2-CPU machine the load drifts between them (observed: the same variant at 130 and
//! 270 kpps in two runs), which would land in the ratios; and its adaptive iteration
//! counts would change the conntrack table being measured. So 1 and 2 build every
//! variant's lab at once and measure them in interleaved rounds (median reported), and
//! 3 times fixed packet counts (two passes, ascending then descending ratio). Results
//! go to results/bench/fixcost.json and conntrack.json.
//!
//! Traffic: a tight `sendmmsg` sender in `gen`; every packet is forwarded (or bridged)
//! by the namespace under test and dropped by an nft prerouting rule in `sink`. With
//! veth, the whole path runs in the sender's syscall (softirq on the same CPU), so
//! packets / sender time is the forwarding rate; `sink` counts what arrived.

#[path = "common/mod.rs"]
mod common;

use anyhow::{Context, Result};
use common::*;
use faultlab::model::LabPlan;
use faultlab::setup::{new_run_id, Lab};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const SINK_DROP: &str = r#"table ip sink {
  chain pre { type filter hook prerouting priority -300; policy accept; udp dport 1-65535 counter drop; }
}"#;

/// gen — mid (forwards, `mid_extra` TOML) — sink; destinations 10.3.0.0/16 via mid.
fn routed_plan(mid_extra: &str, host_sysctls: &str) -> LabPlan {
    plan_from_toml(&format!(
        r#"
name = "bench"
about = "gen - mid - sink"
{host_sysctls}
[nodes.gen]
routes = ["default via 10.1.0.2"]
[nodes.mid]
sysctls = {{ "net.ipv4.ip_forward" = 1 }}
routes = ["10.3.0.0/16 via 10.2.0.2"]
{mid_extra}
[nodes.sink]
rulesets.nft = '''{SINK_DROP}'''
[[links]]
a = "gen:eth0 10.1.0.1/24"
b = "mid:eth0 10.1.0.2/24"
[[links]]
a = "mid:eth1 10.2.0.1/24"
b = "sink:eth0 10.2.0.2/24"
[[cells]]
name = "c"
expect = ["1 == 1"]
"#
    ))
}

/// gen — br (bridge br0, ports p0/p1) — sink, all in 10.4.0.0/24.
fn bridged_plan(call_iptables: u8) -> LabPlan {
    plan_from_toml(&format!(
        r#"
name = "bench"
about = "gen - bridge - sink"
[nodes.gen]
[nodes.br]
sysctls = {{ "net.bridge.bridge-nf-call-iptables" = {call_iptables} }}
rulesets.iptables = '''
*filter
:FORWARD ACCEPT [0:0]
:sg - [0:0]
-A FORWARD -m physdev --physdev-is-bridged -j sg
-A sg -m state --state RELATED,ESTABLISHED -j ACCEPT
-A sg -m state --state INVALID -j DROP
-A sg -m physdev --physdev-in p0 -j ACCEPT
-A sg -s 10.4.0.0/24 -j ACCEPT
-A sg -j DROP
COMMIT
'''
[nodes.br.devices.br0]
kind = "bridge"
ports = ["p0", "p1"]
[nodes.sink]
rulesets.nft = '''{SINK_DROP}'''
[[links]]
a = "gen:eth0 10.4.0.1/24"
b = "br:p0"
[[links]]
a = "br:p1"
b = "sink:eth0 10.4.0.2/24"
[[cells]]
name = "c"
expect = ["1 == 1"]
"#
    ))
}

/// A UDP socket in namespace `ns`, bound to port 5555.
fn udp_socket_in(ns: &str) -> Result<OwnedFd> {
    faultlab::netns::run_in(ns, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 5555)).into())?;
        let _ = s.set_send_buffer_size(4 << 20);
        // SAFETY: into_raw_fd hands over ownership of a valid fd.
        Ok(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(s)) })
    })
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sends one small datagram to each address, in order, with sendmmsg; returns how
/// many the kernel accepted.
fn send_to_all(fd: &OwnedFd, dsts: &[libc::sockaddr_in]) -> usize {
    const BATCH: usize = 64;
    let payload = [0x5au8; 18];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut sent = 0;
    // SAFETY: mmsghdr is plain data; every pointer stored in it (iov, the addresses)
    // outlives the sendmmsg call that reads it.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for chunk in dsts.chunks(BATCH) {
        for (m, a) in msgs.iter_mut().zip(chunk) {
            m.msg_hdr.msg_name = a as *const libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut off = 0;
        while off < chunk.len() {
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    msgs[off..].as_mut_ptr(),
                    (chunk.len() - off) as u32,
                    0,
                )
            };
            if r <= 0 {
                off += 1; // a refused datagram (ENOBUFS...) is skipped, not retried
            } else {
                off += r as usize;
                sent += r as usize;
            }
        }
    }
    sent
}

/// rx_packets of `dev` in namespace `ns`.
fn rx_packets(ns: &str, dev: &str) -> u64 {
    faultlab::netns::run_in(ns, || {
        let t = std::fs::read_to_string("/proc/thread-self/net/dev")?;
        for l in t.lines() {
            if let Some((name, rest)) = l.split_once(':') {
                if name.trim() == dev {
                    let f: Vec<u64> = rest
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    return Ok(f[1]);
                }
            }
        }
        anyhow::bail!("no {dev}")
    })
    .unwrap_or(0)
}

/// Sum over CPUs of a column of /proc/net/stat/nf_conntrack in `ns`.
fn ct_stat(ns: &str, column: &str) -> u64 {
    faultlab::netns::run_in(ns, || {
        let t = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")?;
        let mut lines = t.lines();
        let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let Some(i) = head.iter().position(|h| *h == column) else {
            return Ok(0);
        };
        Ok(lines
            .filter_map(|l| l.split_whitespace().nth(i))
            .filter_map(|x| u64::from_str_radix(x, 16).ok())
            .sum())
    })
    .unwrap_or(0)
}

fn sysctl_in(ns: &str, key: &str) -> u64 {
    faultlab::netns::sysctl_read(ns, key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One group of variants, each its own lab, all built at once and measured in
/// interleaved rounds (the starting variant rotates every round): on a shared machine
/// the load drifts, and measuring variants one after another (as criterion does)
/// would fold that drift into the ratios. Each round sends `PER_ROUND` datagrams over
/// `flows` per variant; the median of the rounds is reported, with min and max.
fn pps_interleaved(group: &str, variants: &[(&str, LabPlan)], flows: &[libc::sockaddr_in]) {
    const PER_ROUND: usize = 16384;
    const ROUNDS: usize = 15;
    let dsts: Vec<libc::sockaddr_in> = flows.iter().cycle().take(PER_ROUND).copied().collect();
    struct Live {
        lab: Lab,
        fd: OwnedFd,
        sink: String,
        rx0: u64,
        pps: Vec<f64>,
        sent: u64,
    }
    let mut live: Vec<Live> = variants
        .iter()
        .map(|(name, base)| {
            let plan = base.for_run(&new_run_id());
            let lab = Lab::build(&plan).unwrap_or_else(|e| panic!("{group}/{name}: {e:#}"));
            let gen = lab.netns_of("gen").unwrap().to_string();
            let sink = lab.netns_of("sink").unwrap().to_string();
            let fd = udp_socket_in(&gen).unwrap();
            // Warm neighbour entries and the flows' conntrack entries.
            send_to_all(&fd, &dsts);
            std::thread::sleep(Duration::from_millis(50));
            send_to_all(&fd, &dsts);
            let rx0 = rx_packets(&sink, "eth0");
            Live {
                lab,
                fd,
                sink,
                rx0,
                pps: Vec::new(),
                sent: 0,
            }
        })
        .collect();
    let steps = common::Steps::new(ROUNDS, "rounds");
    for r in 0..ROUNDS {
        steps.step(&format!("{group} round {}", r + 1), || {
            for k in 0..live.len() {
                let i = (r + k) % live.len();
                let v = &mut live[i];
                let t = Instant::now();
                let n = send_to_all(&v.fd, &dsts);
                v.pps.push(n as f64 / t.elapsed().as_secs_f64());
                v.sent += n as u64;
            }
        });
    }
    drop(steps);
    let mut out = serde_json::Map::new();
    for ((name, _), v) in variants.iter().zip(live) {
        let delivered = rx_packets(&v.sink, "eth0") - v.rx0;
        let mut s = v.pps.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = s[s.len() / 2];
        eprintln!(
            "{group}/{name}: median {:.0} kpps (min {:.0}, max {:.0}), delivered {delivered} of {}",
            med / 1e3,
            s[0] / 1e3,
            s[s.len() - 1] / 1e3,
            v.sent
        );
        out.insert(
            name.to_string(),
            serde_json::json!({
                "median_pps": med, "min_pps": s[0], "max_pps": s[s.len() - 1],
                "rounds": ROUNDS, "per_round": PER_ROUND,
                "sent": v.sent, "delivered": delivered,
            }),
        );
        drop(v.fd);
        let errs = v.lab.teardown();
        assert!(errs.is_empty(), "{errs:?}");
    }
    record("fixcost.json", group, serde_json::Value::Object(out));
}

fn nat_and_bridge() {
    let flows: Vec<libc::sockaddr_in> = (0..256u16)
        .map(|i| sockaddr(Ipv4Addr::new(10, 3, 0, 1 + (i % 16) as u8), 9000 + i))
        .collect();
    let nat = "rulesets.iptables = '''\n*nat\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n'''";
    let notrack = "rulesets.iptables = '''\n*nat\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n*raw\n-A PREROUTING -i eth0 -p udp -j CT --notrack\nCOMMIT\n'''";
    // The nodes table of `mid` is already open in routed_plan: extra keys go there.
    pps_interleaved(
        "nat",
        &[
            ("no-netfilter", routed_plan("", "")),
            ("conntrack", routed_plan(nat, "")),
            ("notrack", routed_plan(notrack, "")),
        ],
        &flows,
    );
    let bflows: Vec<libc::sockaddr_in> = (0..256u16)
        .map(|i| sockaddr(Ipv4Addr::new(10, 4, 0, 2), 9000 + i))
        .collect();
    pps_interleaved(
        "bridge",
        &[
            ("call-iptables-0", bridged_plan(0)),
            ("call-iptables-1", bridged_plan(1)),
        ],
        &bflows,
    );
}

/// Entries in the filled table (= the host's default nf_conntrack_max here).
const ENTRIES: usize = 1 << 18;
const RATIOS: [usize; 4] = [1, 4, 16, 64];
const NEW_PER_PASS: usize = 16384;

#[derive(Debug, Clone, serde::Serialize)]
struct SweepPoint {
    ratio: usize,
    buckets: usize,
    entries_after_fill: u64,
    /// entries / buckets actually reached.
    avg_chain: f64,
    /// Flows the hit measurement cycled over (those with an entry).
    hit_flows: usize,
    /// Inserts refused for chain length while filling, and during the new-flow passes.
    refused_fill: u64,
    refused_new: u64,
    hit_pps: f64,
    new_per_s: f64,
    new_delivered_fraction: f64,
}

fn sweep_once(ratio: usize) -> Result<SweepPoint> {
    let buckets = ENTRIES / ratio;
    let max = ENTRIES * 2; // headroom: the gc's >95%-full eviction must not kick in
    let host = format!(
        "[host_sysctls]\n\"net.netfilter.nf_conntrack_max\" = {max}\n\"net.netfilter.nf_conntrack_buckets\" = {buckets}\n"
    );
    let mid_rules = "rulesets.iptables = '''\n*filter\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n'''";
    let mut plan = routed_plan(mid_rules, &host).for_run(&new_run_id());
    // Entries must outlive the measurement (default UDP timeout: 30 s).
    let m = plan.nodes.iter_mut().find(|n| n.name == "mid").unwrap();
    m.sysctls.push(faultlab::model::Sysctl {
        key: "net.netfilter.nf_conntrack_udp_timeout".into(),
        value: "3600".into(),
    });
    let lab = Lab::build(&plan)?;
    let gen = lab.netns_of("gen").unwrap().to_string();
    let mid = lab.netns_of("mid").unwrap().to_string();
    let sink = lab.netns_of("sink").unwrap().to_string();
    let got = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")?;
    anyhow::ensure!(
        got.trim() == buckets.to_string(),
        "buckets not applied: {got}"
    );
    let fd = udp_socket_in(&gen)?;
    // ENTRIES flows: 65536 destination addresses x 4 ports.
    let mut flows: Vec<libc::sockaddr_in> = (0..ENTRIES)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 3, 0, 0)) + (i % 65536) as u32);
            sockaddr(ip, 9000 + (i / 65536) as u16)
        })
        .collect();
    let mut entries = 0;
    for _ in 0..3 {
        // A second pass only re-sends what the first did not get in (hits otherwise).
        send_to_all(&fd, &flows);
        entries = sysctl_in(&mid, "net.netfilter.nf_conntrack_count");
        if entries as usize >= ENTRIES * 99 / 100 {
            break;
        }
    }
    // The kernel refuses an insert into a hash chain that is already longer than a
    // bound (counted in the `chainlength` column of /proc/net/stat/nf_conntrack; the
    // packet is dropped), so at high ratios the table cannot be filled: what was
    // reached is recorded, not asserted.
    let refused_fill = ct_stat(&mid, "chainlength");
    // Where the kernel refused inserts (see above), hits are measured over the flows
    // that did get an entry only, read back from /proc/net/nf_conntrack.
    if (entries as usize) < flows.len() {
        let present = faultlab::netns::run_in(&mid, || {
            let t = std::fs::read_to_string("/proc/thread-self/net/nf_conntrack")?;
            let mut set = std::collections::HashSet::new();
            for l in t.lines() {
                let mut dst = None;
                let mut dport = None;
                for w in l.split_whitespace() {
                    if dst.is_none() {
                        if let Some(v) = w.strip_prefix("dst=") {
                            dst = v.parse::<Ipv4Addr>().ok();
                        }
                    } else if let Some(v) = w.strip_prefix("dport=") {
                        dport = v.parse::<u16>().ok();
                        break;
                    }
                }
                if let (Some(d), Some(p)) = (dst, dport) {
                    set.insert((u32::from(d).to_be(), p.to_be()));
                }
            }
            Ok(set)
        })?;
        flows.retain(|a| present.contains(&(a.sin_addr.s_addr, a.sin_port)));
    }
    // Hits: the flows in a random order (xorshift permutation, fixed seed).
    let mut x = 0x9e3779b97f4a7c15u64;
    for i in (1..flows.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        flows.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut hit = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let n = send_to_all(&fd, &flows);
        hit.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let after_hits = sysctl_in(&mid, "net.netfilter.nf_conntrack_count");
    anyhow::ensure!(
        after_hits <= entries + 16,
        "hits created entries ({entries} -> {after_hits}): entries were evicted"
    );
    let hit_flows = flows.len();
    // New connections: fresh destination ports, never seen.
    let mut newr = Vec::new();
    let rx0 = rx_packets(&sink, "eth0");
    let mut sent_new = 0;
    for pass in 0..3usize {
        let fresh: Vec<libc::sockaddr_in> = (0..NEW_PER_PASS)
            .map(|i| {
                let k = pass * NEW_PER_PASS + i;
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 3, 0, 0)) + (k % 65536) as u32);
                sockaddr(ip, 20000 + (k / 65536) as u16)
            })
            .collect();
        let t = Instant::now();
        let n = send_to_all(&fd, &fresh);
        newr.push(n as f64 / t.elapsed().as_secs_f64());
        sent_new += n;
    }
    let delivered = rx_packets(&sink, "eth0") - rx0;
    let refused_new = ct_stat(&mid, "chainlength") - refused_fill;
    drop(fd);
    let errs = lab.teardown();
    anyhow::ensure!(errs.is_empty(), "teardown: {errs:?}");
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    Ok(SweepPoint {
        ratio,
        buckets,
        entries_after_fill: entries,
        avg_chain: entries as f64 / buckets as f64,
        hit_flows,
        refused_fill,
        refused_new,
        hit_pps: med(hit),
        new_per_s: med(newr),
        new_delivered_fraction: delivered as f64 / sent_new.max(1) as f64,
    })
}

fn conntrack_sweep() -> Result<()> {
    // nf_conntrack_buckets/max and a quarter million entries in the (global) hash
    // reach every namespace on the host: each sweep lab sets host sysctls, so it holds
    // the host lock exclusively and no other faultlab lab runs while it measures.
    let before_max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")?;
    let before_buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")?;
    let mut points: Vec<Vec<SweepPoint>> = vec![Vec::new(); RATIOS.len()];
    let order: Vec<usize> = (0..RATIOS.len()).chain((0..RATIOS.len()).rev()).collect();
    let steps = common::Steps::new(order.len(), "sweeps");
    for i in order {
        let p = steps
            .step(&format!("conntrack ratio {}", RATIOS[i]), || {
                sweep_once(RATIOS[i])
            })
            .with_context(|| format!("ratio {}", RATIOS[i]))?;
        steps.note(&format!(
            "conntrack ratio {:>2} (buckets {:>6}, entries {}, chain {:.1}, refused {}/{}): hit {:>8.0} pps, new {:>8.0}/s (delivered {:.3})",
            p.ratio, p.buckets, p.entries_after_fill, p.avg_chain, p.refused_fill, p.refused_new, p.hit_pps, p.new_per_s, p.new_delivered_fraction
        ));
        points[i].push(p);
    }
    drop(steps);
    let after_max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")?;
    let after_buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")?;
    anyhow::ensure!(
        before_max == after_max && before_buckets == after_buckets,
        "host sysctls not restored: max {before_max} -> {after_max}, buckets {before_buckets} -> {after_buckets}"
    );
    let summary: Vec<serde_json::Value> = points
        .iter()
        .map(|runs| {
            let mean =
                |f: fn(&SweepPoint) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
            serde_json::json!({
                "ratio": runs[0].ratio,
                "buckets": runs[0].buckets,
                "entries": runs[0].entries_after_fill,
                "avg_chain": mean(|p| p.avg_chain),
                "refused_fill": mean(|p| p.refused_fill as f64),
                "refused_new": mean(|p| p.refused_new as f64),
                "hit_pps": mean(|p| p.hit_pps),
                "new_per_s": mean(|p| p.new_per_s),
                "new_delivered_fraction": mean(|p| p.new_delivered_fraction),
                "runs": runs,
            })
        })
        .collect();
    record(
        "conntrack.json",
        "sweep",
        serde_json::json!({
            "entries": ENTRIES,
            "nf_conntrack_max": ENTRIES * 2,
            "new_per_pass": NEW_PER_PASS,
            "points": summary,
        }),
    );
    Ok(())
}

fn main() {
    if !is_root() {
        eprintln!("fixcost bench: needs root (namespaces); skipped");
        return;
    }
    let only = std::env::var("FAULTLAB_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "pps" {
        nat_and_bridge();
    }
    if only.is_empty() || only == "conntrack" {
        if let Err(e) = conntrack_sweep() {
            panic!("conntrack sweep: {e:#}");
        }
    }
}
