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
    out.push_str(&drop_methods(results));
    out.push_str(&time_spent(results));
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

/// How the cells' drops were attributed to nodes (`drops_method.<method>` observations,
/// see evidence/drops.rs): `Drop attribution: bpf (12 cells).`; empty without any.
fn drop_methods(results: &[ScenarioResult]) -> String {
    let mut cells: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in results.iter().flat_map(|r| &r.cells) {
        for (name, v) in &c.observations {
            if let Some(method) = name.strip_prefix("drops_method.") {
                if *v > 0.0 {
                    *cells.entry(method).or_insert(0) += 1;
                }
            }
        }
    }
    if cells.is_empty() {
        return String::new();
    }
    let list: Vec<String> = cells
        .iter()
        .map(|(m, n)| format!("{m} ({n} cell{})", if *n == 1 { "" } else { "s" }))
        .collect();
    format!("Drop attribution: {}.\n", list.join(", "))
}

/// Wall time per scenario and per phase (build, observe, evidence, traffic,
/// teardown) summed over every cell: where the time of a catalogue run goes.
fn time_spent(results: &[ScenarioResult]) -> String {
    let total_ms: u64 = results.iter().map(|r| r.duration_ms).sum();
    let mut phases: std::collections::BTreeMap<&str, u64> = Default::default();
    for c in results.iter().flat_map(|r| &r.cells) {
        for (p, ms) in &c.phases_ms {
            *phases.entry(p.as_str()).or_insert(0) += ms;
        }
    }
    let mut out = format!(
        "\n## Where the time goes\n\nWall time of the scenarios: {:.1} s.\n\n| scenario | cells | seconds |\n|---|---|---|\n",
        total_ms as f64 / 1000.0
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {:.1} |\n",
            code(&r.scenario),
            r.cells.len(),
            r.duration_ms as f64 / 1000.0
        ));
    }
    if !phases.is_empty() {
        out.push_str("\n| phase | seconds | share |\n|---|---|---|\n");
        let sum: u64 = phases.values().sum();
        let mut by_time: Vec<_> = phases.into_iter().collect();
        by_time.sort_by_key(|p| std::cmp::Reverse(p.1));
        for (p, ms) in by_time {
            out.push_str(&format!(
                "| {p} | {:.1} | {:.0}% |\n",
                ms as f64 / 1000.0,
                100.0 * ms as f64 / sum.max(1) as f64
            ));
        }
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
    fn names_the_drop_attribution_methods() {
        let mut rs = results();
        assert_eq!(drop_methods(&rs), "");
        let cells: Vec<_> = rs.iter_mut().flat_map(|r| r.cells.iter_mut()).collect();
        assert!(cells.len() >= 3);
        for (i, c) in cells.into_iter().enumerate().take(3) {
            let m = if i == 0 { "tracefs" } else { "bpf" };
            c.observations.insert(format!("drops_method.{m}"), 1.0);
        }
        assert_eq!(
            drop_methods(&rs),
            "Drop attribution: bpf (2 cells), tracefs (1 cell).\n"
        );
        assert!(markdown_summary(&rs, "k").contains("Drop attribution: bpf (2 cells)"));
    }

    #[test]
    fn escapes_table_syntax() {
        assert_eq!(code("a | b `c`"), "`a \\| b 'c'`");
        assert_eq!(text("x|y\nz"), "x\\|y z");
    }
}
