//! Two [`Kernel`]s besides the real one: [`Recorder`], which changes nothing and
//! writes down every call (build order, rollback and teardown tested without root),
//! and [`FailAt`], which makes the K-th build operation of any kernel fail (every
//! failure path tried, as root, through the real one).

use super::process::LabProcess;
use super::seam::Kernel;
use crate::model::{LabPlan, NodePlan, ProcessPlan};
use crate::plan::{PlannedOp, Stage};
use anyhow::{anyhow, Result};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One call the [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Number of the build operation; None for teardown calls and reads.
    pub seq: Option<usize>,
    pub stage: Option<Stage>,
    pub text: String,
}

/// Pretends every operation succeeds (a host sysctl reads as `orig`) and logs it.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// The calls so far, in the order they were made.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The calls as lines, one per call. Nodes of one per-node stage run on threads
    /// of their own, so within such a stage the lines are put in walk order; the
    /// stages themselves, and teardown, stay in the order they happened.
    pub fn transcript(&self) -> String {
        let mut calls = self.calls();
        let mut i = 0;
        while i < calls.len() {
            let stage = calls[i].stage;
            let mut j = i;
            while j < calls.len() && calls[j].stage == stage {
                j += 1;
            }
            if stage.is_some_and(Stage::is_per_node) {
                calls[i..j].sort_by_key(|c| c.seq);
            }
            i = j;
        }
        calls
            .iter()
            .map(|c| match c.seq {
                Some(n) => format!("{n:>3} {}\n", c.text),
                None => format!("    {}\n", c.text),
            })
            .collect()
    }

    fn log(&self, op: Option<&PlannedOp>, text: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Call {
                seq: op.map(|o| o.seq),
                stage: op.map(|o| o.op.stage()),
                text,
            });
    }
}

impl Kernel for Recorder {
    fn read_host_sysctl(&self, key: &str) -> Result<String> {
        self.log(None, format!("read host sysctl {key}"));
        Ok("orig".into())
    }

    fn write_host_sysctl(&self, op: Option<&PlannedOp>, key: &str, value: &str) -> Result<()> {
        match op {
            Some(o) => self.log(Some(o), o.op.to_string()),
            None => self.log(None, format!("restore host sysctl {key} = {value}")),
        }
        Ok(())
    }

    fn create_netns(&self, op: &PlannedOp) -> Result<()> {
        self.log(Some(op), op.op.to_string());
        Ok(())
    }

    fn in_node(&self, _plan: &LabPlan, _node: &NodePlan, ops: &[PlannedOp]) -> Result<()> {
        for o in ops {
            self.log(Some(o), o.op.to_string());
        }
        Ok(())
    }

    fn start_process(
        &self,
        op: &PlannedOp,
        node: &NodePlan,
        p: &ProcessPlan,
        log_dir: &Path,
    ) -> Result<LabProcess> {
        self.log(Some(op), op.op.to_string());
        Ok(LabProcess {
            node: node.name.clone(),
            name: p.name.clone(),
            pid: 0,
            log: log_dir.join(format!("{}-{}.log", node.name, p.name)),
            child: None,
        })
    }

    fn wait_ready(&self, p: &mut LabProcess, port: u16) -> Result<()> {
        self.log(
            None,
            format!("wait for {}/{} on port {port}", p.node, p.name),
        );
        Ok(())
    }

    fn stop_process(&self, p: &mut LabProcess) -> Result<()> {
        self.log(None, format!("stop {}/{}", p.node, p.name));
        Ok(())
    }

    fn remove_tracefs_instance(&self, name: &str) -> Result<()> {
        self.log(None, format!("remove tracefs instance {name}"));
        Ok(())
    }

    fn delete_netns(&self, netns: &str) -> Result<()> {
        self.log(None, format!("delete netns `{netns}`"));
        Ok(())
    }
}

/// Wraps a kernel so that build operation number `k` (from 1, as numbered by
/// [`crate::plan::build_ops`]) fails before it reaches `inner`; everything else,
/// teardown included, goes through.
#[derive(Debug, Clone)]
pub struct FailAt<K> {
    inner: K,
    k: usize,
}

/// The error of an injected failure: names the operation (the lab adds its node, as
/// it does to every error of a node's operation).
pub fn injected(op: &PlannedOp) -> anyhow::Error {
    anyhow!(
        "{}: injected failure of operation {} ({}={})",
        op.op.what(),
        op.seq,
        super::FAIL_OP_ENV,
        op.seq
    )
}

impl<K: Kernel> FailAt<K> {
    pub fn new(inner: K, k: usize) -> FailAt<K> {
        FailAt { inner, k }
    }

    fn check(&self, op: &PlannedOp) -> Result<()> {
        if op.seq == self.k {
            Err(injected(op))
        } else {
            Ok(())
        }
    }
}

impl<K: Kernel> Kernel for FailAt<K> {
    fn read_host_sysctl(&self, key: &str) -> Result<String> {
        self.inner.read_host_sysctl(key)
    }

    fn write_host_sysctl(&self, op: Option<&PlannedOp>, key: &str, value: &str) -> Result<()> {
        if let Some(o) = op {
            self.check(o)?;
        }
        self.inner.write_host_sysctl(op, key, value)
    }

    fn create_netns(&self, op: &PlannedOp) -> Result<()> {
        self.check(op)?;
        self.inner.create_netns(op)
    }

    fn in_node(&self, plan: &LabPlan, node: &NodePlan, ops: &[PlannedOp]) -> Result<()> {
        match ops.iter().position(|o| o.seq == self.k) {
            None => self.inner.in_node(plan, node, ops),
            Some(j) => {
                self.inner.in_node(plan, node, &ops[..j])?;
                Err(injected(&ops[j]))
            }
        }
    }

    fn start_process(
        &self,
        op: &PlannedOp,
        node: &NodePlan,
        p: &ProcessPlan,
        log_dir: &Path,
    ) -> Result<LabProcess> {
        self.check(op)?;
        self.inner.start_process(op, node, p, log_dir)
    }

    fn wait_ready(&self, p: &mut LabProcess, port: u16) -> Result<()> {
        self.inner.wait_ready(p, port)
    }

    fn stop_process(&self, p: &mut LabProcess) -> Result<()> {
        self.inner.stop_process(p)
    }

    fn remove_tracefs_instance(&self, name: &str) -> Result<()> {
        self.inner.remove_tracefs_instance(name)
    }

    fn delete_netns(&self, netns: &str) -> Result<()> {
        self.inner.delete_netns(netns)
    }
}
