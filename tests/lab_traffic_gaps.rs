//! End-to-end checks of the traffic options added for the gaps list (root only): `src` on
//! udp/tcp/churn, ping `fresh_id` and `broadcast`, multiflow `sports`/`dports`, tcp/churn
//! connect-time percentiles, and a 16,000-flow multiflow under a low open-file limit.
//!
//! Same approach as tests/lab_traffic.rs (throwaway namespaces built with `ip`, steps
//! typed from TOML text and run with `faultlab::traffic::run`). Two topologies:
//!   routed:  a (10.77.1.1, .11/24, fd77:1::1, ::11/64) —veth— r —veth— b (10.77.2.1/24, fd77:2::1/64)
//!   bridged: a (10.78.0.1), h1 (.2), h2 (.3) on one bridge in namespace sw (10.78.0.0/24)
//! a's second addresses are never the kernel's own choice of source (10.77.1.11 is
//! secondary, fd77:1::11 deprecated), so traffic from them proves `src` was bound.
//! Evidence at the receiving end is read from nftables named counters inside that
//! namespace; conntrack entries from r's /proc/net/stat/nf_conntrack (`entries`), its
//! `ct state new` counter and `conntrack -L`, all inside r.
#![cfg(feature = "lab")]

mod steps;
use faultlab::traffic::Metrics;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

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

fn sh(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{ns}: {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// Empty namespaces for `nodes`, IPv6 without DAD.
    fn empty(tag: &str, nodes: &[&str]) -> Lab {
        let mut lab = Lab {
            names: BTreeMap::new(),
            dir: std::env::temp_dir().join(format!("flgap{}-{tag}", std::process::id())),
        };
        for node in nodes {
            let ns = format!("flgap{}-{tag}{node}", std::process::id());
            faultlab::netns::create(&ns).expect("create netns");
            lab.names.insert(node.to_string(), ns.clone());
            sh(
                &ns,
                "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
            );
        }
        std::fs::create_dir_all(&lab.dir).unwrap();
        lab
    }

    /// a —— r —— b, r forwarding; a has a second address of each family (.11 / ::11).
    fn routed(tag: &str) -> Lab {
        let lab = Lab::empty(tag, &["a", "r", "b"]);
        let (a, r, b) = (lab.ns("a"), lab.ns("r"), lab.ns("b"));
        ip(&[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "ra", "netns", &r,
        ]);
        ip(&[
            "-n", &b, "link", "add", "eth0", "type", "veth", "peer", "name", "rb", "netns", &r,
        ]);
        sh(&a, "ip addr add 10.77.1.1/24 dev eth0 && ip addr add 10.77.1.11/24 dev eth0 && ip -6 addr add fd77:1::1/64 dev eth0 nodad && ip -6 addr add fd77:1::11/64 dev eth0 nodad preferred_lft 0 && ip link set eth0 up && ip route add default via 10.77.1.2 && ip -6 route add default via fd77:1::2");
        sh(&b, "ip addr add 10.77.2.1/24 dev eth0 && ip -6 addr add fd77:2::1/64 dev eth0 nodad && ip link set eth0 up && ip route add default via 10.77.2.2 && ip -6 route add default via fd77:2::2");
        sh(&r, "ip addr add 10.77.1.2/24 dev ra && ip addr add 10.77.2.2/24 dev rb && ip -6 addr add fd77:1::2/64 dev ra nodad && ip -6 addr add fd77:2::2/64 dev rb nodad && ip link set ra up && ip link set rb up && sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1");
        lab.ready(&["10.77.2.1", "fd77:2::1"]);
        lab
    }

    /// a, h1, h2 on one bridge (in namespace sw); h1 and h2 answer broadcast echoes.
    fn bridged(tag: &str) -> Lab {
        let lab = Lab::empty(tag, &["sw", "a", "h1", "h2"]);
        let sw = lab.ns("sw");
        sh(&sw, "ip link add br0 type bridge && ip link set br0 up");
        for (node, addr) in [("a", "10.78.0.1"), ("h1", "10.78.0.2"), ("h2", "10.78.0.3")] {
            let ns = lab.ns(node);
            let port = format!("p{node}");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &sw,
            ]);
            sh(
                &sw,
                &format!("ip link set {port} master br0 && ip link set {port} up"),
            );
            sh(
                &ns,
                &format!("ip addr add {addr}/24 dev eth0 && ip link set eth0 up"),
            );
        }
        for h in ["h1", "h2"] {
            sh(
                &lab.ns(h),
                "sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0",
            );
        }
        // 255.255.255.255 needs a route to leave by.
        sh(&lab.ns("a"), "ip route add default dev eth0");
        lab.ready(&["10.78.0.2", "10.78.0.3"]);
        lab
    }

    /// The first packets wait for neighbour discovery: resolve first.
    fn ready(&self, targets: &[&str]) {
        for to in targets {
            let ok = (0..5).any(|_| {
                self.try_run(&format!(
                    "kind = \"ping\"\nfrom = \"a\"\nto = \"{to}\"\ncount = 1\n"
                ))
                .is_ok_and(|m| m["received"] == 1.0)
            });
            assert!(ok, "lab not ready: {to} unreachable");
        }
    }

    fn ns(&self, node: &str) -> String {
        self.names[node].clone()
    }

    fn run(&self, toml_step: &str) -> Metrics {
        let m = self.try_run(toml_step).expect("traffic run");
        let step: String = toml_step.replace('\n', " ").chars().take(160).collect();
        eprintln!("{step}: {m:?}");
        m
    }

    fn try_run(&self, toml_step: &str) -> anyhow::Result<Metrics> {
        steps::run_step(&self.names, &self.dir, toml_step)
    }
}

