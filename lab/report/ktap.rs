//! KTAP version 1, as kselftest emits and consumes it: one subtest block per scenario.

use super::evidence::{drop_site, failed_checks, one_line, top_drops, Totals};
use crate::verdict::{Outcome, ScenarioResult};

/// A test name or directive text: one line, and no `#` (it would start a directive).
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

pub fn ktap(results: &[ScenarioResult]) -> String {
    let mut out = format!("KTAP version 1\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        out.push_str(&format!(
            "  KTAP version 1\n  # Subtest: {}\n",
            clean(&r.scenario)
        ));
        out.push_str(&format!("  1..{}\n", r.cells.len()));
        for (j, c) in r.cells.iter().enumerate() {
            let n = j + 1;
            let name = clean(&c.name);
            let reason = c.reason.as_deref().map(clean).unwrap_or_default();
            if c.outcome == Outcome::Pass && !reason.is_empty() {
                // A pass with a note (e.g. no drop evidence): a diagnostic line.
                out.push_str(&format!("  # note: {}\n", one_line(&reason)));
            }
            if matches!(c.outcome, Outcome::Fail | Outcome::Inconclusive) {
                for check in failed_checks(c) {
                    out.push_str(&format!(
                        "  # false: {} ({})\n",
                        one_line(&check.expr),
                        one_line(&check.detail)
                    ));
                }
                for d in top_drops(c, 5) {
                    out.push_str(&format!(
                        "  # drop {} {}\n",
                        d.count,
                        one_line(&drop_site(d))
                    ));
                }
            }
            let line = match c.outcome {
                Outcome::Pass => format!("ok {n} {name}"),
                Outcome::Skip => format!("ok {n} {name} # SKIP {reason}"),
                Outcome::Fail => format!(
                    "not ok {n} {name} # {}",
                    c.reason.as_deref().map(diagnostic).unwrap_or_default()
                ),
                Outcome::Inconclusive => format!("not ok {n} {name} # inconclusive: {reason}"),
            };
            out.push_str("  ");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let t = Totals::of(&r.cells);
        let name = clean(&r.scenario);
        out.push_str(&if t.fail + t.inconclusive > 0 {
            format!("not ok {} {name}\n", i + 1)
        } else if t.pass == 0 && t.skip > 0 {
            format!("ok {} {name} # SKIP all cells skipped\n", i + 1)
        } else {
            format!("ok {} {name}\n", i + 1)
        });
    }
    // kselftest's summary line; inconclusive cells count as errors.
    let t = Totals::of_results(results);
    out.push_str(&format!(
        "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}\n",
        t.pass, t.fail, t.skip, t.inconclusive
    ));
    out
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
    fn all_skipped_scenario_is_skip() {
        let mut r = results();
        r.truncate(1);
        for c in &mut r[0].cells {
            c.outcome = Outcome::Skip;
            c.reason = Some("not root # really".into());
        }
        let out = ktap(&r);
        assert!(out.contains("  ok 1 call-iptables-on # SKIP not root _ really\n"));
        assert!(out.contains("\nok 1 bridge-forward-drop # SKIP all cells skipped\n"));
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
            out.contains("  not ok 1 call-iptables-on # - skipped packets: 3\n"),
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
                "  # note: no drop evidence (tracefs disabled)\n  ok 1 call-iptables-on\n"
            ),
            "{out}"
        );
    }
}
