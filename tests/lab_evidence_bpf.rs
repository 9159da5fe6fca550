//! The BPF drop tracer against the real kernel: exact per-namespace attribution
//! (output path included), no cross-attribution between concurrent labs with the same
//! device names, and no kernel object left behind (after stop, and after SIGKILL).
//! Needs root: `cargo test --features lab --test lab_evidence_bpf -- --test-threads=1`.
#![cfg(feature = "lab")]

use faultlab::evidence::{DropMethod, DropReport, DropTargets, DropTrace};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lab of two namespaces `flbpf<pid>-<tag>-{a,b}` joined by veths that have the same
/// names in every lab (`eth0` in a, `eth1` in b), made inside the namespaces so the root
/// namespace never sees them. Deleted even when the test fails.
struct TwoNodes {
    a: String,
    b: String,
}

impl TwoNodes {
    fn new(tag: &str) -> TwoNodes {
        let base = format!("flbpf{}-{tag}", std::process::id());
        let lab = TwoNodes {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        for ns in [&lab.a, &lab.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            for key in ["all", "default"] {
                let k = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &k]);
            }
        }
        sh(&[
            "ip", "-n", &lab.a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
            "netns", &lab.b,
        ]);
        for (ns, dev, addr) in [
            (&lab.a, "eth0", "10.9.0.1/24"),
            (&lab.b, "eth1", "10.9.0.2/24"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // b drops UDP to port 9 on input; a drops UDP to port 11 on output (the skb has
        // a socket but no device yet at the output hook).
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.b,
            "nft",
            "add table inet t; \
             add chain inet t in { type filter hook input priority 0; policy accept; }; \
             add rule inet t in udp dport 9 drop",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.a,
            "nft",
            "add table inet t; \
             add chain inet t out { type filter hook output priority 0; policy accept; }; \
             add rule inet t out udp dport 11 drop",
        ]);
        // Resolve the neighbour first so no ARP queueing adds or hides drops.
        lab.send(9, 1);
        std::thread::sleep(Duration::from_millis(100));
        lab
    }

    fn targets(&self) -> DropTargets {
        DropTargets {
            namespaces: BTreeMap::from([
                ("a".to_string(), self.a.clone()),
                ("b".to_string(), self.b.clone()),
            ]),
            // Same names in every lab: the tracefs method could not tell them apart.
            devices: BTreeMap::new(),
        }
    }

    /// `n` datagrams from a to b's port `port`.
    fn send(&self, port: u16, n: usize) {
        let to: SocketAddrV4 = format!("10.9.0.2:{port}").parse().unwrap();
        faultlab::netns::run_in(&self.a, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..n {
                // The output-hook drop makes send_to fail with EPERM: the skb was dropped.
                let _ = s.send_to(b"x", to);
            }
            Ok(())
        })
        .unwrap();
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn start(lab: &TwoNodes) -> DropTrace {
    let instance = format!("flbpf{}-unused", std::process::id());
    let t = DropTrace::start_with(Some(DropMethod::Bpf), &instance, &lab.targets()).unwrap();
    assert_eq!(t.method(), DropMethod::Bpf);
    t
}

fn count(r: &DropReport, reason: &str, node: &str) -> u64 {
    r.drops
        .iter()
        .filter(|d| d.reason == reason && d.node.as_deref() == Some(node))
        .map(|d| d.count)
        .sum()
}

/// Is a BPF object with this id loaded anywhere on the machine? (`bpftool prog|map show
/// id N` fails for an id that no longer exists.)
fn loaded(kind: &str, id: u32) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .expect("bpftool (scripts/install-deps.sh installs it)")
        .status
        .success()
}

