//! Root-only tests of the namespace engine and the lab builder.
#![cfg(feature = "lab")]

use faultlab::model::*;
use faultlab::netns;
use faultlab::setup::{self, state, Lab};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn node(name: &str, run_id: &str) -> NodePlan {
    NodePlan {
        name: name.into(),
        netns: format!("{run_id}-{name}"),
        up: vec!["lo".into()],
        ..Default::default()
    }
}

fn ep(node: &str, dev: &str) -> Endpoint {
    Endpoint {
        node: node.into(),
        dev: dev.into(),
        mac: None,
    }
}

fn addr(dev: &str, a: &str) -> AddressPlan {
    AddressPlan {
        dev: dev.into(),
        addr: a.parse().unwrap(),
    }
}

fn sysctl(key: &str, value: &str) -> Sysctl {
    Sysctl {
        key: key.into(),
        value: value.into(),
    }
}

/// a --- sw(br0) --- b
fn bridged_plan(run_id: &str) -> LabPlan {
    let mut a = node("a", run_id);
    let mut b = node("b", run_id);
    let mut sw = node("sw", run_id);
    a.addresses = vec![
        addr("eth0", "10.0.1.1/24"),
        addr("eth0", "2001:db8:1::1/64"),
    ];
    a.up.push("eth0".into());
    b.addresses = vec![
        addr("eth0", "10.0.1.2/24"),
        addr("eth0", "2001:db8:1::2/64"),
    ];
    b.up.push("eth0".into());
    sw.devices = vec![DevicePlan {
        name: "br0".into(),
        kind: DeviceKind::Bridge {
            ports: vec!["sw-a".into(), "sw-b".into()],
        },
        mtu: None,
        mac: None,
    }];
    sw.up.extend(["br0".into(), "sw-a".into(), "sw-b".into()]);
    LabPlan {
        run_id: run_id.into(),
        nodes: vec![a, b, sw],
        veths: vec![
            VethPlan {
                a: ep("a", "eth0"),
                b: ep("sw", "sw-a"),
                mtu: None,
            },
            VethPlan {
                a: ep("b", "eth0"),
                b: ep("sw", "sw-b"),
                mtu: Some(1400),
            },
        ],
        host_sysctls: vec![],
    }
}

fn ip_json(ns: &str, args: &[&str]) -> Value {
    let mut argv = vec!["ip", "-j"];
    argv.extend_from_slice(args);
    let out = netns::output_in(ns, &argv, None).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run(ns: &str, argv: &[&str]) -> String {
    String::from_utf8(netns::output_in(ns, argv, None).unwrap().stdout).unwrap()
}

fn mine(run_id: &str) -> Vec<String> {
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(run_id))
        .collect()
}

fn tcp_connect_from(ns: &str, to: &str) -> anyhow::Result<()> {
    let sa: SocketAddr = to.parse()?;
    netns::run_in(ns, || {
        TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
        Ok(())
    })
}

