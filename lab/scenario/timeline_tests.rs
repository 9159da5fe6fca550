//! Loading timeline cells: plans of the new step kinds and an error with
//! file:line:column, field and fix for every bad value.

use super::*;
use crate::model::steps::{Action, CtOp};

const BASE: &str = r#"
name = "tl"
about = "two nodes"
[nodes.a]
[nodes.r]
[[links]]
a = "a:eth0 192.0.2.1/24"
b = "r:eth0 192.0.2.2/24"
"#;

fn with(steps: &str) -> String {
    format!("{BASE}{steps}\n[[cells]]\nname = \"c\"\nexpect = [\"1 == 1\"]\n")
}

fn err(steps: &str) -> ScenarioError {
    parse("t.toml", &with(steps)).expect_err("must be rejected")
}

/// The line of the first occurrence of `needle` in the file (1-based).
fn line_of(steps: &str, needle: &str) -> usize {
    let text = with(steps);
    let at = text.find(needle).expect("needle");
    text[..at].lines().count() + usize::from(text[..at].ends_with('\n'))
}

const TIMELINE: &str = r#"
[[traffic]]
kind = "udp"
name = "bg"
background = true
from = "a"
to = "192.0.2.2"
sample = ["ct.r.count"]

[[traffic]]
kind = "wait"
until = "ct.r.count(proto=udp dport=9000) >= 1"
give_up = "conntrack.r.drop > 0"
timeout_ms = 2000
on_timeout = "inconclusive"

[[traffic]]
kind = "checkpoint"
name = "cp"

[[traffic]]
kind = "conntrack"
name = "ins"
node = "r"
action = "insert"
entry = { proto = "tcp", src = "192.0.2.1", dst = "192.0.2.2", sport = 1, dport = 2, status = "ASSURED", zone = 3 }

[[traffic]]
kind = "conntrack"
name = "del"
node = "r"
action = "delete"
filter = "zone=3 proto=tcp"

[[traffic]]
kind = "configure"
node = "r"
sysctls = { "net.ipv4.ip_forward" = 0 }
replace = { nft = "table inet x { }" }
routes = { add = ["10.9.0.0/16 via 192.0.2.1"], delete = ["default via 192.0.2.1"] }
neighbours = { replace = ["192.0.2.1 lladdr 02:00:00:00:00:01 dev eth0"], delete = ["192.0.2.9 dev eth0"] }
ip_rules = { add = ["fwmark 1 lookup 100", "-6 iif eth0 lookup 7"], delete = ["from 192.0.2.0/24 lookup 100"] }
links = { eth0 = { mtu = 1400, up = true } }
add_devices = { br9 = { kind = "bridge" } }

[[traffic]]
kind = "join"
steps = ["bg"]

[[traffic]]
kind = "sleep"
ms = 5
"#;

#[test]
fn timeline_plan_is_pinned() {
    let s = parse("t.toml", &with(TIMELINE)).unwrap();
    insta::assert_yaml_snapshot!("timeline_steps", s.cells[0].steps);
}

