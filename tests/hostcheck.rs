//! check-host without root: the fixture nodes parse, their settings map onto each
//! scenario's lab as the `[host_check]` tables say, outcomes read as verdicts, the
//! reports render (insta snapshots), and bad `[host_check]` tables are refused
//! with the file and the field.

use faultlab::hostcheck::reader::{FixtureHost, HostReading};
use faultlab::hostcheck::{self, lab_cell, report, HostReport, HostVerdict, Verdict};
use faultlab::scenario;
use faultlab::verdict::{CellResult, Check, Outcome};
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/hostcheck")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("node.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn load(name: &str) -> scenario::Scenario {
    scenario::load(Path::new(&format!("scenarios/{name}.toml"))).unwrap()
}

fn reading(dir: &Path) -> HostReading {
    let f = FixtureHost::open(dir).unwrap();
    let files = scenario::discover(&[], Path::new("scenarios")).unwrap();
    let all: Vec<_> = files.iter().map(|p| scenario::load(p).unwrap()).collect();
    HostReading::read(&f, &hostcheck::run::sysctls_taken(&all))
}

#[test]
fn every_fixture_parses_and_expects_only_known_verdicts_of_participating_scenarios() {
    let dirs = fixtures();
    let names: Vec<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "docker",
        "kube-proxy-iptables",
        "kube-proxy-nftables",
        "calico",
        "neutron",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "fixture {want} missing: {names:?}"
        );
    }
    for dir in &dirs {
        let f = FixtureHost::open(dir).unwrap();
        assert!(!f.node().expect.is_empty(), "{}: no expect", dir.display());
        for (scn, verdict) in &f.node().expect {
            assert!(
                load(scn).host_check.is_some(),
                "{}: {scn} has no [host_check]",
                dir.display()
            );
            assert!(
                ["affected", "not affected", "cannot tell"].contains(&verdict.as_str()),
                "{}: {verdict}",
                dir.display()
            );
        }
        let r = reading(dir);
        let rules: usize = r
            .rulesets
            .iter()
            .map(|(k, t)| hostcheck::mapping::rule_lines(k, t.value().unwrap()).len())
            .sum();
        assert!(rules > 10, "{}: only {rules} rule lines", dir.display());
    }
}

/// What each fixture turns into in each scenario it is checked against: the knobs
/// taken, the deciding rules found, what did not carry over, and every rewritten
/// rule line that names a lab device.
#[test]
fn fixtures_map_onto_the_labs_as_the_host_check_tables_say() {
    let mut out = String::new();
    for dir in fixtures() {
        let r = reading(&dir);
        let f = FixtureHost::open(&dir).unwrap();
        for name in f.node().expect.keys() {
            let scn = load(name);
            let hc = scn.host_check.clone().unwrap();
            let p = lab_cell::prepare(&scn, &hc, &r);
            let _ = writeln!(
                out,
                "== {} / {name} (node {})",
                dir.file_name().unwrap().to_string_lossy(),
                hc.node
            );
            for s in p.settings.iter().chain(&p.rules).chain(&p.notes) {
                let _ = writeln!(out, "  {s}");
            }
            assert_eq!(p.cell.expect.len(), 1);
            assert_eq!(p.cell.expect[0].source(), hc.affected.source());
            assert!(p.cell.lab.host_sysctls.is_empty());
            let node = p.cell.lab.node(&hc.node).unwrap();
            let devices: Vec<String> = node
                .devices
                .iter()
                .map(|d| d.name.clone())
                .chain(
                    p.cell
                        .lab
                        .veths
                        .iter()
                        .flat_map(|v| [&v.a, &v.b])
                        .filter(|e| e.node == hc.node)
                        .map(|e| e.dev.clone()),
                )
                .collect();
            for rs in &node.rulesets {
                for line in rs.text.lines() {
                    let named = line.split_whitespace().any(|w| {
                        let w = w
                            .trim_matches(|c| c == '"' || c == ',')
                            .trim_end_matches('+');
                        devices.iter().any(|d| {
                            d == w || (d.starts_with(w) && w.len() > 2 && line.contains('+'))
                        })
                    });
                    if named {
                        let _ = writeln!(out, "  {}: {}", rs.kind.key(), line.trim());
                    }
                }
            }
        }
    }
    insta::assert_snapshot!("hostcheck_fixture_mapping", out);
}

