//! What every format says about a cell: its one-line evidence, counts and durations.

use crate::verdict::{CellResult, Check, DropStat, Outcome, ScenarioResult};

pub fn label(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Inconclusive => "INCONCLUSIVE",
        Outcome::Skip => "SKIP",
    }
}

fn with_detail(c: &Check) -> String {
    if c.detail.is_empty() {
        c.expr.clone()
    } else {
        format!("{} ({})", c.expr, c.detail)
    }
}

/// The checks that made a cell fail (every false expectation) or inconclusive (the
/// trigger).
pub fn failed_checks(cell: &CellResult) -> Vec<&Check> {
    match cell.outcome {
        Outcome::Inconclusive => cell.trigger.iter().filter(|t| !t.ok).collect(),
        Outcome::Fail => cell.checks.iter().filter(|c| !c.ok).collect(),
        _ => Vec::new(),
    }
}

/// One line: why a cell failed or was skipped, or what proved it passed.
pub fn evidence(cell: &CellResult) -> String {
    let text = match cell.outcome {
        Outcome::Skip => cell.reason.clone().unwrap_or_else(|| "skipped".to_owned()),
        Outcome::Fail | Outcome::Inconclusive => match failed_checks(cell)[..] {
            [] => cell.reason.clone().unwrap_or_default(),
            [c] => with_detail(c),
            [c, ref more @ ..] => format!("{} (+{} more)", with_detail(c), more.len()),
        },
        Outcome::Pass => cell
            .trigger
            .as_ref()
            .or(cell.checks.first())
            .map(|c| c.detail.clone())
            .unwrap_or_default(),
    };
    let reps = repetitions(cell);
    let text = if reps.is_empty() {
        text
    } else {
        format!("[{reps}] {text}")
    };
    one_line(&text)
}

/// `7 pass, 3 fail` over the repetitions of a `--repeat` run; empty otherwise.
pub fn repetitions(cell: &CellResult) -> String {
    if cell.repetitions.len() < 2 {
        return String::new();
    }
    [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Inconclusive,
        Outcome::Skip,
    ]
    .iter()
    .filter_map(|o| {
        let n = cell.repetitions.iter().filter(|r| *r == o).count();
        (n > 0).then(|| format!("{n} {}", o.as_str()))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `n` largest drop counts, largest first.
pub fn top_drops(cell: &CellResult, n: usize) -> Vec<&DropStat> {
    let mut drops: Vec<&DropStat> = cell.drops.iter().collect();
    drops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
    drops.truncate(n);
    drops
}

/// `NETFILTER_DROP@nf_hook_slow+0x9f (sw)`
pub fn drop_site(d: &DropStat) -> String {
    match &d.node {
        Some(node) => format!("{}@{} ({node})", d.reason, d.location),
        None => format!("{}@{}", d.reason, d.location),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub pass: usize,
    pub fail: usize,
    pub inconclusive: usize,
    pub skip: usize,
}

impl Totals {
    pub fn of<'a>(cells: impl IntoIterator<Item = &'a CellResult>) -> Totals {
        let mut t = Totals::default();
        for c in cells {
            match c.outcome {
                Outcome::Pass => t.pass += 1,
                Outcome::Fail => t.fail += 1,
                Outcome::Inconclusive => t.inconclusive += 1,
                Outcome::Skip => t.skip += 1,
            }
        }
        t
    }

    pub fn of_results(results: &[ScenarioResult]) -> Totals {
        Totals::of(results.iter().flat_map(|r| &r.cells))
    }

    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} inconclusive, {} skipped",
            self.pass, self.fail, self.inconclusive, self.skip
        )
    }
}

/// `850ms`, `1.25s`, `2m05s`
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.2}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::results;

    #[test]
    fn evidence_per_outcome() {
        let r = results();
        let cells = &r[0].cells;
        assert_eq!(
            evidence(&cells[0]),
            "iptables.sw.filter.FORWARD.policy.packets=20"
        );
        assert_eq!(
            evidence(&cells[1]),
            "received == sent (received=0 sent=20) (+2 more)"
        );
        let cells = &r[1].cells;
        assert_eq!(
            evidence(&cells[0]),
            "[3 pass, 2 inconclusive] sum(conntrack.*.clashres) > 0 (sum(conntrack.*.clashres)=0)"
        );
        assert_eq!(
            evidence(&cells[1]),
            "nft not installed (apt install nftables)"
        );
    }

    #[test]
    fn durations_and_totals() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(1250), "1.25s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(
            Totals::of_results(&results()).line(),
            "1 passed, 1 failed, 1 inconclusive, 1 skipped"
        );
    }
}
