//! One repetition of one cell: build → observe → drive → observe → judge → tear down.

use crate::model::steps::Action;
use crate::model::{CellPlan, Expectation, LabPlan, RulesetKind};
use crate::setup::Lab;
use crate::verdict::{Check, DropStat, Observations, Outcome};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::Path;

pub struct RepetitionResult {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub trigger: Option<Check>,
    pub checks: Vec<Check>,
    pub observations: Observations,
    pub drops: Vec<DropStat>,
    pub captures: Vec<String>,
    pub phases_ms: BTreeMap<String, u64>,
    /// Kernel bug reports logged during the repetition.
    pub splats: Vec<String>,
}

impl RepetitionResult {
    pub fn error(outcome: Outcome, reason: String) -> Self {
        RepetitionResult {
            outcome,
            reason: Some(reason),
            trigger: None,
            checks: vec![],
            observations: Observations::new(),
            drops: vec![],
            captures: vec![],
            phases_ms: BTreeMap::new(),
            splats: vec![],
        }
    }
}

/// Accumulates wall time per phase of a repetition.
#[derive(Default)]
struct Phases(BTreeMap<String, u64>);

impl Phases {
    fn time<T>(&mut self, phase: &str, f: impl FnOnce() -> T) -> T {
        let t0 = std::time::Instant::now();
        let out = f();
        *self.0.entry(phase.to_string()).or_insert(0) += t0.elapsed().as_millis() as u64;
        out
    }
}

pub struct CellEnv<'a> {
    pub run_id: &'a str,
    pub kernel: &'a str,
    /// Where pcaps go; the runner makes it.
    pub artifacts: &'a Path,
    pub slow: f64,
    /// `scenario::cell`, and where each phase boundary is reported.
    pub id: &'a str,
    pub progress: &'a dyn super::progress::Progress,
}

pub fn run_once(cell: &CellPlan, env: &CellEnv) -> RepetitionResult {
    let (trigger, expect) = cell.expectations_for(env.kernel);
    let mut phases = Phases::default();
    let mut result = match drive(cell, env, &mut phases) {
        Ok(run) => match run.drops_unavailable.clone() {
            None => judge(run, trigger, expect),
            Some(why) => judge_without_drops(run, trigger, expect, &why),
        },
        Err(e) => {
            if let Some(v) = e.downcast_ref::<super::timeline::StepVerdict>() {
                RepetitionResult::error(v.outcome, format!("{e:#}"))
            } else if let Some(why) = crate::setup::node::missing_feature(&e) {
                // The kernel lacks a device kind the lab needs: nothing was tested.
                RepetitionResult::error(Outcome::Skip, why)
            } else {
                RepetitionResult::error(Outcome::Fail, format!("{e:#}"))
            }
        }
    };
    result.phases_ms = phases.0;
    result
}

struct Driven {
    observations: Observations,
    drops: Vec<DropStat>,
    captures: Vec<String>,
    /// Why there is no drop-reason evidence although the cell asked for it.
    drops_unavailable: Option<String>,
    /// Kernel bug reports logged while the cell ran.
    splats: Vec<String>,
}

fn drive(cell: &CellPlan, env: &CellEnv, phases: &mut Phases) -> anyhow::Result<Driven> {
    let plan = cell.lab.for_run(env.run_id);
    env.progress.cell_phase(env.id, "build");
    let lab = phases
        .time("build", || Lab::build(&plan))
        .context("building the lab")?;
    let result = observe_timeline(cell, &plan, &lab, env, phases);
    env.progress.cell_phase(env.id, "teardown");
    let errors = phases.time("teardown", || lab.teardown());
    let driven = result?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("tearing the lab down"));
    }
    Ok(driven)
}