#[test]
fn step_errors_name_the_place_the_field_and_the_fix() {
    let cases: Vec<(String, &str, &str, &str)> = vec![
        // (steps, needle for the line, field, message part)
        (
            "[[traffic]]\nkind = \"configure\"\nnode = \"x\"\n".into(),
            "[[traffic]]",
            "traffic[0].node",
            "undefined node `x`",
        ),
        (
            "[[traffic]]\nkind = \"configure\"\nnode = \"r\"\nsysctl = {}\n".into(),
            "[[traffic]]",
            "traffic[0]",
            "unknown field `sysctl`",
        ),
        (
            "[[traffic]]\nkind = \"configure\"\nnode = \"r\"\nroutes = { add = [\"10.0.0.0/8 dev nope\"] }\n".into(),
            "[[traffic]]",
            "traffic[0].routes.add[0]",
            "no device `nope`",
        ),
        (
            "[[traffic]]\nkind = \"configure\"\nnode = \"r\"\nip_rules = { add = [\"iif nope lookup 5\"] }\n".into(),
            "[[traffic]]",
            "traffic[0].ip_rules.add[0]",
            "no device `nope`",
        ),
        (
            "[[traffic]]\nkind = \"configure\"\nnode = \"r\"\nip_rules = { replace = [\"lookup 5\"] }\n".into(),
            "[[traffic]]",
            "traffic[0]",
            "unknown field `replace`",
        ),
        (
            "[[traffic]]\nkind = \"configure\"\nnode = \"r\"\nflush = [\"pf\"]\n".into(),
            "[[traffic]]",
            "traffic[0].flush",
            "pf",
        ),
        (
            "[[traffic]]\nkind = \"wait\"\nuntil = \"a >\"\n".into(),
            "[[traffic]]",
            "traffic[0].until",
            "`a >`",
        ),
        (
            "[[traffic]]\nkind = \"wait\"\nuntil = \"a > 1\"\ngive_up = \"b ==\"\n".into(),
            "[[traffic]]",
            "traffic[0].give_up",
            "`b ==`",
        ),
        (
            "[[traffic]]\nkind = \"conntrack\"\nnode = \"r\"\naction = \"delete\"\nfilter = \"dprt=1\"\n".into(),
            "[[traffic]]",
            "traffic[0].filter",
            "dprt",
        ),
        (
            "[[traffic]]\nkind = \"conntrack\"\nnode = \"r\"\naction = \"delete\"\n".into(),
            "[[traffic]]",
            "traffic[0].filter",
            "a delete needs a filter",
        ),
        (
            "[[traffic]]\nkind = \"conntrack\"\nnode = \"r\"\naction = \"zap\"\n".into(),
            "[[traffic]]",
            "traffic[0].action",
            "unknown conntrack action `zap`",
        ),
        (
            "[[traffic]]\nkind = \"conntrack\"\nnode = \"r\"\naction = \"insert\"\nentry = { proto = \"tcp\", src = \"192.0.2.1\", dst = \"192.0.2.2\", status = \"ASURED\" }\n".into(),
            "[[traffic]]",
            "traffic[0].entry.status",
            "ASURED",
        ),
        (
            "[[traffic]]\nkind = \"checkpoint\"\n".into(),
            "[[traffic]]",
            "traffic[0]",
            "missing field `name`",
        ),
        (
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"192.0.2.2\"\n[[traffic]]\nkind = \"join\"\nsteps = [\"ping\"]\n".into(),
            "name = \"tl\"",
            "steps.join.steps",
            "not a background step",
        ),
        (
            "[[traffic]]\nkind = \"sleep\"\nms = 1\nbackground = true\n".into(),
            "[[traffic]]",
            "traffic[0]",
            "cannot run in the background",
        ),
        (
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nsample = [\"a + b\"]\n".into(),
            "[[traffic]]",
            "traffic[0].sample",
            "not one observation name",
        ),
        (
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nsample_every_ms = 5\n".into(),
            "[[traffic]]",
            "traffic[0].sample_every_ms",
            "without sample",
        ),
        (
            "[[traffic]]\nkind = \"dns\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nuntil = \"x > 1\"\n".into(),
            "[[traffic]]",
            "traffic[0].until",
            "a `dns` step cannot end early",
        ),
        (
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nuntil = 3\n".into(),
            "[[traffic]]",
            "traffic[0].until",
            "not a string",
        ),
        (
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nuntil = \"a >\"\n".into(),
            "[[traffic]]",
            "traffic[0].until",
            "`a >`",
        ),
        (
            "[[traffic]]\nkind = \"ping\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nuntil_every_ms = 5\n".into(),
            "[[traffic]]",
            "traffic[0].until_every_ms",
            "without until",
        ),
    ];
    for (steps, needle, field, msg) in cases {
        let e = err(&steps);
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(msg), "{e}");
        assert_eq!(e.line, line_of(&steps, needle), "{e}");
        assert!(e.column >= 1, "{e}");
        assert!(!e.fix.is_empty(), "{e}");
    }
}

#[test]
fn until_on_a_traffic_step_is_typed_with_its_poll_interval() {
    let text = with(
        "[[traffic]]\nkind = \"udp\"\nfrom = \"a\"\nto = \"192.0.2.2\"\nuntil = \"conntrack.a.drop >= 3\"\nuntil_every_ms = 10\n",
    );
    let scn = parse("t.toml", &text).expect("parses");
    let step = &scn.cells[0].steps[0];
    let stop = step.until.as_ref().expect("until kept");
    assert_eq!(stop.until.to_string(), "conntrack.a.drop >= 3");
    assert_eq!(stop.every_ms, 10);
    // A wait's `until` stays its own condition, not a stop of the step.
    let wait = with("[[traffic]]\nkind = \"wait\"\nuntil = \"ct.a.count >= 1\"\ntimeout_ms = 10\n");
    let scn = parse("t.toml", &wait).expect("parses");
    assert!(scn.cells[0].steps[0].until.is_none());
}

