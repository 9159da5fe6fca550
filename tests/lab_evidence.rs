//! Captures and drop reasons against the real kernel, inside throwaway namespaces.
//! Needs root: `cargo test --features lab --test lab_evidence`.
#![cfg(feature = "lab")]

use faultlab::evidence::{self, Capture, CaptureSpec, DropMethod, DropTargets, DropTrace};
use faultlab::verdict::DropStat;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces `flev<pid>-<x>`, deleted even when the test fails.
struct Netns(Vec<String>);

impl Netns {
    fn new(suffixes: &[&str]) -> Netns {
        let mut guard = Netns(Vec::new());
        for s in suffixes {
            let name = format!("flev{}-{s}", std::process::id());
            sh(&["ip", "netns", "add", &name]);
            guard.0.push(name.clone());
            sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
            // No IPv6: router/MLD chatter would add drops of its own.
            for key in ["all", "default"] {
                let k = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                sh(&["ip", "netns", "exec", &name, "sysctl", "-qw", &k]);
            }
        }
        guard
    }

    fn ns(&self, suffix: &str) -> String {
        format!("flev{}-{suffix}", std::process::id())
    }

    /// veth `<pid>-<a>` in ns a with `addr_a`, peer likewise in ns b.
    fn veth(&self, a: &str, dev_a: &str, addr_a: &str, b: &str, dev_b: &str, addr_b: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        let (da, db) = (self.ns(dev_a), self.ns(dev_b));
        sh(&[
            "ip", "link", "add", &da, "netns", &na, "type", "veth", "peer", "name", &db, "netns",
            &nb,
        ]);
        for (n, d, addr) in [(&na, &da, addr_a), (&nb, &db, addr_b)] {
            sh(&["ip", "-n", n, "addr", "add", addr, "dev", d]);
            sh(&["ip", "-n", n, "link", "set", d, "up"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(suffix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("flev{}-{suffix}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        faultlab::netns::enter(&ns)?;
        f()
    })
    .join()
    .unwrap()
    .unwrap()
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests from `ns`; returns how many were answered.
fn ping(ns: &str, dst: Ipv4Addr, count: u16) -> u16 {
    in_ns(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let id = std::process::id() as u16;
        let mut answered = 0;
        for seq in 1..=count {
            let mut pkt = vec![8, 0, 0, 0];
            pkt.extend_from_slice(&id.to_be_bytes());
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&[0x5a; 56]);
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
            s.send_to(&pkt, &SocketAddrV4::new(dst, 0).into())?;
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut buf = [0u8; 1500];
            while Instant::now() < deadline {
                let Ok(n) = (&s).read(&mut buf) else { continue };
                let ihl = usize::from(buf[0] & 0xf) * 4;
                let icmp = &buf[ihl..n];
                if icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..8] == [id.to_be_bytes(), seq.to_be_bytes()].concat()[..]
                {
                    answered += 1;
                    break;
                }
            }
        }
        Ok(answered)
    })
}

fn udp_send(ns: &str, to: Vec<(SocketAddrV4, usize)>) {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for (dst, n) in to {
            for _ in 0..n {
                s.send_to(b"faultlab", dst)?;
            }
        }
        Ok(())
    })
}

fn spec(toml_text: &str) -> CaptureSpec {
    let s: CaptureSpec = toml::from_str(toml_text).unwrap();
    s.validate().unwrap();
    s
}

