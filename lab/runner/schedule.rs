//! `faultlab run --jobs N`: the cells that must run alone run first, one at a time, then
//! every other cell of every scenario in one pool, N at a time; results keep file order.
//! A cell runs alone when
//! - it changes host-global sysctls (its lab holds the host lock exclusively anyway);
//! - it is timing-sensitive: a `race` step, a rate-driven `churn` step (`rate` > 0), or
//!   a `multiflow` step (its loss per flow depends on CPU time);
//! - it counts kernel log lines (`kmsg`), which the kernel writes machine-wide;
//! - it reads drop reasons and the kernel offers only the tracefs method, whose
//!   `drops.<REASON>` counts drops machine-wide (lab/evidence/drops.rs).
//!
//! A schedule file (`--schedule FILE`) overrides this per cell:
//! `alone = ["scenario::cell", "scenario::*"]`, `shared = [...]`.
//!
//! Each cell gets a run id of its own (`<run id>c<k>`), so concurrent labs never share a
//! namespace, tracefs instance or state file.

use super::RunOptions;
use crate::model::steps::{Action, TrafficSpec};
use crate::model::CellPlan;
use crate::scenario::Scenario;
use crate::verdict::ScenarioResult;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// May overlap other shared cells.
    Shared,
    /// Runs with no other cell.
    Alone,
}

/// Why a cell's outcome depends on CPU time and scheduling, or None: a race, a `dns`
/// step (its A/AAAA pair is a race), a multiflow step or a rate-driven churn. Such a
/// cell runs alone here, and under load may only turn inconclusive (tests/lab_load.rs).
pub fn timing_sensitive(cell: &CellPlan) -> Option<&'static str> {
    cell.steps.iter().find_map(|step| match &step.action {
        Action::Traffic(TrafficSpec::Race(_)) => Some("race step"),
        Action::Traffic(TrafficSpec::Dns(_)) => Some("dns step (its A/AAAA pair is a race)"),
        Action::Traffic(TrafficSpec::Churn(c)) if c.rate > 0.0 => Some("rate-driven churn step"),
        Action::Traffic(TrafficSpec::Multiflow(_)) => Some("multiflow step"),
        _ => None,
    })
}

/// Why a cell must run alone, or None when it may overlap others.
pub fn must_run_alone(cell: &CellPlan, drops_are_lab_only: bool) -> Option<&'static str> {
    if !cell.lab.host_sysctls.is_empty() {
        return Some("changes host-global sysctls");
    }
    if let Some(why) = timing_sensitive(cell) {
        return Some(why);
    }
    if !cell.kmsg.is_empty() {
        return Some("counts kernel log lines (machine-wide)");
    }
    if cell.drops && !drops_are_lab_only {
        return Some("drop reasons traced machine-wide (no BPF)");
    }
    None
}

/// Per-cell overrides of [`must_run_alone`], from a TOML file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub alone: Vec<String>,
    #[serde(default)]
    pub shared: Vec<String>,
}

impl Overrides {
    pub fn load(path: &Path) -> Result<Overrides> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("schedule file {}", path.display()))?;
        toml::from_str(&text).with_context(|| {
            format!(
                "schedule file {}: expected `alone = [\"scenario::cell\", ...]` and/or \
                 `shared = [...]` (a cell may be `*`)",
                path.display()
            )
        })
    }

    fn matches(list: &[String], scenario: &str, cell: &str) -> bool {
        list.iter().any(|p| match p.split_once("::") {
            Some((s, c)) => s == scenario && (c == "*" || c == cell),
            None => p == scenario,
        })
    }

    pub fn placement(&self, scenario: &str, cell: &str, default: Placement) -> Placement {
        if Self::matches(&self.alone, scenario, cell) {
            Placement::Alone
        } else if Self::matches(&self.shared, scenario, cell) {
            Placement::Shared
        } else {
            default
        }
    }
}

/// `--jobs` when not given: twice the CPUs (a lab's cell mostly waits on the kernel,
/// its sockets and netlink, not on a CPU), at most 8.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (2 * n.get()).min(8))
}