#[test]
fn a_race_without_a_trigger_is_refused() {
    let text = with("[[traffic]]\nkind = \"race\"\nfrom = \"a\"\nto = \"192.0.2.2\"\n");
    let e = parse("t.toml", &text).expect_err("refused");
    assert_eq!(e.field, "cells[0].trigger");
    assert!(e.message.contains("no trigger"), "{e}");
    assert!(e.fix.contains("clashres"), "{e}");
    let ok = text.replace("expect = [", "trigger = \"race.sent > 0\"\nexpect = [");
    assert!(parse("t.toml", &ok).is_ok());
}

#[test]
fn cell_level_routes_processes_and_extra_steps() {
    let steps = "[[traffic]]\nkind = \"ping\"\nname = \"p\"\nfrom = \"a\"\nto = \"192.0.2.2\"\n";
    let base = format!("{BASE}\n[nodes.a.routes]\n");
    let _ = base;
    let text = format!(
        "{}{steps}\n[[cells]]\nname = \"c\"\nroutes = {{ a = [\"10.0.0.0/8 via 192.0.2.2\"] }}\nprocesses = {{ r = [{{ name = \"srv\", run = [\"sleep\", \"5\"] }}] }}\nexpect = [\"1 == 1\"]\n[[cells.extra_steps]]\nkind = \"sleep\"\nname = \"first\"\nms = 1\nbefore = \"p\"\n",
        BASE.replace("[nodes.a]", "[nodes.a]\nroutes = [\"default via 192.0.2.2\"]")
    );
    let s = parse("t.toml", &text).unwrap();
    let c = &s.cells[0];
    let a = c.lab.node("a").unwrap();
    assert_eq!(a.routes.len(), 1);
    assert_eq!(a.routes[0].dst.to_string(), "10.0.0.0/8");
    assert_eq!(c.lab.node("r").unwrap().processes[0].name, "srv");
    let names: Vec<&str> = c.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["first", "p"]);

    let bad = text.replace("before = \"p\"", "before = \"q\"");
    let e = parse("t.toml", &bad).expect_err("unknown step");
    assert_eq!(e.field, "cells[0].extra_steps[0].before");
    assert!(e.fix.contains("p"), "{e}");

    let bad = text.replace(
        "routes = { a = [\"10.0.0.0/8 via 192.0.2.2\"] }",
        "remove_routes = { a = [\"10.1.0.0/16\"] }",
    );
    let e = parse("t.toml", &bad).expect_err("no such route");
    assert_eq!(e.field, "cells[0].remove_routes.a[0]");
    assert!(e.fix.contains("0.0.0.0/0"), "{e}");
}

