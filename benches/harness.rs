//! Build + teardown of each template topology, side by side in one run:
//! - `faultlab`: `Lab::build` + `teardown` (in-process rtnetlink, parallel per node);
//! - `ip-per-step`: `plan::shell_steps`, one `ip`/`sysctl`/loader process per step,
//!   the way kernel selftests build topologies;
//! - `ip-batch`: `plan::batched`, `ip -batch` per namespace + one load per ruleset kind;
//! - `kernel-limit`: the same requests replayed in-process on raw netlink sockets,
//!   timing ONLY the syscalls that do the work (see `replay`). This is the floor no
//!   userspace can beat: the sum of the kernel's own time for the operations.
//!
//! All four follow the one walk over the plan (`faultlab::plan::build_ops`): the
//! shell forms render it, the replay turns each of its operations into the request
//! faultlab sends.
//!
//! `Lab::build` also waits until every link runs (carrier, linkwatch); the shell
//! columns do not (selftest scripts do not either): that wait is measured separately
//! and reported next to them. Every variant tears down by deleting the namespaces (the
//! kernel's netns cleanup is asynchronous in all of them).
//! Run as root: `cargo bench --features lab --bench harness`.

#[path = "common/mod.rs"]
mod common;

use anyhow::{bail, Context, Result};
use common::*;
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use faultlab::model::LabPlan;
use faultlab::plan::ops::configure_ops;
use faultlab::plan::{batched, batched_teardown, build_ops, shell_steps, shell_teardown, Op};
use faultlab::setup::{new_run_id, Lab};
use std::time::{Duration, Instant};

const TOPOLOGIES: [(&str, &str, &str); 3] = [
    ("docker", "docker", "containers = 2"),
    ("openstack-qbr", "openstack-qbr", "vms = 2"),
    ("calico", "calico", "pods = 2, backends = 2"),
];

fn faultlab_once(plan: &LabPlan) -> Result<()> {
    let lab = Lab::build(plan)?;
    let errs = lab.teardown();
    if !errs.is_empty() {
        bail!("teardown: {errs:?}");
    }
    Ok(())
}

fn shell_once(plan: &LabPlan) -> Result<()> {
    let _guard = NsGuard(plan.run_id.clone());
    run_steps(&shell_steps(plan))?;
    run_steps(&shell_teardown(plan, &[]))
}

fn batch_once(plan: &LabPlan) -> Result<()> {
    let _guard = NsGuard(plan.run_id.clone());
    run_steps(&batched(plan))?;
    run_steps(&batched_teardown(plan, &[]))
}

/// Mean time the shell-built lab then needs until every link runs (what `Lab::build`
/// waits for; the shell columns leave it out, as selftest scripts do).
fn carrier_wait_ms(base: &LabPlan, steps: fn(&LabPlan) -> Vec<faultlab::plan::Step>) -> f64 {
    let runs = 3;
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let plan = base.for_run(&new_run_id());
        let _guard = NsGuard(plan.run_id.clone());
        run_steps(&steps(&plan)).unwrap();
        let t = Instant::now();
        wait_running(&plan).unwrap();
        total += t.elapsed();
    }
    total.as_secs_f64() * 1e3 / runs as f64
}

