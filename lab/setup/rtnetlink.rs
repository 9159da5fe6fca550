//! The real [`Kernel`]: in-process rtnetlink and sysctl writes in each node's
//! namespace, ruleset loaders and helpers started inside it, namespaces bind-mounted
//! the iproute2 way (see [`crate::netns`]).

use super::node;
use super::process::{self, LabProcess};
use super::seam::Kernel;
use super::state;
use crate::model::{LabPlan, NodePlan, ProcessPlan};
use crate::netns::netlink::Netlink;
use crate::plan::{Op, PlannedOp};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// How long a helper gets between SIGTERM and SIGKILL at teardown.
const STOP_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy)]
pub struct Rtnetlink;

impl Kernel for Rtnetlink {
    fn read_host_sysctl(&self, key: &str) -> Result<String> {
        crate::netns::sysctl::read_here(key).with_context(|| format!("host sysctl {key}"))
    }

    fn write_host_sysctl(&self, _op: Option<&PlannedOp>, key: &str, value: &str) -> Result<()> {
        state::write_host_sysctl(key, value)
    }

    fn create_netns(&self, op: &PlannedOp) -> Result<()> {
        let Op::Netns(n) = op.op else {
            anyhow::bail!("create_netns called with {}", op.op);
        };
        crate::netns::create(&n.netns)?;
        no_dad_by_default(&n.netns)
    }

    fn in_node(&self, _plan: &LabPlan, node: &NodePlan, ops: &[PlannedOp]) -> Result<()> {
        crate::netns::with_netlink(&node.netns, |nl| {
            for o in ops {
                apply(nl, &o.op)?;
            }
            Ok(())
        })
    }

    fn start_process(
        &self,
        _op: &PlannedOp,
        node: &NodePlan,
        p: &ProcessPlan,
        log_dir: &Path,
    ) -> Result<LabProcess> {
        process::start(&node.name, &node.netns, p, log_dir)
    }

    fn wait_ready(&self, p: &mut LabProcess, port: u16) -> Result<()> {
        process::wait_ready(p, port, super::caps::scaled(process::READY_TIMEOUT))
    }

    fn stop_process(&self, p: &mut LabProcess) -> Result<()> {
        process::stop(p, STOP_GRACE)
    }

    fn remove_tracefs_instance(&self, name: &str) -> Result<()> {
        state::remove_tracefs_instance(name).map(|_| ())
    }

    fn delete_netns(&self, netns: &str) -> Result<()> {
        crate::netns::delete(netns)
    }
}

/// One node-local operation on the node's netlink socket. The error names the item
/// (device, route, ruleset); the node is added by the caller.
pub fn apply(nl: &Netlink, op: &Op) -> Result<()> {
    match *op {
        Op::Veth { index, veth, b, .. } => node::create_veth(nl, index, veth, &b.netns),
        Op::Device(_, d) => node::create_device(nl, d),
        Op::Port { node, master, port } => node::enslave_port(nl, &node.name, master, port),
        Op::Sysctl(_, s) => crate::netns::sysctl::write_here(&s.key, &s.value),
        Op::Address(_, a) => nl.add_address(&a.dev, a.addr),
        Op::Up(_, dev) => nl.set_up(dev),
        Op::Route(_, r) => nl
            .add_route(r)
            .with_context(|| format!("route `{}`", crate::netns::netlink::describe_route(r))),
        Op::IpRule(_, r) => nl.add_ip_rule(r),
        Op::Neighbour(_, n) => nl.add_neighbour(&n.dev, n.ip, &n.mac),
        Op::Ruleset {
            node,
            index,
            ruleset,
        } => node::load_ruleset(&node.netns, ruleset)
            .with_context(|| format!("ruleset #{}", index + 1)),
        Op::Command(node, c) => node::run_command(&node.netns, c),
        Op::Carrier(_) => node::wait_running(nl),
        Op::HostSysctl(_) | Op::Netns(_) | Op::Process(..) => {
            anyhow::bail!("{op} is not a node-local operation")
        }
    }
}

/// Devices created later inherit `default`: their link-local addresses then
/// skip duplicate address detection too. While a link-local address is
/// tentative, the first IPv6 packets of a fresh lab are delayed by about a
/// second (neighbour discovery waits on it), which a scenario would misread as loss.
fn no_dad_by_default(netns: &str) -> Result<()> {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    crate::netns::sysctl_write(netns, "net.ipv6.conf.default.accept_dad", "0")?;
    crate::netns::sysctl_write(netns, "net.ipv6.conf.all.accept_dad", "0")
}