/// Ruleset kinds whose counters are read on each node: those the node is built with
/// and those a `configure` step loads into it.
fn ruleset_kinds(cell: &CellPlan) -> BTreeMap<String, Vec<RulesetKind>> {
    let mut kinds: BTreeMap<String, Vec<RulesetKind>> = cell
        .lab
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.rulesets.iter().map(|r| r.kind).collect()))
        .collect();
    for step in &cell.steps {
        if let Action::Configure(c) = &step.action {
            kinds
                .entry(c.node.clone())
                .or_default()
                .extend(c.load.iter().map(|r| r.kind));
        }
    }
    for k in kinds.values_mut() {
        k.sort();
        k.dedup();
    }
    kinds
}

/// The ruleset kinds whose counters are read on each node, of those it has: nft always
/// (read in-process over nfnetlink, so its nonzero deltas stay in the results at no
/// process cost), an iptables kind (one `*-save` process per node and snapshot) only
/// where a name the cell reads (`wanted`: its expressions and sampled names, checkpoint
/// prefixes `at.CP.` looked through) could be one of its counters.
pub(crate) fn kinds_to_read(
    all: BTreeMap<String, Vec<RulesetKind>>,
    wanted: &[String],
) -> BTreeMap<String, Vec<RulesetKind>> {
    all.into_iter()
        .map(|(node, kinds)| {
            let node_seg = crate::observe::segment(&node);
            let kept = kinds
                .into_iter()
                .filter(|&k| k == RulesetKind::Nft || may_name(wanted, k.key(), &node_seg))
                .collect();
            (node, kept)
        })
        .collect()
}

/// Could any of `wanted` (names or globs) be a `<kind>.<node>.…` observation?
fn may_name(wanted: &[String], kind: &str, node: &str) -> bool {
    wanted.iter().any(|n| {
        let n = match n.strip_prefix("at.") {
            Some(rest) => rest.split_once('.').map_or(rest, |(_, name)| name),
            None => n,
        };
        let mut segs = n.split('.');
        match (segs.next(), segs.next()) {
            (Some("**"), _) => true,
            (Some(k), Some("**")) => crate::judge::glob_matches(k, kind),
            (Some(k), Some(nd)) => {
                crate::judge::glob_matches(&format!("{k}.{nd}"), &format!("{kind}.{node}"))
            }
            _ => false,
        }
    })
}

/// Names the cell reads live while stepping: the `sample` lists of its steps.
fn sampled_names(cell: &CellPlan) -> Vec<String> {
    cell.steps
        .iter()
        .filter_map(|s| s.sample.as_ref())
        .flat_map(|s| s.observe.iter().cloned())
        .collect()
}

/// Every observation name any expression of the cell reads (triggers, expectations
/// on every kernel, waits).
fn referenced_names(cell: &CellPlan) -> Vec<String> {
    let mut names = Vec::new();
    let exprs = cell.trigger.iter().chain(&cell.expect).chain(
        cell.by_kernel
            .iter()
            .flat_map(|k| k.trigger.iter().chain(&k.expect)),
    );
    for e in exprs {
        names.extend(e.names());
    }
    for step in &cell.steps {
        if let Action::Wait(w) = &step.action {
            names.extend(w.until.names());
            names.extend(w.give_up.iter().flat_map(|g| g.names()));
        }
    }
    names.sort();
    names.dedup();
    names
}

