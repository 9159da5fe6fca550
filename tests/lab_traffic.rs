//! End-to-end checks of every traffic generator in throwaway namespaces (root only).
//!
//! Topology (`ip` commands; the lab's own builder is not under test here):
//!   a (10.77.1.1/24, fd77:1::1/64) —veth— r (10.77.1.2, 10.77.2.2) —veth— b (10.77.2.1/24, fd77:2::1/64)
//! r forwards, so traffic a→b crosses a middle namespace where conntrack can be enabled.
#![cfg(feature = "lab")]

mod steps;
use faultlab::traffic::Metrics;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

/// Tests share nothing but run one at a time: the race wants both CPUs.
static SERIAL: Mutex<()> = Mutex::new(());

struct Lab {
    names: BTreeMap<String, String>,
    dir: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.names.values() {
            let _ = faultlab::netns::delete(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(ns: &str, cmd: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{ns}: {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let mut lab = Lab {
            names: BTreeMap::new(),
            dir: std::env::temp_dir().join(format!("fltest{}-{tag}", std::process::id())),
        };
        for node in ["a", "r", "b"] {
            let ns = format!("fltest{}-{tag}{node}", std::process::id());
            faultlab::netns::create(&ns).expect("create netns");
            // No DAD: IPv6 works at once instead of after ~2 s of tentative addresses.
            sh(
                &ns,
                "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
            );
            lab.names.insert(node.to_string(), ns);
        }
        std::fs::create_dir_all(&lab.dir).unwrap();
        let (a, r, b) = (lab.ns("a"), lab.ns("r"), lab.ns("b"));
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "ra", "netns", &r,
        ]);
        run(&[
            "-n", &b, "link", "add", "eth0", "type", "veth", "peer", "name", "rb", "netns", &r,
        ]);
        sh(&a, "ip addr add 10.77.1.1/24 dev eth0 && ip addr add 10.77.1.11/24 dev eth0 && ip -6 addr add fd77:1::1/64 dev eth0 nodad && ip link set eth0 up && ip route add default via 10.77.1.2 && ip -6 route add default via fd77:1::2");
        sh(&b, "ip addr add 10.77.2.1/24 dev eth0 && ip -6 addr add fd77:2::1/64 dev eth0 nodad && ip link set eth0 up && ip route add default via 10.77.2.2 && ip -6 route add default via fd77:2::2");
        sh(&r, "ip addr add 10.77.1.2/24 dev ra && ip addr add 10.77.2.2/24 dev rb && ip -6 addr add fd77:1::2/64 dev ra nodad && ip -6 addr add fd77:2::2/64 dev rb nodad && ip link set ra up && ip link set rb up && sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1");
        // The first IPv6 packets wait up to ~1 s for neighbour discovery: resolve first.
        for to in ["10.77.2.1", "fd77:2::1"] {
            let ok = (0..5).any(|_| {
                lab.try_run(&format!(
                    "kind = \"ping\"\nfrom = \"a\"\nto = \"{to}\"\ncount = 1\n"
                ))["received"]
                    == 1.0
            });
            assert!(ok, "lab not ready: {to} unreachable");
        }
        lab
    }

    fn ns(&self, node: &str) -> String {
        self.names[node].clone()
    }

    fn run(&self, toml_step: &str) -> Metrics {
        let m = self.try_run(toml_step);
        eprintln!("{m:?}");
        m
    }

    fn try_run(&self, toml_step: &str) -> Metrics {
        steps::run_step(&self.names, &self.dir, toml_step).expect("traffic run")
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sum of one column of /proc/net/stat/nf_conntrack over CPUs, read inside `ns`.
fn ct_stat(ns: &str, column: &str) -> u64 {
    faultlab::netns::run_in(ns, || {
        let text = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let col = header.iter().position(|h| *h == column).expect("column");
        Ok(lines
            .map(|l| u64::from_str_radix(l.split_whitespace().nth(col).unwrap(), 16).unwrap())
            .sum())
    })
    .unwrap()
}

fn nft_conntrack(ns: &str) {
    sh(ns, "nft add table ip t && nft add chain ip t pre '{type filter hook prerouting priority 0;}' && nft add rule ip t pre ct state new counter");
}

#[test]
fn ping_v4_and_v6_all_received() {
    let _g = lock();
    let lab = Lab::new("p");
    for to in ["10.77.2.1", "fd77:2::1"] {
        let m = lab.run(&format!(
            "kind = \"ping\"\nfrom = \"a\"\nto = \"{to}\"\ncount = 5\ninterval_ms = 20\n"
        ));
        assert_eq!(m["sent"], 5.0);
        assert_eq!(m["received"], 5.0, "{to}");
        assert_eq!(m["lost"], 0.0);
        assert!(m["rtt_avg_ms"] > 0.0);
    }
    // Nothing answers: all lost, and no rtt is invented.
    let m = lab.run("kind = \"ping\"\nfrom = \"a\"\nto = \"10.77.2.99\"\ncount = 2\ninterval_ms = 10\ntimeout_ms = 300\n");
    assert_eq!((m["received"], m["lost"]), (0.0, 2.0));
    assert!(!m.contains_key("rtt_avg_ms"));
}

#[test]
fn udp_received_equals_sent_v4_v6() {
    let _g = lock();
    let lab = Lab::new("u");
    for to in ["10.77.2.1", "fd77:2::1"] {
        let m = lab.run(&format!("kind = \"udp\"\nfrom = \"a\"\nto = \"{to}\"\ncount = 200\nreceiver = \"b\"\nsrc_port = 4444\n"));
        assert_eq!(m["sent"], 200.0);
        assert_eq!(m["received"], 200.0, "{to}");
        assert_eq!(m["replies"], 200.0, "{to}");
    }
}

#[test]
fn race_udp_fires_conntrack_clash() {
    let _g = lock();
    let lab = Lab::new("r");
    let r = lab.ns("r");
    nft_conntrack(&r);
    let before = ct_stat(&r, "clashres");
    let iterations = 300.0;
    let m = lab.run("kind = \"race\"\nfrom = \"a\"\nto = \"10.77.2.1\"\ndport = 5353\nproto = \"udp\"\niterations = 300\nreceiver = \"b\"\n");
    let clash = ct_stat(&r, "clashres") - before;
    eprintln!(
        "race: clashres delta {clash} over {iterations} iterations ({:.2}/iteration)",
        clash as f64 / iterations
    );
    assert_eq!(m["iterations"], iterations);
    assert_eq!(m["sent"], iterations * m["threads"]);
    assert_eq!(
        m["received"], m["sent"],
        "UDP clashes are resolved: nothing lost"
    );
    assert!(clash > 0, "the race never fired");

    // The glibc forms, and IPv6 raw (own IPv6 header), still deliver everything.
    for extra in ["mode = \"socket\"", "mode = \"sendmmsg\""] {
        let m = lab.run(&format!("kind = \"race\"\nfrom = \"a\"\nto = \"10.77.2.1\"\ndport = 5353\niterations = 50\nthreads = 2\nreceiver = \"b\"\n{extra}\n"));
        assert_eq!(m["received"], 100.0, "{extra}");
    }
    let m = lab.run("kind = \"race\"\nfrom = \"a\"\nto = \"fd77:2::1\"\ndport = 5353\niterations = 50\nreceiver = \"b\"\n");
    assert_eq!(m["received"], m["sent"]);
    assert!(m["sent"] > 0.0);
}

#[test]
fn race_tcp_syn_is_counted_at_receiver() {
    let _g = lock();
    let lab = Lab::new("s");
    let m = lab.run("kind = \"race\"\nfrom = \"a\"\nto = \"10.77.2.1\"\ndport = 8081\nproto = \"tcp-syn\"\niterations = 50\nreceiver = \"b\"\n");
    assert_eq!(m["received"], m["sent"]);
    assert_eq!(m["received_iterations_complete"], 50.0);
    // TCP has no clash resolution: through conntrack the loser of each race is dropped.
    let r = lab.ns("r");
    nft_conntrack(&r);
    let before = (ct_stat(&r, "insert_failed"), ct_stat(&r, "drop"));
    let m = lab.run("kind = \"race\"\nfrom = \"a\"\nto = \"10.77.2.1\"\ndport = 8082\nsport = 30000\nproto = \"tcp-syn\"\niterations = 200\nreceiver = \"b\"\n");
    let (failed, dropped) = (
        ct_stat(&r, "insert_failed") - before.0,
        ct_stat(&r, "drop") - before.1,
    );
    eprintln!(
        "tcp-syn race: insert_failed {failed}, drop {dropped}, received {} of {}",
        m["received"], m["sent"]
    );
    assert!(failed > 0, "the race never fired");
    assert_eq!(m["sent"] - m["received"], dropped as f64);
}

#[test]
fn dns_clean_path_is_fast() {
    let _g = lock();
    let lab = Lab::new("d");
    for extra in ["", "single_request_reopen = true", "single_request = true"] {
        let m = lab.run(&format!("kind = \"dns\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nserver = \"b\"\nlookups = 20\ninterval_ms = 5\n{extra}\n"));
        assert_eq!(m["ok"], 20.0, "{extra}");
        assert_eq!(m["failed"], 0.0);
        assert_eq!(m["queries_sent"], 40.0);
        assert_eq!(m["replies_received"], 40.0);
        assert!(m["latency_p99_ms"] < 1000.0);
    }
    let m =
        lab.run("kind = \"dns\"\nfrom = \"a\"\nto = \"fd77:2::1\"\nserver = \"b\"\nlookups = 5\n");
    assert_eq!(m["ok"], 5.0);
    // No server: each attempt times out, the lookup fails after `attempts`.
    let m = lab.run("kind = \"dns\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 5399\nstart_server = false\nlookups = 1\ntimeout_ms = 100\n");
    assert_eq!((m["ok"], m["failed"], m["retried"]), (0.0, 1.0, 1.0));
}

#[test]
fn churn_all_connect() {
    let _g = lock();
    let lab = Lab::new("c");
    nft_conntrack(&lab.ns("r"));
    for extra in [
        "close = \"fin\"",
        "close = \"rst\"",
        "server_closes_first = true",
    ] {
        let m = lab.run(&format!("kind = \"churn\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nserver = \"b\"\nconnections = 200\n{extra}\n"));
        assert_eq!(m["connected"], m["attempted"], "{extra}");
        assert_eq!(m["attempted"], 200.0);
        assert_eq!(m["server_accepted"], 200.0);
    }
    let m =
        lab.run("kind = \"churn\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 1\nconnections = 3\n");
    assert_eq!((m["refused"], m["failed"]), (3.0, 3.0));
}

#[test]
fn churn_in_flight_overlaps_the_timeouts_of_dropped_syns() {
    let _g = lock();
    let lab = Lab::new("f");
    // Every SYN to port 8181 dies at the router: each connect can only time out.
    sh(
        &lab.ns("r"),
        "nft add table inet synblock; nft add chain inet synblock f '{ type filter hook forward priority 0; }'; nft add rule inet synblock f tcp dport 8181 drop",
    );
    let step = |in_flight: u32| {
        format!("kind = \"churn\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 8181\nconnections = 16\nconnect_timeout_ms = 100\nin_flight = {in_flight}\n")
    };
    let t0 = std::time::Instant::now();
    let m = lab.run(&step(1));
    let one_at_a_time = t0.elapsed();
    assert_eq!(
        (m["attempted"], m["timed_out"], m["failed"]),
        (16.0, 16.0, 16.0)
    );
    let t0 = std::time::Instant::now();
    let m = lab.run(&step(8));
    let eight = t0.elapsed();
    assert_eq!(
        (m["attempted"], m["timed_out"], m["failed"]),
        (16.0, 16.0, 16.0)
    );
    // 16 x 100 ms one after the other; two rounds of 8 side by side.
    assert!(
        one_at_a_time >= std::time::Duration::from_millis(1600),
        "{one_at_a_time:?}"
    );
    assert!(eight < std::time::Duration::from_millis(800), "{eight:?}");
    // A server that answers: every connect succeeds with several in flight too.
    let m = lab.run("kind = \"churn\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nserver = \"b\"\nconnections = 200\nin_flight = 8\n");
    assert_eq!((m["connected"], m["server_accepted"]), (200.0, 200.0));
}

#[test]
fn multiflow_clean_path_loses_nothing() {
    let _g = lock();
    let lab = Lab::new("m");
    let m = lab.run("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nreceiver = \"b\"\nflows = 100\npackets_per_flow = 5\nsources = [\"10.77.1.1\", \"10.77.1.11\"]\n");
    assert_eq!(m["packets_sent"], 500.0);
    assert_eq!(m["packets_received"], 500.0);
    assert_eq!(
        (m["flows_lossless"], m["flows_dead"], m["loss_fraction"]),
        (100.0, 0.0, 0.0)
    );
    // A blackholed destination: every flow dead.
    sh(&lab.ns("r"), "ip route add blackhole 10.77.9.0/24");
    let m = lab.run("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.9.1\"\nreceiver = \"b\"\nflows = 10\npackets_per_flow = 2\ntimeout_ms = 200\n");
    assert_eq!(
        (m["flows_dead"], m["dead_fraction"], m["loss_fraction"]),
        (10.0, 1.0, 1.0)
    );
}

#[test]
fn tcp_transfers_complete() {
    let _g = lock();
    let lab = Lab::new("t");
    for to in ["10.77.2.1", "fd77:2::1"] {
        let m = lab.run(&format!("kind = \"tcp\"\nfrom = \"a\"\nto = \"{to}\"\nserver = \"b\"\nconnections = 5\nbytes = 1000000\n"));
        assert_eq!(m["completed"], 5.0, "{to}");
        assert_eq!(m["bytes_confirmed"], 5e6);
    }
    let m =
        lab.run("kind = \"tcp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 1\nconnections = 2\n");
    assert_eq!((m["refused"], m["completed"]), (2.0, 0.0));
}

#[test]
fn tcp_inject_without_nat() {
    let _g = lock();
    let lab = Lab::new("i");
    for to in ["10.77.2.1", "fd77:2::1"] {
        // Out-of-window ACK reaches the client (which answers with a dup ACK); nothing resets.
        let m = lab.run(&format!(
            "kind = \"tcp-inject\"\nclient = \"a\"\nserver = \"b\"\nto = \"{to}\"\ninjections = [{{ seq_offset = -100000, flags = \"A\" }}]\n"
        ));
        assert_eq!(m["reached_client"], 1.0, "{to}");
        assert_eq!((m["client_reset"], m["server_reset"]), (0.0, 0.0));
        // An in-window RST resets the client.
        let m = lab.run(&format!("kind = \"tcp-inject\"\nclient = \"a\"\nserver = \"b\"\nto = \"{to}\"\ninjections = [{{ flags = \"R\" }}]\n"));
        assert_eq!(m["reached_client"], 1.0);
        assert_eq!(m["client_reset"], 1.0, "{to}");
        assert_eq!(m["server_reset"], 0.0);
    }
}

#[test]
fn tcp_inject_behind_masquerade_gets_host_rst() {
    let _g = lock();
    let lab = Lab::new("n");
    let r = lab.ns("r");
    sh(&r, "nft add table ip nat && nft add chain ip nat post '{type nat hook postrouting priority 100;}' && nft add rule ip nat post oifname rb masquerade");
    // Since v6.1 a segment far *below* the window is only ignored by conntrack (still
    // de-NATed, reaches the client); one far *above* it is INVALID (tcp_in_window), is not
    // de-NATed, reaches r's own stack and draws a RST whose seq is the injected ack
    // (= the server's rcv_nxt), which the server accepts.
    let m = lab.run("kind = \"tcp-inject\"\nclient = \"a\"\nserver = \"b\"\nto = \"10.77.2.1\"\ninjections = [{ seq_offset = -100000, flags = \"A\" }, { seq_offset = 1000000000, flags = \"A\" }]\n");
    eprintln!("behind NAT: {m:?}");
    assert_eq!(m["injected"], 2.0);
    assert_eq!(
        (m["inj0.reached_client"], m["inj0.rst_to_server"]),
        (1.0, 0.0)
    );
    assert_eq!(
        (m["inj1.reached_client"], m["inj1.rst_to_server"]),
        (0.0, 1.0)
    );
    assert_eq!(m["rst_seq_in_window"], 1.0);
    assert_eq!(m["server_reset"], 1.0);
}
