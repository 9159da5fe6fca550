//! KTAP version 1, as kselftest emits and consumes it. `ktap` nests one subtest block
//! per scenario; `kselftest` is the output of one kselftest program (kselftest.h's
//! `TAP version 13` header, one test per cell), which runner.sh indents and NIPA
//! parses. Conventions of the kernel's selftests (tools/testing/selftests/kselftest.h,
//! net/netfilter/lib.sh): an inconclusive cell, whose race did not fire, is
//! `ok N name # XFAIL reason`; every test line ends with `time=Nms`, the form NIPA
//! reads (contest/remote/lib/results.py, `time=(\d+)ms` after the `#`).

use super::evidence::{drop_site, failed_checks, one_line, top_drops, Totals};
use crate::verdict::{CellResult, Outcome, ScenarioResult};

/// A test name: only `[A-Za-z0-9_-]`, everything else `_` (LAVA's and NIPA's parsers
/// rewrite or split on anything else).
pub fn test_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "_".into()
    } else {
        name
    }
}

/// Directive text: one line, and no `#` (it would start a directive).
fn clean(s: &str) -> String {
    one_line(s).replace('#', "_")
}

/// Diagnostic data after `# ` that must not be read as a directive it is not
/// (a failure whose reason happens to start with "skip" is still a failure).
fn diagnostic(s: &str) -> String {
    let text = clean(s);
    let first = text.split_whitespace().next().unwrap_or("");
    if ["SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR"]
        .iter()
        .any(|d| first.eq_ignore_ascii_case(d) || first.to_ascii_uppercase().starts_with(d))
    {
        format!("- {text}")
    } else {
        text
    }
}

/// `text time=Nms`, or `time=Nms` alone.
fn timed(text: &str, ms: u64) -> String {
    let text = text.trim();
    if text.is_empty() {
        format!("time={ms}ms")
    } else {
        format!("{text} time={ms}ms")
    }
}

/// The diagnostic lines and the result line of one cell, each prefixed by `indent`.
fn cell_lines(out: &mut String, indent: &str, n: usize, name: &str, c: &CellResult) {
    let reason = c.reason.as_deref().map(clean).unwrap_or_default();
    if c.outcome == Outcome::Pass && !reason.is_empty() {
        // A pass with a note (e.g. no drop evidence): a diagnostic line.
        out.push_str(&format!("{indent}# note: {}\n", one_line(&reason)));
    }
    if matches!(c.outcome, Outcome::Fail | Outcome::Inconclusive) {
        for check in failed_checks(c) {
            out.push_str(&format!(
                "{indent}# false: {} ({})\n",
                one_line(&check.expr),
                one_line(&check.detail)
            ));
        }
        for d in top_drops(c, 5) {
            out.push_str(&format!(
                "{indent}# drop {} {}\n",
                d.count,
                one_line(&drop_site(d))
            ));
        }
    }
    let ms = c.duration_ms;
    let line = match c.outcome {
        Outcome::Pass => format!("ok {n} {name} # {}", timed("", ms)),
        Outcome::Skip => format!("ok {n} {name} # SKIP {}", timed(&reason, ms)),
        Outcome::Fail => format!(
            "not ok {n} {name} # {}",
            timed(&c.reason.as_deref().map(diagnostic).unwrap_or_default(), ms)
        ),
        Outcome::Inconclusive => format!("ok {n} {name} # XFAIL {}", timed(&reason, ms)),
    };
    out.push_str(indent);
    out.push_str(&line);
    out.push('\n');
}

/// kselftest's summary line (kselftest.h `ksft_print_cnts`).
fn totals(t: &Totals) -> String {
    format!(
        "# Totals: pass:{} fail:{} xfail:{} xpass:0 skip:{} error:0\n",
        t.pass, t.fail, t.inconclusive, t.skip
    )
}

pub fn ktap(results: &[ScenarioResult]) -> String {
    let mut out = format!("KTAP version 1\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let name = test_name(&r.scenario);
        out.push_str(&format!("  KTAP version 1\n  # Subtest: {name}\n"));
        out.push_str(&format!("  1..{}\n", r.cells.len()));
        for (j, c) in r.cells.iter().enumerate() {
            cell_lines(&mut out, "  ", j + 1, &test_name(&c.name), c);
        }
        let t = Totals::of(&r.cells);
        let n = i + 1;
        let ms = r.duration_ms;
        out.push_str(&if t.fail > 0 {
            format!("not ok {n} {name} # time={ms}ms\n")
        } else if t.pass + t.inconclusive == 0 && t.skip > 0 {
            format!("ok {n} {name} # SKIP all cells skipped time={ms}ms\n")
        } else {
            format!("ok {n} {name} # time={ms}ms\n")
        });
    }
    out.push_str(&totals(&Totals::of_results(results)));
    out
}

/// One kselftest program's output: every cell a top-level test (named
/// `SCENARIO__CELL` when there are several scenarios).
pub fn kselftest(results: &[ScenarioResult]) -> String {
    let cells: Vec<(String, &CellResult)> = results
        .iter()
        .flat_map(|r| {
            r.cells.iter().map(move |c| {
                let name = if results.len() == 1 {
                    test_name(&c.name)
                } else {
                    format!("{}__{}", test_name(&r.scenario), test_name(&c.name))
                };
                (name, c)
            })
        })
        .collect();
    let mut out = format!("TAP version 13\n1..{}\n", cells.len());
    for (i, (name, c)) in cells.iter().enumerate() {
        cell_lines(&mut out, "", i + 1, name, c);
    }
    out.push_str(&totals(&Totals::of_results(results)));
    out
}

