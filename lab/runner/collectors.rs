//! Evidence collectors of a cell: packet captures, the drop-reason trace, kernel log
//! counters and the kernel-health watch. Each implements [`Collector`]: started
//! before the first step, readable while the timeline runs, stopped after it.

use crate::evidence::{Capture, DropTargets, DropTrace, KmsgWatch, SplatWatch};
use crate::model::{CellPlan, LabPlan};
use crate::setup::Lab;
use crate::verdict::{DropStat, Observations};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What a collector leaves when it stops.
#[derive(Default)]
pub struct Collected {
    pub observations: Observations,
    pub drops: Vec<DropStat>,
    /// Files written (pcaps).
    pub files: Vec<String>,
    /// Kernel bug reports logged during the cell (WARN, BUG, KASAN, ...).
    pub splats: Vec<String>,
    /// Why the drop evidence is missing although the cell asked for it.
    pub drops_unavailable: Option<String>,
}

/// A running evidence collector.
pub trait Collector: Send {
    /// What it has seen so far (cheap); for `wait` steps and checkpoints.
    fn live(&self) -> Observations {
        Observations::new()
    }
    fn stop(self: Box<Self>) -> Result<Collected>;
}

struct CaptureCollector {
    name: String,
    capture: Capture,
    file: String,
}

impl Collector for CaptureCollector {
    fn live(&self) -> Observations {
        self.capture.counts_now()
    }
    fn stop(self: Box<Self>) -> Result<Collected> {
        let summary = self
            .capture
            .stop()
            .with_context(|| format!("stopping capture `{}`", self.name))?;
        Ok(Collected {
            observations: summary.observations(&self.name),
            files: vec![self.file],
            ..Default::default()
        })
    }
}

impl Collector for DropTrace {
    fn stop(self: Box<Self>) -> Result<Collected> {
        Ok(match (*self).stop_report() {
            Ok(report) => Collected {
                observations: report.observations(),
                drops: report.drops,
                ..Default::default()
            },
            Err(e) => Collected {
                drops_unavailable: Some(format!("reading the drop-reason trace: {e:#}")),
                ..Default::default()
            },
        })
    }
}

impl Collector for KmsgWatch {
    fn stop(self: Box<Self>) -> Result<Collected> {
        Ok(Collected {
            observations: (*self).stop(),
            ..Default::default()
        })
    }
}

impl Collector for SplatWatch {
    fn stop(self: Box<Self>) -> Result<Collected> {
        let report = (*self).stop();
        Ok(Collected {
            observations: report.observations(),
            splats: report.splats.clone(),
            ..Default::default()
        })
    }
}

/// The running collectors of one cell.
pub struct Evidence {
    collectors: Vec<Box<dyn Collector>>,
    /// Why the drop trace did not start although the cell asked for it.
    pub drops_unavailable: Option<String>,
}

impl Evidence {
    pub fn live(&self) -> Observations {
        self.collectors.iter().flat_map(|c| c.live()).collect()
    }

    /// Stops every collector (all of them, also after an error) and merges what
    /// they collected.
    pub fn stop(self) -> Result<Collected> {
        let mut all = Collected {
            drops_unavailable: self.drops_unavailable,
            ..Default::default()
        };
        let mut first_err = None;
        for c in self.collectors {
            match c.stop() {
                Ok(c) => {
                    all.observations.extend(c.observations);
                    all.drops.extend(c.drops);
                    all.files.extend(c.files);
                    all.splats.extend(c.splats);
                    if c.drops_unavailable.is_some() {
                        all.drops_unavailable = c.drops_unavailable;
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(all), Err)
    }
}

/// Set (to anything) to run as if tracefs were unavailable: the drop tracer is not
/// started and cells are judged without drop evidence. For tests of that degradation.
pub const NO_TRACEFS_ENV: &str = "FAULTLAB_NO_TRACEFS";

pub fn start(
    cell: &CellPlan,
    plan: &LabPlan,
    lab: &Lab,
    run_id: &str,
    artifacts: &Path,
    netns: &BTreeMap<String, String>,
) -> Result<Evidence> {
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    // Every cell watches the kernel's health; without /dev/kmsg it goes unwatched.
    if let Ok(w) = SplatWatch::start() {
        collectors.push(Box::new(w));
    }
    for spec in &cell.captures {
        let path = artifacts.join(format!("{}-{}.pcapng", cell.name, spec.name));
        let capture = Capture::start(&netns[&spec.node], spec, &path)
            .with_context(|| format!("starting capture `{}`", spec.name))?;
        collectors.push(Box::new(CaptureCollector {
            name: spec.name.clone(),
            capture,
            file: path.display().to_string(),
        }));
    }
    if !cell.kmsg.is_empty() {
        let mut specs = Vec::new();
        for k in &cell.kmsg {
            let inode = match &k.node {
                Some(node) => Some(
                    crate::evidence::kmsg::netns_inode(&netns[node])
                        .with_context(|| format!("kmsg `{}`: netns of node `{node}`", k.name))?,
                ),
                None => None,
            };
            specs.push((k.name.clone(), k.contains.clone(), inode));
        }
        collectors.push(Box::new(
            KmsgWatch::start(specs).context("reading the kernel log")?,
        ));
    }
    let mut drops_unavailable = None;
    if cell.drops {
        let instance = format!("{run_id}-drops");
        match start_drop_trace(lab, &instance, plan)? {
            Ok(t) => collectors.push(Box::new(t)),
            Err(why) => drops_unavailable = Some(why),
        }
    }
    Ok(Evidence {
        collectors,
        drops_unavailable,
    })
}

/// Starts the drop tracer, or says why it cannot run (no tracefs: no drop evidence,
/// which is not a failure of the cell).
fn start_drop_trace(
    lab: &Lab,
    instance: &str,
    plan: &LabPlan,
) -> Result<Result<DropTrace, String>> {
    if std::env::var_os(NO_TRACEFS_ENV).is_some() {
        return Ok(Err(format!("tracefs disabled by {NO_TRACEFS_ENV}")));
    }
    // Recorded first, so the instance is removed even if this run dies.
    lab.register_tracefs_instance(instance)?;
    let targets = DropTargets {
        namespaces: plan
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.netns.clone()))
            .collect(),
        devices: device_owners(plan),
    };
    match DropTrace::start(instance, &targets) {
        Ok(t) => Ok(Ok(t)),
        Err(e) => {
            let _ = crate::setup::state::remove_tracefs_instance(instance);
            lab.unregister_tracefs_instance(instance)?;
            Ok(Err(format!("{e:#}")))
        }
    }
}

/// Device name → node, for devices whose name is unique in the lab (drop attribution).
fn device_owners(plan: &LabPlan) -> BTreeMap<String, String> {
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