/// `tcpdump -nn -e -r`: stderr (with the link type) then stdout.
fn tcpdump(path: &std::path::Path) -> String {
    let out = Command::new("tcpdump")
        .args(["-nn", "-e", "-r"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tcpdump -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[test]
fn capture_counts_pings_and_writes_pcap_tcpdump_reads() {
    let lab = Netns::new(&["ca", "cb"]);
    lab.veth("ca", "ca0", "10.9.0.1/24", "cb", "cb0", "10.9.0.2/24");
    let tmp = TempDir::new("pcap");
    let dir = tmp.0.clone();
    let dev_b = lab.ns("cb0");

    let on_b = spec(&format!(
        r#"
        name = "b"
        node = "cb"
        dev = "{dev_b}"
        filter = "icmp"
        [count]
        echo_req = "icmp[icmptype] == icmp-echo and dst host 10.9.0.2"
        echo_rep = "icmp[icmptype] == icmp-echoreply and src host 10.9.0.2"
        arp = "arp"
        "#
    ));
    let any_a = spec(
        r#"
        name = "a_any"
        node = "ca"
        dev = "any"
        [count]
        echo_req = "icmp[icmptype] == icmp-echo"
        "#,
    );
    let cap_b = Capture::start(&lab.ns("cb"), &on_b, &dir.join("b.pcapng")).unwrap();
    let cap_a = Capture::start(&lab.ns("ca"), &any_a, &dir.join("a.pcapng")).unwrap();

    const PINGS: u16 = 5;
    assert_eq!(
        ping(&lab.ns("ca"), Ipv4Addr::new(10, 9, 0, 2), PINGS),
        PINGS
    );
    std::thread::sleep(Duration::from_millis(100));
    let b = cap_b.stop().unwrap();
    let a = cap_a.stop().unwrap();

    assert_eq!(b.counts["echo_req"], u64::from(PINGS), "{b:?}");
    assert_eq!(b.counts["echo_rep"], u64::from(PINGS));
    assert!(b.counts["arp"] >= 2, "ARP request and reply: {b:?}");
    assert_eq!(b.packets, 2 * u64::from(PINGS), "filter keeps only icmp");
    assert!(b.seen > b.packets);
    assert!(
        b.kernel_filter,
        "icmp + the counts' union runs in the kernel"
    );
    assert_eq!(b.lost, 0);
    let req_in_b: Vec<_> = b
        .kept
        .iter()
        .filter(|p| p.info.icmp_type == Some(8))
        .collect();
    assert!(req_in_b.iter().all(|p| !p.outgoing), "requests arrive at b");
    assert!(b
        .kept
        .iter()
        .filter(|p| p.info.icmp_type == Some(0))
        .all(|p| p.outgoing));
    let obs = b.observations("b");
    assert_eq!(obs["capture.b.echo_req"], f64::from(PINGS));
    assert_eq!(obs["capture.b.packets"], 2.0 * f64::from(PINGS));

    assert_eq!(a.counts["echo_req"], u64::from(PINGS), "{a:?}");
    assert!(a
        .kept
        .iter()
        .filter(|p| p.info.icmp_type == Some(8))
        .all(|p| p.outgoing));

    let text = tcpdump(&b.pcap);
    assert!(text.contains("link-type EN10MB"), "{text}");
    assert_eq!(
        text.matches("ICMP echo request").count(),
        usize::from(PINGS),
        "{text}"
    );
    assert_eq!(
        text.matches("ICMP echo reply").count(),
        usize::from(PINGS),
        "{text}"
    );
    assert!(text.contains("10.9.0.1 > 10.9.0.2"), "{text}");
    let text = tcpdump(&a.pcap);
    assert!(text.contains("link-type LINUX_SLL"), "{text}");
    assert_eq!(
        text.matches("ICMP echo request").count(),
        usize::from(PINGS),
        "{text}"
    );
    let out_requests = text
        .lines()
        .filter(|l| l.contains(" Out ") && l.contains("ICMP echo request"))
        .count();
    assert_eq!(
        out_requests,
        usize::from(PINGS),
        "cooked pcap keeps the direction: {text}"
    );
}

/// The kernel drops what no filter of the capture matches before it is queued to the
/// socket: a capture that userspace-filtered would still have read (`seen`) every packet.
#[test]
fn kernel_filter_drops_unmatched_packets_before_userspace() {
    let lab = Netns::new(&["ka", "kb"]);
    lab.veth("ka", "ka0", "10.9.1.1/24", "kb", "kb0", "10.9.1.2/24");
    let tmp = TempDir::new("kf");
    let dev_b = lab.ns("kb0");
    let filtered = spec(&format!(
        "name='f'\nnode='kb'\ndev='{dev_b}'\nfilter='udp dst port 9'\n[count]\nto9='udp dst port 9'"
    ));
    let control = spec(&format!("name='all'\nnode='kb'\ndev='{dev_b}'"));
    // Cooked (SOCK_DGRAM): the program compiled for Linux SLL, moved onto the packet.
    let cooked = spec("name='any'\nnode='kb'\ndev='any'\nfilter='udp dst port 9'");
    let cap_f = Capture::start(&lab.ns("kb"), &filtered, &tmp.0.join("f.pcapng")).unwrap();
    let cap_all = Capture::start(&lab.ns("kb"), &control, &tmp.0.join("all.pcapng")).unwrap();
    let cap_any = Capture::start(&lab.ns("kb"), &cooked, &tmp.0.join("any.pcapng")).unwrap();
    const WANTED: usize = 40;
    const OTHERS: usize = 160;
    let to = |port| SocketAddrV4::new(Ipv4Addr::new(10, 9, 1, 2), port);
    udp_send(
        &lab.ns("ka"),
        vec![(to(10), OTHERS / 2), (to(9), WANTED), (to(10), OTHERS / 2)],
    );
    std::thread::sleep(Duration::from_millis(100));
    let f = cap_f.stop().unwrap();
    let all = cap_all.stop().unwrap();
    assert!(f.kernel_filter && !all.kernel_filter);
    assert!(
        all.seen >= (WANTED + OTHERS) as u64,
        "the unfiltered capture read every datagram: {}",
        all.seen
    );
    assert_eq!(f.counts["to9"], WANTED as u64);
    assert_eq!(f.packets, WANTED as u64);
    assert_eq!(
        f.seen, WANTED as u64,
        "userspace received only what the kernel filter accepted"
    );
    assert_eq!(f.lost, 0);
    let any = cap_any.stop().unwrap();
    assert!(any.kernel_filter);
    assert_eq!((any.seen, any.packets), (WANTED as u64, WANTED as u64));
    // `any`: one interface block per device packets arrived on, named by the device.
    let mut r =
        pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&any.pcap).unwrap()).unwrap();
    while let Some(b) = r.next_block() {
        b.unwrap();
    }
    let names: Vec<String> = r
        .interfaces()
        .iter()
        .map(|i| format!("{:?}", i.options))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].contains(&format!("IfName(\"kb:{dev_b}\")")),
        "{names:?}"
    );
}