fn cell_result(outcome: Outcome, checks: Vec<Check>, reason: Option<&str>) -> CellResult {
    CellResult {
        name: "default".into(),
        about: String::new(),
        outcome,
        reason: reason.map(str::to_string),
        trigger: Some(Check {
            expr: "in_window.inj0.reached_client == 1".into(),
            ok: outcome != Outcome::Inconclusive,
            detail: "in_window.inj0.reached_client=1".into(),
        }),
        checks,
        observations: Default::default(),
        drops: vec![],
        captures: vec![],
        repetitions: vec![],
        splats: vec![],
        duration_ms: 1800,
        phases_ms: Default::default(),
    }
}

#[test]
fn outcomes_read_as_verdicts() {
    let scn = load("docker-out-of-window-rst");
    let hc = scn.host_check.clone().unwrap();
    let r = reading(Path::new("tests/fixtures/hostcheck/docker"));
    let p = || lab_cell::prepare(&scn, &hc, &r);
    let check = |ok| {
        vec![Check {
            expr: hc.affected.source().into(),
            ok,
            detail: "seq_above.server_reset=1".into(),
        }]
    };
    let v = |c: CellResult| hostcheck::run::verdict_of(&scn, &hc, p(), &c);
    assert_eq!(
        v(cell_result(Outcome::Pass, check(true), None)).verdict,
        Verdict::Affected
    );
    assert_eq!(
        v(cell_result(
            Outcome::Fail,
            check(false),
            Some("1 of 1 failed")
        ))
        .verdict,
        Verdict::NotAffected
    );
    let inc = v(cell_result(
        Outcome::Inconclusive,
        check(false),
        Some("trigger not proven"),
    ));
    assert_eq!(inc.verdict, Verdict::CannotTell);
    assert!(inc.reason.unwrap().contains("trigger did not fire"));
    let err = v(cell_result(
        Outcome::Fail,
        vec![],
        Some("load iptables: bad rule"),
    ));
    assert_eq!(err.verdict, Verdict::CannotTell);
    assert!(err.reason.unwrap().contains("bad rule"));
    assert_eq!(
        v(cell_result(Outcome::Skip, vec![], Some("not root"))).verdict,
        Verdict::CannotTell
    );
    let affected = v(cell_result(Outcome::Pass, check(true), None));
    assert!(
        affected
            .deciding
            .iter()
            .any(|d| d == "net.netfilter.nf_conntrack_tcp_be_liberal=0 (machine)"),
        "{:?}",
        affected.deciding
    );
    assert!(
        affected
            .deciding
            .iter()
            .any(|d| d == "invalid-drop-in-input: absent"),
        "{:?}",
        affected.deciding
    );
}

fn fixed_report() -> HostReport {
    let mut r = HostReport::from_reading(&reading(Path::new("tests/fixtures/hostcheck/docker")));
    r.source = "fixture tests/fixtures/hostcheck/docker".into();
    r.kernel = "6.18.44".into();
    r.verdicts = vec![
        HostVerdict {
            scenario: "docker-out-of-window-rst".into(),
            cell: "default".into(),
            node: "host".into(),
            verdict: Verdict::Affected,
            says: "an out-of-window segment draws a host RST that resets the remote (seed 004)".into(),
            reason: None,
            deciding: vec!["net.netfilter.nf_conntrack_tcp_be_liberal=0 (machine)".into(), "invalid-drop-in-input: absent".into()],
            evidence: vec!["seq_above.server_reset + seq_above_data.server_reset > 0 (seq_above.server_reset=1 seq_above_data.server_reset=1)".into()],
            fix: "iptables -I INPUT -m conntrack --ctstate INVALID -j DROP".into(),
            notes: vec!["iptables: rules on br-5f1a9c3e7b21 match nothing in the lab (no lab device stands for them)".into()],
            duration_ms: 1900,
        },
        HostVerdict {
            scenario: "conntrack-race-calico-dnat".into(),
            cell: "two-backends".into(),
            node: "node1".into(),
            verdict: Verdict::CannotTell,
            says: "raced packets through the service DNAT lose one | seed 002".into(),
            reason: Some("the trigger did not fire with this machine's settings, so the run says nothing: conntrack.node1.clashres=0".into()),
            deciding: vec![],
            evidence: vec!["trigger did not hold: conntrack.node1.clashres=0".into()],
            fix: "a kernel with clash resolution (v5.6)".into(),
            notes: vec![],
            duration_ms: 4000,
        },
    ];
    r.host_changes = Some(vec![]);
    r
}