#[test]
fn templates_are_found_next_to_the_file_then_built_in() {
    let dir = std::env::temp_dir().join(format!("fl-tmpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    let text = "name = \"t\"\nabout = \"x\"\n[template]\nname = \"docker\"\n[[cells]]\nname = \"c\"\nexpect = [\"1 == 1\"]\n";
    std::fs::write(&file, text).unwrap();
    // No topologies/ next to it: the built-in docker template is used.
    assert!(load(&file).is_ok());
    std::fs::write(&file, text.replace("docker", "nosuch")).unwrap();
    let e = load(&file).expect_err("unknown template");
    assert!(e.message.contains("looked in"), "{e}");
    assert!(e.message.contains("topologies/nosuch.toml"), "{e}");
    assert!(e.fix.contains("docker"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn routes_the_kernel_would_refuse_are_load_errors() {
    let dup = BASE.replace(
        "[nodes.a]",
        "[nodes.a]\nroutes = [\"10.0.0.0/8 via 192.0.2.2\", \"10.0.0.0/8 via 192.0.2.2\"]",
    ) + "[[cells]]\nname = \"c\"\nexpect = [\"1 == 1\"]\n";
    let e = parse("t.toml", &dup).expect_err("duplicate");
    assert_eq!(e.field, "nodes.a.routes");
    assert!(e.message.contains("two routes to 10.0.0.0/8"), "{e}");
    assert_eq!(e.line, 4, "{e}");

    let connected = BASE.replace(
        "[nodes.a]",
        "[nodes.a]\nroutes = [\"192.0.2.0/24 dev eth0\"]",
    ) + "[[cells]]\nname = \"c\"\nexpect = [\"1 == 1\"]\n";
    let e = parse("t.toml", &connected).expect_err("connected");
    assert!(
        e.message
            .contains("the kernel adds it for the address 192.0.2.1/24"),
        "{e}"
    );
    assert!(e.fix.contains("remove"), "{e}");
}

#[test]
fn repeat_makes_numbered_copies_of_a_step() {
    let steps = "[[traffic]]\nkind = \"conntrack\"\nname = \"ins\"\nrepeat = { var = \"i\", count = 3 }\nnode = \"r\"\naction = \"insert\"\nentry = { proto = \"udp\", src = \"192.0.2.1\", dst = \"192.0.2.2\", sport = \"${i+1000}\", dport = 53, zone = \"${i}\" }\n";
    let s = parse("t.toml", &with(steps)).unwrap();
    let names: Vec<&str> = s.cells[0].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ins-1", "ins-2", "ins-3"]);
    let Action::Conntrack(c) = &s.cells[0].steps[2].action else {
        panic!("conntrack")
    };
    let CtOp::Insert { entry } = &c.op else {
        panic!("insert")
    };
    assert_eq!((entry.zone, entry.orig.sport), (3, 1003));

    let e = err(&steps.replace("count = 3", "count = 0"));
    assert_eq!(e.field, "traffic[0].repeat.count");
    assert!(e.fix.contains("repeat = { var"), "{e}");
    let e = err(&steps.replace("var = \"i\", ", ""));
    assert_eq!(e.field, "traffic[0].repeat.var");
}

#[test]
fn ip_rules_per_node_per_cell_and_the_same_rule_twice() {
    let node = BASE.replace(
        "[nodes.a]",
        "[nodes.a]\nip_rules = [\"from 192.0.2.1 lookup 100\"]\nroutes = [\"default via 192.0.2.2\", \"default via 192.0.2.2 table 100\"]",
    );
    let cells = "[[cells]]\nname = \"own\"\nexpect = [\"1 == 1\"]\n\
                 [[cells]]\nname = \"replaced\"\nip_rules = { a = [\"fwmark 1 lookup 100\"] }\nexpect = [\"1 == 1\"]\n\
                 [[cells]]\nname = \"extra\"\nextra_ip_rules = { a = [\"-6 iif eth0 lookup 100\"] }\nremove_routes = { a = [\"default table 100\"] }\nexpect = [\"1 == 1\"]\n";
    let s = parse("t.toml", &format!("{node}{cells}")).unwrap();
    let rules = |i: usize| -> Vec<String> {
        let a = s.cells[i].lab.node("a").unwrap();
        a.ip_rules.iter().map(|r| r.to_string()).collect()
    };
    assert_eq!(rules(0), ["from 192.0.2.1/32 lookup 100"]);
    assert_eq!(rules(1), ["fwmark 0x1 lookup 100"]);
    assert_eq!(
        rules(2),
        ["from 192.0.2.1/32 lookup 100", "-6 iif eth0 lookup 100"]
    );
    // A default route in main and one in table 100 are two routes; removing the
    // table's leaves main's.
    let routes = |i: usize| s.cells[i].lab.node("a").unwrap().routes.len();
    assert_eq!((routes(0), routes(2)), (2, 1));

    let twice = format!(
        "{node}[[cells]]\nname = \"c\"\nextra_ip_rules = {{ a = [\"from 192.0.2.1/32 lookup 100\"] }}\nexpect = [\"1 == 1\"]\n"
    );
    let e = parse("t.toml", &twice).expect_err("the same rule twice");
    assert!(e.message.contains("twice"), "{e}");
    assert_eq!(e.field, "nodes.a.ip_rules or cells[0].extra_ip_rules.a");
    let e = parse(
        "t.toml",
        &format!("{node}[[cells]]\nname = \"c\"\nip_rules = {{ a = [\"oif eth9 lookup 5\"] }}\nexpect = [\"1 == 1\"]\n"),
    )
    .expect_err("no such device");
    assert_eq!(e.field, "cells[0].ip_rules.a[0]");
    assert!(e.fix.contains("eth0"), "{e}");
}
