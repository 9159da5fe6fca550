//! One repetition of one cell: build → observe → drive → observe → judge → tear down.

use crate::build::Lab;
use crate::evidence::{Capture, DropTrace};
use crate::plan::CellPlan;
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
        }
    }
}

pub struct CellEnv<'a> {
    pub run_id: &'a str,
    pub kernel: &'a str,
    /// Where pcaps go; the runner makes it.
    pub artifacts: &'a Path,
    pub slow: f64,
}

pub fn run_once(cell: &CellPlan, env: &CellEnv) -> RepetitionResult {
    let (trigger, expect) = super::kernel::expectations_for(cell, env.kernel);
    match drive(cell, env) {
        Ok(run) => judge(run, trigger.as_deref(), &expect),
        Err(e) => RepetitionResult::error(Outcome::Fail, format!("{e:#}")),
    }
}

struct Driven {
    observations: Observations,
    drops: Vec<DropStat>,
    captures: Vec<String>,
}

fn drive(cell: &CellPlan, env: &CellEnv) -> anyhow::Result<Driven> {
    let plan = cell.lab.for_run(env.run_id);
    let lab = Lab::build(&plan).context("building the lab")?;
    let result = observe_traffic(cell, &plan, &lab, env);
    let errors = lab.teardown();
    let driven = result?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("tearing the lab down"));
    }
    Ok(driven)
}

fn observe_traffic(
    cell: &CellPlan,
    plan: &crate::plan::LabPlan,
    lab: &Lab,
    env: &CellEnv,
) -> anyhow::Result<Driven> {
    let netns: BTreeMap<String, String> = plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.netns.clone()))
        .collect();
    let kinds_of = |node: &crate::plan::NodePlan| {
        let mut kinds: Vec<_> = node.rulesets.iter().map(|r| r.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    };
    let mut before = BTreeMap::new();
    for node in &plan.nodes {
        let counters = crate::observe::snapshot_node(&node.netns, &kinds_of(node))
            .with_context(|| format!("reading counters of node `{}`", node.name))?;
        before.insert(node.name.clone(), counters);
    }

    let mut captures = Vec::new();
    let mut capture_files = Vec::new();
    for spec in &cell.captures {
        let file = format!("{}-{}.pcap", cell.name, spec.name);
        let path = env.artifacts.join(&file);
        let ns = &netns[&spec.node];
        captures.push(
            Capture::start(ns, spec, &path)
                .with_context(|| format!("starting capture `{}`", spec.name))?,
        );
        capture_files.push(path.display().to_string());
    }
    let drop_trace = if cell.drops {
        let instance = format!("{}-drops", env.run_id);
        lab.register_tracefs_instance(&instance)?;
        Some(
            DropTrace::start(&instance, &device_owners(plan))
                .context("starting the drop-reason trace")?,
        )
    } else {
        None
    };

    let mut observations = Observations::new();
    let interrupted = || crate::build::signals::interrupted();
    let ctx = crate::traffic::TrafficContext {
        netns: &netns,
        artifacts: env.artifacts,
        interrupted: &interrupted,
        slow: env.slow,
    };
    let mut traffic_error = None;
    for spec in &cell.traffic {
        if crate::build::signals::interrupted() {
            traffic_error = Some(anyhow::anyhow!("interrupted"));
            break;
        }
        match crate::traffic::run(spec, &ctx) {
            Ok(metrics) => {
                let prefix = spec.name();
                observations.extend(
                    metrics
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}.{k}"), v)),
                );
            }
            Err(e) => {
                traffic_error = Some(e.context(format!("traffic step `{}`", spec.name())));
                break;
            }
        }
    }

    let drops = match drop_trace {
        Some(t) => t.stop().context("stopping the drop-reason trace")?,
        None => Vec::new(),
    };
    for (spec, cap) in cell.captures.iter().zip(captures) {
        let summary = cap
            .stop()
            .with_context(|| format!("stopping capture `{}`", spec.name))?;
        observations.extend(summary.observations(&spec.name));
    }
    if let Some(e) = traffic_error {
        return Err(e);
    }
    for node in &plan.nodes {
        let after = crate::observe::snapshot_node(&node.netns, &kinds_of(node))
            .with_context(|| format!("reading counters of node `{}`", node.name))?;
        observations.extend(crate::observe::observations_delta(
            &node.name,
            &before[&node.name],
            &after,
        ));
    }
    observations.extend(crate::evidence::drops_observations(&drops));
    Ok(Driven {
        observations,
        drops,
        captures: capture_files,
    })
}

/// Device name → node, for devices whose name is unique in the lab (drop attribution).
fn device_owners(plan: &crate::plan::LabPlan) -> BTreeMap<String, String> {
    let mut owners: BTreeMap<String, Option<String>> = BTreeMap::new();
    for node in &plan.nodes {
        for dev in node.up.iter().filter(|d| *d != "lo") {
            owners
                .entry(dev.clone())
                .and_modify(|o| *o = None)
                .or_insert_with(|| Some(node.name.clone()));
        }
    }
    owners
        .into_iter()
        .filter_map(|(d, n)| n.map(|n| (d, n)))
        .collect()
}

fn judge(run: Driven, trigger: Option<&str>, expect: &[String]) -> RepetitionResult {
    use crate::judge::Expectation;
    let trigger = trigger.map(|t| Expectation::parse(t).expect("validated at load"));
    let expects: Vec<Expectation> = expect
        .iter()
        .map(|e| Expectation::parse(e).expect("validated at load"))
        .collect();
    let (outcome, reason, trigger, checks) =
        crate::judge::judge_cell(trigger.as_ref(), &expects, &run.observations);
    RepetitionResult {
        outcome,
        reason,
        trigger,
        checks,
        observations: run.observations,
        drops: run.drops,
        captures: run.captures,
    }
}
