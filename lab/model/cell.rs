//! A cell ready to run: its lab (without the run prefix), traffic, evidence and
//! expectations, all validated.

use super::expr::Expectation;
use super::kernel::{KernelRange, KernelVersion};
use super::LabPlan;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellPlan {
    pub name: String,
    pub about: String,
    pub repeat: u32,
    pub requires: Requirements,
    /// `run_id` is empty and every `netns` is the bare node name until
    /// [`LabPlan::for_run`] gives them the run prefix.
    pub lab: LabPlan,
    /// The timeline: traffic and control steps in order.
    pub steps: Vec<super::steps::Step>,
    pub captures: Vec<super::capture::CaptureSpec>,
    /// Kernel log lines counted while the traffic runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kmsg: Vec<super::kmsg::KmsgSpec>,
    /// Trace drop reasons while the traffic runs.
    pub drops: bool,
    pub trigger: Option<Expectation>,
    pub expect: Vec<Expectation>,
    /// Replacements of trigger/expect on matching kernels; first match wins.
    pub by_kernel: Vec<KernelExpect>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelExpect {
    pub kernel: KernelRange,
    pub trigger: Option<Expectation>,
    /// Empty: the cell's own expectations.
    pub expect: Vec<Expectation>,
}

impl CellPlan {
    /// The trigger and expectations that apply on a kernel: the first matching
    /// `expect_by_kernel` entry, else the cell's own (also when the release does not
    /// parse as a version).
    pub fn expectations_for(&self, release: &str) -> (Option<&Expectation>, &[Expectation]) {
        if let Ok(version) = KernelVersion::parse(release) {
            if let Some(k) = self.by_kernel.iter().find(|k| k.kernel.contains(&version)) {
                let expect = if k.expect.is_empty() {
                    &self.expect
                } else {
                    &k.expect
                };
                return (k.trigger.as_ref().or(self.trigger.as_ref()), expect);
            }
        }
        (self.trigger.as_ref(), &self.expect)
    }
}

/// What must be present for the cell to run; missing → skip with the reason.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Requirements {
    pub programs: Vec<String>,
    pub paths: Vec<String>,
    pub cpus: u32,
}

impl LabPlan {
    /// The same lab with every namespace named `<run_id>-<node>`.
    pub fn for_run(&self, run_id: &str) -> LabPlan {
        let mut plan = self.clone();
        plan.run_id = run_id.to_string();
        for node in &mut plan.nodes {
            node.netns = format!("{run_id}-{}", node.name);
        }
        plan
    }

    pub fn node(&self, name: &str) -> Option<&super::NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
