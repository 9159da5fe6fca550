//! The one walk over a plan: every operation that touches the kernel while a lab is
//! built, in build order. The rtnetlink builder, the `ip` / `nft` script renderer and
//! the recording fake all consume this list, so they cannot disagree on order.
//!
//! Order: host sysctls, namespaces, veths (from their `a` node), then per node
//! devices, bridge and vrf ports, sysctls, addresses, up, routes, ip rules, neighbours, rulesets,
//! commands;
//! then the wait for carrier on every node, then helper processes. Pure: no syscalls.

use crate::model::{
    AddressPlan, CommandPlan, DevicePlan, IpRulePlan, LabPlan, NeighbourPlan, NodePlan,
    ProcessPlan, RoutePlan, RulesetPlan, Sysctl, VethPlan,
};
use std::fmt;

/// One kernel operation of a build.
#[derive(Debug, Clone, Copy)]
pub enum Op<'p> {
    /// A host-global sysctl (saved first, restored at teardown).
    HostSysctl(&'p Sysctl),
    /// The node's namespace.
    Netns(&'p NodePlan),
    /// A veth, created from node `a`'s namespace with its peer directly in `b`'s.
    /// `index` is the veth's position in the plan (it fixes both ends' ifindexes).
    Veth {
        index: usize,
        veth: &'p VethPlan,
        a: &'p NodePlan,
        b: &'p NodePlan,
    },
    Device(&'p NodePlan, &'p DevicePlan),
    /// `port` enslaved to the bridge or vrf `master`.
    Port {
        node: &'p NodePlan,
        master: &'p DevicePlan,
        port: &'p str,
    },
    Sysctl(&'p NodePlan, &'p Sysctl),
    Address(&'p NodePlan, &'p AddressPlan),
    Up(&'p NodePlan, &'p str),
    Route(&'p NodePlan, &'p RoutePlan),
    /// A policy routing rule (`ip rule add`).
    IpRule(&'p NodePlan, &'p IpRulePlan),
    Neighbour(&'p NodePlan, &'p NeighbourPlan),
    /// Ruleset number `index` (0-based) of the node.
    Ruleset {
        node: &'p NodePlan,
        index: usize,
        ruleset: &'p RulesetPlan,
    },
    /// One of the node's `commands`, run to completion.
    Command(&'p NodePlan, &'p CommandPlan),
    /// Waits until every link of the node that is up also runs (has carrier).
    Carrier(&'p NodePlan),
    /// A helper process in the node's namespace.
    Process(&'p NodePlan, &'p ProcessPlan),
}

/// Groups of operations the builder runs one after another; within the node-local
/// stages ([`Stage::is_per_node`]) the nodes go in parallel, each node's ops in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Host,
    Namespaces,
    Veths,
    Configure,
    Carrier,
    Processes,
}

impl Stage {
    /// True for the stages whose operations run inside one node's namespace.
    pub fn is_per_node(self) -> bool {
        matches!(self, Stage::Veths | Stage::Configure | Stage::Carrier)
    }
}

/// An operation with its 1-based number in the walk (what fault injection counts).
#[derive(Debug, Clone, Copy)]
pub struct PlannedOp<'p> {
    pub seq: usize,
    pub op: Op<'p>,
}

impl<'p> Op<'p> {
    /// The node the operation belongs to (a veth: its `a` node); None for host sysctls.
    pub fn node(&self) -> Option<&'p NodePlan> {
        match *self {
            Op::HostSysctl(_) => None,
            Op::Netns(n)
            | Op::Device(n, _)
            | Op::Sysctl(n, _)
            | Op::Address(n, _)
            | Op::Up(n, _)
            | Op::Route(n, _)
            | Op::IpRule(n, _)
            | Op::Neighbour(n, _)
            | Op::Command(n, _)
            | Op::Carrier(n)
            | Op::Process(n, _) => Some(n),
            Op::Veth { a, .. } => Some(a),
            Op::Port { node, .. } | Op::Ruleset { node, .. } => Some(node),
        }
    }

    pub fn stage(&self) -> Stage {
        match self {
            Op::HostSysctl(_) => Stage::Host,
            Op::Netns(_) => Stage::Namespaces,
            Op::Veth { .. } => Stage::Veths,
            Op::Carrier(_) => Stage::Carrier,
            Op::Process(..) => Stage::Processes,
            _ => Stage::Configure,
        }
    }

    /// Short name of the kind of operation (`route`, `ruleset`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::HostSysctl(_) => "host sysctl",
            Op::Netns(_) => "netns",
            Op::Veth { .. } => "veth",
            Op::Device(..) => "device",
            Op::Port { .. } => "port",
            Op::Sysctl(..) => "sysctl",
            Op::Address(..) => "address",
            Op::Up(..) => "up",
            Op::Route(..) => "route",
            Op::IpRule(..) => "ip rule",
            Op::Neighbour(..) => "neighbour",
            Op::Ruleset { .. } => "ruleset",
            Op::Command(..) => "command",
            Op::Carrier(_) => "carrier",
            Op::Process(..) => "process",
        }
    }
}

