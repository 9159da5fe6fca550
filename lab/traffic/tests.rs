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