/// The kernel frees a program or map after its last reference goes through deferred
/// work (bpf_prog_put → __bpf_prog_put_noref via call_rcu), so allow it a second.
fn freed_soon(prog: u32, maps: &[u32]) -> bool {
    for _ in 0..50 {
        if !loaded("prog", prog) && maps.iter().all(|&m| !loaded("map", m)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn every_drop_attributed_including_the_output_path() {
    let lab = TwoNodes::new("all");
    let trace = start(&lab);
    const N: usize = 5;
    lab.send(9, N); // dropped in b, input hook: skb->dev is b's eth1
    lab.send(11, N + 2); // dropped in a, output hook: no skb->dev, only skb->sk
    lab.send(10, N + 4); // no socket on b's port 10
    std::thread::sleep(Duration::from_millis(100));
    let r = trace.stop_report().unwrap();
    eprintln!("{r:#?}");
    assert_eq!(r.method, DropMethod::Bpf);
    assert_eq!(count(&r, "NETFILTER_DROP", "b"), N as u64);
    assert_eq!(count(&r, "NETFILTER_DROP", "a"), N as u64 + 2);
    assert_eq!(count(&r, "NO_SOCKET", "b"), N as u64 + 4);
    // 100 %: every counted drop has a node, and nothing else was counted.
    assert!(r.drops.iter().all(|d| d.node.is_some()), "{r:#?}");
    let total: u64 = r.drops.iter().map(|d| d.count).sum();
    assert_eq!(total, 3 * N as u64 + 6, "{r:#?}");
    assert_eq!(r.lost_events, 0);
    // Locations resolve to functions as with tracefs.
    assert!(
        r.drops.iter().any(|d| d.location == "nft_do_chain"),
        "{r:#?}"
    );
    let obs = r.observations();
    assert_eq!(obs["drops_method.bpf"], 1.0);
    assert_eq!(obs["drops.a.NETFILTER_DROP"], N as f64 + 2.0);
    assert_eq!(obs["drops.NETFILTER_DROP"], 2.0 * N as f64 + 2.0);
    assert_eq!(obs["drops.b.NO_SOCKET"], N as f64 + 4.0);
}

#[test]
fn concurrent_labs_with_the_same_device_names_do_not_mix() {
    let (one, two) = (TwoNodes::new("one"), TwoNodes::new("two"));
    let (t1, t2) = (start(&one), start(&two));
    // Both traces run while both labs drop; the counts differ so a mix-up shows.
    std::thread::scope(|s| {
        s.spawn(|| one.send(9, 3));
        s.spawn(|| two.send(9, 7));
    });
    one.send(11, 2);
    std::thread::sleep(Duration::from_millis(100));
    let (r1, r2) = (t1.stop_report().unwrap(), t2.stop_report().unwrap());
    eprintln!("{r1:#?}\n{r2:#?}");
    assert_eq!(count(&r1, "NETFILTER_DROP", "b"), 3);
    assert_eq!(count(&r1, "NETFILTER_DROP", "a"), 2);
    assert_eq!(count(&r2, "NETFILTER_DROP", "b"), 7);
    assert_eq!(count(&r2, "NETFILTER_DROP", "a"), 0);
    // The lab-wide names count that lab only.
    assert_eq!(r1.observations()["drops.NETFILTER_DROP"], 5.0);
    assert_eq!(r2.observations()["drops.NETFILTER_DROP"], 7.0);
}

/// Traces running at once share one loaded program; one stopping takes only its own
/// counts out, and the other keeps counting.
#[test]
fn overlapping_traces_share_one_program_and_keep_their_counts() {
    let (one, two) = (TwoNodes::new("sh1"), TwoNodes::new("sh2"));
    let t1 = start(&one);
    let t2 = start(&two);
    assert_eq!(t1.bpf_object_ids(), t2.bpf_object_ids());
    let ids = t1.bpf_object_ids().unwrap().clone();
    one.send(9, 2);
    two.send(9, 3);
    std::thread::sleep(Duration::from_millis(100));
    let r1 = t1.stop_report().unwrap();
    assert_eq!(count(&r1, "NETFILTER_DROP", "b"), 2);
    assert!(loaded("prog", ids.prog), "the second trace still needs it");
    two.send(9, 4);
    std::thread::sleep(Duration::from_millis(100));
    let r2 = t2.stop_report().unwrap();
    assert_eq!(count(&r2, "NETFILTER_DROP", "b"), 7);
    assert!(
        freed_soon(ids.prog, &ids.maps),
        "{ids:?} outlived both traces"
    );
}

#[test]
fn reasons_from_btf_equal_the_tracepoints_list() {
    let lab = TwoNodes::new("reasons");
    let bpf = start(&lab);
    let name = format!("flbpf{}-reasons", std::process::id());
    let tracefs = DropTrace::start_with(Some(DropMethod::Tracefs), &name, &lab.targets()).unwrap();
    assert_eq!(bpf.known_reasons(), tracefs.known_reasons());
    assert!(bpf.known_reasons().len() > 10);
    let (rb, rt) = (bpf.stop_report().unwrap(), tracefs.stop_report().unwrap());
    assert_eq!(rt.method, DropMethod::Tracefs);
    assert_eq!(rt.observations()["drops_method.tracefs"], 1.0);
    assert_eq!(rb.nodes, ["a", "b"]);
}

#[test]
fn no_program_or_map_left_after_stop_or_drop() {
    let lab = TwoNodes::new("leak");
    for stop in [true, false] {
        let trace = start(&lab);
        let ids = trace.bpf_object_ids().unwrap().clone();
        assert!(loaded("prog", ids.prog), "program {} not loaded", ids.prog);
        for &m in &ids.maps {
            assert!(loaded("map", m), "map {m} not loaded");
        }
        if stop {
            trace.stop_report().unwrap();
        } else {
            drop(trace);
        }
        assert!(
            freed_soon(ids.prog, &ids.maps),
            "{ids:?} left (stop: {stop})"
        );
    }
}

/// The child half of the next test: starts a trace, prints its object ids, waits to
/// be killed.
#[test]
fn child_holding_a_trace() {
    let Ok(ns) = std::env::var("FLBPF_CHILD_NETNS") else {
        return; // only as the child of killed_mid_trace_leaves_nothing
    };
    let targets = DropTargets {
        namespaces: BTreeMap::from([("a".to_string(), ns)]),
        devices: BTreeMap::new(),
    };
    let trace = DropTrace::start_with(Some(DropMethod::Bpf), "unused", &targets).unwrap();
    let ids = trace.bpf_object_ids().unwrap();
    let maps: Vec<String> = ids.maps.iter().map(u32::to_string).collect();
    println!("IDS prog={} maps={}", ids.prog, maps.join(","));
    std::thread::sleep(Duration::from_secs(60));
    panic!("not killed");
}

#[test]
fn killed_mid_trace_leaves_nothing() {
    use std::io::BufRead;
    let lab = TwoNodes::new("kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_holding_a_trace", "--nocapture"])
        .env("FLBPF_CHILD_NETNS", &lab.a)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("IDS "))
        .expect("the child printed its ids");
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let prog: u32 = field("prog=").parse().unwrap();
    let maps: Vec<u32> = field("maps=")
        .split(',')
        .map(|m| m.parse().unwrap())
        .collect();
    assert!(loaded("prog", prog), "the child's program {prog} is loaded");
    // Traffic while the trace runs, so the kill lands mid-trace.
    lab.send(9, 3);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(
        freed_soon(prog, &maps),
        "program {prog} or maps {maps:?} outlived the killed process"
    );
}

#[test]
fn falls_back_to_tracefs_when_bpf_cannot_start() {
    // A node whose namespace does not exist: the BPF method cannot map it to a cookie,
    // so the best available method is the tracefs one, and the report says why.
    let targets = DropTargets {
        namespaces: BTreeMap::from([(
            "ghost".to_string(),
            format!("flbpf{}-ghost", std::process::id()),
        )]),
        devices: BTreeMap::from([("flbpf-nodev".to_string(), "ghost".to_string())]),
    };
    let name = format!("flbpf{}-fallback", std::process::id());
    let trace = DropTrace::start(&name, &targets).unwrap();
    assert_eq!(trace.method(), DropMethod::Tracefs);
    let r = trace.stop_report().unwrap();
    let why = r.bpf_unavailable.clone().unwrap();
    assert!(why.contains("ghost"), "{why}");
    assert_eq!(r.observations()["drops_method.tracefs"], 1.0);
    assert!(!r.observations().contains_key("drops_method.bpf"));
}

/// BPF objects (programs, maps, links) this process holds an fd of, from
/// /proc/self/fdinfo (`prog_id:` / `map_id:` / `link_id:` lines).
fn bpf_fds() -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue; // closed meanwhile
        };
        for l in text.lines() {
            if ["prog_id:", "map_id:", "link_id:"]
                .iter()
                .any(|k| l.starts_with(k))
            {
                found.push(format!("fd {}: {l}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// A whole cell through the runner: its drops were attributed by BPF, and when it is
/// over this process holds no BPF fd (so nothing of ours stays loaded).
#[test]
fn a_cell_uses_bpf_and_leaves_no_bpf_fd() {
    let lab = TwoNodes::new("fds");
    let trace = start(&lab);
    let during = bpf_fds();
    assert!(
        during.len() >= 4,
        "prog, link and 3 maps expected: {during:?}"
    );
    drop(trace);
    assert_eq!(bpf_fds(), Vec::<String>::new());

    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/bridge-netfilter.toml"
    );
    let scn = faultlab::scenario::parse(file, &std::fs::read_to_string(file).unwrap()).unwrap();
    let opts = faultlab::runner::RunOptions {
        cell: Some("call-iptables-on".into()),
        repeat: 1,
        artifacts: std::env::temp_dir().join(format!("flbpf{}-cell", std::process::id())),
        slow: 1.0,
    };
    let r = faultlab::runner::run_scenario(&scn, &opts, &faultlab::setup::new_run_id());
    let _ = std::fs::remove_dir_all(&opts.artifacts);
    let cell = &r.cells[0];
    assert_eq!(cell.outcome, faultlab::verdict::Outcome::Pass, "{cell:#?}");
    assert_eq!(cell.observations.get("drops_method.bpf"), Some(&1.0));
    // Every drop of the cell has a node.
    assert!(!cell.drops.is_empty());
    assert!(
        cell.drops.iter().all(|d| d.node.is_some()),
        "{:#?}",
        cell.drops
    );
    assert_eq!(bpf_fds(), Vec::<String>::new());
}