/// What a built lab looks like, independent of ifindexes and random MACs: per node,
/// links (name, kind, master, mtu, operstate), addresses, routes, and the rulesets.
fn fingerprint(plan: &LabPlan) -> Result<String> {
    let mut out = String::new();
    for n in &plan.nodes {
        let ip = |args: &[&str]| -> Result<serde_json::Value> {
            let mut argv = vec!["ip", "-j"];
            argv.extend_from_slice(args);
            let o = faultlab::netns::output_in(&n.netns, &argv, None)?;
            Ok(serde_json::from_slice(&o.stdout)?)
        };
        let mut links: Vec<String> = ip(&["-d", "link"])?
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|l| {
                format!(
                    // Flags, not operstate: operstate follows linkwatch, which may lag.
                    "{} kind={} master={} mtu={} flags={}",
                    l["ifname"], l["linkinfo"]["info_kind"], l["master"], l["mtu"], l["flags"]
                )
            })
            .collect();
        links.sort();
        let mut addrs: Vec<String> = Vec::new();
        for l in ip(&["addr"])?.as_array().cloned().unwrap_or_default() {
            for a in l["addr_info"].as_array().cloned().unwrap_or_default() {
                let local = a["local"].as_str().unwrap_or("");
                if !local.starts_with("fe80") {
                    addrs.push(format!("{} {}/{}", l["ifname"], local, a["prefixlen"]));
                }
            }
        }
        addrs.sort();
        let mut routes: Vec<String> = Vec::new();
        for fam in ["-4", "-6"] {
            for r in ip(&[fam, "route"])?.as_array().cloned().unwrap_or_default() {
                routes.push(r.to_string());
            }
        }
        routes.sort();
        let mut rules = String::new();
        for rs in &n.rulesets {
            let (prog, args) = rs.kind.dumper();
            let mut argv = vec![prog];
            argv.extend(args.iter().filter(|a| **a != "-c"));
            if prog == "nft" {
                argv = vec!["nft", "list", "ruleset"];
            }
            let o = faultlab::netns::output_in(&n.netns, &argv, None)?;
            rules += &String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                // Chain policy counters ([packets:bytes]) count traffic, not config.
                .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
                    (true, Some(i)) => &l[..i],
                    _ => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        out += &format!(
            "[{}]\n{}\n{}\n{}\n{}\n",
            n.name,
            links.join("\n"),
            addrs.join("\n"),
            routes.join("\n"),
            rules
        );
    }
    Ok(out)
}

/// Builds with each method once and checks they all produce the same lab.
fn check_equivalence(name: &str, base: &LabPlan, captured: &replay::Captured) -> Result<()> {
    let fp_of = |which: &str| -> Result<String> {
        let plan = base.for_run(&new_run_id());
        let _guard = NsGuard(plan.run_id.clone());
        let fp = match which {
            "faultlab" => {
                let lab = Lab::build(&plan)?;
                let fp = fingerprint(&plan);
                drop(lab);
                fp?
            }
            "ip-per-step" => {
                run_steps(&shell_steps(&plan))?;
                wait_running(&plan)?;
                fingerprint(&plan)?
            }
            "ip-batch" => {
                run_steps(&batched(&plan))?;
                wait_running(&plan)?;
                fingerprint(&plan)?
            }
            _ => {
                replay::build(&plan, captured)?;
                wait_running(&plan)?;
                fingerprint(&plan)?
            }
        };
        Ok(fp.replace(&plan.run_id, "RUN"))
    };
    let reference = fp_of("faultlab")?;
    for which in ["ip-per-step", "ip-batch", "kernel-limit"] {
        let fp = fp_of(which).with_context(|| format!("{name}: {which}"))?;
        if fp != reference {
            let diff: Vec<String> = reference
                .lines()
                .zip(fp.lines())
                .filter(|(a, b)| a != b)
                .take(5)
                .map(|(a, b)| format!("faultlab: {a}\n{which}: {b}"))
                .collect();
            bail!(
                "{name}: {which} builds a different lab than faultlab:\n{}",
                diff.join("\n")
            );
        }
    }
    Ok(())
}

