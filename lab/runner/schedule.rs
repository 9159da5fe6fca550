//! `faultlab run --jobs N`: the cells that must run alone run first, one at a time, then
//! every other cell of every scenario in one pool, N at a time; results keep file order.
//! A cell runs alone, with no other cell at all, when
//! - it changes host-global sysctls (its lab holds the host lock exclusively anyway);
//! - it counts kernel log lines (`kmsg`), which the kernel writes machine-wide;
//! - it reads drop reasons and the kernel offers only the tracefs method, whose
//!   `drops.<REASON>` counts drops machine-wide (lab/evidence/drops.rs).
//!
//! A cell runs quiet, in the pool but with no other cell busy beside it (lab/runner/gate.rs:
//! cells whose timeline only waits may), when it is timing-sensitive: a `race` step, a
//! rate-driven `churn` step (`rate` > 0), or a `multiflow` step (its loss per flow
//! depends on CPU time). The pool starts the shared cells that have waits first, so the
//! quiet cells run while those wait.
//!
//! A schedule file (`--schedule FILE`) overrides this per cell:
//! `alone = ["scenario::cell", "scenario::*"]`, `quiet = [...]`, `shared = [...]`.
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
    /// Runs with no other cell busy (waiting ones may be there).
    Quiet,
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

/// Where a cell runs by default (see the module comment).
pub fn placement_of(cell: &CellPlan, drops_are_lab_only: bool) -> Placement {
    if must_run_alone(cell, drops_are_lab_only).is_some() {
        Placement::Alone
    } else if timing_sensitive(cell).is_some() {
        Placement::Quiet
    } else {
        Placement::Shared
    }
}

/// Why a cell must run with no other cell, or None when it may overlap others.
pub fn must_run_alone(cell: &CellPlan, drops_are_lab_only: bool) -> Option<&'static str> {
    if !cell.lab.host_sysctls.is_empty() {
        return Some("changes host-global sysctls");
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
    pub quiet: Vec<String>,
    #[serde(default)]
    pub shared: Vec<String>,
}

