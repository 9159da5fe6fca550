//! The whole catalogue, `--jobs 1` against `--jobs N`, side by side in one run (root):
//! on the host, and with `FAULTLAB_BENCH_KERNEL=PATH` also under `faultlab vm` on that
//! kernel (a build tree, bzImage or Debian package, as `vm --kernel` takes).
//!
//! Each variant is the real CLI (`faultlab run scenarios/ --jobs J --results DIR`),
//! timed from spawn to exit, so the numbers are what a user waits for: lab builds,
//! evidence, traffic, teardown and the results files. The variants alternate over
//! `FAULTLAB_BENCH_CATALOGUE_ROUNDS` rounds (default 1), the starting one alternating,
//! and the verdict tables (scenario::cell -> outcome) of every run are compared: a
//! speed-up only counts when the tables are identical. Not criterion: one run is tens
//! of seconds. Writes results/bench/catalogue.json; `benches/report.rs` turns it into
//! the "Catalogue" section of results/bench/summary.md.

#[path = "common/mod.rs"]
mod common;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// scenario::cell -> outcome.
type Verdicts = BTreeMap<String, String>;

struct Run {
    wall_s: f64,
    verdicts: Verdicts,
}

/// `release/` for a results/<release>/ directory: with several kernels in one results
/// root, each cell is told apart by its kernel.
fn prefix(kernel_dir: &Path) -> String {
    kernel_dir
        .file_name()
        .map_or(String::new(), |n| format!("{}/", n.to_string_lossy()))
}

/// Every cell's outcome in the results files a run wrote below `dir`.
fn verdicts_in(dir: &Path) -> Result<Verdicts> {
    let mut out = Verdicts::new();
    for kernel in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let kernel = kernel?.path();
        for f in std::fs::read_dir(&kernel)? {
            let f = f?.path();
            if f.extension().is_none_or(|e| e != "json") || f.ends_with("vm.json") {
                continue;
            }
            let v: Value = serde_json::from_slice(&std::fs::read(&f)?)
                .with_context(|| format!("parse {}", f.display()))?;
            let Some(cells) = v["cells"].as_array() else {
                continue;
            };
            for c in cells {
                out.insert(
                    format!(
                        "{}{}::{}",
                        prefix(&kernel),
                        v["scenario"].as_str().unwrap_or("?"),
                        c["name"].as_str().unwrap_or("?")
                    ),
                    c["outcome"].as_str().unwrap_or("?").to_string(),
                );
            }
        }
    }
    Ok(out)
}

/// One run of the catalogue with `jobs`, on the host or (with `kernel`) in a VM.
fn run_catalogue(kernel: Option<&str>, jobs: usize, round: usize) -> Result<Run> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join(format!(
        "target/bench-catalogue/{}-jobs{jobs}-r{round}",
        if kernel.is_some() { "vm" } else { "host" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultlab"));
    if let Some(k) = kernel {
        cmd.args(["vm", "--kernel", k, "--"]);
    }
    cmd.args([
        "run",
        "scenarios/",
        "--jobs",
        &jobs.to_string(),
        "--results",
    ])
    .arg(&dir)
    .current_dir(repo)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    let t0 = Instant::now();
    let status = cmd.status().context("spawn faultlab")?;
    let wall_s = t0.elapsed().as_secs_f64();
    // Exit 1 is a failed cell, which the verdict comparison reports; more is an error.
    if status.code().is_none_or(|c| c > 1) {
        bail!("faultlab run --jobs {jobs} exited {status}");
    }
    let verdicts = verdicts_in(&dir)?;
    if verdicts.is_empty() {
        bail!(
            "faultlab run --jobs {jobs} wrote no results below {}",
            dir.display()
        );
    }
    Ok(Run { wall_s, verdicts })
}

/// Several kernels under `faultlab vm`, one after the other (`--parallel 1`) against all
/// at once (`--parallel N`), each guest with `smp` CPUs (`FAULTLAB_BENCH_PARALLEL_SMP`,
/// default 2: the race cells need two).
fn compare_parallel(kernels: &[String], smp: u32) -> Result<Value> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut runs = Vec::new();
    for parallel in [1, kernels.len()] {
        let dir = repo.join(format!("target/bench-catalogue/vm-parallel{parallel}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultlab"));
        cmd.arg("vm");
        for k in kernels {
            cmd.args(["--kernel", k]);
        }
        cmd.args(["--parallel", &parallel.to_string()])
            .args(["--smp", &smp.to_string(), "--results"])
            .arg(&dir)
            .args(["--", "run", "scenarios/"])
            .current_dir(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        eprintln!(
            "catalogue bench: {} kernels, --parallel {parallel}",
            kernels.len()
        );
        let t0 = Instant::now();
        let status = cmd.status().context("spawn faultlab vm")?;
        let wall_s = t0.elapsed().as_secs_f64();
        if status.code().is_none_or(|c| c > 1) {
            bail!("faultlab vm --parallel {parallel} exited {status}");
        }
        eprintln!("catalogue bench: --parallel {parallel}: {wall_s:.1} s");
        runs.push(Run {
            wall_s,
            verdicts: verdicts_in(&dir)?,
        });
    }
    let differing = differences(&runs[0].verdicts, &runs[1].verdicts);
    Ok(json!({
        "kernels": kernels,
        "smp_each": smp,
        "cells": runs[0].verdicts.len(),
        "sequential_wall_s": runs[0].wall_s,
        "parallel_wall_s": runs[1].wall_s,
        "speedup": runs[0].wall_s / runs[1].wall_s,
        "identical": differing.is_empty(),
        "differing": differing,
    }))
}

/// The cells whose outcome differs between two tables (or is missing in one).
fn differences(a: &Verdicts, b: &Verdicts) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} vs {}",
                a.get(k).map_or("missing", String::as_str),
                b.get(k).map_or("missing", String::as_str)
            )
        })
        .collect()
}