/// How a `faultlab vm` guest ended without a verdict of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The command did not exit within `--timeout` (runner.sh's `# TIMEOUT`).
    Timeout,
    /// The guest never ran or never reported (QEMU, boot, share): `# ERROR`.
    Error,
}

/// A whole KTAP document standing for a run that produced none (the guest timed
/// out or broke), so a CI parser sees a failed test instead of nothing.
pub fn aborted(name: &str, how: Aborted, reason: &str, ms: u64) -> String {
    let directive = match how {
        Aborted::Timeout => "TIMEOUT",
        Aborted::Error => "ERROR",
    };
    format!(
        "KTAP version 1\n1..1\nnot ok 1 {} # {directive} {}\n# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:1\n",
        test_name(name),
        timed(&clean(reason), ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::results;

    #[test]
    fn ktap_output() {
        insta::assert_snapshot!(ktap(&results()));
    }

    #[test]
    fn kselftest_output() {
        insta::assert_snapshot!(kselftest(&results()[..1]));
        // Several scenarios: cells are named SCENARIO__CELL.
        let both = kselftest(&results());
        assert!(
            both.contains("\nok 4 conntrack-udp-clash__nft-notrack # SKIP "),
            "{both}"
        );
    }

    #[test]
    fn test_names_keep_only_the_safe_characters() {
        assert_eq!(test_name("call-iptables_on-2"), "call-iptables_on-2");
        assert_eq!(test_name("a.b c/d#e"), "a_b_c_d_e");
        assert_eq!(test_name("größe"), "gr__e");
        assert_eq!(test_name(""), "_");
        let mut r = results();
        r[0].scenario = "bridge.forward drop".into();
        r[0].cells[0].name = "on (v4)".into();
        let out = ktap(&r);
        assert!(out.contains("  # Subtest: bridge_forward_drop\n"), "{out}");
        assert!(out.contains("  ok 1 on__v4_ # time="), "{out}");
        assert!(
            out.contains("\nnot ok 1 bridge_forward_drop # time="),
            "{out}"
        );
    }

    #[test]
    fn inconclusive_is_xfail_and_not_a_failure() {
        let mut r = results();
        r.remove(0);
        let out = ktap(&r);
        assert!(
            out.contains("  ok 1 udp-clash # XFAIL trigger not proven: "),
            "{out}"
        );
        // The scenario is not failed by a race that did not fire.
        assert!(out.contains("\nok 1 conntrack-udp-clash # time="), "{out}");
        assert!(out.ends_with("# Totals: pass:0 fail:0 xfail:1 xpass:0 skip:1 error:0\n"));
    }

    #[test]
    fn every_test_line_has_its_time() {
        let r = results();
        let out = ktap(&r);
        for l in out.lines() {
            let t = l.trim_start();
            if t.starts_with("ok ") || t.starts_with("not ok ") {
                assert!(regex_lite_time(t), "no time=Nms at the end of {t:?}");
            }
        }
        assert!(out.contains(&format!(
            "ok 1 call-iptables-on # time={}ms\n",
            r[0].cells[0].duration_ms
        )));
    }

    /// `... time=<digits>ms` at the end of the line, as NIPA's `time=(\d+)ms` finds it.
    fn regex_lite_time(line: &str) -> bool {
        line.rsplit_once(" time=")
            .and_then(|(_, t)| t.strip_suffix("ms"))
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    }

    #[test]
    fn all_skipped_scenario_is_skip() {
        let mut r = results();
        r.truncate(1);
        for c in &mut r[0].cells {
            c.outcome = Outcome::Skip;
            c.reason = Some("not root # really".into());
        }
        let out = ktap(&r);
        assert!(out.contains("  ok 1 call-iptables-on # SKIP not root _ really time="));
        assert!(out.contains("\nok 1 bridge-forward-drop # SKIP all cells skipped time="));
    }

    #[test]
    fn a_failure_reason_is_never_read_as_a_directive() {
        let mut r = results();
        r.truncate(1);
        r[0].cells.truncate(1);
        let c = &mut r[0].cells[0];
        c.outcome = Outcome::Fail;
        c.checks.clear();
        c.reason = Some("skipped packets: 3".into());
        let out = ktap(&r);
        assert!(
            out.contains("  not ok 1 call-iptables-on # - skipped packets: 3 time="),
            "{out}"
        );
    }

    #[test]
    fn a_pass_with_a_note_gets_a_diagnostic_line() {
        let mut r = results();
        r.truncate(1);
        r[0].cells.truncate(1);
        let c = &mut r[0].cells[0];
        c.outcome = Outcome::Pass;
        c.reason = Some("no drop evidence (tracefs disabled)".into());
        let out = ktap(&r);
        assert!(
            out.contains(
                "  # note: no drop evidence (tracefs disabled)\n  ok 1 call-iptables-on # time="
            ),
            "{out}"
        );
    }

    #[test]
    fn an_aborted_guest_is_one_failed_test() {
        let t = aborted(
            "vm debian:cloud/trixie",
            Aborted::Timeout,
            "after 1800 s",
            1_800_000,
        );
        assert_eq!(
            t,
            "KTAP version 1\n1..1\nnot ok 1 vm_debian_cloud_trixie # TIMEOUT after 1800 s time=1800000ms\n# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:1\n"
        );
        let e = aborted("vm x", Aborted::Error, "no status # from the guest", 5);
        assert!(
            e.contains("not ok 1 vm_x # ERROR no status _ from the guest time=5ms\n"),
            "{e}"
        );
    }
}