/// Conntrack entries in `ns` (the `entries` column of /proc/net/stat/nf_conntrack, read
/// inside the netns; every CPU line shows the same per-netns count). The `insert` column
/// stays 0 on current kernels, so new entries are counted as the growth of this one
/// (ICMP entries live 30 s, longer than each case).
fn ct_entries(ns: &str) -> u64 {
    faultlab::netns::run_in(ns, || {
        let text = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack")?;
        let line = text.lines().nth(1).expect("a CPU line");
        Ok(u64::from_str_radix(
            line.split_whitespace().next().unwrap(),
            16,
        )?)
    })
    .unwrap()
}

/// ICMP identifiers of the echo entries `conntrack -L` lists in `ns` toward `dst` (None
/// when conntrack-tools is not installed).
fn ct_icmp_ids(ns: &str, dst: &str) -> Option<std::collections::BTreeSet<u32>> {
    let (family, proto) = if dst.contains(':') {
        ("ipv6", "icmpv6")
    } else {
        ("ipv4", "icmp")
    };
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "conntrack",
            "-L",
            "-f",
            family,
            "-p",
            proto,
            "-d",
            dst,
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("id=")))
            .filter_map(|id| id.parse().ok())
            .collect(),
    )
}

/// Named counters in table `inet t` of `ns`, one rule each on hook `hook`: (name, match).
fn nft_counters(ns: &str, hook: &str, rules: &[(&str, &str)]) {
    let mut script =
        format!("add table inet t\nadd chain inet t c {{ type filter hook {hook} priority 0; }}\n");
    for (name, m) in rules {
        // The counter goes before a verdict, if the rule ends with one.
        let (m, verdict) = m
            .strip_suffix(" drop")
            .map_or((*m, ""), |head| (head, " drop"));
        script += &format!(
            "add counter inet t {name}\nadd rule inet t c {m} counter name {name}{verdict}\n"
        );
    }
    let path = std::env::temp_dir().join(format!("flgap{}-{ns}.nft", std::process::id()));
    std::fs::write(&path, script).unwrap();
    sh(ns, &format!("nft -f {}", path.display()));
    let _ = std::fs::remove_file(path);
}