/// Ethernet broadcast + optional 802.1Q tag + IPv4/UDP 10.9.2.1:1000 -> 10.9.2.2:`port`.
fn udp_frame(vlan: Option<u16>, port: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0x0a]);
    if let Some(id) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![
        0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 9, 2, 1, 10, 9, 2, 2,
    ];
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&1000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&[0, 12, 0, 0, b'f', b'l', b'a', b'b']);
    f
}

/// Writes each frame to `dev` of `ns` through an AF_PACKET socket.
fn send_frames(ns: &str, dev: &str, frames: Vec<Vec<u8>>) {
    let dev = dev.to_string();
    in_ns(ns, move || {
        let ifindex = nix::net::if_::if_nametoindex(dev.as_str())?;
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        anyhow::ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        for f in &frames {
            // SAFETY: f and sll are valid for reads of the lengths passed.
            let n = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            anyhow::ensure!(
                n == f.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        Ok(())
    })
}

/// Packet sockets never see VLAN tags in the data (the receive path moves them into
/// skb metadata, skb_vlan_untag, even without 8021q); the capture puts them back from
/// PACKET_AUXDATA, as libpcap does, so `vlan 10` matches, plain `udp` does not, the
/// kernel filter lets tagged frames through, and the pcapng shows the tag.
#[test]
fn vlan_tags_are_restored_for_the_filters_and_the_pcapng() {
    let lab = Netns::new(&["va", "vb"]);
    lab.veth("va", "va0", "10.9.2.1/24", "vb", "vb0", "10.9.2.2/24");
    let tmp = TempDir::new("vlan");
    let dev_b = lab.ns("vb0");
    let s = spec(&format!(
        r#"
        name = "trunk"
        node = "vb"
        dev = "{dev_b}"
        filter = "vlan 10 and udp"
        [count]
        tagged = "vlan 10 and udp dst port 9"
        other_vlan = "vlan 11"
        untagged = "udp dst port 9"
        "#
    ));
    let path = tmp.0.join("trunk.pcapng");
    let cap = Capture::start(&lab.ns("vb"), &s, &path).unwrap();
    const TAGGED: usize = 4;
    const UNTAGGED: usize = 3;
    let mut frames = vec![udp_frame(Some(10), 9); TAGGED];
    frames.extend(vec![udp_frame(None, 9); UNTAGGED]);
    frames.push(udp_frame(None, 7)); // no filter wants it: the kernel drops it
    send_frames(&lab.ns("va"), &lab.ns("va0"), frames);
    std::thread::sleep(Duration::from_millis(100));
    let sum = cap.stop().unwrap();
    assert!(sum.kernel_filter);
    assert_eq!(sum.counts["tagged"], TAGGED as u64, "{sum:?}");
    assert_eq!(sum.counts["other_vlan"], 0);
    assert_eq!(
        sum.counts["untagged"], UNTAGGED as u64,
        "the tag hides UDP, as in tcpdump"
    );
    assert_eq!(sum.packets, TAGGED as u64);
    assert_eq!(
        sum.seen,
        (TAGGED + UNTAGGED) as u64,
        "the datagram to port 7 was dropped by the kernel filter"
    );
    let text = tcpdump(&path);
    assert_eq!(text.matches("vlan 10").count(), TAGGED, "{text}");
    // One interface block, named node:device with the namespace.
    let mut r = pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut packets = 0;
    while let Some(b) = r.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(_) = b.unwrap() {
            packets += 1;
        }
    }
    assert_eq!(packets, TAGGED);
    let ifaces = r.interfaces();
    assert_eq!(ifaces.len(), 1);
    let opts = format!("{:?}", ifaces[0].options);
    assert!(opts.contains(&format!("IfName(\"vb:{dev_b}\")")), "{opts}");
    assert!(
        opts.contains(&format!("IfDescription(\"netns {}\")", lab.ns("vb"))),
        "{opts}"
    );
}

#[test]
fn capture_start_fails_for_missing_device() {
    let lab = Netns::new(&["cx"]);
    let s = spec("name='x'\nnode='cx'\ndev='nosuchdev0'");
    let tmp = TempDir::new("x");
    let path = tmp.0.join("x.pcapng");
    let err = Capture::start(&lab.ns("cx"), &s, &path)
        .err()
        .expect("must fail");
    assert!(
        format!("{err:#}").contains("no device `nosuchdev0`"),
        "{err:#}"
    );
    assert!(!path.exists(), "a failed start leaves no pcap file");
}

fn count(stats: &[DropStat], reason: &str, location: &str, node: &str) -> u64 {
    stats
        .iter()
        .filter(|d| d.reason == reason && d.location == location && d.node.as_deref() == Some(node))
        .map(|d| d.count)
        .sum()
}

/// a -> r -> b: r has a blackhole route, b an nft input drop rule and no socket on port 10.
#[test]
fn drop_reasons_attributed_to_nodes_bpf() {
    drop_reasons_attributed_to_nodes(DropMethod::Bpf);
}

#[test]
fn drop_reasons_attributed_to_nodes_tracefs() {
    drop_reasons_attributed_to_nodes(DropMethod::Tracefs);
}

fn drop_reasons_attributed_to_nodes(method: DropMethod) {
    let lab = Netns::new(&["a", "r", "b"]);
    lab.veth("a", "a0", "10.1.0.1/24", "r", "r0", "10.1.0.2/24");
    lab.veth("r", "r1", "10.2.0.1/24", "b", "b0", "10.2.0.2/24");
    let (a, r, b) = (lab.ns("a"), lab.ns("r"), lab.ns("b"));
    sh(&["ip", "-n", &a, "route", "add", "default", "via", "10.1.0.2"]);
    sh(&["ip", "-n", &b, "route", "add", "default", "via", "10.2.0.1"]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &r,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    sh(&[
        "ip",
        "-n",
        &r,
        "route",
        "add",
        "blackhole",
        "198.51.100.0/24",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &b,
        "nft",
        "add table inet t; \
          add chain inet t in { type filter hook input priority 0; policy accept; }; \
          add rule inet t in udp dport 9 drop",
    ]);
    // Resolve neighbours first so nothing is queued or dropped for ARP during the trace.
    assert_eq!(ping(&a, Ipv4Addr::new(10, 2, 0, 2), 1), 1);

    let devices: BTreeMap<String, String> = [("a0", "a"), ("r0", "r"), ("r1", "r"), ("b0", "b")]
        .into_iter()
        .map(|(d, n)| (lab.ns(d), n.to_string()))
        .collect();
    let targets = DropTargets {
        namespaces: ["a", "r", "b"]
            .into_iter()
            .map(|n| (n.to_string(), lab.ns(n)))
            .collect(),
        devices,
    };
    let instance = format!("flev{}-drops-{}", std::process::id(), method.name());
    let trace = DropTrace::start_with(Some(method), &instance, &targets).unwrap();
    assert_eq!(trace.method(), method);
    // Only the tracefs method makes an instance.
    assert_eq!(
        evidence::list_instances().unwrap().contains(&instance),
        method == DropMethod::Tracefs
    );
    const N: usize = 4;
    udp_send(
        &a,
        vec![
            ("198.51.100.7:9".parse().unwrap(), N),
            ("10.2.0.2:9".parse().unwrap(), N),
            ("10.2.0.2:10".parse().unwrap(), N),
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    let stats = trace.stop().unwrap();
    eprintln!("{stats:#?}");
    assert!(!evidence::list_instances().unwrap().contains(&instance));

    // Blackhole route on a forwarding path: ip_route_input sends it to ip_error, which
    // frees it without a specific reason.
    assert_eq!(count(&stats, "NOT_SPECIFIED", "ip_error", "r"), N as u64);
    // nft verdict drop: freed in nft_do_chain (not nf_hook_slow) on this kernel.
    assert_eq!(
        count(&stats, "NETFILTER_DROP", "nft_do_chain", "b"),
        N as u64
    );
    assert_eq!(count(&stats, "NO_SOCKET", "__udp4_lib_rcv", "b"), N as u64);
    let obs = evidence::drops_observations(&stats);
    assert!(obs["drops.r.NOT_SPECIFIED"] >= N as f64);
    assert!(obs["drops.NETFILTER_DROP@nft_do_chain"] >= N as f64);
    assert_eq!(obs["drops.b.NETFILTER_DROP"], N as f64);
}

#[test]
fn drop_trace_instance_removed_without_stop_and_by_sweeper() {
    let name = format!("flev{}-dropped", std::process::id());
    let tracefs = Some(DropMethod::Tracefs);
    let trace = DropTrace::start_with(tracefs, &name, &DropTargets::default()).unwrap();
    assert!(evidence::list_instances().unwrap().contains(&name));
    // A second start with the same name must refuse, not share the instance.
    let err = DropTrace::start_with(tracefs, &name, &DropTargets::default())
        .err()
        .expect("duplicate");
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    drop(trace);
    assert!(!evidence::list_instances().unwrap().contains(&name));
    assert!(!evidence::remove_instance(&name).unwrap());
}
