//! `results/<kernel>/summary.md`: one table per scenario, and how to reproduce it.

use super::evidence::{evidence, label, Totals};
use crate::verdict::ScenarioResult;

/// Inline code survives `<`, `*` and `_`; only `|` (table syntax) and backticks need care.
fn code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

fn text(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

pub fn markdown_summary(results: &[ScenarioResult], kernel_release: &str) -> String {
    let mut out = format!("# faultlab results on Linux {kernel_release}\n\n");
    out.push_str(&format!("{}.\n", Totals::of_results(results).line()));
    for r in results {
        out.push_str(&format!("\n## {}\n\n", text(&r.scenario)));
        if !r.about.is_empty() {
            out.push_str(&format!("{}\n\n", text(&r.about)));
        }
        out.push_str("| cell | outcome | evidence |\n|---|---|---|\n");
        for c in &r.cells {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                code(&c.name),
                label(c.outcome),
                code(&evidence(c))
            ));
        }
        out.push_str(&format!(
            "\n{}. Reproduce:\n\n```sh\nfaultlab run {}\n```\n",
            Totals::of(&r.cells).line(),
            r.file
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::results;

    #[test]
    fn summary() {
        insta::assert_snapshot!(markdown_summary(&results(), "6.18.44-fc-v669"));
    }

    #[test]
    fn escapes_table_syntax() {
        assert_eq!(code("a | b `c`"), "`a \\| b 'c'`");
        assert_eq!(text("x|y\nz"), "x\\|y z");
    }
}
