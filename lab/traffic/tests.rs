//! Spec parsing and validation (no root needed).

use super::*;
use crate::model::steps::*;

#[derive(serde::Deserialize)]
struct File {
    traffic: Vec<TrafficSpec>,
}

fn parse(s: &str) -> Result<Vec<TrafficSpec>, String> {
    toml::from_str::<File>(s)
        .map(|f| f.traffic)
        .map_err(|e| e.to_string())
}

fn one(s: &str) -> TrafficSpec {
    parse(s).unwrap().remove(0)
}

#[test]
fn every_kind_parses_with_defaults() {
    let specs = parse(
        r#"
[[traffic]]
kind = "ping"
from = "a"
to = "192.0.2.2"

[[traffic]]
kind = "udp"
from = "a"
to = "2001:db8::2"
receiver = "b"

[[traffic]]
kind = "tcp"
from = "a"
to = "192.0.2.2"
server = "b"

[[traffic]]
kind = "race"
name = "clash"
from = "a"
to = "192.0.2.2"
proto = "tcp-syn"
receiver = "b"

[[traffic]]
kind = "dns"
from = "a"
to = "192.0.2.53"
server = "dns"
single_request_reopen = true

[[traffic]]
kind = "tcp-inject"
client = "c"
server = "r"
to = "198.51.100.2"
injections = [{ seq_offset = -100000, flags = "A" }, { flags = "R" }]

[[traffic]]
kind = "churn"
from = "a"
to = "192.0.2.2"
server = "b"
close = "rst"

[[traffic]]
kind = "multiflow"
from = "a"
to = "192.0.2.2"
receiver = "b"
sources = ["10.0.0.1", "10.0.0.2"]
"#,
    )
    .unwrap();
    let kinds: Vec<&str> = specs.iter().map(TrafficSpec::kind).collect();
    assert_eq!(
        kinds,
        [
            "ping",
            "udp",
            "tcp",
            "race",
            "dns",
            "tcp-inject",
            "churn",
            "multiflow"
        ]
    );
    for s in &specs {
        s.validate().unwrap();
    }
    let TrafficSpec::Ping(p) = &specs[0] else {
        panic!()
    };
    assert_eq!((p.count, p.interval_ms, p.timeout_ms), (10, 100, 1000));
    assert_eq!(specs[3].name(), "clash");
    assert_eq!(specs[0].name(), "ping");
    let TrafficSpec::Race(r) = &specs[3] else {
        panic!()
    };
    assert_eq!(
        (r.proto, r.mode, r.threads, r.sport),
        (RaceProto::TcpSyn, RaceMode::Raw, None, 20000)
    );
    assert_eq!(specs[5].nodes(), ["c", "r"]);
    assert_eq!(specs[4].nodes(), ["a", "dns"]);
    let TrafficSpec::TcpInject(t) = &specs[5] else {
        panic!()
    };
    assert_eq!(
        t.injections[1],
        Injection {
            seq_offset: 0,
            ack_offset: 0,
            payload: 0,
            flags: "R".into()
        }
    );
    let TrafficSpec::Churn(c) = &specs[6] else {
        panic!()
    };
    assert_eq!(c.close, CloseMode::Rst);
}

#[test]
fn round_trips_through_toml() {
    let s = one("[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"10.1.1.1\"\ncount = 5\n");
    #[derive(serde::Serialize)]
    struct Out<'a> {
        traffic: [&'a TrafficSpec; 1],
    }
    let text = toml::to_string(&Out { traffic: [&s] }).unwrap();
    assert!(text.contains("kind = \"udp\""), "{text}");
    assert_eq!(one(&text), s);
}

#[test]
fn unknown_field_is_named() {
    let e = parse("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"10.0.0.1\"\ncuont = 3\n")
        .unwrap_err();
    assert!(e.contains("cuont"), "{e}");
    let e = parse("[[traffic]]\nkind = \"tcp-inject\"\nclient = \"a\"\nserver = \"b\"\nto = \"10.0.0.1\"\ninjections = [{ seq = 1 }]\n").unwrap_err();
    assert!(e.contains("seq"), "{e}");
}

#[test]
fn unknown_kind_and_bad_address_are_errors() {
    let e = parse("[[traffic]]\nkind = \"pong\"\nfrom = \"a\"\n").unwrap_err();
    assert!(e.contains("pong"), "{e}");
    assert!(parse("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"10.0.0.300\"\n").is_err());
    let e =
        parse("[[traffic]]\nkind = \"race\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nmode = \"fast\"\n")
            .unwrap_err();
    assert!(e.contains("fast"), "{e}");
}

fn invalid(s: &str) -> String {
    one(s).validate().unwrap_err()
}