#[test]
fn builds_a_bridged_lab_and_removes_it() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    let conntrack_max = "net.netfilter.nf_conntrack_max";
    let host_before = netns::sysctl::read_here(conntrack_max).unwrap();
    let host_value = (host_before.parse::<u64>().unwrap() + 1024).to_string();
    plan.host_sysctls = vec![sysctl(conntrack_max, &host_value)];
    {
        let a = &mut plan.nodes[0];
        a.sysctls = vec![sysctl("net.ipv6.conf.eth0.accept_dad", "0")];
        a.routes = vec![
            RoutePlan {
                dst: "10.9.0.0/16".parse().unwrap(),
                kind: RouteKind::Multipath {
                    nexthops: vec![
                        Nexthop {
                            via: Some("10.0.1.2".parse().unwrap()),
                            dev: Some("eth0".into()),
                            weight: 1,
                        },
                        Nexthop {
                            via: Some("10.0.1.3".parse().unwrap()),
                            dev: Some("eth0".into()),
                            weight: 3,
                        },
                    ],
                },
                table: None,
            },
            RoutePlan {
                dst: "10.66.0.0/16".parse().unwrap(),
                kind: RouteKind::Blackhole,
                table: None,
            },
            RoutePlan {
                dst: "2001:db8:dead::/48".parse().unwrap(),
                kind: RouteKind::Unreachable,
                table: None,
            },
            RoutePlan {
                dst: "0.0.0.0/0".parse().unwrap(),
                kind: RouteKind::Unicast {
                    via: Some("169.254.1.1".parse().unwrap()),
                    dev: Some("eth0".into()),
                    onlink: true,
                },
                table: None,
            },
            // A route in another table (a VRF's, or one an `ip rule` selects).
            RoutePlan {
                dst: "10.77.0.0/16".parse().unwrap(),
                kind: RouteKind::Unicast {
                    via: Some("10.0.1.2".parse().unwrap()),
                    dev: None,
                    onlink: false,
                },
                table: Some(100),
            },
        ];
        a.ip_rules = vec![
            IpRulePlan {
                from: Some("10.0.1.0/24".parse().unwrap()),
                priority: Some(100),
                ..IpRulePlan::lookup(100)
            },
            // A table above 255 goes in FRA_TABLE.
            IpRulePlan {
                not: true,
                fwmark: Some(0xca6c),
                priority: Some(101),
                ..IpRulePlan::lookup(51820)
            },
            IpRulePlan {
                suppress_prefixlength: Some(0),
                priority: Some(102),
                ..IpRulePlan::lookup(254)
            },
            IpRulePlan {
                ipproto: Some(17),
                dport: Some((53, 53)),
                priority: Some(103),
                action: IpRuleAction::Prohibit,
                ..IpRulePlan::lookup(1)
            },
            IpRulePlan {
                tos: Some(0x10),
                uidrange: Some((100, 100)),
                priority: Some(105),
                ..IpRulePlan::lookup(100)
            },
            IpRulePlan {
                v6: true,
                fwmark: Some(1),
                fwmask: Some(0xff),
                iif: Some("eth0".into()),
                priority: Some(104),
                ..IpRulePlan::lookup(100)
            },
        ];
        a.neighbours = vec![NeighbourPlan {
            dev: "eth0".into(),
            ip: "10.0.1.3".parse().unwrap(),
            mac: "02:00:00:00:01:03".into(),
        }];
    }
    {
        let b = &mut plan.nodes[1];
        b.rulesets = vec![RulesetPlan {
            kind: RulesetKind::Iptables,
            text: "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 8080 -j ACCEPT\nCOMMIT\n"
                .into(),
        }];
        b.processes = vec![
            ProcessPlan {
                name: "sleeper".into(),
                argv: vec!["sleep".into(), "30".into()],
                ready_port: None,
            },
            ProcessPlan {
                name: "listener".into(),
                argv: vec![
                    "python3".into(),
                    "-c".into(),
                    "import socket,time\n\
                     s=socket.socket(socket.AF_INET6); s.bind(('::',8080)); s.listen(8)\n\
                     while True: s.accept()"
                        .into(),
                ],
                ready_port: Some(8080),
            },
        ];
    }
    {
        let sw = &mut plan.nodes[2];
        sw.sysctls = vec![sysctl("net.ipv4.ip_forward", "1")];
        sw.rulesets = vec![RulesetPlan {
            kind: RulesetKind::Nft,
            text: "table inet fltest {\n chain fw {\n  type filter hook forward priority 0;\n  counter accept\n }\n}\n"
                .into(),
        }];
    }

    let t = Instant::now();
    let lab = Lab::build(&plan).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("full lab build: {:?}", t.elapsed());

    let (ns_a, ns_b, ns_sw) = (
        lab.netns_of("a").unwrap().to_string(),
        lab.netns_of("b").unwrap().to_string(),
        lab.netns_of("sw").unwrap().to_string(),
    );
    assert_eq!(lab.netns_of("nope"), None);
    assert_eq!(
        mine(&run_id),
        vec![ns_a.clone(), ns_b.clone(), ns_sw.clone()]
    );
    let state_file = state::state_path(&run_id);
    let st: state::RunState = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(st.namespaces.len(), 3);
    assert_eq!(st.helpers.len(), 2);
    assert_eq!(st.host_sysctls[0].original, host_before);
    assert_eq!(netns::sysctl::read_here(conntrack_max).unwrap(), host_value);

    // Bridge and its ports; the veth peer landed in sw with the planned MTU.
    let ports = ip_json(&ns_sw, &["link", "show", "master", "br0"]);
    let mut names: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["sw-a", "sw-b"]);
    let swb = ip_json(&ns_sw, &["link", "show", "sw-b"]);
    assert_eq!(swb[0]["mtu"], 1400);
    assert!(swb[0]["flags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("UP")));

    // Addresses, IPv6 without DAD.
    let addrs = ip_json(&ns_a, &["addr", "show", "dev", "eth0"]);
    let infos = addrs[0]["addr_info"].as_array().unwrap();
    let locals: Vec<&str> = infos.iter().map(|i| i["local"].as_str().unwrap()).collect();
    assert!(locals.contains(&"10.0.1.1"), "{locals:?}");
    assert!(locals.contains(&"2001:db8:1::1"), "{locals:?}");
    assert!(
        infos.iter().all(|i| i.get("tentative").is_none()),
        "{infos:?}"
    );

    // Routes.
    let mp = ip_json(&ns_a, &["route", "show", "10.9.0.0/16"]);
    let hops = mp[0]["nexthops"].as_array().unwrap();
    assert_eq!(hops.len(), 2);
    assert_eq!(hops[0]["weight"], 1);
    assert_eq!(hops[1]["weight"], 3);
    let t100 = ip_json(&ns_a, &["route", "show", "table", "100"]);
    assert_eq!(t100[0]["dst"], "10.77.0.0/16", "{t100}");
    assert_eq!(t100[0]["gateway"], "10.0.1.2", "{t100}");
    let main = ip_json(&ns_a, &["route", "show", "10.77.0.0/16"]);
    assert!(
        main.as_array().is_some_and(|r| r.is_empty()),
        "not in main: {main}"
    );
    let bh = ip_json(&ns_a, &["route", "show", "type", "blackhole"]);
    assert_eq!(bh[0]["dst"], "10.66.0.0/16");
    let un = ip_json(&ns_a, &["-6", "route", "show", "type", "unreachable"]);
    assert_eq!(un[0]["dst"], "2001:db8:dead::/48");
    let def = ip_json(&ns_a, &["route", "show", "default"]);
    assert_eq!(def[0]["gateway"], "169.254.1.1");
    assert!(def[0]["flags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("onlink")));

    // Policy rules, as `ip rule` shows them, each in its family.
    let v4 = run(&ns_a, &["ip", "rule", "show"]);
    for want in [
        "100:\tfrom 10.0.1.0/24 lookup 100",
        "101:\tnot from all fwmark 0xca6c lookup 51820",
        "102:\tfrom all lookup main suppress_prefixlength 0",
        "103:\tfrom all ipproto udp dport 53 prohibit",
        "105:\tfrom all tos 0x10 uidrange 100-100 lookup 100",
    ] {
        assert!(
            v4.lines().any(|l| l.trim_end() == want),
            "{want:?} in\n{v4}"
        );
    }
    let v6 = run(&ns_a, &["ip", "-6", "rule", "show"]);
    assert!(
        v6.lines()
            .any(|l| l.trim_end() == "104:\tfrom all fwmark 0x1/0xff iif eth0 lookup 100"),
        "{v6}"
    );
    assert!(
        !v4.contains("104:"),
        "the IPv6 rule is not an IPv4 one: {v4}"
    );

    // Static neighbour.
    let ne = ip_json(&ns_a, &["neigh", "show", "10.0.1.3", "dev", "eth0"]);
    assert_eq!(ne[0]["lladdr"], "02:00:00:00:01:03");
    assert_eq!(ne[0]["state"][0], "PERMANENT");

    // Sysctls, per namespace.
    assert_eq!(
        netns::sysctl_read(&ns_sw, "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    assert_eq!(
        netns::sysctl_read(&ns_a, "net.ipv4.ip_forward").unwrap(),
        "0"
    );
    assert_eq!(
        netns::sysctl_read(&ns_a, "net.ipv6.conf.eth0.accept_dad").unwrap(),
        "0"
    );

    // Rulesets.
    assert!(run(&ns_sw, &["nft", "list", "ruleset"]).contains("table inet fltest"));
    assert!(run(&ns_b, &["iptables-nft-save"])
        .contains("-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT"));
    assert!(!run(&ns_a, &["nft", "list", "ruleset"]).contains("fltest"));

    // Traffic through the bridge, IPv4 and IPv6, to the helper process in b.
    tcp_connect_from(&ns_a, "10.0.1.2:8080").unwrap();
    tcp_connect_from(&ns_a, "[2001:db8:1::2]:8080").unwrap();
    if netns::output_in(&ns_a, &["ping", "-V"], None).is_ok() {
        run(&ns_a, &["ping", "-c1", "-W1", "10.0.1.2"]);
    }

    // Program errors.
    let e = netns::output_in(&ns_a, &["faultlab-no-such-tool"], None).unwrap_err();
    assert!(matches!(e, netns::ExecError::NotInstalled { .. }), "{e}");
    let e = netns::output_in(&ns_a, &["ip", "link", "show", "nosuchdev"], None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("ip link show nosuchdev") && msg.contains("does not exist"),
        "{msg}"
    );

    let pids = lab.pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| state::is_alive(*p, None)));

    let t = Instant::now();
    drop(lab);
    eprintln!("full lab teardown: {:?}", t.elapsed());
    assert!(mine(&run_id).is_empty(), "{:?}", mine(&run_id));
    for p in pids {
        assert!(!state::is_alive(p, None), "pid {p} survived teardown");
    }
    assert!(!state_file.exists());
    assert_eq!(
        netns::sysctl::read_here(conntrack_max).unwrap(),
        host_before
    );
}

#[test]
fn three_namespace_build_and_teardown_timing() {
    let run_id = setup::new_run_id();
    let plan = bridged_plan(&run_id);
    let t = Instant::now();
    let lab = Lab::build(&plan).unwrap_or_else(|e| panic!("{e:#}"));
    let built = t.elapsed();
    let errors = lab.teardown();
    let total = t.elapsed();
    assert!(errors.is_empty(), "{errors:?}");
    eprintln!(
        "3-namespace lab (bridge, 2 veths, 4 addresses): build {built:?}, build+teardown {total:?}"
    );
    assert!(mine(&run_id).is_empty());
}

#[test]
fn vxlan_and_dummy_devices() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    plan.nodes.truncate(2);
    plan.veths = vec![VethPlan {
        a: ep("a", "eth0"),
        b: ep("b", "eth0"),
        mtu: None,
    }];
    for (i, n) in plan.nodes.iter_mut().enumerate() {
        let (me, peer): (IpAddr, IpAddr) = if i == 0 {
            ("10.0.1.1".parse().unwrap(), "10.0.1.2".parse().unwrap())
        } else {
            ("10.0.1.2".parse().unwrap(), "10.0.1.1".parse().unwrap())
        };
        n.devices = vec![DevicePlan {
            name: "vx0".into(),
            kind: DeviceKind::Vxlan {
                vni: 42,
                local: Some(me),
                remote: Some(peer),
                dev: Some("eth0".into()),
                port: 4789,
            },
            mtu: Some(1450),
            mac: None,
        }];
        n.addresses
            .push(addr("vx0", &format!("192.168.42.{}/24", i + 1)));
        n.up.push("vx0".into());
    }
    plan.nodes[1].processes = vec![ProcessPlan {
        name: "listener".into(),
        argv: vec![
            "python3".into(),
            "-c".into(),
            "import socket\ns=socket.socket(); s.bind(('0.0.0.0',9000)); s.listen(8)\nwhile True: s.accept()".into(),
        ],
        ready_port: Some(9000),
    }];
    let lab = Lab::build(&plan).unwrap_or_else(|e| panic!("{e:#}"));
    let ns_a = lab.netns_of("a").unwrap().to_string();
    let vx = ip_json(&ns_a, &["-d", "link", "show", "vx0"]);
    let info = &vx[0]["linkinfo"]["info_data"];
    assert_eq!(info["id"], 42);
    assert_eq!(info["port"], 4789);
    assert_eq!(info["remote"], "10.0.1.2");
    assert_eq!(vx[0]["mtu"], 1450);
    tcp_connect_from(&ns_a, "192.168.42.2:9000").unwrap();
    assert!(lab.teardown().is_empty());
    assert!(mine(&run_id).is_empty());
}

#[test]
fn dummy_device_or_a_clear_kernel_config_error() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    plan.nodes[0].devices = vec![DevicePlan {
        name: "dum0".into(),
        kind: DeviceKind::Dummy,
        mtu: Some(9000),
        mac: None,
    }];
    plan.nodes[0].up.push("dum0".into());
    match Lab::build(&plan) {
        Ok(lab) => {
            let d = ip_json(lab.netns_of("a").unwrap(), &["-d", "link", "show", "dum0"]);
            assert_eq!(d[0]["linkinfo"]["info_kind"], "dummy");
            assert_eq!(d[0]["mtu"], 9000);
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("node `a`") && msg.contains("CONFIG_DUMMY"),
                "{msg}"
            );
        }
    }
    assert!(mine(&run_id).is_empty());
}