/// Packets counted by the named counter `name` of table `inet t` in `ns`.
fn nft_count(ns: &str, name: &str) -> u64 {
    let out = sh(ns, &format!("nft -j list counter inet t {name}"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name}: {out}"))
}

#[test]
fn src_is_the_source_the_receiver_sees() {
    let _g = lock();
    let lab = Lab::routed("s");
    let b = lab.ns("b");
    nft_counters(
        &b,
        "input",
        &[
            ("udp_src11", "ip saddr 10.77.1.11 udp dport 9000"),
            (
                "udp_src11_4444",
                "ip saddr 10.77.1.11 udp sport 4444 udp dport 9001",
            ),
            ("udp_src1", "ip saddr 10.77.1.1 udp dport { 9000, 9001 }"),
            ("udp6_src11", "ip6 saddr fd77:1::11 udp dport 9002"),
            ("udp6_src1", "ip6 saddr fd77:1::1 udp dport 9002"),
            (
                "tcp_syn_src11",
                "ip saddr 10.77.1.11 tcp dport 8080 tcp flags & (syn | ack) == syn",
            ),
            (
                "tcp6_syn_src11",
                "ip6 saddr fd77:1::11 tcp dport 8080 tcp flags & (syn | ack) == syn",
            ),
            (
                "churn_syn_src11",
                "ip saddr 10.77.1.11 tcp dport 8090 tcp flags & (syn | ack) == syn",
            ),
            ("tcp_src1", "ip saddr 10.77.1.1 tcp dport { 8080, 8090 }"),
        ],
    );
    // Without src the route's source (10.77.1.1) would be used.
    let m = lab.run("kind = \"udp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nsrc = \"10.77.1.11\"\ncount = 50\nreceiver = \"b\"\n");
    assert_eq!((m["sent"], m["received"], m["replies"]), (50.0, 50.0, 50.0));
    assert_eq!(nft_count(&b, "udp_src11"), 50);
    let m = lab.run("kind = \"udp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 9001\nsrc = \"10.77.1.11\"\nsrc_port = 4444\ncount = 20\nreceiver = \"b\"\n");
    assert_eq!(m["received"], 20.0);
    assert_eq!(nft_count(&b, "udp_src11_4444"), 20);
    let m = lab.run("kind = \"udp\"\nfrom = \"a\"\nto = \"fd77:2::1\"\nport = 9002\nsrc = \"fd77:1::11\"\ncount = 30\nreceiver = \"b\"\n");
    assert_eq!((m["received"], m["replies"]), (30.0, 30.0));
    assert_eq!(nft_count(&b, "udp6_src11"), 30);
    assert_eq!(nft_count(&b, "udp6_src1"), 0);

    let m = lab.run("kind = \"tcp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nserver = \"b\"\nsrc = \"10.77.1.11\"\nconnections = 5\nbytes = 10000\n");
    assert_eq!(m["completed"], 5.0);
    assert_eq!(nft_count(&b, "tcp_syn_src11"), 5);
    let m = lab.run("kind = \"tcp\"\nfrom = \"a\"\nto = \"fd77:2::1\"\nserver = \"b\"\nsrc = \"fd77:1::11\"\nconnections = 3\nbytes = 1000\n");
    assert_eq!(m["completed"], 3.0);
    assert_eq!(nft_count(&b, "tcp6_syn_src11"), 3);
    let m = lab.run("kind = \"churn\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 8090\nserver = \"b\"\nsrc = \"10.77.1.11\"\nconnections = 300\n");
    assert_eq!((m["connected"], m["server_accepted"]), (300.0, 300.0));
    assert_eq!(nft_count(&b, "churn_syn_src11"), 300);
    assert_eq!(nft_count(&b, "udp_src1"), 0);
    assert_eq!(nft_count(&b, "tcp_src1"), 0);
    // Control: without src the same steps leave from the route's source addresses.
    lab.run("kind = \"udp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\ncount = 10\nreceiver = \"b\"\n");
    lab.run("kind = \"udp\"\nfrom = \"a\"\nto = \"fd77:2::1\"\nport = 9002\ncount = 10\nreceiver = \"b\"\n");
    lab.run("kind = \"tcp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nserver = \"b\"\nconnections = 2\nbytes = 10\n");
    assert_eq!(nft_count(&b, "udp_src1"), 10);
    assert_eq!(nft_count(&b, "udp6_src1"), 10);
    assert!(nft_count(&b, "tcp_src1") > 0);
    assert_eq!(
        (nft_count(&b, "udp_src11"), nft_count(&b, "udp6_src11")),
        (50, 30)
    );

    // An address the node does not have: an error naming src and the node, and the
    // server/receiver started for the step is stopped again (the port is free right after).
    for (kind, peer) in [("udp", "receiver"), ("tcp", "server"), ("churn", "server")] {
        let e = lab
            .try_run(&format!(
                "kind = \"{kind}\"\n{peer} = \"b\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 9100\nsrc = \"10.77.1.99\"\n"
            ))
            .unwrap_err();
        let e = format!("{e:#}");
        eprintln!("{e}");
        assert!(
            e.contains("src = 10.77.1.99") && e.contains("node 'a'"),
            "{kind}: {e}"
        );
    }
    let m = lab.run("kind = \"tcp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 9100\nserver = \"b\"\nconnections = 1\nbytes = 10\n");
    assert_eq!(m["completed"], 1.0);
    let m = lab.run("kind = \"udp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 9100\nreceiver = \"b\"\ncount = 5\n");
    assert_eq!(m["received"], 5.0);
}

#[test]
fn ping_fresh_id_makes_one_conntrack_entry_per_echo() {
    let _g = lock();
    let lab = Lab::routed("p");
    let r = lab.ns("r");
    // Any ct expression turns conntrack on in r (both families with an inet table).
    nft_counters(&r, "forward", &[("new", "ct state new")]);
    let cases = [
        ("10.77.2.1", false, 20, 1),
        ("10.77.2.1", true, 20, 20),
        ("fd77:2::1", false, 10, 1),
        ("fd77:2::1", true, 10, 10),
    ];
    for (to, fresh, count, entries) in cases {
        let (before, new, ids) = (ct_entries(&r), nft_count(&r, "new"), ct_icmp_ids(&r, to));
        let m = lab.run(&format!(
            "kind = \"ping\"\nfrom = \"a\"\nto = \"{to}\"\ncount = {count}\ninterval_ms = 5\nfresh_id = {fresh}\n"
        ));
        let (grown, new) = (ct_entries(&r) - before, nft_count(&r, "new") - new);
        eprintln!(
            "ping {to} fresh_id={fresh}: {count} echoes, conntrack entries +{grown}, ct state new +{new}"
        );
        assert_eq!(m["sent"], f64::from(count));
        assert_eq!(m["received"], f64::from(count), "{to} fresh_id={fresh}");
        assert_eq!((m["responders"], m["send_errors"]), (1.0, 0.0));
        assert_eq!(grown, entries, "{to} fresh_id={fresh}: conntrack entries");
        assert_eq!(new, entries, "{to} fresh_id={fresh}: new connections");
        if let (Some(ids), Some(after)) = (ids, ct_icmp_ids(&r, to)) {
            let added = after.difference(&ids).count() as u64;
            eprintln!("  conntrack -L: +{added} ICMP ids toward {to}");
            assert_eq!(added, entries, "{to} fresh_id={fresh}: ids in conntrack -L");
        }
    }
}

#[test]
fn ping_broadcast_counts_every_responder_or_is_refused() {
    let _g = lock();
    let lab = Lab::bridged("b");
    for to in ["10.78.0.255", "255.255.255.255"] {
        let m = lab.run(&format!("kind = \"ping\"\nfrom = \"a\"\nto = \"{to}\"\nbroadcast = true\ncount = 3\ninterval_ms = 20\ntimeout_ms = 500\n"));
        assert_eq!((m["sent"], m["send_errors"]), (3.0, 0.0), "{to}");
        assert_eq!((m["received"], m["lost"]), (3.0, 0.0), "{to}");
        assert_eq!(m["responders"], 2.0, "{to}: h1 and h2");
        assert_eq!(m["replies"], 6.0, "{to}: 3 requests × 2 hosts");
    }
    // A unicast target with broadcast = true still works, with one responder.
    let m = lab.run("kind = \"ping\"\nfrom = \"a\"\nto = \"10.78.0.2\"\nbroadcast = true\ncount = 2\ninterval_ms = 10\ntimeout_ms = 300\n");
    assert_eq!(
        (m["received"], m["responders"], m["replies"]),
        (2.0, 1.0, 2.0)
    );

    // Without the option: the subnet broadcast is refused at run time with the fix (the
    // loader cannot know the prefix); 255.255.255.255 is refused at load.
    let e = lab
        .try_run("kind = \"ping\"\nfrom = \"a\"\nto = \"10.78.0.255\"\ncount = 3\n")
        .unwrap_err()
        .to_string();
    eprintln!("{e}");
    assert!(
        e.contains("to = 10.78.0.255") && e.contains("broadcast = true"),
        "{e}"
    );
    let e = lab
        .try_run("kind = \"ping\"\nfrom = \"a\"\nto = \"255.255.255.255\"\ncount = 3\n")
        .unwrap_err()
        .to_string();
    eprintln!("{e}");
    assert!(
        e.contains("to = 255.255.255.255") && e.contains("set broadcast = true"),
        "{e}"
    );

    // Sends the kernel refuses are send_errors, not sent (and so not lost).
    sh(&lab.ns("a"), "ip route add unreachable 10.79.0.0/16");
    let m = lab.run("kind = \"ping\"\nfrom = \"a\"\nto = \"10.79.0.1\"\ncount = 4\ninterval_ms = 5\ntimeout_ms = 200\n");
    assert_eq!(
        (m["sent"], m["send_errors"], m["received"], m["lost"]),
        (0.0, 4.0, 0.0, 0.0)
    );
    assert!(!m.contains_key("rtt_avg_ms"));
}

#[test]
fn multiflow_sends_sources_times_ports() {
    let _g = lock();
    let lab = Lab::routed("m");
    let b = lab.ns("b");
    let srcs = ["10.77.1.1", "10.77.1.11"];
    let mut rules = Vec::new();
    for s in srcs {
        for d in [53, 80, 443] {
            rules.push((
                format!("d{}_{d}", s.replace('.', "_")),
                format!("ip saddr {s} udp dport {d}"),
            ));
        }
        for sp in [1000, 2000] {
            for d in [5353, 5354] {
                rules.push((
                    format!("s{}_{sp}_{d}", s.replace('.', "_")),
                    format!("ip saddr {s} udp sport {sp} udp dport {d}"),
                ));
            }
        }
    }
    let refs: Vec<(&str, &str)> = rules
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    nft_counters(&b, "input", &refs);

    let m = lab.run("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nreceiver = \"b\"\nsources = [\"10.77.1.1\", \"10.77.1.11\"]\ndports = [53, 80, 443]\npackets_per_flow = 4\n");
    assert_eq!(m["flows"], 6.0);
    assert_eq!((m["packets_sent"], m["packets_received"]), (24.0, 24.0));
    assert_eq!((m["flows_lossless"], m["flows_dead"]), (6.0, 0.0));
    for s in srcs {
        for d in [53, 80, 443] {
            assert_eq!(
                nft_count(&b, &format!("d{}_{d}", s.replace('.', "_"))),
                4,
                "{s} → {d}"
            );
        }
    }
    let m = lab.run("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nreceiver = \"b\"\nsources = [\"10.77.1.1\", \"10.77.1.11\"]\nsports = [1000, 2000]\ndports = [5353, 5354]\npackets_per_flow = 3\n");
    assert_eq!(m["flows"], 8.0);
    assert_eq!((m["packets_sent"], m["packets_received"]), (24.0, 24.0));
    assert_eq!(m["flows_lossless"], 8.0);
    for s in srcs {
        for sp in [1000, 2000] {
            for d in [5353, 5354] {
                let name = format!("s{}_{sp}_{d}", s.replace('.', "_"));
                assert_eq!(nft_count(&b, &name), 3, "{s}:{sp} → {d}");
            }
        }
    }
    // One dead port shows up as dead flows: sources × 1 of 3 ports.
    sh(&b, "nft add rule inet t c udp dport 80 drop");
    let m = lab.run("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nreceiver = \"b\"\nsources = [\"10.77.1.1\", \"10.77.1.11\"]\ndports = [53, 80, 443]\npackets_per_flow = 2\ntimeout_ms = 300\n");
    assert_eq!((m["flows_dead"], m["flows_lossless"]), (2.0, 4.0));
    assert_eq!(m["packets_received"], 8.0);
}

#[test]
fn tcp_and_churn_connect_times_are_ordered() {
    let _g = lock();
    let lab = Lab::routed("t");
    // r drops the first SYN toward 8080/8090 only: that connect waits for the 1 s SYN
    // retransmit, the others take well under a millisecond.
    nft_counters(
        &lab.ns("r"),
        "forward",
        &[
            (
                "tcp_syn_dropped",
                "tcp dport 8080 tcp flags & (syn | ack) == syn numgen inc mod 1000 0 drop",
            ),
            (
                "churn_syn_dropped",
                "tcp dport 8090 tcp flags & (syn | ack) == syn numgen inc mod 1000 0 drop",
            ),
        ],
    );
    let m = lab.run("kind = \"tcp\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nserver = \"b\"\nconnections = 20\nbytes = 1000\n");
    assert_eq!(m["completed"], 20.0);
    let (p50, p99, max) = (
        m["connect_ms_p50"],
        m["connect_ms_p99"],
        m["connect_ms_max"],
    );
    eprintln!("tcp connect ms: p50 {p50:.3} p99 {p99:.3} max {max:.3}");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{m:?}");
    assert!(p50 < 100.0, "clean connects are fast: {p50}");
    assert!(
        max >= 900.0,
        "the connect whose SYN was dropped waited for the retransmit: {max}"
    );
    assert_eq!(nft_count(&lab.ns("r"), "tcp_syn_dropped"), 1);

    let m = lab.run("kind = \"churn\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 8090\nserver = \"b\"\nconnections = 200\nconnect_timeout_ms = 3000\n");
    assert_eq!(m["connected"], 200.0);
    let (p50, p99, max) = (
        m["connect_ms_p50"],
        m["connect_ms_p99"],
        m["connect_ms_max"],
    );
    eprintln!("churn connect ms: p50 {p50:.3} p99 {p99:.3} max {max:.3}");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{m:?}");
    assert!(p99 < 100.0 && max >= 900.0, "{m:?}");
    assert_eq!(nft_count(&lab.ns("r"), "churn_syn_dropped"), 1);

    // Nothing connected: no latency is invented.
    for kind in ["tcp", "churn"] {
        let m = lab.run(&format!(
            "kind = \"{kind}\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nport = 1\nconnections = 2\n"
        ));
        assert_eq!(m["refused"], 2.0);
        assert!(!m.keys().any(|k| k.starts_with("connect_ms")), "{m:?}");
    }
}

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

#[test]
fn multiflow_16000_flows_under_a_1024_soft_limit() {
    let _g = lock();
    let lab = Lab::routed("n");
    // The usual default soft limit: 16,000 sockets only fit once it is raised.
    let (_, hard) = nofile();
    assert!(
        hard >= 17_000,
        "hard RLIMIT_NOFILE {hard} is too low for this test"
    );
    let low = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let t = std::time::Instant::now();
    let m = lab.run("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nreceiver = \"b\"\nflows = 16000\npackets_per_flow = 1\nsport_base = 30000\ngap_us = 50\n");
    eprintln!("16000 flows in {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(
        nofile(),
        (hard, hard),
        "soft limit raised to the hard limit"
    );
    assert_eq!(m["flows"], 16000.0);
    assert_eq!((m["packets_sent"], m["send_errors"]), (16000.0, 0.0));
    assert_eq!(m["packets_received"], 16000.0);
    assert_eq!((m["flows_lossless"], m["flows_dead"]), (16000.0, 0.0));
    // Product form at the same scale: 2 sources × 8000 source ports × 1 port.
    let sports: Vec<String> = (40000..48000).map(|p| p.to_string()).collect();
    let m = lab.run(&format!("kind = \"multiflow\"\nfrom = \"a\"\nto = \"10.77.2.1\"\nreceiver = \"b\"\nsources = [\"10.77.1.1\", \"10.77.1.11\"]\nsports = [{}]\ndports = [9000]\npackets_per_flow = 1\ngap_us = 50\n", sports.join(", ")));
    assert_eq!((m["flows"], m["packets_received"]), (16000.0, 16000.0));
}