#[test]
fn validate_names_field_and_fix() {
    let e = invalid("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"10.0.0.1\"\ncount = 0\n");
    assert!(
        e.contains("count = 0") && e.contains("between 1 and"),
        "{e}"
    );
    let e = invalid("[[traffic]]\nkind = \"race\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nsport = 65000\niterations = 1000\n");
    assert!(e.contains("sport") && e.contains("iterations"), "{e}");
    let e = invalid("[[traffic]]\nkind = \"race\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nproto = \"tcp-syn\"\nmode = \"socket\"\n");
    assert!(e.contains("mode = \"raw\""), "{e}");
    let e = invalid(
        "[[traffic]]\nkind = \"race\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nsrc = \"fd00::1\"\n",
    );
    assert!(e.contains("src") && e.contains("famil"), "{e}");
    let e = invalid("[[traffic]]\nkind = \"dns\"\nfrom = \"a\"\nto = \"10.0.0.1\"\n");
    assert!(
        e.contains("server") && e.contains("start_server = false"),
        "{e}"
    );
    let e = invalid("[[traffic]]\nkind = \"tcp-inject\"\nclient = \"a\"\nserver = \"b\"\nto = \"10.0.0.1\"\ninjections = [{ flags = \"AQ\" }]\n");
    assert!(
        e.contains("injections[0].flags") && e.contains("'Q'"),
        "{e}"
    );
    let e = invalid("[[traffic]]\nkind = \"udp\"\nfrom = \"\"\nto = \"10.0.0.1\"\n");
    assert!(e.contains("from is empty"), "{e}");
    let e = invalid("[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"255.255.255.255\"\n");
    assert!(e.contains("unicast"), "{e}");
    let e =
        invalid("[[traffic]]\nkind = \"churn\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nrate = -1.0\n");
    assert!(e.contains("rate"), "{e}");
    let e = invalid("[[traffic]]\nkind = \"multiflow\"\nfrom = \"a\"\nreceiver = \"b\"\nto = \"10.0.0.1\"\nsources = [\"fd00::1\"]\n");
    assert!(e.contains("sources"), "{e}");
}

#[test]
fn serve_main_rejects_bad_usage() {
    assert!(serve_main(&[]).is_err());
    assert!(serve_main(&["serve".into(), "ftp".into()])
        .unwrap_err()
        .to_string()
        .contains("ftp"));
    assert!(serve_main(&["udp-echo".into(), "--bogus".into()]).is_err());
}

#[test]
fn src_is_typed_and_checked_on_udp_tcp_churn() {
    for kind in ["udp", "tcp", "churn"] {
        let s = one(&format!(
            "[[traffic]]\nkind = \"{kind}\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nsrc = \"10.0.1.5\"\n"
        ));
        s.validate().unwrap();
        let src = match &s {
            TrafficSpec::Udp(p) => p.src,
            TrafficSpec::Tcp(p) => p.src,
            TrafficSpec::Churn(p) => p.src,
            _ => unreachable!(),
        };
        assert_eq!(src, Some("10.0.1.5".parse().unwrap()), "{kind}");
        let e = invalid(&format!(
            "[[traffic]]\nkind = \"{kind}\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nsrc = \"fd00::1\"\n"
        ));
        assert!(
            e.contains("src = fd00::1") && e.contains("to = 10.0.0.1") && e.contains("famil"),
            "{kind}: {e}"
        );
        let e = invalid(&format!(
            "[[traffic]]\nkind = \"{kind}\"\nfrom = \"a\"\nto = \"fd00::2\"\nsrc = \"::\"\n"
        ));
        assert!(
            e.contains("src = ::") && e.contains("unicast"),
            "{kind}: {e}"
        );
        // Absent: the route's source, as before.
        let s = one(&format!(
            "[[traffic]]\nkind = \"{kind}\"\nfrom = \"a\"\nto = \"10.0.0.1\"\n"
        ));
        s.validate().unwrap();
    }
}

#[test]
fn ping_fresh_id_and_broadcast_options() {
    let TrafficSpec::Ping(p) =
        one("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"10.0.0.1\"\n")
    else {
        panic!()
    };
    assert!(!p.fresh_id && !p.broadcast);
    one("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nfresh_id = true\ncount = 65536\n")
        .validate()
        .unwrap();
    let e = invalid("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"10.0.0.1\"\nfresh_id = true\ncount = 70000\n");
    assert!(
        e.contains("count = 70000") && e.contains("fresh_id = false"),
        "{e}"
    );
    // The limited broadcast is refused at load unless asked for, with the fix.
    let e = invalid("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"255.255.255.255\"\n");
    assert!(
        e.contains("to = 255.255.255.255")
            && e.contains("broadcast address")
            && e.contains("broadcast = true"),
        "{e}"
    );
    for to in ["255.255.255.255", "10.0.0.255", "10.0.0.7"] {
        one(&format!(
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"{to}\"\nbroadcast = true\n"
        ))
        .validate()
        .unwrap();
    }
    let e = invalid(
        "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"fd00::ff\"\nbroadcast = true\n",
    );
    assert!(
        e.contains("broadcast = true") && e.contains("IPv6") && e.contains("broadcast = false"),
        "{e}"
    );
    let e = invalid(
        "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"224.0.0.1\"\nbroadcast = true\n",
    );
    assert!(e.contains("to = 224.0.0.1"), "{e}");
    let e = invalid("[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"0.0.0.0\"\n");
    assert!(e.contains("unicast"), "{e}");
}