#[test]
fn a_dead_runs_state_is_swept() {
    let run_id = setup::new_run_id();
    let ns = format!("{run_id}-x");
    netns::create(&ns).unwrap();
    let mut helper = netns::command(&ns, &["sleep", "30"]).spawn().unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let key = "net.netfilter.nf_conntrack_max";
    let current = netns::sysctl::read_here(key).unwrap();
    let st = state::RunState {
        run_id: run_id.clone(),
        runner_pid: dead_pid,
        runner_start: Some(1),
        namespaces: vec![ns.clone(), format!("{run_id}-never-created")],
        helpers: vec![state::Helper {
            pid: helper.id(),
            start: state::process_start_time(helper.id()),
            what: "x/sleep".into(),
        }],
        host_sysctls: vec![state::SavedSysctl {
            key: key.into(),
            original: current.clone(),
        }],
        tracefs_instances: vec![format!("{run_id}-drops")],
        dirs: vec![],
    };
    std::fs::create_dir_all(state::STATE_DIR).unwrap();
    let path = state::state_path(&run_id);
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();

    let report = state::sweep_dead().unwrap_or_else(|e| panic!("{e:#}"));
    let text = report.join("\n");
    assert!(text.contains(&format!("deleted netns {ns}")), "{text}");
    assert!(text.contains("stopped x/sleep"), "{text}");
    assert!(!netns::exists(&ns));
    assert!(!path.exists());
    // Killed, so the exit is by signal.
    assert!(helper.wait().unwrap().code().is_none());
    assert_eq!(netns::sysctl::read_here(key).unwrap(), current);
}