#[test]
fn table_markdown_and_json_of_a_fixed_report() {
    let r = fixed_report();
    insta::assert_snapshot!("hostcheck_table", report::table(&r));
    insta::assert_snapshot!("hostcheck_markdown", report::markdown(&r));
    let j: serde_json::Value = serde_json::from_str(&report::json(&r)).unwrap();
    assert_eq!(j["verdicts"][0]["verdict"], "affected");
    assert_eq!(j["verdicts"][1]["verdict"], "cannot-tell");
    assert_eq!(j["host_changes"], serde_json::json!([]));
    assert_eq!(hostcheck::exit_code(&r), 1);
    let mut changed = r.clone();
    changed.verdicts.clear();
    changed.host_changes = Some(vec!["links: + 9: veth0".into()]);
    assert!(report::table(&changed).contains("HOST CHANGED (1 differences)"));
    assert_eq!(hostcheck::exit_code(&changed), 1);
}

const MINI: &str = r#"
name = "mini"
about = "two namespaces"
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
name = "reachable"
expect = ["ping.received == ping.sent"]
"#;

fn parse_err(table: &str) -> String {
    scenario::parse(
        "scenarios/mini.toml",
        &format!("{MINI}\n[host_check]\n{table}"),
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn bad_host_check_tables_name_the_file_the_field_and_the_fix() {
    let ok = r#"node = "a"
cell = "reachable"
affected = "ping.received < ping.sent"
says = "s"
fix = "f"
interfaces = { "@uplink" = "eth0" }
"#;
    let s = scenario::parse(
        "scenarios/mini.toml",
        &format!("{MINI}\n[host_check]\n{ok}"),
    )
    .unwrap();
    assert_eq!(
        s.host_check.unwrap().interfaces,
        vec![("@uplink".to_string(), "eth0".to_string())]
    );
    let e = parse_err(&ok.replace("\"reachable\"", "\"nope\""));
    assert!(
        e.starts_with("scenarios/mini.toml:")
            && e.contains("host_check.cell")
            && e.contains("use one of: reachable"),
        "{e}"
    );
    let e = parse_err(&ok.replace("node = \"a\"", "node = \"zz\""));
    assert!(
        e.contains("host_check.node") && e.contains("undefined node `zz`"),
        "{e}"
    );
    let e = parse_err(&ok.replace("\"eth0\" }", "\"wlan0\" }"));
    assert!(
        e.contains("host_check.interfaces.@uplink") && e.contains("use one of: eth0"),
        "{e}"
    );
    let e = parse_err(&ok.replace("ping.received < ping.sent", "ping.received <"));
    assert!(e.contains("host_check.affected"), "{e}");
    let e = parse_err(&format!("{ok}colour = 1\n"));
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = parse_err(&format!("{ok}rulesets = [\"pf\"]\n"));
    assert!(
        e.contains("host_check.rulesets[0]") && e.contains("unknown ruleset kind"),
        "{e}"
    );
    let e = parse_err(&format!("{ok}absent = {{ \"net.x.y\" = 0 }}\n"));
    assert!(
        e.contains("host_check.absent.net.x.y") && e.contains("not in host_check.sysctls"),
        "{e}"
    );
}
