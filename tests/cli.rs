//! The command line, without root: input errors (exit 64, `file:line:col`), `show` of
//! a results file in every format (KTAP and JUnit validated), kselftest's exit codes
//! (2 for inconclusive), unknown cells, `kselftest-export`.

mod support_reports;

use faultlab::verdict::{CellResult, Outcome, ScenarioResult, EXIT_USAGE};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn faultlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run faultlab")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "faultlab-cli-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = r#"name = "mini"
about = "two namespaces on a veth"

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
about = "plain veth"
expect = ["ping.received == ping.sent"]
"#;

/// Asserts stderr names `file:line:col` (line, col >= 1) and returns (line, col).
fn assert_located(stderr: &str, file: &Path) -> (usize, usize) {
    let f = file.display().to_string();
    let at = stderr
        .find(&format!("{f}:"))
        .unwrap_or_else(|| panic!("stderr does not name {f}:\n{stderr}"));
    let rest = &stderr[at + f.len() + 1..];
    let mut parts = rest.splitn(3, ':');
    let line: usize = parts.next().unwrap().parse().expect("a line number");
    let col: usize = parts.next().unwrap().parse().expect("a column number");
    assert!(line >= 1 && col >= 1, "{stderr}");
    (line, col)
}

#[test]
fn a_good_file_plans() {
    let d = Scratch::new("good");
    let f = d.file("mini.toml", GOOD);
    let out = faultlab(&["plan", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["name"], "reachable");
}

#[test]
fn a_misspelled_field_is_exit_64_with_its_location() {
    let d = Scratch::new("typo");
    let f = d.file(
        "typo.toml",
        &GOOD.replace("[[links]]\na =", "[[links]]\nmtu = 1400\naa ="),
    );
    for cmd in ["plan", "list", "run"] {
        let out = faultlab(&[cmd, f.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_USAGE), "{cmd}: {err}");
        let (line, _) = assert_located(&err, &f);
        assert_eq!(line, 9, "{err}");
        assert!(err.contains("aa"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn an_undefined_node_is_exit_64_with_its_location() {
    let d = Scratch::new("node");
    let f = d.file("node.toml", &GOOD.replace("b = \"b:eth0", "b = \"c:eth0"));
    let out = faultlab(&["run", f.to_str().unwrap(), "--no-results"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{err}");
    let (line, _) = assert_located(&err, &f);
    assert_eq!(line, 9, "{err}");
    assert!(err.contains("`c`"), "{err}");
}

#[test]
fn a_bad_expression_is_exit_64_with_its_location() {
    let d = Scratch::new("expr");
    let f = d.file(
        "expr.toml",
        &GOOD.replace("ping.received == ping.sent", "ping.received =="),
    );
    let out = faultlab(&["list", f.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{err}");
    assert_located(&err, &f);
}

#[test]
fn an_unknown_cell_is_exit_64() {
    let d = Scratch::new("cell");
    let f = d.file("mini.toml", GOOD);
    let out = faultlab(&["run", f.to_str().unwrap(), "--cell", "nope", "--no-results"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{err}");
    assert!(err.contains("`nope`"), "{err}");
}

#[test]
fn an_unknown_scenario_name_is_exit_64() {
    let out = faultlab(&["run", "no-such-scenario", "--no-results"]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", text(&out.stderr));
}

#[test]
fn a_missing_results_file_is_exit_64() {
    let out = faultlab(&["show", "/nonexistent/faultlab.json"]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE));
    assert!(text(&out.stderr).contains("/nonexistent/faultlab.json"));
}

/// Built from JSON, so fields added later (with serde defaults) need no change here.
fn cell(name: &str, outcome: Outcome, reason: Option<&str>) -> CellResult {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "about": format!("about {name}"),
        "outcome": outcome,
        "reason": reason,
        "trigger": {
            "expr": "link.sw.sw-a.rx_packets >= ping.sent",
            "ok": outcome != Outcome::Inconclusive,
            "detail": "link.sw.sw-a.rx_packets=21 ping.sent=20",
        },
        "checks": [{
            "expr": "ping.received == 0",
            "ok": outcome != Outcome::Fail,
            "detail": "ping.received=20",
        }],
        "observations": { "ping.sent": 20.0 },
        "drops": [{
            "reason": "NETFILTER_DROP",
            "location": "nf_hook_slow",
            "node": "sw",
            "count": 20,
        }],
        "duration_ms": 1234,
    }))
    .expect("a CellResult")
}

fn results() -> Vec<ScenarioResult> {
    let base = ScenarioResult {
        scenario: "bridge-netfilter".into(),
        about: "a <bridge> & \"quotes\" # hash".into(),
        file: "scenarios/bridge-netfilter.toml".into(),
        kernel_release: "6.18.0".into(),
        started_at: 1_700_000_000,
        duration_ms: 4000,
        cells: vec![
            cell("call-iptables-on", Outcome::Pass, None),
            cell(
                "call-iptables-off",
                Outcome::Fail,
                Some("expected ping.received == 0 (ping.received=20)"),
            ),
            cell(
                "no-bridge",
                Outcome::Skip,
                Some("/proc/sys/net/bridge is missing: br_netfilter # absent"),
            ),
            cell(
                "race",
                Outcome::Inconclusive,
                Some("trigger not proven: conntrack.r.clashres > 0"),
            ),
            cell(
                "noted",
                Outcome::Pass,
                Some("no drop evidence (tracefs disabled by FAULTLAB_NO_TRACEFS)"),
            ),
        ],
    };
    let mut skipped = base.clone();
    skipped.scenario = "all-skipped".into();
    for c in &mut skipped.cells {
        c.outcome = Outcome::Skip;
        c.reason = Some("not root: run as root".into());
    }
    let mut empty = base.clone();
    empty.scenario = "no-cells".into();
    empty.cells.clear();
    vec![base, skipped, empty]
}

fn write_results(d: &Scratch) -> Vec<String> {
    results()
        .iter()
        .map(|r| {
            let p = d.file(
                &format!("{}.json", r.scenario),
                &serde_json::to_string_pretty(r).unwrap(),
            );
            p.display().to_string()
        })
        .collect()
}

#[test]
fn show_prints_the_table_of_a_results_file() {
    let d = Scratch::new("show");
    let files = write_results(&d);
    let out = faultlab(&["show", &files[0]]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a fail is exit 1");
    for (name, outcome) in [
        ("call-iptables-on", "PASS"),
        ("call-iptables-off", "FAIL"),
        ("no-bridge", "SKIP"),
        ("race", "INCONCLUSIVE"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        assert!(
            line.contains("bridge-netfilter") && line.contains(outcome),
            "{line}"
        );
    }
    let out = faultlab(&["show", &files[1]]);
    assert_eq!(out.status.code(), Some(4), "only skips is exit 4");
}

#[test]
fn show_as_ktap_is_valid_ktap() {
    let d = Scratch::new("ktap");
    let files = write_results(&d);
    let mut args = vec!["show", "--format", "ktap"];
    args.extend(files.iter().map(|s| s.as_str()));
    let out = faultlab(&args);
    let ktap = text(&out.stdout);
    let tests = support_reports::check_faultlab_ktap(&ktap);
    assert_eq!(tests.len(), 3);
    let bridge = &tests[0];
    assert_eq!(bridge.name, "bridge-netfilter");
    assert!(!bridge.ok, "a failed cell fails the scenario");
    let by_name = |n: &str| bridge.subtests.iter().find(|t| t.name == n).unwrap();
    assert!(by_name("call-iptables-on").ok);
    assert!(!by_name("call-iptables-off").ok);
    let skip = by_name("no-bridge");
    assert!(skip.ok);
    assert_eq!(skip.directive.as_deref(), Some("SKIP"));
    assert!(skip.diagnostic.contains("/proc/sys/net/bridge is missing"));
    let race = by_name("race");
    assert!(race.ok, "a race that did not fire is XFAIL, not a failure");
    assert_eq!(race.directive.as_deref(), Some("XFAIL"));
    assert!(
        race.diagnostic.starts_with("trigger not proven"),
        "{race:?}"
    );
    assert!(ktap.contains("  # note: no drop evidence"), "{ktap}");
    assert_eq!(tests[1].directive.as_deref(), Some("SKIP"));
    assert!(tests[1].ok);
    assert!(tests[2].ok && tests[2].subtests.is_empty());
    assert!(
        ktap.ends_with("# Totals: pass:2 fail:1 xfail:1 xpass:0 skip:6 error:0\n"),
        "{ktap}"
    );
}

#[test]
fn show_as_junit_is_valid_junit() {
    let d = Scratch::new("junit");
    let files = write_results(&d);
    let mut args = vec!["show", "--format", "junit"];
    args.extend(files.iter().map(|s| s.as_str()));
    let out = faultlab(&args);
    let xml = text(&out.stdout);
    let suites = support_reports::check_junit(&xml);
    assert_eq!(suites.len(), 3);
    assert_eq!(suites[0].0, "bridge-netfilter");
    let outcomes: Vec<&str> = suites[0].1.iter().map(|(_, o)| *o).collect();
    assert_eq!(outcomes, ["pass", "failure", "skipped", "failure", "pass"]);
    assert!(suites[1].1.iter().all(|(_, o)| *o == "skipped"));
    assert!(suites[2].1.is_empty());
    assert!(xml.contains("<system-out>no drop evidence"), "{xml}");
}

#[test]
fn show_as_json_round_trips() {
    let d = Scratch::new("json");
    let files = write_results(&d);
    let out = faultlab(&["show", "--format", "json", &files[0]]);
    let back: ScenarioResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, results()[0]);
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let d = Scratch::new("pipe");
    let files = write_results(&d);
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultlab"))
        .args(["show", "--format", "junit"])
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// `results()[0]` with every cell but the given ones removed, written to a file.
fn only(d: &Scratch, tag: &str, keep: &[&str]) -> String {
    let mut r = results().remove(0);
    r.cells.retain(|c| keep.contains(&c.name.as_str()));
    let p = d.file(
        &format!("{tag}.json"),
        &serde_json::to_string_pretty(&r).unwrap(),
    );
    p.display().to_string()
}

#[test]
fn exit_codes_follow_kselftest() {
    let d = Scratch::new("codes");
    let table: &[(&[&str], i32)] = &[
        (&["call-iptables-on"], 0),
        (&["call-iptables-on", "no-bridge"], 0),
        (&["no-bridge"], 4),
        // KSFT_XFAIL: the race did not fire.
        (&["race"], 2),
        (&["call-iptables-on", "race", "no-bridge"], 2),
        (&["race", "call-iptables-off"], 1),
    ];
    for (i, (cells, code)) in table.iter().enumerate() {
        let f = only(&d, &format!("c{i}"), cells);
        let out = faultlab(&["show", "--format", "ktap", &f]);
        assert_eq!(out.status.code(), Some(*code), "{cells:?}");
        support_reports::check_faultlab_ktap(&text(&out.stdout));
    }
}

#[test]
fn a_race_that_did_not_fire_reads_xfail_and_exits_2() {
    let d = Scratch::new("xfail");
    let f = only(&d, "race", &["race"]);
    for format in ["ktap", "kselftest"] {
        let out = faultlab(&["show", "--format", format, &f]);
        let ktap = text(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{ktap}");
        assert!(
            ktap.contains(
                "ok 1 race # XFAIL trigger not proven: conntrack.r.clashres > 0 time=1234ms\n"
            ),
            "{ktap}"
        );
    }
}

#[test]
fn kselftest_format_is_one_program_s_tap() {
    let d = Scratch::new("ksft");
    let files = write_results(&d);
    let out = faultlab(&["show", "--format", "kselftest", &files[0]]);
    let tap = text(&out.stdout);
    let tests = support_reports::check_kselftest_tap(&tap);
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "call-iptables-on",
            "call-iptables-off",
            "no-bridge",
            "race",
            "noted"
        ]
    );
    assert!(tests.iter().all(|t| t.diagnostic.ends_with("ms")), "{tap}");
    // Several scenarios: SCENARIO__CELL, still only [A-Za-z0-9_-].
    let out = faultlab(&["show", "--format", "kselftest", &files[0], &files[1]]);
    let tests = support_reports::check_kselftest_tap(&text(&out.stdout));
    assert_eq!(tests[5].name, "all-skipped__call-iptables-on");
}

#[test]
fn usage_errors_are_64_and_the_help_lists_the_codes() {
    let out = faultlab(&["run", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", text(&out.stderr));
    let out = faultlab(&["run", "--bad-threshold", "2"]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_USAGE),
        "--bad-threshold needs --bisect"
    );
    let out = faultlab(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for words in ["2 any inconclusive", "64 usage", "125 cannot tell", "124"] {
        assert!(help.contains(words), "--help lacks {words:?}:\n{help}");
    }
    assert!(
        help.contains("kselftest-export") && help.contains("serve"),
        "{help}"
    );
}

#[test]
fn a_usage_error_under_bisect_aborts_the_bisection() {
    // git bisect run reads 1..=127 (but 125) as "bad": a broken command line must
    // not mark every commit bad.
    let out = faultlab(&["run", "no-such-scenario", "--no-results", "--bisect"]);
    assert_eq!(out.status.code(), Some(128), "{}", text(&out.stderr));
    let out = faultlab(&["run", "--bisect", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(128), "{}", text(&out.stderr));
}

#[test]
fn kselftest_export_writes_a_target() {
    let d = Scratch::new("export");
    let dir = d.0.join("target");
    let fake_binary = d.file("fake-faultlab", "#!/bin/sh\necho fake\n");
    let out = faultlab(&[
        "kselftest-export",
        dir.to_str().unwrap(),
        "bridge-netfilter",
        "scenarios/selftests/xt_string.toml",
        "--binary",
        fake_binary.to_str().unwrap(),
        "--timeout",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let make = read("Makefile");
    assert!(
        make.contains("TEST_PROGS := bridge-netfilter.sh \\\n\tselftest-xt-string.sh\n"),
        "{make}"
    );
    assert!(make.contains("include ../lib.mk"), "{make}");
    assert_eq!(read("settings"), "timeout=300\n");
    assert_eq!(read("config"), std::fs::read_to_string("config").unwrap());
    assert_eq!(read("faultlab"), "#!/bin/sh\necho fake\n");
    assert_eq!(
        read("scenarios/selftests/xt_string.toml"),
        std::fs::read_to_string("scenarios/selftests/xt_string.toml").unwrap()
    );
    assert!(dir.join("scenarios/topologies/docker.toml").is_file());
    use std::os::unix::fs::PermissionsExt;
    for exe in ["bridge-netfilter.sh", "selftest-xt-string.sh", "faultlab"] {
        let mode = std::fs::metadata(dir.join(exe))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{exe} is not executable");
    }
    // The program runs the copied binary on the copied scenario.
    let run = Command::new("sh")
        .arg(dir.join("selftest-xt-string.sh"))
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(text(&run.stdout), "fake\n");
    // Never merged into an old export.
    let again = faultlab(&[
        "kselftest-export",
        dir.to_str().unwrap(),
        "bridge-netfilter",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("is not empty"),
        "{}",
        text(&again.stderr)
    );
    // A broken scenario file is a usage error, and nothing is written.
    let bad = d.file("bad.toml", "name = \"x\"\nbogus = 1\n");
    let dir2 = d.0.join("t2");
    let out = faultlab(&[
        "kselftest-export",
        dir2.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE));
    assert!(!dir2.exists());
}