#[test]
fn a_live_runs_state_is_not_swept() {
    let run_id = setup::new_run_id();
    let mut sf = state::StateFile::create(&run_id).unwrap();
    let ns = format!("{run_id}-live");
    sf.update(|s| s.namespaces.push(ns.clone())).unwrap();
    netns::create(&ns).unwrap();
    state::sweep_dead().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(netns::exists(&ns));
    netns::delete(&ns).unwrap();
    sf.remove().unwrap();
}

#[test]
fn a_bad_ruleset_names_the_node_and_leaves_nothing() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    plan.nodes[1].rulesets = vec![RulesetPlan {
        kind: RulesetKind::Nft,
        text: "table inet broken {\n chain c { this is not nft }\n}\n".into(),
    }];
    plan.nodes[0].processes = vec![ProcessPlan {
        name: "sleeper".into(),
        argv: vec!["sleep".into(), "30".into()],
        ready_port: None,
    }];
    let err = Lab::build(&plan).unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("bad ruleset error: {msg}");
    assert!(msg.contains("node `b`"), "{msg}");
    assert!(msg.contains("nft"), "{msg}");
    assert!(
        msg.contains("syntax error") || msg.contains("Error"),
        "{msg}"
    );
    assert!(mine(&run_id).is_empty(), "{:?}", mine(&run_id));
    assert!(!state::state_path(&run_id).exists());
}