impl Overrides {
    pub fn load(path: &Path) -> Result<Overrides> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("schedule file {}", path.display()))?;
        toml::from_str(&text).with_context(|| {
            format!(
                "schedule file {}: expected `alone = [\"scenario::cell\", ...]`, \
                 `quiet = [...]` and/or `shared = [...]` (a cell may be `*`)",
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
        } else if Self::matches(&self.quiet, scenario, cell) {
            Placement::Quiet
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

/// What orders the pool: per index, whether the cell has steps that only wait, and how
/// long it took last time (0: unknown). Missing entries count as false and 0.
#[derive(Default)]
pub struct Order<'a> {
    pub waits: &'a [bool],
    pub last_ms: &'a [u64],
}

/// Runs `f(i)` for every index of `placements`, at most `jobs` at once: the `Alone`
/// indexes first, one at a time in order, then every other index in one pool of
/// `jobs` workers (so a long shared cell overlaps all the others, not only its
/// neighbours up to the next alone one): the `Shared` ones that `order.waits` marks
/// first, then the others, `Quiet` (each with no other cell busy, [`super::gate`]) or
/// not; in each group the longest last time first (a long cell that mostly waits on
/// ping timeouts, dispatched after every quiet cell, was the run's tail). With one
/// job, everything in index order. Results are in index order.
pub fn execute<T: Send>(
    jobs: usize,
    placements: &[Placement],
    order: &Order,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = placements.iter().map(|_| Mutex::new(None)).collect();
    let put = |k: usize, r: T| *slots[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    let (alone, mut shared): (Vec<usize>, Vec<usize>) = if jobs <= 1 {
        ((0..placements.len()).collect(), Vec::new())
    } else {
        (0..placements.len()).partition(|&k| placements[k] == Placement::Alone)
    };
    shared.sort_by_key(|&k| {
        let group = match placements[k] {
            Placement::Shared if order.waits.get(k).copied().unwrap_or(false) => 0,
            _ => 1,
        };
        (
            group,
            std::cmp::Reverse(order.last_ms.get(k).copied().unwrap_or(0)),
        )
    });
    let gate = std::sync::Arc::new(super::gate::Gate::default());
    let run = |k: usize| match placements[k] {
        Placement::Quiet => gate.quiet_cell(|| f(k)),
        _ => gate.shared(|| f(k)),
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
                put(shared[n], run(shared[n]));
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

/// How `run_all` schedules.
pub struct How<'a> {
    pub jobs: usize,
    pub overrides: &'a Overrides,
    /// Each cell's last duration (`scenario::cell` -> ms): within its group of the pool,
    /// the longest starts first. Cells not in it keep file order, after the known ones.
    pub last_ms: &'a std::collections::BTreeMap<String, u64>,
}

/// Every scenario's cells, `jobs` at a time (see the module comment); the results are
/// those `run_scenario` gives, in the same order.
pub fn run_all(
    scenarios: &[Scenario],
    opts: &RunOptions,
    run_id: &str,
    how: &How,
    progress: &dyn super::progress::Progress,
) -> Vec<ScenarioResult> {
    let (jobs, overrides) = (how.jobs, how.overrides);
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
            let default = placement_of(c, lab_only);
            overrides.placement(&scenarios[*s].name, &c.name, default)
        })
        .collect();
    let waits: Vec<bool> = cells
        .iter()
        .map(|(_, c)| c.steps.iter().any(|s| s.action.only_waits()))
        .collect();
    let last: Vec<u64> = cells
        .iter()
        .map(|(s, c)| {
            let key = format!("{}::{}", scenarios[*s].name, c.name);
            how.last_ms.get(&key).copied().unwrap_or(0)
        })
        .collect();
    if jobs > 1 {
        let count = |p: Placement| placements.iter().filter(|q| **q == p).count();
        let (alone, quiet) = (count(Placement::Alone), count(Placement::Quiet));
        eprintln!(
            "--jobs {jobs}: {} cells may overlap, {quiet} run quiet (beside waiting cells only), \
             {alone} run alone{}",
            placements.len() - alone - quiet,
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
    let done = execute(
        jobs,
        &placements,
        &Order {
            waits: &waits,
            last_ms: &last,
        },
        one,
    );
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
        let out = execute(3, &p, &Order::default(), |i| {
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
    fn quiet_cells_run_beside_waiting_cells_and_never_beside_busy_ones() {
        use Placement::{Quiet, Shared};
        // 4 waits (and so starts first), 0 and 1 are quiet, 2 and 3 are busy all through.
        let p = [Quiet, Quiet, Shared, Shared, Shared];
        let waits = [false, false, false, false, true];
        let busy = AtomicUsize::new(0);
        let quiet_beside_wait = AtomicUsize::new(0);
        let waiting = std::sync::atomic::AtomicBool::new(false);
        let order = Order {
            waits: &waits,
            last_ms: &[],
        };
        execute(2, &p, &order, |i| {
            match p[i] {
                // A quiet cell's timeline (as lab/runner/cell.rs runs it).
                Quiet => super::super::gate::timeline(|| {
                    assert_eq!(busy.load(Ordering::SeqCst), 0, "busy cell beside quiet {i}");
                    if waiting.load(Ordering::SeqCst) {
                        quiet_beside_wait.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    assert_eq!(busy.load(Ordering::SeqCst), 0, "busy cell beside quiet {i}");
                }),
                _ => {
                    busy.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    busy.fetch_sub(1, Ordering::SeqCst);
                    if waits[i] {
                        // Set around the idle part: a quiet cell can start only inside it.
                        waiting.store(true, Ordering::SeqCst);
                        super::super::gate::idle(|| {
                            std::thread::sleep(Duration::from_millis(150));
                        });
                        waiting.store(false, Ordering::SeqCst);
                    }
                }
            }
        });
        // Both quiet cells ran while the waiting cell waited (in file order they would
        // have run before it started).
        assert_eq!(quiet_beside_wait.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_pool_starts_the_longest_cells_of_last_time_first() {
        let p = [Placement::Shared; 4];
        let order = Order {
            waits: &[],
            last_ms: &[10, 300, 0, 50],
        };
        let log = Mutex::new(Vec::new());
        execute(2, &p, &order, |i| {
            log.lock().unwrap().push(i);
            std::thread::sleep(Duration::from_millis(50));
        });
        // Two workers: the two longest start together, then the rest (unknown last).
        let mut log = log.into_inner().unwrap();
        log[..2].sort();
        log[2..].sort();
        assert_eq!(log, [1, 3, 0, 2]);
    }

    #[test]
    fn one_job_runs_in_order_one_at_a_time() {
        let p = [Placement::Shared; 4];
        let running = AtomicUsize::new(0);
        let order = Mutex::new(Vec::new());
        execute(1, &p, &Order::default(), |i| {
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
        use Placement::{Alone, Quiet, Shared};
        let q: Overrides = toml::from_str(r#"quiet = ["d::*"]"#).unwrap();
        assert_eq!(q.placement("d", "w", Shared), Quiet);
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
                    assert_ne!(placement_of(c, true), Placement::Shared, "{}", c.name);
                }
                let why = why.or(timing_sensitive(c));
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
