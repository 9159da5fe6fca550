//! JUnit XML: a testsuite per scenario, a testcase per cell. Names are KTAP's
//! (`[A-Za-z0-9_-]` only), so a fleet's dashboards match the two formats up.

use super::evidence::{drop_site, evidence, failed_checks, top_drops, Totals};
use super::ktap::test_name;
use crate::verdict::{CellResult, Outcome, ScenarioResult};

/// Escapes for attribute values and text; drops characters XML 1.0 cannot carry.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Body of a failure element: the false checks (or the reason) and the drop reasons.
fn failure_text(c: &CellResult) -> String {
    let mut lines: Vec<String> = failed_checks(c)
        .iter()
        .map(|k| format!("false: {} ({})", k.expr, k.detail))
        .collect();
    if lines.is_empty() {
        lines.extend(c.reason.clone());
    }
    for d in top_drops(c, 5) {
        lines.push(format!("drop {} {}", d.count, drop_site(d)));
    }
    lines.join("\n")
}

fn testcase(out: &mut String, scenario: &str, c: &CellResult) {
    let open = format!(
        "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
        test_name(&c.name),
        test_name(scenario),
        secs(c.duration_ms)
    );
    match c.outcome {
        // A pass with a note (e.g. no drop evidence) keeps it as output.
        Outcome::Pass => match c.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(note) => out.push_str(&format!(
                "{open}>\n      <system-out>{}</system-out>\n    </testcase>\n",
                esc(note)
            )),
            None => out.push_str(&format!("{open}/>\n")),
        },
        Outcome::Skip => out.push_str(&format!(
            "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>\n",
            esc(&evidence(c))
        )),
        Outcome::Fail | Outcome::Inconclusive => out.push_str(&format!(
            "{open}>\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
            esc(&evidence(c)),
            c.outcome.as_str(),
            esc(&failure_text(c)).replace("&#10;", "\n")
        )),
    }
}

pub fn junit(results: &[ScenarioResult]) -> String {
    let t = Totals::of_results(results);
    let total_ms: u64 = results.iter().map(|r| r.duration_ms).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"faultlab\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">\n",
        t.pass + t.fail + t.inconclusive + t.skip,
        t.fail + t.inconclusive,
        t.skip,
        secs(total_ms)
    ));
    for r in results {
        let s = Totals::of(&r.cells);
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">\n",
            test_name(&r.scenario),
            r.cells.len(),
            s.fail + s.inconclusive,
            s.skip,
            secs(r.duration_ms)
        ));
        out.push_str(&format!(
            "    <properties>\n      <property name=\"file\" value=\"{}\"/>\n      <property name=\"kernel_release\" value=\"{}\"/>\n    </properties>\n",
            esc(&r.file),
            esc(&r.kernel_release)
        ));
        for c in &r.cells {
            testcase(&mut out, &r.scenario, c);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::results;

    #[test]
    fn junit_output() {
        insta::assert_snapshot!(junit(&results()));
    }

    #[test]
    fn names_keep_only_the_safe_characters() {
        let mut r = results();
        r[0].scenario = "bridge <forward>".into();
        r[0].cells[0].name = "on & off".into();
        let out = junit(&r);
        assert!(
            out.contains("<testsuite name=\"bridge__forward_\""),
            "{out}"
        );
        assert!(
            out.contains("<testcase name=\"on___off\" classname=\"bridge__forward_\""),
            "{out}"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
        assert_eq!(esc("x\u{1}y\nz"), "x?y&#10;z");
    }
}