/// Runs `f(i)` for every index of `placements`, at most `jobs` at once: the `Alone`
/// indexes first, one at a time in order, then every `Shared` index in one pool of
/// `jobs` workers (so a long shared cell overlaps all the others, not only its
/// neighbours up to the next alone one). With one job, everything in index order.
/// Results are in index order.
pub fn execute<T: Send>(
    jobs: usize,
    placements: &[Placement],
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = placements.iter().map(|_| Mutex::new(None)).collect();
    let put = |k: usize, r: T| *slots[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    let (alone, shared): (Vec<usize>, Vec<usize>) = if jobs <= 1 {
        ((0..placements.len()).collect(), Vec::new())
    } else {
        (0..placements.len()).partition(|&k| placements[k] == Placement::Alone)
    };
    for k in alone {
        if crate::setup::signals::interrupted() {
            break;
        }
        put(k, f(k));
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(shared.len()) {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= shared.len() || crate::setup::signals::interrupted() {
                    break;
                }
                put(shared[n], f(shared[n]));
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// Whether this kernel attributes drops per namespace (the BPF method), probed once.
fn drops_are_lab_only() -> bool {
    match crate::evidence::bpf::BpfDropTrace::start(&Default::default()) {
        Ok(t) => t.stop().is_ok(),
        Err(_) => false,
    }
}

/// Every scenario's cells, `jobs` at a time (see the module comment); the results are
/// those `run_scenario` gives, in the same order.
pub fn run_all(
    scenarios: &[Scenario],
    opts: &RunOptions,
    run_id: &str,
    jobs: usize,
    overrides: &Overrides,
    progress: &dyn super::progress::Progress,
) -> Vec<ScenarioResult> {
    let mut cells: Vec<(usize, &CellPlan)> = Vec::new();
    for (s, scn) in scenarios.iter().enumerate() {
        for c in &scn.cells {
            if opts.cell.as_ref().is_none_or(|n| n == &c.name) {
                cells.push((s, c));
            }
        }
    }
    // One cell has nothing to overlap with: it keeps the run's own id.
    let jobs = jobs.min(cells.len()).max(1);
    let lab_only = jobs > 1 && drops_are_lab_only();
    let placements: Vec<Placement> = cells
        .iter()
        .map(|(s, c)| {
            let default = match must_run_alone(c, lab_only) {
                Some(_) => Placement::Alone,
                None => Placement::Shared,
            };
            overrides.placement(&scenarios[*s].name, &c.name, default)
        })
        .collect();
    if jobs > 1 {
        let alone = placements
            .iter()
            .filter(|p| **p == Placement::Alone)
            .count();
        eprintln!(
            "--jobs {jobs}: {} cells may overlap, {alone} run alone{}",
            placements.len() - alone,
            if lab_only {
                ""
            } else {
                " (no BPF drop attribution: cells reading drops run alone)"
            }
        );
    }
    let one = |k: usize| {
        let (s, cell) = cells[k];
        let single = Scenario {
            cells: vec![cell.clone()],
            ..scenarios[s].clone()
        };
        let id = if jobs > 1 {
            format!("{run_id}c{k}")
        } else {
            run_id.to_string()
        };
        (
            s,
            super::run_scenario_reporting(&single, opts, &id, progress),
        )
    };
    let done = execute(jobs, &placements, one);
    // One result per scenario, as `run_scenario` gives (empty for a scenario none of
    // whose cells was selected).
    let kernel = super::kernel::release();
    let mut out: Vec<ScenarioResult> = scenarios
        .iter()
        .map(|scn| ScenarioResult {
            scenario: scn.name.clone(),
            about: scn.about.clone(),
            file: scn.file.clone(),
            kernel_release: kernel.clone(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            duration_ms: 0,
            cells: Vec::new(),
        })
        .collect();
    for (s, r) in done {
        out[s].duration_ms += r.duration_ms;
        out[s].started_at = out[s].started_at.min(r.started_at);
        out[s].cells.extend(r.cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn alone_cells_never_overlap_and_order_is_kept() {
        use Placement::{Alone, Shared};
        let p = [
            Shared, Shared, Shared, Alone, Shared, Shared, Alone, Alone, Shared,
        ];
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let log = Mutex::new(Vec::new());
        let out = execute(3, &p, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            log.lock().unwrap().push((i, now));
            std::thread::sleep(Duration::from_millis(30));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 10
        });
        assert_eq!(out, (0..p.len()).map(|i| i * 10).collect::<Vec<_>>());
        let log = log.into_inner().unwrap();
        for &(i, concurrent) in &log {
            if p[i] == Alone {
                assert_eq!(concurrent, 1, "alone cell {i} overlapped: {log:?}");
            }
        }
        // The shared cells did overlap: all five are one pool of three workers.
        assert_eq!(peak.load(Ordering::SeqCst), 3, "{log:?}");
        // The alone cells ran first, in order.
        let pos = |i: usize| log.iter().position(|&(k, _)| k == i).unwrap();
        assert_eq!((pos(3), pos(6), pos(7)), (0, 1, 2), "{log:?}");
    }

    #[test]
    fn one_job_runs_in_order_one_at_a_time() {
        let p = [Placement::Shared; 4];
        let running = AtomicUsize::new(0);
        let order = Mutex::new(Vec::new());
        execute(1, &p, |i| {
            assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
            order.lock().unwrap().push(i);
            running.fetch_sub(1, Ordering::SeqCst);
        });
        assert_eq!(order.into_inner().unwrap(), [0, 1, 2, 3]);
    }

    #[test]
    fn overrides_by_cell_and_by_scenario() {
        let o: Overrides = toml::from_str(
            r#"alone = ["a::x", "b::*"]
               shared = ["c"]"#,
        )
        .unwrap();
        use Placement::{Alone, Shared};
        assert_eq!(o.placement("a", "x", Shared), Alone);
        assert_eq!(o.placement("a", "y", Shared), Shared);
        assert_eq!(o.placement("b", "any", Shared), Alone);
        assert_eq!(o.placement("c", "z", Alone), Shared);
        assert!(toml::from_str::<Overrides>("alone = 1").is_err());
        assert!(toml::from_str::<Overrides>("other = []").is_err());
    }

    #[test]
    fn timing_sensitive_and_host_global_cells_run_alone() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let scn = crate::scenario::parse(&path.to_string_lossy(), &text).unwrap();
            for c in &scn.cells {
                let why = must_run_alone(c, true);
                if !c.lab.host_sysctls.is_empty() {
                    assert_eq!(why, Some("changes host-global sysctls"), "{}", c.name);
                }
                if c.steps.iter().any(|s| s.action.kind() == "race") {
                    assert!(why.is_some(), "{}::{}", scn.name, c.name);
                }
                // Without per-namespace drops, every cell reading drops runs alone.
                if c.drops {
                    assert!(must_run_alone(c, false).is_some(), "{}", c.name);
                }
                *seen.entry(why.is_some()).or_insert(0) += 1;
            }
        }
        // The catalogue has both kinds, so --jobs has something to overlap.
        assert!(seen.get(&true).copied().unwrap_or(0) > 0, "{seen:?}");
        assert!(seen.get(&false).copied().unwrap_or(0) > 0, "{seen:?}");
    }
}
