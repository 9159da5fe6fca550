//! The terminal verdict table.

use super::evidence::{drop_site, duration, evidence, label, top_drops, Totals};
use crate::verdict::{Outcome, ScenarioResult};

const EVIDENCE_WIDTH: usize = 100;
const HEADERS: [&str; 5] = ["SCENARIO", "CELL", "OUTCOME", "TIME", "EVIDENCE"];

/// ASCII only, one line, at most `max` characters.
fn ascii_clip(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.len() <= max {
        s
    } else {
        format!("{}...", &s[..max - 3])
    }
}

fn colored(o: Outcome, padded: &str, color: bool) -> String {
    if !color {
        return padded.to_owned();
    }
    let code = match o {
        Outcome::Pass => "32",
        Outcome::Fail => "31",
        Outcome::Inconclusive => "33",
        Outcome::Skip => "36",
    };
    // Color only the word, so trailing padding stays plain.
    let word = padded.trim_end();
    format!("\x1b[{code}m{word}\x1b[0m{}", &padded[word.len()..])
}

/// One row per cell, then the totals line. Failing and inconclusive cells, and
/// cells whose verdict reads drop reasons (dropping cells), are followed by their
/// top drop reasons.
pub fn table(results: &[ScenarioResult], color: bool) -> String {
    let rows: Vec<(Outcome, [String; 5], Vec<String>)> = results
        .iter()
        .flat_map(|r| r.cells.iter().map(move |c| (r, c)))
        .map(|(r, c)| {
            let reads_drops = c
                .checks
                .iter()
                .chain(&c.trigger)
                .any(|k| k.expr.contains("drops."));
            let show = matches!(c.outcome, Outcome::Fail | Outcome::Inconclusive) || reads_drops;
            let drops = match show {
                true => top_drops(c, 5)
                    .into_iter()
                    .map(|d| {
                        format!(
                            "{:>8}  {}",
                            d.count,
                            ascii_clip(&drop_site(d), EVIDENCE_WIDTH)
                        )
                    })
                    .collect(),
                false => Vec::new(),
            };
            let cols = [
                ascii_clip(&r.scenario, 60),
                ascii_clip(&c.name, 60),
                label(c.outcome).to_owned(),
                duration(c.duration_ms),
                ascii_clip(&evidence(c), EVIDENCE_WIDTH),
            ];
            (c.outcome, cols, drops)
        })
        .collect();

    let mut width = HEADERS.map(str::len);
    for (_, cols, _) in &rows {
        for (w, c) in width.iter_mut().zip(cols) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: [&str; 5], outcome: Option<Outcome>| {
        let mut parts = Vec::new();
        for (i, (c, w)) in cols.iter().zip(width).enumerate() {
            let cell = match i {
                3 => format!("{c:>w$}"),
                4 => c.to_string(),
                _ => format!("{c:<w$}"),
            };
            parts.push(match (i, outcome) {
                (2, Some(o)) => colored(o, &cell, color),
                _ => cell,
            });
        }
        parts.join("  ").trim_end().to_owned()
    };

    let mut out = String::new();
    out.push_str(&line(HEADERS, None));
    out.push('\n');
    for (outcome, cols, drops) in &rows {
        out.push_str(&line(cols.each_ref().map(String::as_str), Some(*outcome)));
        out.push('\n');
        if !drops.is_empty() {
            out.push_str("    drop reasons (top 5):\n");
            for d in drops {
                out.push_str(&format!("    {d}\n"));
            }
        }
    }
    out.push('\n');
    out.push_str(&Totals::of_results(results).line());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::results;

    #[test]
    fn verdict_table() {
        insta::assert_snapshot!(table(&results(), false));
    }

    #[test]
    fn a_passing_cell_that_reads_drops_shows_them() {
        let mut rs = results();
        let cell = rs[0]
            .cells
            .iter_mut()
            .find(|c| c.outcome == Outcome::Pass)
            .unwrap();
        cell.drops = vec![crate::verdict::DropStat {
            reason: "NETFILTER_DROP".into(),
            location: "nft_do_chain".into(),
            node: Some("sw".into()),
            count: 20,
        }];
        assert!(!table(&rs, false).contains("NETFILTER_DROP@nft_do_chain (sw)"));
        rs[0].cells[0].checks.push(crate::verdict::Check {
            expr: "drops.NETFILTER_DROP >= 20".into(),
            ok: true,
            detail: "drops.NETFILTER_DROP=20".into(),
        });
        assert!(table(&rs, false).contains("NETFILTER_DROP@nft_do_chain (sw)"));
    }

    #[test]
    fn color_wraps_only_the_outcome_word() {
        let t = table(&results(), true);
        assert!(t.contains("\x1b[32mPASS\x1b[0m"));
        assert!(t.contains("\x1b[31mFAIL\x1b[0m"));
        assert!(t.contains("\x1b[33mINCONCLUSIVE\x1b[0m"));
        assert!(t.contains("\x1b[36mSKIP\x1b[0m"));
        let plain = t
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[33m", "");
        let plain = plain.replace("\x1b[36m", "").replace("\x1b[0m", "");
        assert_eq!(plain, table(&results(), false));
    }

    #[test]
    fn clips_to_ascii() {
        assert_eq!(ascii_clip("caf\u{e9}\tx", 10), "caf??x");
        assert_eq!(ascii_clip(&"x".repeat(120), 10), "xxxxxxx...");
    }

    #[test]
    fn empty() {
        assert_eq!(
            table(&[], false),
            "SCENARIO  CELL  OUTCOME  TIME  EVIDENCE\n\n0 passed, 0 failed, 0 inconclusive, 0 skipped\n"
        );
    }
}