/// `rounds` interleaved runs of `--jobs 1` and `--jobs jobs`.
fn compare(kernel: Option<&str>, jobs: usize, rounds: usize) -> Result<Value> {
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let order: [usize; 2] = if r % 2 == 0 { [1, jobs] } else { [jobs, 1] };
        for j in order {
            let label = kernel.map_or("host".to_string(), |k| format!("vm {k}"));
            eprintln!(
                "catalogue bench: {label}, round {}/{rounds}, --jobs {j}",
                r + 1
            );
            let run = run_catalogue(kernel, j, r)?;
            eprintln!("catalogue bench: --jobs {j}: {:.1} s", run.wall_s);
            if j == 1 { &mut one } else { &mut many }.push(run);
        }
    }
    let reference = &one[0].verdicts;
    let differing: Vec<String> = one
        .iter()
        .chain(&many)
        .flat_map(|r| differences(reference, &r.verdicts))
        .collect();
    let walls = |v: &[Run]| v.iter().map(|r| r.wall_s).collect::<Vec<_>>();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m1, mn) = (median(walls(&one)), median(walls(&many)));
    let mut outcomes = BTreeMap::<&str, usize>::new();
    for o in reference.values() {
        *outcomes.entry(o.as_str()).or_default() += 1;
    }
    Ok(json!({
        "kernel": kernel,
        "jobs": jobs,
        "rounds": rounds,
        "cells": reference.len(),
        "outcomes": outcomes,
        "jobs1_wall_s": walls(&one),
        "jobsn_wall_s": walls(&many),
        "jobs1_median_s": m1,
        "jobsn_median_s": mn,
        "speedup": m1 / mn,
        "identical": differing.is_empty(),
        "differing": differing,
    }))
}

fn main() -> Result<()> {
    if !common::is_root() {
        bail!("the catalogue bench needs root (namespaces): sudo scripts/bench.sh");
    }
    let env_num = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rounds = env_num("FAULTLAB_BENCH_CATALOGUE_ROUNDS", 1).max(1);
    let jobs = env_num(
        "FAULTLAB_BENCH_CATALOGUE_JOBS",
        faultlab::runner::schedule::default_jobs(),
    );
    let host = compare(None, jobs, rounds)?;
    let vm = match std::env::var("FAULTLAB_BENCH_KERNEL") {
        Ok(k) if !k.is_empty() => {
            let k = PathBuf::from(k);
            compare(Some(&k.display().to_string()), jobs, 1)?
        }
        _ => Value::Null,
    };
    let kernels: Vec<String> = std::env::var("FAULTLAB_BENCH_KERNELS")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let parallel = match kernels.len() {
        0 => Value::Null,
        1 => bail!("FAULTLAB_BENCH_KERNELS needs two or more kernels, comma-separated"),
        _ => compare_parallel(&kernels, env_num("FAULTLAB_BENCH_PARALLEL_SMP", 2) as u32)?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    common::record(
        "catalogue.json",
        "catalogue",
        json!({
            "unix_time": now,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "command": "scripts/bench.sh (cargo bench --features lab --bench catalogue)",
            "host": host,
            "vm": vm,
            "parallel_kernels": parallel,
        }),
    );
    println!("wrote results/bench/catalogue.json");
    Ok(())
}
