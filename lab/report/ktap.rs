//! KTAP version 1, as kselftest emits and consumes it: one subtest block per scenario.

use super::evidence::{drop_site, failed_checks, one_line, top_drops, Totals};
use crate::verdict::{Outcome, ScenarioResult};

/// A test name or directive text: one line, and no `#` (it would start a directive).
fn clean(s: &str) -> String {
    one_line(s).replace('#', "_")
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
                Outcome::Fail => format!("not ok {n} {name} # {reason}"),
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
}