fn harness(c: &mut Criterion) {
    if !is_root() {
        eprintln!("harness bench: needs root (namespaces); skipped");
        return;
    }
    let mut limits = serde_json::Map::new();
    for (name, template, params) in TOPOLOGIES {
        let base = template_plan(template, params);
        let captured = replay::capture(&base).expect("capture ruleset batches");
        check_equivalence(name, &base, &captured).unwrap_or_else(|e| panic!("{e:#}"));
        let steps = shell_steps(&base.for_run("x")).len() + 1; // + wait
        let procs = batched(&base.for_run("x")).len();
        let mut g = c.benchmark_group(format!("build/{name}"));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(3));
        g.bench_function(BenchmarkId::from_parameter("faultlab"), |b| {
            b.iter(|| faultlab_once(&base.for_run(&new_run_id())).unwrap())
        });
        g.bench_function(BenchmarkId::from_parameter("ip-per-step"), |b| {
            b.iter(|| shell_once(&base.for_run(&new_run_id())).unwrap())
        });
        g.bench_function(BenchmarkId::from_parameter("ip-batch"), |b| {
            b.iter(|| batch_once(&base.for_run(&new_run_id())).unwrap())
        });
        let mut parts = replay::Parts::default();
        g.bench_function(BenchmarkId::from_parameter("kernel-limit"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let plan = base.for_run(&new_run_id());
                    let p = replay::build_and_teardown(&plan, &captured).unwrap();
                    total += p.total();
                    parts.add(&p);
                }
                total
            })
        });
        g.finish();
        if parts.n == 0 {
            continue; // filtered out
        }
        eprintln!("kernel limit parts for {name} (us): {}", parts.mean_us());
        let wait_a = carrier_wait_ms(&base, shell_steps);
        let wait_b = carrier_wait_ms(&base, batched);
        limits.insert(
            name.to_string(),
            serde_json::json!({
                "processes_per_step": steps - 1,
                "processes_batched": procs,
                "limit_parts_us": parts.mean_us(),
                "carrier_wait_ms_after_ip_per_step": wait_a,
                "carrier_wait_ms_after_ip_batch": wait_b,
            }),
        );
    }
    let mut all = std::fs::read(results_dir().join("harness.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["limits"].as_object().cloned())
        .unwrap_or_default();
    all.extend(limits);
    record("harness.json", "limits", serde_json::Value::Object(all));
    // Nothing of ours may be left.
    let left: Vec<String> = faultlab::netns::list()
        .into_iter()
        .filter(|n| n.starts_with("fl") && n.contains("-bench-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The kernel-time floor: the plan's operations replayed on raw netlink sockets.
///
/// Method. Every rtnetlink request the build needs (veth, devices, ports, addresses,
/// up, routes, neighbours) is serialised BEFORE the clock starts, with the same
/// rtnetlink builders faultlab uses; the clock runs only around `send` + `recv` of
/// the ack. rtnetlink and nfnetlink process a request synchronously in the sender's
/// `sendmsg`, so that interval is the kernel's own time for the operation (plus one
/// syscall entry/exit each). Namespaces: only `open(O_CREAT)` + `unshare` + `mount`
/// (create) and `umount2` + `unlink` (delete) are timed. sysctls: the `open` + `write`
/// on /proc/sys. Rulesets: the nfnetlink batches the real loader sends, captured once
/// with `strace -e write=all` in a scratch namespace (the loader's own cache dumps are
/// not replayed: they are userspace bookkeeping) and replayed with one `send` each.
/// Thread creation, setns, ifindex lookups and socket opening are not timed.
pub mod replay {
    use super::*;
    use faultlab::model::{DeviceKind, RouteKind, RulesetKind};
    use rtnetlink::packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
        NLM_F_REQUEST,
    };
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::{
        AddressMessageBuilder, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
        RouteMessageBuilder, RouteNextHopBuilder,
    };
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// Captured nfnetlink batches per node name, in load order.
    pub type Captured = BTreeMap<String, Vec<Vec<u8>>>;

    /// Kernel time per kind of operation.
    #[derive(Debug, Default, Clone)]
    pub struct Parts {
        pub netns_create: Duration,
        pub rtnetlink: Duration,
        pub sysctl: Duration,
        pub nftables: Duration,
        pub netns_delete: Duration,
        pub n: u32,
        pub requests: u32,
    }

    impl Parts {
        pub fn total(&self) -> Duration {
            self.netns_create + self.rtnetlink + self.sysctl + self.nftables + self.netns_delete
        }
        pub fn add(&mut self, o: &Parts) {
            self.netns_create += o.netns_create;
            self.rtnetlink += o.rtnetlink;
            self.sysctl += o.sysctl;
            self.nftables += o.nftables;
            self.netns_delete += o.netns_delete;
            self.requests += o.requests;
            self.n += 1;
        }
        pub fn mean_us(&self) -> serde_json::Value {
            let n = self.n.max(1) as f64;
            let us = |d: Duration| (d.as_secs_f64() * 1e6 / n * 10.0).round() / 10.0;
            serde_json::json!({
                "netns_create": us(self.netns_create),
                "rtnetlink": us(self.rtnetlink),
                "rtnetlink_requests": self.requests as f64 / n,
                "sysctl": us(self.sysctl),
                "nftables": us(self.nftables),
                "netns_delete": us(self.netns_delete),
                "total": us(self.total()),
                "iterations": self.n,
            })
        }
    }

    fn nl_socket(proto: i32) -> Result<OwnedFd> {
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("netlink socket");
        }
        // SAFETY: fd is a fresh, valid descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn serialize(inner: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
        let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        m.header.flags = flags;
        m.header.sequence_number = seq;
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    /// First NLMSG_ERROR code in a reply buffer (0 = ack).
    fn ack_code(buf: &[u8]) -> Option<i32> {
        let mut off = 0;
        while off + 16 <= buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().ok()?);
            if ty == libc::NLMSG_ERROR as u16 && off + 20 <= buf.len() {
                return Some(i32::from_ne_bytes(buf[off + 16..off + 20].try_into().ok()?));
            }
            if len < 16 {
                return None;
            }
            off += (len + 3) & !3;
        }
        None
    }

    /// Timed: one request and its ack.
    fn talk(fd: &OwnedFd, msg: &[u8], what: &str) -> Result<Duration> {
        let mut buf = [0u8; 8192];
        let t = Instant::now();
        // SAFETY: buffers are valid for the lengths given.
        let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let d = t.elapsed();
        if sent < 0 || got < 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_string());
        }
        match ack_code(&buf[..got as usize]) {
            Some(0) => Ok(d),
            Some(e) => Err(std::io::Error::from_raw_os_error(-e)).context(what.to_string()),
            None => bail!("{what}: no ack"),
        }
    }

    /// Timed: one nfnetlink batch (no ACK flags: silence means success).
    fn talk_batch(fd: &OwnedFd, msg: &[u8]) -> Result<Duration> {
        let mut buf = [0u8; 8192];
        let t = Instant::now();
        let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        let d = t.elapsed();
        if sent < 0 {
            return Err(std::io::Error::last_os_error()).context("nfnetlink batch");
        }
        let got = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if got > 0 {
            if let Some(e) = ack_code(&buf[..got as usize]) {
                if e != 0 {
                    return Err(std::io::Error::from_raw_os_error(-e))
                        .context("nfnetlink batch replay");
                }
            }
        }
        Ok(d)
    }

    fn ifindex(dev: &str) -> Result<u32> {
        let c = std::ffi::CString::new(dev)?;
        // SAFETY: valid NUL-terminated name.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if i == 0 {
            bail!("no device {dev}");
        }
        Ok(i)
    }

    /// Runs the ruleset loaders of each node under strace in a scratch namespace
    /// and keeps the nfnetlink batches they send.
    pub fn capture(base: &LabPlan) -> Result<Captured> {
        let mut out = Captured::new();
        for n in &base.nodes {
            if n.rulesets.is_empty() {
                continue;
            }
            let run = new_run_id();
            let _guard = NsGuard(run.clone());
            let ns = format!("{run}-cap");
            faultlab::netns::create(&ns)?;
            let mut batches = Vec::new();
            for (i, rs) in n.rulesets.iter().enumerate() {
                let trace = std::env::temp_dir().join(format!("faultlab-{run}-{i}.strace"));
                let (prog, args) = rs.kind.loader();
                let mut argv: Vec<String> = [
                    "strace",
                    "-o",
                    trace.to_str().unwrap(),
                    "-e",
                    "trace=sendmsg",
                    "-e",
                    "write=all",
                    "-xx",
                    "-s",
                    "0",
                    prog,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                argv.extend(args.iter().map(|s| s.to_string()));
                faultlab::netns::output_in(&ns, &argv, Some(&rs.text))
                    .with_context(|| format!("capture {} ruleset of {}", rs.kind.key(), n.name))?;
                let text = std::fs::read_to_string(&trace)?;
                let _ = std::fs::remove_file(&trace);
                batches.extend(parse_strace_dumps(&text));
            }
            if batches.is_empty() {
                bail!("no nfnetlink batch captured for {}", n.name);
            }
            out.insert(n.name.clone(), batches);
        }
        // Only nftables-based loaders are replayable this way.
        for n in &base.nodes {
            for rs in &n.rulesets {
                if matches!(
                    rs.kind,
                    RulesetKind::IptablesLegacy | RulesetKind::Ip6tablesLegacy
                ) {
                    bail!("legacy x_tables rulesets are not replayed");
                }
            }
        }
        Ok(out)
    }

    /// The buffers of `sendmsg` calls in strace `-e write=all -xx` output.
    pub fn parse_strace_dumps(text: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        for line in text.lines() {
            if line.starts_with("sendmsg(") {
                if let Some(b) = cur.take() {
                    out.push(b);
                }
                cur = Some(Vec::new());
            } else if let Some(rest) = line.strip_prefix(" | ") {
                if let Some(b) = cur.as_mut() {
                    // " | 00000  1c 00 ... 00  ascii |": offset, then 16 hex bytes.
                    let hex = rest.get(7..55).unwrap_or("");
                    b.extend(
                        hex.split_whitespace()
                            .filter_map(|h| u8::from_str_radix(h, 16).ok()),
                    );
                }
            }
        }
        if let Some(b) = cur.take() {
            out.push(b);
        }
        out.retain(|b| !b.is_empty());
        out
    }

    /// Creates the namespace `name` on this thread (which moves into it): timed part only.
    fn create_ns_here(name: &str) -> Result<Duration> {
        use nix::mount::{mount, MsFlags};
        let path = faultlab::netns::path_of(name)?;
        let t = Instant::now();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(t.elapsed())
    }

    fn enter(ns: &str) -> Result<()> {
        faultlab::netns::enter(ns)
    }

    /// Builds `plan` by replay; returns the kernel time per part.
    pub fn build(plan: &LabPlan, captured: &Captured) -> Result<Parts> {
        let mut parts = Parts::default();
        let mut seq = 1u32;
        let ops = build_ops(plan);
        std::thread::scope(|s| -> Result<()> {
            for n in ops.iter().filter_map(|o| match o.op {
                Op::Netns(n) => Some(n),
                _ => None,
            }) {
                let d = s
                    .spawn(|| create_ns_here(&n.netns))
                    .join()
                    .unwrap()
                    .with_context(|| format!("create {}", n.netns))?;
                parts.netns_create += d;
            }
            Ok(())
        })?;
        // veths, from the `a` node's namespace, peers created directly in theirs.
        for (v, a, b) in ops.iter().filter_map(|o| match o.op {
            Op::Veth { veth, a, b, .. } => Some((veth, a, b)),
            _ => None,
        }) {
            let (a_ns, b_ns) = (a.netns.clone(), b.netns.clone());
            let peer = faultlab::netns::open(&b_ns)?;
            let mut pm = LinkMessageBuilder::<LinkUnspec>::new()
                .name(v.b.dev.clone())
                .setns_by_fd(peer.as_raw_fd());
            if let Some(m) = v.mtu {
                pm = pm.mtu(m);
            }
            let mut b = LinkVeth::new(&v.a.dev, &v.b.dev).set_info_data(
                netlink_packet_route::link::InfoData::Veth(
                    netlink_packet_route::link::InfoVeth::Peer(pm.build()),
                ),
            );
            if let Some(m) = v.mtu {
                b = b.mtu(m);
            }
            let msg = serialize(
                RouteNetlinkMessage::NewLink(b.build()),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                seq,
            );
            seq += 1;
            let d = faultlab::netns::run_in(&a_ns, || {
                let fd = nl_socket(libc::NETLINK_ROUTE)?;
                talk(&fd, &msg, "veth")
            })?;
            drop(peer);
            parts.rtnetlink += d;
            parts.requests += 1;
        }
        for n in &plan.nodes {
            let batches = captured.get(&n.name).cloned().unwrap_or_default();
            let p = std::thread::scope(|s| {
                s.spawn(|| -> Result<Parts> {
                    enter(&n.netns)?;
                    configure_here(n, &batches)
                })
                .join()
                .unwrap()
            })
            .with_context(|| format!("node {}", n.name))?;
            parts.rtnetlink += p.rtnetlink;
            parts.sysctl += p.sysctl;
            parts.nftables += p.nftables;
            parts.requests += p.requests;
        }
        Ok(parts)
    }

    fn configure_here(n: &faultlab::model::NodePlan, batches: &[Vec<u8>]) -> Result<Parts> {
        let mut p = Parts::default();
        let fd = nl_socket(libc::NETLINK_ROUTE)?;
        let mut seq = 100u32;
        let new = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let mut send = |p: &mut Parts, m: RouteNetlinkMessage, flags: u16, what: &str| {
            seq += 1;
            let buf = serialize(m, flags, seq);
            p.rtnetlink += talk(&fd, &buf, what)?;
            p.requests += 1;
            anyhow::Ok(())
        };
        for op in configure_ops(n) {
            match op {
                Op::Device(_, d) => {
                    let msg = match &d.kind {
                        DeviceKind::Bridge { .. } => {
                            let mut b = LinkBridge::new(&d.name);
                            if let Some(m) = d.mtu {
                                b = b.mtu(m);
                            }
                            b.build()
                        }
                        DeviceKind::Vxlan {
                            vni,
                            local,
                            remote,
                            dev,
                            port,
                        } => {
                            let mut b = LinkVxlan::new(&d.name, *vni).port(*port);
                            if let Some(u) = dev {
                                b = b.dev(ifindex(u)?);
                            }
                            match local {
                                Some(IpAddr::V4(a)) => b = b.local(*a),
                                Some(IpAddr::V6(a)) => b = b.local6(*a),
                                None => {}
                            }
                            match remote {
                                Some(IpAddr::V4(a)) => b = b.remote(*a),
                                Some(IpAddr::V6(a)) => b = b.remote6(*a),
                                None => {}
                            }
                            if let Some(m) = d.mtu {
                                b = b.mtu(m);
                            }
                            b.build()
                        }
                        DeviceKind::Dummy | DeviceKind::Macvlan { .. } | DeviceKind::Vrf { .. } => {
                            bail!("{} devices are not in the bench topologies", d.kind.name())
                        }
                    };
                    send(&mut p, RouteNetlinkMessage::NewLink(msg), new, "device")?;
                }
                Op::Port { master, port, .. } => {
                    let msg = LinkUnspec::new_with_index(ifindex(port)?)
                        .controller(ifindex(&master.name)?)
                        .build();
                    send(&mut p, RouteNetlinkMessage::SetLink(msg), new, "master")?;
                }
                Op::Sysctl(_, sc) => {
                    let path = faultlab::netns::sysctl::key_to_path(&sc.key)?;
                    let t = Instant::now();
                    std::fs::write(&path, sc.value.as_bytes())
                        .with_context(|| format!("sysctl {}", sc.key))?;
                    p.sysctl += t.elapsed();
                }
                Op::Address(_, a) => {
                    let idx = ifindex(&a.dev)?;
                    let mut msg = match a.addr.addr() {
                        IpAddr::V4(x) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                            .index(idx)
                            .address(x, a.addr.prefix_len())
                            .build(),
                        IpAddr::V6(x) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                            .index(idx)
                            .address(x, a.addr.prefix_len())
                            .build(),
                    };
                    if a.addr.addr().is_ipv6() {
                        use netlink_packet_route::address::{
                            AddressAttribute, AddressFlags, AddressHeaderFlags,
                        };
                        msg.header.flags |= AddressHeaderFlags::Nodad;
                        msg.attributes
                            .push(AddressAttribute::Flags(AddressFlags::Nodad));
                    }
                    send(&mut p, RouteNetlinkMessage::NewAddress(msg), new, "address")?;
                }
                Op::Up(_, dev) => {
                    let msg = LinkUnspec::new_with_index(ifindex(dev)?).up().build();
                    send(&mut p, RouteNetlinkMessage::SetLink(msg), new, "up")?;
                }
                Op::Route(_, r) => {
                    let dst = r.dst.trunc();
                    let v4 = dst.addr().is_ipv4();
                    let mut b = RouteMessageBuilder::<IpAddr>::new()
                        .destination_prefix(dst.addr(), dst.prefix_len())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    match &r.kind {
                        RouteKind::Unicast { via, dev, onlink } => {
                            if let Some(d) = dev {
                                b = b.output_interface(ifindex(d)?);
                            }
                            match via {
                                Some(gw) => {
                                    b = b.gateway(*gw).map_err(|e| anyhow::anyhow!("{e}"))?
                                }
                                None if v4 => {
                                    b = b.scope(netlink_packet_route::route::RouteScope::Link)
                                }
                                None => {}
                            }
                            if *onlink {
                                b = b.onlink();
                            }
                        }
                        RouteKind::Multipath { nexthops } => {
                            let family = if v4 {
                                netlink_packet_route::AddressFamily::Inet
                            } else {
                                netlink_packet_route::AddressFamily::Inet6
                            };
                            let mut hops = Vec::new();
                            for nh in nexthops {
                                let mut h = RouteNextHopBuilder::new(family);
                                if let Some(d) = &nh.dev {
                                    h = h.interface(ifindex(d)?);
                                }
                                if let Some(gw) = nh.via {
                                    h = h.via(gw).map_err(|e| anyhow::anyhow!("{e}"))?;
                                }
                                hops.push(h.weight(nh.weight.saturating_sub(1)).build());
                            }
                            b = b.multipath(hops);
                        }
                        RouteKind::Blackhole => {
                            b = b.kind(netlink_packet_route::route::RouteType::BlackHole)
                        }
                        RouteKind::Unreachable => {
                            b = b.kind(netlink_packet_route::route::RouteType::Unreachable)
                        }
                        RouteKind::Prohibit => {
                            b = b.kind(netlink_packet_route::route::RouteType::Prohibit)
                        }
                    }
                    send(
                        &mut p,
                        RouteNetlinkMessage::NewRoute(b.build()),
                        new,
                        "route",
                    )?;
                }
                Op::Neighbour(..) => bail!("neighbours are not in the bench topologies"),
                // Replayed below from the captured nfnetlink batches.
                Op::Ruleset { .. } => {}
                other => bail!("{other} is not a configure operation"),
            }
        }
        if !batches.is_empty() {
            let nf = nl_socket(libc::NETLINK_NETFILTER)?;
            for b in batches {
                p.nftables += talk_batch(&nf, b)?;
            }
        }
        Ok(p)
    }

    fn delete_timed(plan: &LabPlan) -> Result<Duration> {
        let mut d = Duration::ZERO;
        for n in plan.nodes.iter().rev() {
            let path = faultlab::netns::path_of(&n.netns)?;
            let t = Instant::now();
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)?;
            std::fs::remove_file(&path)?;
            d += t.elapsed();
        }
        Ok(d)
    }

    pub fn build_and_teardown(plan: &LabPlan, captured: &Captured) -> Result<Parts> {
        let guard = NsGuard(plan.run_id.clone());
        let mut p = build(plan, captured)?;
        p.netns_delete = delete_timed(plan)?;
        drop(guard);
        Ok(p)
    }
}

criterion_group!(benches, harness);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