#[test]
fn a_missing_bridge_port_is_reported_with_node_and_device() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    plan.nodes[2].devices[0].kind = DeviceKind::Bridge {
        ports: vec!["sw-a".into(), "sw-typo".into()],
    };
    let msg = format!("{:#}", Lab::build(&plan).unwrap_err());
    eprintln!("missing port error: {msg}");
    assert!(
        msg.contains("node `sw`") && msg.contains("sw-typo") && msg.contains("br0"),
        "{msg}"
    );
    assert!(mine(&run_id).is_empty());
}

#[test]
fn process_that_never_binds_times_out_with_its_log() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    plan.nodes[0].processes = vec![ProcessPlan {
        name: "quitter".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo listening soon; exit 3".into(),
        ],
        ready_port: Some(7777),
    }];
    let msg = format!("{:#}", Lab::build(&plan).unwrap_err());
    eprintln!("process error: {msg}");
    assert!(
        msg.contains("process `quitter`") && msg.contains("listening soon"),
        "{msg}"
    );
    assert!(mine(&run_id).is_empty());
}

#[test]
fn run_in_and_enter_move_only_the_thread() {
    let run_id = setup::new_run_id();
    let ns = format!("{run_id}-t");
    netns::create(&ns).unwrap();
    assert!(netns::list().contains(&ns));
    let root_ino = std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    let inside = netns::run_in(&ns, || {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
    })
    .unwrap();
    assert_ne!(Some(inside), root_ino.ok());
    let entered = std::thread::spawn({
        let ns = ns.clone();
        move || {
            use std::os::unix::fs::MetadataExt;
            netns::enter(&ns).unwrap();
            // lo is up in a fresh namespace.
            let lo = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            assert!(lo.contains("lo:"));
            std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
        }
    })
    .join()
    .unwrap();
    assert_eq!(entered, inside);
    let lo = ip_json(&ns, &["link", "show", "lo"]);
    assert!(lo[0]["flags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("UP")));
    assert!(netns::create(&ns)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    netns::delete(&ns).unwrap();
    assert!(!netns::list().contains(&ns));
    assert!(netns::run_in(&ns, || Ok(())).is_err());
}

#[test]
fn a_helpers_children_die_with_it() {
    let run_id = setup::new_run_id();
    let mut plan = bridged_plan(&run_id);
    plan.nodes.truncate(1);
    plan.veths.clear();
    plan.nodes[0].up = vec!["lo".into()];
    plan.nodes[0].addresses.clear();
    plan.nodes[0].processes = vec![ProcessPlan {
        name: "wrapper".into(),
        argv: vec!["sh".into(), "-c".into(), "sleep 31 & sleep 32".into()],
        ready_port: None,
    }];
    let lab = Lab::build(&plan).unwrap_or_else(|e| panic!("{e:#}"));
    let leader = lab.pids()[0];
    std::thread::sleep(Duration::from_millis(100));
    let members: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(leader)
        })
        .collect();
    assert!(members.len() >= 2, "{members:?}");
    assert!(lab.teardown().is_empty());
    std::thread::sleep(Duration::from_millis(50));
    for m in members {
        assert!(!state::is_alive(m, None), "group member {m} survived");
    }
    assert!(mine(&run_id).is_empty());
}

#[test]
fn sigterm_sets_the_interrupted_flag() {
    setup::signals::install().unwrap();
    assert!(!setup::signals::interrupted());
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(setup::signals::interrupted());
    setup::signals::reset();
}
