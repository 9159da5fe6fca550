//! The script renderer as a [`Kernel`]: a lab "built" through it writes down the
//! `ip` / `sysctl` / ruleset-loader command of each operation
//! ([`crate::plan::step_of`]) and the teardown commands, instead of running them.

use super::process::LabProcess;
use super::seam::Kernel;
use crate::model::{LabPlan, NodePlan, ProcessPlan};
use crate::plan::{step_of, sysctl_arg, Op, PlannedOp, Step};
use anyhow::Result;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Collects one [`Step`] per operation. The plan is needed to name veth peers'
/// namespaces; host sysctls read back as `orig`.
#[derive(Debug, Clone)]
pub struct Script {
    plan: LabPlan,
    steps: Arc<Mutex<Vec<(usize, Step)>>>,
}

impl Script {
    pub fn new(plan: &LabPlan) -> Script {
        Script {
            plan: plan.clone(),
            steps: Arc::default(),
        }
    }

    /// The build's steps in walk order (nodes of a stage run on threads of their
    /// own), then the teardown's in the order they came.
    pub fn steps(&self) -> Vec<Step> {
        let mut v = self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|(seq, _)| *seq);
        v.into_iter().map(|(_, s)| s).collect()
    }

    fn push(&self, seq: usize, op: &Op) {
        if let Some(s) = step_of(&self.plan, op) {
            self.push_step(seq, s);
        }
    }

    fn push_step(&self, seq: usize, s: Step) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((seq, s));
    }

    /// Teardown steps come after every build step, in call order.
    fn teardown(&self, argv: &[&str]) {
        let mut v = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let seq = usize::MAX / 2 + v.len();
        v.push((
            seq,
            Step {
                argv: argv.iter().map(|w| w.to_string()).collect(),
                stdin: None,
            },
        ));
    }
}

impl Kernel for Script {
    fn read_host_sysctl(&self, _key: &str) -> Result<String> {
        Ok("orig".into())
    }

    fn write_host_sysctl(&self, op: Option<&PlannedOp>, key: &str, value: &str) -> Result<()> {
        match op {
            Some(o) => self.push(o.seq, &o.op),
            None => self.teardown(&["sysctl", "-qw", &sysctl_arg(key, value)]),
        }
        Ok(())
    }

    fn create_netns(&self, op: &PlannedOp) -> Result<()> {
        self.push(op.seq, &op.op);
        Ok(())
    }

    fn in_node(&self, _plan: &LabPlan, _node: &NodePlan, ops: &[PlannedOp]) -> Result<()> {
        for o in ops {
            self.push(o.seq, &o.op);
        }
        Ok(())
    }

    fn start_process(
        &self,
        _op: &PlannedOp,
        node: &NodePlan,
        p: &ProcessPlan,
        log_dir: &Path,
    ) -> Result<LabProcess> {
        // Not translated: a selftest script starts its helpers itself.
        Ok(LabProcess {
            node: node.name.clone(),
            name: p.name.clone(),
            pid: 0,
            log: log_dir.join(format!("{}-{}.log", node.name, p.name)),
            child: None,
        })
    }

    fn wait_ready(&self, _p: &mut LabProcess, _port: u16) -> Result<()> {
        Ok(())
    }

    fn stop_process(&self, _p: &mut LabProcess) -> Result<()> {
        Ok(())
    }

    fn remove_tracefs_instance(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn delete_netns(&self, netns: &str) -> Result<()> {
        self.teardown(&["ip", "netns", "del", netns]);
        Ok(())
    }
}