#[test]
fn ping_ids_and_reply_classification() {
    let same = ping::Ids {
        base: 0xfffe,
        fresh: false,
    };
    let fresh = ping::Ids {
        base: 0xfffe,
        fresh: true,
    };
    assert_eq!((same.of(0), same.of(5)), (0xfffe, 0xfffe));
    assert_eq!((fresh.of(0), fresh.of(1), fresh.of(2)), (0xfffe, 0xffff, 0));
    assert!(fresh.ours(0, 2) && !fresh.ours(0xfffe, 2));
    assert!(same.ours(0xfffe, 2) && !same.ours(0, 2));
    // IPv4: a 20-byte header, then an echo reply id 0x1234 seq 7.
    let mut v4 = vec![0x45u8];
    v4.resize(20, 0);
    v4.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
    assert_eq!(
        ping::classify(&v4, false),
        Some(ping::Reply::Echo { id: 0x1234, seq: 7 })
    );
    // An unreachable quoting our request (IP header + echo header).
    let mut err = vec![0x45u8];
    err.resize(20, 0);
    err.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0, 0x45]);
    err.resize(48, 0);
    err.extend_from_slice(&[8, 0, 0, 0, 0xab, 0xcd, 0, 9]);
    assert_eq!(
        ping::classify(&err, false),
        Some(ping::Reply::Error { id: 0xabcd, seq: 9 })
    );
    // IPv6 delivers the ICMPv6 message only; an echo request is neither.
    assert_eq!(
        ping::classify(&[129, 0, 0, 0, 0, 1, 0, 2], true),
        Some(ping::Reply::Echo { id: 1, seq: 2 })
    );
    assert_eq!(ping::classify(&[128, 0, 0, 0, 0, 1, 0, 2], true), None);
    assert_eq!(ping::classify(&[], true), None);
}

fn multiflow(extra: &str) -> MultiflowParams {
    match one(&format!(
        "[[traffic]]\nkind = \"multiflow\"\nfrom = \"a\"\nreceiver = \"b\"\nto = \"10.0.0.1\"\n{extra}\n"
    )) {
        TrafficSpec::Multiflow(p) => p,
        _ => unreachable!(),
    }
}

#[test]
fn multiflow_without_port_lists_is_unchanged() {
    let p = multiflow("flows = 3\nsources = [\"10.0.1.1\", \"10.0.1.2\"]\nsport_base = 100");
    p.validate().unwrap();
    let plan = multiflow::Plan::of(&p);
    let binds: Vec<String> = plan.binds.iter().map(|b| b.to_string()).collect();
    assert_eq!(binds, ["10.0.1.1:100", "10.0.1.2:101", "10.0.1.1:102"]);
    assert!(plan.flows.iter().all(|f| f.dport == 9000));
    assert_eq!(plan.dports(), [9000]);
    let p = multiflow("");
    assert_eq!((p.flows, p.flow_count()), (None, 64));
    assert_eq!(
        multiflow::Plan::of(&p).binds[63].to_string(),
        "0.0.0.0:20063"
    );
}

