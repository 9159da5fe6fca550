//! results/<kernel-release>/: one JSON per scenario and a summary.md regenerated
//! from every JSON in the directory.

use crate::model::Expectation;
use crate::verdict::{CellResult, ScenarioResult};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn kernel_dir(results_root: &Path, kernel: &str) -> PathBuf {
    results_root.join(kernel)
}

/// Each cell's duration in the results last written for `kernel`, by
/// `scenario::cell`; a cell without one there takes its duration from the other
/// kernel whose results cover the most cells (the newest of equals): what orders the
/// pool, and a cell that waits out a kernel timer is long on every kernel. One other
/// kernel only, so host and TCG durations are not mixed. Nothing for unreadable files.
pub fn last_durations(results_root: &Path, kernel: &str) -> BTreeMap<String, u64> {
    let of_dir = |dir: &Path| {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            durations_in(&e.path(), &mut out);
        }
        out
    };
    let fallback = std::fs::read_dir(results_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != std::ffi::OsStr::new(kernel))
        .map(|e| {
            let newest = e.metadata().and_then(|m| m.modified()).ok();
            (of_dir(&e.path()), newest)
        })
        .max_by_key(|(cells, newest)| (cells.len(), *newest))
        .map(|(cells, _)| cells)
        .unwrap_or_default();
    let mut out = fallback;
    out.extend(of_dir(&kernel_dir(results_root, kernel)));
    out
}

/// The cell durations of one scenario result file, into `out` (replacing).
fn durations_in(path: &Path, out: &mut BTreeMap<String, u64>) {
    if path.extension().is_none_or(|e| e != "json") {
        return;
    }
    let Some(v) = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return;
    };
    let scenario = v["scenario"].as_str().unwrap_or_default();
    for c in v["cells"].as_array().into_iter().flatten() {
        if let (Some(name), Some(ms)) = (c["name"].as_str(), c["duration_ms"].as_u64()) {
            out.insert(format!("{scenario}::{name}"), ms);
        }
    }
}

pub fn write(results_root: &Path, result: &ScenarioResult) -> anyhow::Result<PathBuf> {
    let dir = kernel_dir(results_root, &result.kernel_release);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", result.scenario));
    std::fs::write(&path, crate::report::json(result)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Keeps the observations that matter (what `--all-observations` turns off): those
/// the cell's trigger and expectations read, by name or glob, and every other nonzero
/// value except checkpoint snapshots (`at.CP.*`, every counter at every checkpoint).
/// Zero counters, the bulk of every node's snapshot, go.
pub fn keep_what_matters(result: &mut ScenarioResult) {
    for cell in &mut result.cells {
        keep_what_the_cell_reads(cell);
    }
}

fn keep_what_the_cell_reads(cell: &mut CellResult) {
    let read: Vec<Expectation> = cell
        .trigger
        .iter()
        .chain(&cell.checks)
        .filter_map(|c| Expectation::parse(&c.expr).ok())
        .collect();
    cell.observations.retain(|name, v| {
        read.iter().any(|e| e.reads(name)) || (*v != 0.0 && !name.starts_with("at."))
    });
}

/// `faultlab compact`: applies [`keep_what_matters`] to results written before it
/// existed (or with `--all-observations`), and rewrites the directory's summary.
pub fn compact_file(path: &Path) -> anyhow::Result<()> {
    let mut r = crate::report::read_json(path)?;
    keep_what_matters(&mut r);
    std::fs::write(path, crate::report::json(&r)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Rewrite summary.md from all scenario JSON files in the kernel's directory.
pub fn write_summary(results_root: &Path, kernel: &str) -> anyhow::Result<PathBuf> {
    let dir = kernel_dir(results_root, kernel);
    let mut all = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        // vm.json holds `faultlab vm` boot/run timings, not a scenario.
        .filter(|p| p.file_name().is_some_and(|n| n != "vm.json"))
        .collect();
    files.sort();
    for f in files {
        all.push(crate::report::read_json(&f)?);
    }
    let path = dir.join("summary.md");
    std::fs::write(&path, crate::report::markdown_summary(&all, kernel))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Check, Outcome};

    #[test]
    fn results_keep_what_expressions_read_and_nonzero_values() {
        let mut r: ScenarioResult = serde_json::from_value(serde_json::json!({
            "scenario": "s", "about": "", "file": "f", "kernel_release": "k",
            "started_at": 0, "duration_ms": 0,
            "cells": [{
                "name": "c", "outcome": "pass", "duration_ms": 0,
                "observations": {
                    "ping.received": 0.0, "ping.sent": 5.0, "drops.NETFILTER_DROP": 0.0,
                    "drops.r.NO_SOCKET": 0.0, "snmp.r.Ip.InDiscards": 0.0,
                    "link.r.eth0.rx_packets": 7.0, "at.cp.link.r.eth0.rx_packets": 3.0,
                    "at.cp.snmp.r.Ip.InReceives": 3.0
                }
            }]
        }))
        .unwrap();
        let c = &mut r.cells[0];
        c.trigger = Some(Check {
            expr: "sum(drops.r.*) == 0".into(),
            ok: true,
            detail: String::new(),
        });
        c.checks = vec![Check {
            expr: "ping.received == 0 and at.cp.link.r.eth0.rx_packets > 0".into(),
            ok: true,
            detail: String::new(),
        }];
        assert_eq!(c.outcome, Outcome::Pass);
        keep_what_matters(&mut r);
        let kept: Vec<&str> = r.cells[0].observations.keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "at.cp.link.r.eth0.rx_packets",
                "drops.r.NO_SOCKET",
                "link.r.eth0.rx_packets",
                "ping.received",
                "ping.sent"
            ]
        );
    }

    #[test]
    fn last_durations_come_from_the_kernels_results() {
        let root = std::env::temp_dir().join(format!("faultlab-last-{}", std::process::id()));
        let dir = kernel_dir(&root, "6.1.0");
        std::fs::create_dir_all(&dir).unwrap();
        let r: ScenarioResult = serde_json::from_value(serde_json::json!({
            "scenario": "s", "about": "", "file": "f", "kernel_release": "6.1.0",
            "started_at": 0, "duration_ms": 0,
            "cells": [{ "name": "c", "outcome": "pass", "duration_ms": 1234 },
                      { "name": "e", "outcome": "pass", "duration_ms": 500 }]
        }))
        .unwrap();
        write(&root, &r).unwrap();
        std::fs::write(dir.join("broken.json"), "{").unwrap();
        let mut own = r.clone();
        own.kernel_release = "6.12.0".into();
        own.cells.truncate(1);
        own.cells[0].duration_ms = 99;
        write(&root, &own).unwrap();
        let got = last_durations(&root, "6.1.0");
        let other = last_durations(&root, "6.12.0");
        std::fs::remove_dir_all(&root).unwrap();
        let want = |c: u64| BTreeMap::from([("s::c".to_string(), c), ("s::e".to_string(), 500)]);
        // A kernel's own duration wins; a cell it has none for takes the other's.
        assert_eq!(got, want(1234));
        assert_eq!(other, want(99));
    }
}