fn observe_timeline(
    cell: &CellPlan,
    plan: &LabPlan,
    lab: &Lab,
    env: &CellEnv,
    phases: &mut Phases,
) -> anyhow::Result<Driven> {
    let netns: BTreeMap<String, String> = plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.netns.clone()))
        .collect();
    let referenced = referenced_names(cell);
    let wanted: Vec<String> = referenced
        .iter()
        .cloned()
        .chain(sampled_names(cell))
        .collect();
    let kinds = kinds_to_read(ruleset_kinds(cell), &wanted);
    let before = phases.time("observe", || snapshot_all(plan, &kinds))?;

    env.progress.cell_phase(env.id, "evidence start");
    let evidence = phases.time("evidence", || {
        super::collectors::start(cell, plan, lab, env.run_id, env.artifacts, &netns)
    })?;

    let interrupted = || crate::setup::signals::interrupted();
    let ctx = crate::traffic::TrafficContext {
        netns: &netns,
        artifacts: env.artifacts,
        interrupted: &interrupted,
        enough: &crate::traffic::never,
        slow: env.slow,
    };
    let live = super::live::Live {
        plan,
        kinds: &kinds,
        before: &before,
    };
    let evidence = std::sync::Mutex::new(evidence);
    let collectors = || evidence.lock().map(|e| e.live()).unwrap_or_default();
    env.progress.cell_phase(env.id, "traffic");
    // A quiet cell (run --jobs) waits here until no other cell is busy.
    let walked = super::gate::timeline(|| {
        phases.time("traffic", || {
            super::timeline::walk(&cell.steps, &ctx, &live, &collectors, &referenced)
        })
    });
    // Conntrack queries the expectations read at the end, while the lab still stands.
    env.progress.cell_phase(env.id, "observe");
    let end_queries = super::live::ct_queries(&referenced);
    let at_end = phases.time("observe", || live.conntrack(&end_queries));

    let evidence = evidence.into_inner().unwrap_or_else(|p| p.into_inner());
    let collected = phases.time("evidence", || evidence.stop())?;
    let mut observations = collected.observations;
    observations.extend(walked?);
    observations.extend(at_end?);
    let after = phases.time("observe", || snapshot_all(plan, &kinds))?;
    for node in &plan.nodes {
        observations.extend(crate::observe::observations_delta(
            &node.name,
            &before[&node.name],
            &after[&node.name],
        ));
    }
    let (drops, capture_files, drops_unavailable, splats) = (
        collected.drops,
        collected.files,
        collected.drops_unavailable,
        collected.splats,
    );
    Ok(Driven {
        observations,
        drops,
        captures: capture_files,
        drops_unavailable,
        splats,
    })
}

/// True when every failed check reads drop-reason observations: with lost trace
/// events such a failure says nothing about the kernel.
fn failures_read_only_drops(expects: &[Expectation], checks: &[Check]) -> bool {
    let failed: Vec<_> = expects
        .iter()
        .zip(checks)
        .filter(|(_, c)| !c.ok)
        .map(|(e, _)| e)
        .collect();
    !failed.is_empty()
        && failed
            .iter()
            .all(|e| e.names().iter().all(|n| n.starts_with("drops.")))
}

/// Counters of every node, read in parallel (one thread per namespace).
pub(super) fn snapshot_all(
    plan: &LabPlan,
    kinds: &BTreeMap<String, Vec<RulesetKind>>,
) -> anyhow::Result<BTreeMap<String, crate::observe::NodeCounters>> {
    snapshot_nodes(plan, kinds, |_| true)
}