#[test]
fn multiflow_flows_are_sources_times_ports() {
    // sources × dports: every flow its own source port.
    let p = multiflow("sources = [\"10.0.1.1\", \"10.0.1.2\"]\ndports = [53, 80, 443]");
    p.validate().unwrap();
    assert_eq!(p.flow_count(), 6);
    let plan = multiflow::Plan::of(&p);
    let flows: Vec<String> = plan
        .flows
        .iter()
        .map(|f| format!("{}>{}", plan.binds[f.sock], f.dport))
        .collect();
    assert_eq!(
        flows,
        [
            "10.0.1.1:20000>53",
            "10.0.1.1:20001>80",
            "10.0.1.1:20002>443",
            "10.0.1.2:20003>53",
            "10.0.1.2:20004>80",
            "10.0.1.2:20005>443"
        ]
    );
    assert_eq!(plan.dports(), [53, 80, 443]);
    // sources × sports × dports: one socket per (source, sport) sends to every dport.
    let p = multiflow("sources = [\"10.0.1.1\", \"10.0.1.2\"]\nsports = [1000, 2000]\ndports = [53, 80]\nflows = 8");
    p.validate().unwrap();
    let plan = multiflow::Plan::of(&p);
    assert_eq!(plan.binds.len(), 4);
    assert_eq!(plan.flows.len(), 8);
    assert_eq!(
        plan.flows[..3],
        [
            multiflow::Flow { sock: 0, dport: 53 },
            multiflow::Flow { sock: 0, dport: 80 },
            multiflow::Flow { sock: 1, dport: 53 }
        ]
    );
    assert_eq!(plan.binds[3].to_string(), "10.0.1.2:2000");
    // sports alone (route source, dport = port).
    let p = multiflow("sports = [7, 8, 9]");
    p.validate().unwrap();
    let plan = multiflow::Plan::of(&p);
    assert_eq!(plan.flows.len(), 3);
    assert_eq!(plan.binds[2].to_string(), "0.0.0.0:9");
    assert_eq!(plan.dports(), [9000]);
}

#[test]
fn multiflow_port_list_errors_name_field_and_fix() {
    let e = invalid_mf("dports = [53, 80]\nflows = 10");
    assert!(
        e.contains("flows = 10") && e.contains("= 2 flows") && e.contains("remove flows"),
        "{e}"
    );
    let e = invalid_mf("dports = [53, 0]");
    assert!(
        e.contains("dports[1] = 0") && e.contains("between 1"),
        "{e}"
    );
    let e = invalid_mf("sports = [5, 6, 5]");
    assert!(e.contains("sports lists port 5 twice"), "{e}");
    let e = invalid_mf("dports = [53]\nsources = [\"10.0.1.1\", \"10.0.1.1\"]");
    assert!(e.contains("sources lists 10.0.1.1 twice"), "{e}");
    let e = invalid_mf("dports = [53, 80, 443]\nsport_base = 65534");
    assert!(
        e.contains("sport_base = 65534") && e.contains("3 flows"),
        "{e}"
    );
    let many: Vec<String> = (1..=300).map(|p| p.to_string()).collect();
    let e = invalid_mf(&format!("dports = [{}]", many.join(", ")));
    assert!(e.contains("dports has 300 ports"), "{e}");
    let sports: Vec<String> = (1000..1250).map(|p| p.to_string()).collect();
    let e = invalid_mf(&format!(
        "sports = [{}]\ndports = [{}]",
        sports.join(", "),
        many[..250].join(", ")
    ));
    assert!(e.contains("62500 flows") && e.contains("shorten"), "{e}");
    let e = invalid_mf("flows = 0");
    assert!(e.contains("flows = 0"), "{e}");
}

fn invalid_mf(extra: &str) -> String {
    invalid(&format!(
        "[[traffic]]\nkind = \"multiflow\"\nfrom = \"a\"\nreceiver = \"b\"\nto = \"10.0.0.1\"\n{extra}\n"
    ))
}

#[test]
fn nofile_limit_is_enough_for_many_sockets() {
    common::ensure_nofile(100).unwrap();
    let e = common::ensure_nofile(u64::MAX / 4).unwrap_err().to_string();
    assert!(
        e.contains("open-file limit") && e.contains("ulimit -Hn"),
        "{e}"
    );
}

#[test]
fn udp_text_payload_places_the_text_and_is_checked() {
    let TrafficSpec::Udp(p) = one(
        "[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"10.0.0.2\"\ntext = \"foo\"\ntext_at = 5\n",
    ) else {
        panic!("udp")
    };
    let bytes = p.payload(1, 0, |_, _, _, n| vec![0; n]);
    assert_eq!(bytes, b"     foo");
    assert_eq!(p.payload_len(), 8);
    let e = invalid(
        "[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"10.0.0.2\"\ntext = \"foo\"\nreceiver = \"b\"\n",
    );
    assert!(e.contains("remove receiver"), "{e}");
    let e = invalid(
        "[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"10.0.0.2\"\ntext = \"foo\"\ntext_at = 5\nsize = 6\n",
    );
    assert!(e.contains("size = 6 is shorter"), "{e}");
    let e = invalid("[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"10.0.0.2\"\ntext_at = 5\n");
    assert!(e.contains("text_at without text"), "{e}");
}

#[test]
fn tcp_hold_is_bounded() {
    let e =
        invalid("[[traffic]]\nkind = \"tcp\"\nfrom = \"a\"\nto = \"10.0.0.2\"\nhold_ms = 700000\n");
    assert!(e.contains("hold_ms = 700000 is out of range"), "{e}");
}