/// `node `a`: route `10.0.0.0/8 via 192.0.2.1``: the node and [`Op::what`].
impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.node() {
            write!(f, "node `{}`: ", n.name)?;
        }
        write!(f, "{}", self.what())
    }
}

/// What the operation does, without its node: `route `10.0.0.0/8 via 192.0.2.1``.
pub struct What<'a, 'p>(&'a Op<'p>);

impl<'p> Op<'p> {
    pub fn what(&self) -> What<'_, 'p> {
        What(self)
    }
}

impl fmt::Display for What<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::HostSysctl(s) => write!(f, "host sysctl {} = {}", s.key, s.value),
            Op::Netns(n) => write!(f, "netns `{}`", n.netns),
            Op::Veth { veth: v, .. } => write!(
                f,
                "link {}:{} <-> {}:{}",
                v.a.node, v.a.dev, v.b.node, v.b.dev
            ),
            Op::Device(_, d) => write!(f, "{} `{}`", d.kind.name(), d.name),
            Op::Port { master, port, .. } => {
                write!(f, "{} `{}`: port `{port}`", master.kind.name(), master.name)
            }
            Op::Sysctl(_, s) => write!(f, "sysctl {} = {}", s.key, s.value),
            Op::Address(_, a) => write!(f, "address {} on `{}`", a.addr, a.dev),
            Op::Up(_, d) => write!(f, "set `{d}` up"),
            Op::Route(_, r) => write!(f, "route `{}`", crate::netns::netlink::describe_route(r)),
            Op::IpRule(_, r) => write!(f, "ip rule `{r}`"),
            Op::Neighbour(_, nb) => write!(f, "neighbour {} {} on `{}`", nb.ip, nb.mac, nb.dev),
            Op::Ruleset { index, ruleset, .. } => {
                write!(f, "ruleset #{} ({})", index + 1, ruleset.kind.key())
            }
            Op::Command(_, c) => write!(f, "command `{c}`"),
            Op::Carrier(_) => write!(f, "wait for carrier"),
            Op::Process(_, p) => write!(f, "process `{}`", p.name),
        }
    }
}

/// Every operation of building `plan`, numbered from 1, in build order.
pub fn build_ops(plan: &LabPlan) -> Vec<PlannedOp<'_>> {
    let mut ops = Vec::new();
    ops.extend(plan.host_sysctls.iter().map(Op::HostSysctl));
    ops.extend(plan.nodes.iter().map(Op::Netns));
    for (index, veth) in plan.veths.iter().enumerate() {
        // validate() has checked both ends name nodes of the plan.
        if let (Some(a), Some(b)) = (plan.node(&veth.a.node), plan.node(&veth.b.node)) {
            ops.push(Op::Veth { index, veth, a, b });
        }
    }
    for n in &plan.nodes {
        ops.extend(configure_ops(n));
    }
    ops.extend(plan.nodes.iter().map(Op::Carrier));
    for n in &plan.nodes {
        ops.extend(n.processes.iter().map(|p| Op::Process(n, p)));
    }
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| PlannedOp { seq: i + 1, op })
        .collect()
}

/// The configure stage of one node, in order.
pub fn configure_ops(n: &NodePlan) -> Vec<Op<'_>> {
    let mut ops: Vec<Op<'_>> = n.devices.iter().map(|d| Op::Device(n, d)).collect();
    for d in &n.devices {
        ops.extend(d.kind.ports().iter().map(|p| Op::Port {
            node: n,
            master: d,
            port: p.as_str(),
        }));
    }
    ops.extend(n.sysctls.iter().map(|s| Op::Sysctl(n, s)));
    ops.extend(n.addresses.iter().map(|a| Op::Address(n, a)));
    ops.extend(n.up.iter().map(|d| Op::Up(n, d.as_str())));
    ops.extend(n.routes.iter().map(|r| Op::Route(n, r)));
    ops.extend(n.ip_rules.iter().map(|r| Op::IpRule(n, r)));
    ops.extend(n.neighbours.iter().map(|nb| Op::Neighbour(n, nb)));
    ops.extend(
        n.rulesets
            .iter()
            .enumerate()
            .map(|(index, ruleset)| Op::Ruleset {
                node: n,
                index,
                ruleset,
            }),
    );
    ops.extend(n.commands.iter().map(|c| Op::Command(n, c)));
    ops
}
