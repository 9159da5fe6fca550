use super::*;

const BRIDGE: &str = include_str!("../../scenarios/bridge-netfilter.toml");

fn err(text: &str) -> ScenarioError {
    parse("t.toml", text).expect_err("must be rejected")
}

const MINI: &str = r#"
name = "mini"
about = "two nodes"
[nodes.a]
[nodes.b]
[[links]]
a = "a:eth0 192.0.2.1/24"
b = "b:eth0 192.0.2.2/24"
[[traffic]]
kind = "ping"
from = "a"
to = "192.0.2.2"
[[cells]]
name = "one"
expect = ["ping.received == ping.sent"]
"#;

#[test]
fn bridge_scenario_plan_is_pinned() {
    let s = parse("scenarios/bridge-netfilter.toml", BRIDGE).unwrap();
    assert_eq!(s.cells.len(), 5);
    let cell = &s.cells[2];
    insta::assert_yaml_snapshot!("bridge_physdev_accept_plan", cell.lab.for_run("flTEST"));
    let requires = &s.cells[4].requires;
    assert!(requires
        .programs
        .contains(&"iptables-legacy-restore".to_string()));
    assert!(requires.paths.contains(&"/proc/sys/net/bridge".to_string()));
}

#[test]
fn mini_parses() {
    let s = parse("t.toml", MINI).unwrap();
    assert_eq!(s.cells[0].lab.nodes.len(), 2);
    assert_eq!(s.cells[0].lab.veths.len(), 1);
}

#[test]
fn misspelled_field_points_at_it() {
    let e = err(&MINI.replace("[nodes.b]", "[nodes.b]\nroutse = []"));
    assert_eq!((e.line, e.column), (6, 1), "{e}");
    assert!(e.message.contains("unknown field `routse`"), "{e}");
    assert_eq!(e.field, "nodes.b.routse");
}

#[test]
fn undefined_node_in_link() {
    let e = err(&MINI.replace("b = \"b:eth0", "b = \"c:eth0"));
    assert_eq!(e.line, 8, "{e}");
    assert_eq!(e.field, "links[0].b");
    assert!(e.message.contains("undefined node `c`"));
    assert!(e.fix.contains("a, b"));
}

#[test]
fn bad_address() {
    let e = err(&MINI.replace("192.0.2.1/24", "192.0.2.300/24"));
    assert_eq!((e.line, e.field.as_str()), (7, "links[0].a"), "{e}");
}

#[test]
fn undefined_node_in_cell_sysctls() {
    let e = err(&MINI.replace(
        "name = \"one\"",
        "name = \"one\"\nsysctls = { zz = { \"net.ipv4.ip_forward\" = 1 } }",
    ));
    assert!(e.message.contains("undefined node `zz`"), "{e}");
    assert_eq!(e.line, 15);
}

#[test]
fn host_global_sysctl_in_node_is_refused() {
    let e = err(&MINI.replace(
        "[nodes.a]",
        "[nodes.a]\nsysctls = { \"net.netfilter.nf_conntrack_max\" = 10 }",
    ));
    assert!(e.message.contains("host-global"), "{e}");
    assert!(e.fix.contains("host_sysctls"));
}

#[test]
fn bad_expectation_and_route() {
    let e = err(&MINI.replace("ping.received == ping.sent", "ping.received =="));
    assert_eq!(e.field, "cells[0].expect[0]");
    let e = err(&MINI.replace("[nodes.b]", "[nodes.b]\nroutes = [\"default vai 1.2.3.4\"]"));
    assert!(e.message.contains("unknown word `vai`"), "{e}");
}

#[test]
fn cell_without_expectations_is_refused() {
    let e = err(&MINI.replace("expect = [\"ping.received == ping.sent\"]", ""));
    assert!(e.message.contains("expects nothing"), "{e}");
}

#[test]
fn traffic_override_of_unknown_step() {
    let e = err(&MINI.replace(
        "name = \"one\"",
        "name = \"one\"\ntraffic.nope = { count = 3 }",
    ));
    assert!(e.message.contains("no traffic step named `nope`"), "{e}");
}

#[test]
fn traffic_override_applies() {
    let s = parse(
        "t.toml",
        &MINI.replace(
            "name = \"one\"",
            "name = \"one\"\ntraffic.ping = { count = 3 }",
        ),
    )
    .unwrap();
    let json = serde_json::to_value(&s.cells[0].steps[0]).unwrap();
    assert_eq!(json["action"]["kind"], "ping");
    assert_eq!(json["action"]["count"], 3);
}

#[test]
fn errors_render_with_location_and_fix() {
    let e = err(&MINI.replace("b = \"b:eth0", "b = \"c:eth0"));
    let text = e.to_string();
    assert!(
        text.starts_with("t.toml:8:5: links[0].b: undefined node `c`"),
        "{text}"
    );
    assert!(text.contains("\n  fix: "));
}

#[test]
fn skip_leaves_a_step_out_of_a_cell() {
    let text = MINI.replace(
        "to = \"192.0.2.2\"\n",
        "to = \"192.0.2.2\"\nskip = true\n",
    ) + "[[cells]]\nname = \"two\"\ntraffic.ping = { skip = false }\nexpect = [\"ping.sent > 0\"]\n";
    let s = parse("t.toml", &text).unwrap();
    assert!(s.cells[0].steps.is_empty());
    assert_eq!(s.cells[1].steps.len(), 1);
    let e = err(&MINI.replace("to = \"192.0.2.2\"\n", "to = \"192.0.2.2\"\nskip = 1\n"));
    assert!(e.message.contains("not a boolean"), "{e}");
}

#[test]
fn kmsg_counters_are_checked() {
    let ok = format!("{MINI}[[kmsg]]\nname = \"full\"\ncontains = \"table full\"\nnode = \"a\"\n");
    let s = parse("t.toml", &ok).unwrap();
    assert_eq!(s.cells[0].kmsg[0].name, "full");
    let e = err(&ok.replace("node = \"a\"", "node = \"zz\""));
    assert!(e.message.contains("undefined node `zz`"), "{e}");
}

#[test]
fn capture_filters_are_compiled_by_libpcap_at_load_time() {
    let ok = format!(
        "{MINI}[[captures]]\nname = \"c\"\nnode = \"b\"\ndev = \"eth0\"\n\
         filter = \"tcp port 80 or icmp\"\n\
         count = {{ rst = \"tcp[tcpflags] & tcp-rst != 0\", tagged = \"vlan\", big = \"len > 1000\", \
         range = \"portrange 1000-2000\", net = \"src net 10.0.0.0/8\" }}\n"
    );
    parse("t.toml", &ok).unwrap();
    let e = err(&ok.replace("tcp port 80 or icmp", "tcp prot 80"));
    let text = e.to_string();
    assert_eq!(
        (e.file.as_str(), e.field.as_str()),
        ("t.toml", "captures[0]")
    );
    assert!(text.starts_with("t.toml:"), "{text}");
    assert!(
        e.message
            .contains("field `filter` = \"tcp prot 80\": libpcap: ")
            && e.message.contains("syntax error"),
        "{text}"
    );
    let e = err(&ok.replace("len > 1000", "tcp[tcpflags] & tcp-rts != 0"));
    assert!(e.message.contains("field `count.big`"), "{e}");
}
