//! The seam between a lab's bookkeeping and the kernel: every operation that changes
//! the machine while a lab is built or torn down goes through [`Kernel`].
//!
//! [`Lab`](super::Lab) drives it with the one walk over the plan
//! ([`crate::plan::build_ops`]) and keeps the state file, the host lock and the undo
//! order; an implementation only carries operations out. Implementations:
//! [`Rtnetlink`](super::rtnetlink::Rtnetlink) (the real one); the `ip` / `nft` script
//! renderer ([`super::script::Script`], the benches' baseline); the recording fake and
//! the fault injector ([`super::fake`]), so build order, rollback and teardown are
//! tested without root and every failure path is tried as root.

use super::process::LabProcess;
use crate::model::{LabPlan, NodePlan, ProcessPlan};
use crate::plan::PlannedOp;
use anyhow::Result;
use std::path::Path;

pub trait Kernel: Send + Sync {
    /// Reads a host-global sysctl (to save it before it is changed).
    fn read_host_sysctl(&self, key: &str) -> Result<String>;
    /// Writes a host-global sysctl: the build's [`Op::HostSysctl`](crate::plan::Op)
    /// when `op` is given, a restore at teardown when it is None.
    fn write_host_sysctl(&self, op: Option<&PlannedOp>, key: &str, value: &str) -> Result<()>;
    /// Creates the namespace of an [`Op::Netns`](crate::plan::Op).
    fn create_netns(&self, op: &PlannedOp) -> Result<()>;
    /// Carries out `ops`, all of node `node` and of one per-node stage (veths,
    /// configure, carrier), in order, inside the node's namespace. Called for several
    /// nodes at once from different threads.
    fn in_node(&self, plan: &LabPlan, node: &NodePlan, ops: &[PlannedOp]) -> Result<()>;
    /// Starts the helper process of an [`Op::Process`](crate::plan::Op).
    fn start_process(
        &self,
        op: &PlannedOp,
        node: &NodePlan,
        p: &ProcessPlan,
        log_dir: &Path,
    ) -> Result<LabProcess>;
    /// Waits until a started helper has bound `port`.
    fn wait_ready(&self, p: &mut LabProcess, port: u16) -> Result<()>;

    /// Teardown: stops a helper (and its process group).
    fn stop_process(&self, p: &mut LabProcess) -> Result<()>;
    /// Teardown: removes a tracefs instance, if it is still there.
    fn remove_tracefs_instance(&self, name: &str) -> Result<()>;
    /// Teardown: deletes a namespace the lab created.
    fn delete_netns(&self, netns: &str) -> Result<()>;
}