/// The counters of the nodes `wanted` picks, each read on a thread of its own.
pub(super) fn snapshot_nodes(
    plan: &LabPlan,
    kinds: &BTreeMap<String, Vec<RulesetKind>>,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<BTreeMap<String, crate::observe::NodeCounters>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .nodes
            .iter()
            .filter(|node| wanted(&node.name))
            .map(|node| {
                let kinds = kinds.get(&node.name).map(Vec::as_slice).unwrap_or(&[]);
                s.spawn(move || {
                    crate::observe::snapshot_node(&node.netns, kinds)
                        .with_context(|| format!("reading counters of node `{}`", node.name))
                        .map(|c| (node.name.clone(), c))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn judge(run: Driven, trigger: Option<&Expectation>, expects: &[Expectation]) -> RepetitionResult {
    let (mut outcome, mut reason, trigger, checks) =
        crate::judge::judge_cell(trigger, expects, &run.observations);
    let lost = run
        .observations
        .get("drops.lost_events")
        .copied()
        .unwrap_or(0.0);
    if outcome == Outcome::Fail && lost > 0.0 && failures_read_only_drops(expects, &checks) {
        outcome = Outcome::Inconclusive;
        reason = Some(format!(
            "the drop-reason trace lost {lost} events (buffer overflow from other traffic on the host): {}",
            reason.unwrap_or_default()
        ));
    }
    // A kernel that logged a WARN / BUG / KASAN report, or took a new taint, during
    // the cell failed it, whatever the counters say (as netdev's CI judges).
    let taint_new = run
        .observations
        .get("kernel.taint_new")
        .copied()
        .unwrap_or(0.0);
    if outcome != Outcome::Skip && (!run.splats.is_empty() || taint_new > 0.0) {
        let what = match run.splats.first() {
            Some(s) => format!(
                "the kernel logged {} bug report(s) during the cell: {}",
                run.splats.len(),
                s.lines().next().unwrap_or("")
            ),
            None => format!("the kernel took new taint bits {taint_new} during the cell"),
        };
        reason = Some(match reason {
            Some(r) if outcome == Outcome::Fail => format!("{what}; {r}"),
            _ => what,
        });
        outcome = Outcome::Fail;
    }
    let observations = run.observations;
    RepetitionResult {
        outcome,
        reason,
        trigger,
        checks,
        observations,
        drops: run.drops,
        captures: run.captures,
        phases_ms: BTreeMap::new(),
        splats: run.splats,
    }
}

/// True when the expression reads drop-reason observations (`drops.…`).
fn reads_drops(e: &Expectation) -> bool {
    e.names()
        .iter()
        .any(|n| n == "drops" || n.starts_with("drops.") || n.starts_with("drops*"))
}

/// Judging when the drop tracer could not run (no tracefs): expectations on `drops.*`
/// are not evaluated and the verdict rests on the others, with a note saying so. A
/// trigger on drops, or a cell whose every expectation is on drops, cannot be judged
/// here: a skip, with the reason.
fn judge_without_drops(
    run: Driven,
    trigger: Option<&Expectation>,
    expect: &[Expectation],
    why: &str,
) -> RepetitionResult {
    let (skipped, kept): (Vec<Expectation>, Vec<Expectation>) =
        expect.iter().cloned().partition(reads_drops);
    let mut note = format!("no drop evidence ({why})");
    if !skipped.is_empty() {
        let list: Vec<&str> = skipped.iter().map(Expectation::source).collect();
        note.push_str(&format!("; not evaluated: {}", list.join(", ")));
    }
    if trigger.is_some_and(reads_drops) || (kept.is_empty() && !skipped.is_empty()) {
        let mut r = RepetitionResult::error(Outcome::Skip, note);
        r.splats = run.splats;
        r.observations = run.observations;
        r.captures = run.captures;
        return r;
    }
    let mut r = judge(run, trigger, &kept);
    r.reason = Some(match r.reason.take() {
        Some(reason) => format!("{reason}; {note}"),
        None => note,
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is read on each node of each cell of two catalogue files with iptables
    /// rulesets, derived from the cells' expressions alone.
    #[test]
    fn rule_counters_read_follow_the_expressions() {
        let mut out = String::new();
        for file in ["bridge-netfilter.toml", "conntrack-race-dns-openstack.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scenarios")
                .join(file);
            let sc = crate::scenario::load(&path).unwrap();
            for cell in &sc.cells {
                let wanted: Vec<String> = referenced_names(cell)
                    .into_iter()
                    .chain(sampled_names(cell))
                    .collect();
                let all = ruleset_kinds(cell);
                let read = kinds_to_read(all.clone(), &wanted);
                out.push_str(&format!("{}::{}\n", sc.name, cell.name));
                for (node, kinds) in &all {
                    if kinds.is_empty() {
                        continue;
                    }
                    let keys = |ks: &[RulesetKind]| {
                        ks.iter().map(|k| k.key()).collect::<Vec<_>>().join(",")
                    };
                    out.push_str(&format!(
                        "  {node}: has [{}] reads [{}]\n",
                        keys(kinds),
                        keys(&read[node])
                    ));
                }
            }
        }
        insta::assert_snapshot!("rule_counters_read", out);
    }

    #[test]
    fn globs_and_checkpoints_can_name_rule_counters() {
        let w = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(may_name(
            &w(&["iptables.r.filter.FORWARD.policy.packets"]),
            "iptables",
            "r"
        ));
        assert!(!may_name(
            &w(&["iptables.s.filter.FORWARD.policy.packets"]),
            "iptables",
            "r"
        ));
        assert!(!may_name(&w(&["iptables.r.x"]), "iptables-legacy", "r"));
        assert!(may_name(
            &w(&["at.cp1.iptables.r.raw.OUTPUT.1.packets"]),
            "iptables",
            "r"
        ));
        assert!(may_name(
            &w(&["*.r.filter.INPUT.1.packets"]),
            "ip6tables",
            "r"
        ));
        assert!(may_name(&w(&["iptables.**"]), "iptables", "r"));
        assert!(may_name(&w(&["**.packets"]), "iptables", "r"));
        assert!(!may_name(
            &w(&["conntrack.r.drop", "ping.sent"]),
            "iptables",
            "r"
        ));
    }

    fn driven(obs: &[(&str, f64)]) -> Driven {
        Driven {
            observations: obs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            drops: vec![],
            captures: vec![],
            drops_unavailable: Some("no tracefs".into()),
            splats: vec![],
        }
    }

    fn s(v: &[&str]) -> Vec<Expectation> {
        v.iter().map(|x| Expectation::parse(x).unwrap()).collect()
    }

    fn t(x: &str) -> Option<Expectation> {
        Some(Expectation::parse(x).unwrap())
    }

    #[test]
    fn without_drop_evidence_the_other_expectations_decide() {
        let obs = [("ping.sent", 20.0), ("ping.received", 0.0)];
        let r = judge_without_drops(
            driven(&obs),
            t("ping.sent > 0").as_ref(),
            &s(&["ping.received == 0", "drops.NETFILTER_DROP >= ping.sent"]),
            "no tracefs",
        );
        assert_eq!(r.outcome, Outcome::Pass);
        assert_eq!(
            r.reason.as_deref(),
            Some("no drop evidence (no tracefs); not evaluated: drops.NETFILTER_DROP >= ping.sent")
        );
        assert_eq!(r.checks.len(), 1);

        let r = judge_without_drops(
            driven(&obs),
            None,
            &s(&["ping.received == ping.sent", "sum(drops.*) > 0"]),
            "no tracefs",
        );
        assert_eq!(r.outcome, Outcome::Fail);
        let reason = r.reason.unwrap();
        assert!(
            reason.starts_with("expected ping.received == ping.sent"),
            "{reason}"
        );
        assert!(
            reason.ends_with("not evaluated: sum(drops.*) > 0"),
            "{reason}"
        );
    }

    #[test]
    fn a_cell_that_only_drops_can_judge_is_a_skip() {
        let obs = [("ping.sent", 20.0)];
        let r = judge_without_drops(
            driven(&obs),
            None,
            &s(&["drops.sw.NETFILTER_DROP >= ping.sent"]),
            "no tracefs",
        );
        assert_eq!(r.outcome, Outcome::Skip);
        let r = judge_without_drops(
            driven(&obs),
            t("exists(drops.NETFILTER_DROP)").as_ref(),
            &s(&["ping.sent > 0"]),
            "no tracefs",
        );
        assert_eq!(r.outcome, Outcome::Skip);
        assert!(r
            .reason
            .unwrap()
            .starts_with("no drop evidence (no tracefs)"));
    }

    #[test]
    fn only_drop_names_count_as_drop_evidence() {
        let e = |s: &str| crate::judge::Expectation::parse(s).unwrap();
        assert!(reads_drops(&e("drops.NETFILTER_DROP@nft_do_chain > 0")));
        assert!(reads_drops(&e("count(drops.sw.*) == 0")));
        assert!(!reads_drops(&e("ping.drops > 0")));
        assert!(!reads_drops(&e("link.sw.eth0.rx_dropped == 0")));
    }
}
