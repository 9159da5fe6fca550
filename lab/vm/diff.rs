//! `faultlab diff`: which cells changed outcome between two kernels' results, with
//! the evidence side by side; and `--all`, a cross-kernel matrix in markdown.

use crate::report::evidence;
use crate::verdict::{CellResult, Outcome, ScenarioResult};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The results of one kernel: a results/<kernel>/ directory or one JSON file.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: String,
    pub results: Vec<ScenarioResult>,
}

/// Scenario result files of a kernel directory (vm.json and other JSON are not).
fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != super::record::FILE))
        .collect();
    files.sort();
    Ok(files)
}

impl Side {
    pub fn load(path: &Path) -> Result<Side> {
        let results = if path.is_dir() {
            let files = scenario_files(path)?;
            if files.is_empty() {
                bail!("{} holds no scenario results (*.json): run `faultlab run` or `faultlab vm` first", path.display());
            }
            files
                .iter()
                .map(crate::report::read_json)
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![crate::report::read_json(path)?]
        };
        let label = results
            .first()
            .map(|r| r.kernel_release.clone())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Side { label, results })
    }

    fn cells(&self) -> BTreeMap<(String, String), &CellResult> {
        self.results
            .iter()
            .flat_map(|r| {
                r.cells
                    .iter()
                    .map(move |c| ((r.scenario.clone(), c.name.clone()), c))
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub scenario: String,
    pub cell: String,
    pub a: Option<CellResult>,
    pub b: Option<CellResult>,
}

pub struct Comparison {
    pub compared: usize,
    pub changes: Vec<Change>,
}

/// Cells present on both sides with different outcomes, and cells on one side only.
pub fn compare(a: &Side, b: &Side) -> Comparison {
    let (ca, cb) = (a.cells(), b.cells());
    let mut keys: Vec<_> = ca.keys().chain(cb.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut changes = Vec::new();
    for k in &keys {
        let (x, y) = (ca.get(k), cb.get(k));
        if x.map(|c| c.outcome) != y.map(|c| c.outcome) {
            changes.push(Change {
                scenario: k.0.clone(),
                cell: k.1.clone(),
                a: x.map(|c| (*c).clone()),
                b: y.map(|c| (*c).clone()),
            });
        }
    }
    Comparison {
        compared: keys.len(),
        changes,
    }
}

fn outcome(c: Option<&CellResult>) -> &'static str {
    c.map(|c| c.outcome.as_str()).unwrap_or("(absent)")
}

fn clip(s: &str, max: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= max {
        one
    } else {
        format!("{}...", one.chars().take(max - 3).collect::<String>())
    }
}

const DETAIL: usize = 60;

/// Evidence rows for one change: every check that failed on either side, with
/// what each side read; else each side's reason or evidence line.
fn evidence_rows(ch: &Change) -> Vec<[String; 3]> {
    let sides = [ch.a.as_ref(), ch.b.as_ref()];
    let mut exprs: Vec<String> = Vec::new();
    for c in sides.iter().flatten() {
        for k in c.trigger.iter().chain(&c.checks) {
            if !k.ok && !exprs.contains(&k.expr) {
                exprs.push(k.expr.clone());
            }
        }
    }
    let mut rows = Vec::new();
    for e in &exprs {
        let cell = |c: Option<&CellResult>| {
            c.and_then(|c| c.trigger.iter().chain(&c.checks).find(|k| &k.expr == e))
                .map(|k| {
                    format!(
                        "{} {}",
                        if k.ok { "ok" } else { "FAILED" },
                        clip(&k.detail, DETAIL)
                    )
                })
                .unwrap_or_else(|| "-".into())
        };
        rows.push([
            format!("  {}", clip(e, DETAIL)),
            cell(sides[0]),
            cell(sides[1]),
        ]);
    }
    let reason =
        |c: Option<&CellResult>| c.and_then(|c| c.reason.clone()).map(|r| clip(&r, DETAIL));
    if rows.is_empty() && sides.iter().any(|c| reason(*c).is_some()) {
        rows.push([
            "  reason".into(),
            reason(sides[0]).unwrap_or_else(|| "-".into()),
            reason(sides[1]).unwrap_or_else(|| "-".into()),
        ]);
    }
    if rows.is_empty() {
        let ev = |c: Option<&CellResult>| {
            c.map(|c| clip(&evidence(c), DETAIL))
                .unwrap_or_else(|| "-".into())
        };
        rows.push(["  evidence".into(), ev(sides[0]), ev(sides[1])]);
    }
    rows
}

/// The readable table of changed cells (plain ASCII, aligned columns).
pub fn table(a: &Side, b: &Side, cmp: &Comparison) -> String {
    let mut out = String::new();
    if cmp.changes.is_empty() {
        let _ = writeln!(
            out,
            "no outcome changed between {} and {} ({} cells compared)",
            a.label, b.label, cmp.compared
        );
        return out;
    }
    let mut rows: Vec<[String; 3]> = vec![["CELL".into(), a.label.clone(), b.label.clone()]];
    for ch in &cmp.changes {
        rows.push([
            format!("{}::{}", ch.scenario, ch.cell),
            outcome(ch.a.as_ref()).to_uppercase(),
            outcome(ch.b.as_ref()).to_uppercase(),
        ]);
        rows.extend(evidence_rows(ch));
    }
    let mut w = [0; 3];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {}",
            r[0],
            r[1],
            r[2],
            w0 = w[0],
            w1 = w[1]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for ch in &cmp.changes {
        *kinds
            .entry(format!(
                "{} -> {}",
                outcome(ch.a.as_ref()),
                outcome(ch.b.as_ref())
            ))
            .or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(
        out,
        "\n{} of {} cells changed between {} and {}: {}",
        cmp.changes.len(),
        cmp.compared,
        a.label,
        b.label,
        kinds.join(", ")
    );
    out
}

/// Every results/<kernel>/ directory with scenario results, oldest kernel first.
/// Directories not named like a kernel release (e.g. results/bench/) are not kernels.
pub fn load_all(root: &Path) -> Result<Vec<(Side, Option<super::record::VmRecord>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let dir = e?.path();
        let named_like_a_kernel = dir
            .file_name()
            .is_some_and(|n| crate::judge::KernelVersion::parse(&n.to_string_lossy()).is_ok());
        if !dir.is_dir() || !named_like_a_kernel || scenario_files(&dir)?.is_empty() {
            continue;
        }
        let side = Side::load(&dir)?;
        let vm = super::record::read(&dir.join(super::record::FILE)).ok();
        out.push((side, vm));
    }
    out.sort_by(|(a, _), (b, _)| {
        match (
            crate::judge::KernelVersion::parse(&a.label),
            crate::judge::KernelVersion::parse(&b.label),
        ) {
            (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.label.cmp(&b.label)),
            _ => a.label.cmp(&b.label),
        }
    });
    if out.is_empty() {
        bail!(
            "{} has no results/<kernel>/ directories with scenario results",
            root.display()
        );
    }
    Ok(out)
}

/// The versioned image package (not the metapackage) a VM run booted, or its spec.
fn source(v: &super::record::VmRecord) -> String {
    v.packages
        .iter()
        .find(|p| {
            p.strip_prefix("linux-image-")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .or(v.packages.first())
        .cloned()
        .unwrap_or_else(|| v.kernel.clone())
}

/// Rows scenario::cell, a column per kernel; returns the markdown and whether any row differs.
pub fn matrix_markdown(kernels: &[(Side, Option<super::record::VmRecord>)]) -> (String, bool) {
    let maps: Vec<_> = kernels.iter().map(|(s, _)| s.cells()).collect();
    let mut keys: Vec<_> = maps.iter().flat_map(|m| m.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut md = String::from("# Verdicts across kernels\n\n");
    md.push_str(
        "Generated by `faultlab diff --all` from the scenario results in each \
         `results/<kernel-release>/` directory. Rows whose outcome differs between kernels \
         are marked **changed**; `-` means the cell was not run on that kernel. \
         `faultlab diff results/A results/B` shows the evidence of a change.\n\n",
    );
    let mut header = String::from("| scenario::cell |");
    let mut rule = String::from("|---|");
    for (s, _) in kernels {
        let _ = write!(header, " {} |", s.label);
        rule.push_str("---|");
    }
    header.push_str(" |\n");
    rule.push_str("---|\n");
    md.push_str(&header);
    md.push_str(&rule);
    let mut any = false;
    for k in &keys {
        let outs: Vec<Option<Outcome>> = maps.iter().map(|m| m.get(k).map(|c| c.outcome)).collect();
        let present: Vec<Outcome> = outs.iter().flatten().copied().collect();
        let changed = present.windows(2).any(|w| w[0] != w[1]);
        any |= changed;
        let _ = write!(md, "| {}::{} |", k.0, k.1);
        for o in &outs {
            let _ = write!(md, " {} |", o.map(|o| o.as_str()).unwrap_or("-"));
        }
        let _ = writeln!(md, " {} |", if changed { "**changed**" } else { "" });
    }
    if kernels.iter().any(|(_, vm)| vm.is_some()) {
        md.push_str("\n## How each kernel ran\n\n| kernel | source | accel | boot | run |\n|---|---|---|---|---|\n");
        for (s, vm) in kernels {
            let secs = |ms: Option<u64>| {
                ms.map(|m| format!("{:.1} s", m as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into())
            };
            match vm {
                Some(v) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} (slow x{}) | {} | {} |",
                        s.label,
                        source(v),
                        v.accel,
                        v.slow,
                        secs(v.boot_ms),
                        secs(v.run_ms)
                    );
                }
                None => {
                    let _ = writeln!(md, "| {} | host | native | - | - |", s.label);
                }
            }
        }
    }
    (md, any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Check;

    fn check(expr: &str, ok: bool, detail: &str) -> Check {
        Check {
            expr: expr.into(),
            ok,
            detail: detail.into(),
        }
    }

    /// Built through serde so fields added to the model later take their defaults.
    fn cell(name: &str, outcome: Outcome, checks: Vec<Check>, reason: Option<&str>) -> CellResult {
        let trigger = check(
            "link.sw.sw-a.rx_packets >= ping.sent",
            true,
            "link.sw.sw-a.rx_packets = 21, ping.sent = 20",
        );
        serde_json::from_value(serde_json::json!({
            "name": name,
            "outcome": outcome,
            "reason": reason,
            "trigger": trigger,
            "checks": checks,
            "duration_ms": 900,
        }))
        .unwrap()
    }

    fn side(kernel: &str, cells: Vec<CellResult>) -> Side {
        Side {
            label: kernel.into(),
            results: vec![ScenarioResult {
                scenario: "bridge-netfilter".into(),
                about: String::new(),
                file: "scenarios/bridge-netfilter.toml".into(),
                kernel_release: kernel.into(),
                started_at: 0,
                duration_ms: 5000,
                cells,
            }],
        }
    }

    fn fixture() -> (Side, Side) {
        let a = side(
            "6.1.0-37-cloud-amd64",
            vec![
                cell(
                    "call-iptables-on",
                    Outcome::Pass,
                    vec![check("ping.received == 0", true, "ping.received = 0")],
                    None,
                ),
                cell(
                    "call-iptables-off",
                    Outcome::Pass,
                    vec![check(
                        "ping.received == ping.sent",
                        true,
                        "ping.received = 20, ping.sent = 20",
                    )],
                    None,
                ),
                cell(
                    "nft-bridge-family-drop",
                    Outcome::Pass,
                    vec![check(
                        "drops.NETFILTER_DROP@nft_do_chain >= ping.sent",
                        true,
                        "drops.NETFILTER_DROP@nft_do_chain = 20, ping.sent = 20",
                    )],
                    None,
                ),
                cell("old-only", Outcome::Pass, vec![], None),
            ],
        );
        let b = side(
            "6.12.38+deb13-cloud-amd64",
            vec![
                cell("call-iptables-on", Outcome::Fail, vec![check("ping.received == 0", false, "ping.received = 20")], None),
                cell("call-iptables-off", Outcome::Pass, vec![check("ping.received == ping.sent", true, "ping.received = 20, ping.sent = 20")], None),
                cell("nft-bridge-family-drop", Outcome::Skip, vec![], Some("br_netfilter is not available (CONFIG_BRIDGE_NETFILTER or `modprobe br_netfilter`)")),
            ],
        );
        (a, b)
    }

    #[test]
    fn compare_finds_changed_and_missing_cells() {
        let (a, b) = fixture();
        let cmp = compare(&a, &b);
        assert_eq!(cmp.compared, 4);
        let names: Vec<_> = cmp.changes.iter().map(|c| c.cell.as_str()).collect();
        assert_eq!(
            names,
            ["call-iptables-on", "nft-bridge-family-drop", "old-only"]
        );
        assert!(compare(&a, &a).changes.is_empty());
    }

    #[test]
    fn diff_table() {
        let (a, b) = fixture();
        insta::assert_snapshot!(table(&a, &b, &compare(&a, &b)));
    }

    #[test]
    fn no_change_message() {
        let (a, _) = fixture();
        assert_eq!(
            table(&a, &a, &compare(&a, &a)),
            "no outcome changed between 6.1.0-37-cloud-amd64 and 6.1.0-37-cloud-amd64 (4 cells compared)\n"
        );
    }

    #[test]
    fn kernel_matrix() {
        let (a, b) = fixture();
        let (md, changed) = matrix_markdown(&[(a, None), (b, None)]);
        assert!(changed);
        insta::assert_snapshot!(md);
    }

    #[test]
    fn loads_directories_without_vm_json() {
        let dir = std::env::temp_dir().join(format!("faultlab-diff-{}", std::process::id()));
        let k = dir.join("6.1.0-37-cloud-amd64");
        std::fs::create_dir_all(&k).unwrap();
        let (a, _) = fixture();
        std::fs::write(
            k.join("bridge-netfilter.json"),
            crate::report::json(&a.results[0]).unwrap(),
        )
        .unwrap();
        std::fs::write(k.join("vm.json"), "{\"not\": \"a scenario\"}").unwrap();
        let bench = dir.join("bench");
        std::fs::create_dir_all(&bench).unwrap();
        std::fs::write(bench.join("harness.json"), "{}").unwrap();
        let loaded = load_all(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.label, "6.1.0-37-cloud-amd64");
        assert!(loaded[0].1.is_none(), "an unreadable vm.json is left out");
    }
}
