//! The namespace-local part of a build: one node, on a thread inside its namespace.

use crate::model::{DeviceKind, LabPlan, NodePlan, VethPlan};
use crate::netns::netlink::{describe_route, Netlink, VxlanSpec};
use anyhow::{Context, Result};

/// First ifindex given to veth ends; each veth of the plan gets two.
const VETH_INDEX_BASE: u32 = 1000;

/// Creates the veths whose `a` end lives in `netns`, each peer directly in its node.
///
/// Both ends get distinct, explicit ifindexes. Left to the kernel, the two
/// ends of a veth between fresh namespaces often get the same number; then
/// `dev->ifindex == dev_get_iflink(dev)` and linkwatch treats the carrier event
/// as non-urgent, delaying it up to a second (net/core/link_watch.c,
/// linkwatch_urgent_event): the port does not forward and the build waits.
pub fn create_veths(nl: &Netlink, plan: &LabPlan, veths: &[&VethPlan]) -> Result<()> {
    for v in veths {
        let peer_ns = super::netns_for(plan, &v.b.node)?;
        let i = plan
            .veths
            .iter()
            .position(|p| std::ptr::eq(p, *v))
            .expect("veth belongs to the plan") as u32;
        let indexes = (VETH_INDEX_BASE + 2 * i, VETH_INDEX_BASE + 2 * i + 1);
        nl.add_veth(&v.a.dev, &v.b.dev, peer_ns, v.mtu, Some(indexes))
            .with_context(|| {
                format!("link {}:{} <-> {}:{}", v.a.node, v.a.dev, v.b.node, v.b.dev)
            })?;
    }
    Ok(())
}

/// Devices, bridge ports, sysctls, addresses, up, routes, neighbours, rulesets.
pub fn configure(nl: &Netlink, node: &NodePlan) -> Result<()> {
    for d in &node.devices {
        let res = match &d.kind {
            DeviceKind::Bridge { .. } => nl.add_bridge(&d.name, d.mtu),
            DeviceKind::Dummy => nl.add_dummy(&d.name, d.mtu),
            DeviceKind::Vxlan {
                vni,
                local,
                remote,
                dev,
                port,
            } => nl.add_vxlan(
                &d.name,
                &VxlanSpec {
                    vni: *vni,
                    local: *local,
                    remote: *remote,
                    dev: dev.as_deref(),
                    port: *port,
                },
                d.mtu,
            ),
        };
        res.with_context(|| format!("device `{}`", d.name))?;
    }
    for d in &node.devices {
        if let DeviceKind::Bridge { ports } = &d.kind {
            for p in ports {
                nl.set_master(p, &d.name).with_context(|| {
                    format!(
                        "bridge `{}`: port `{p}` (ports must be devices of node `{}`)",
                        d.name, node.name
                    )
                })?;
            }
        }
    }
    for s in &node.sysctls {
        crate::netns::sysctl::write_here(&s.key, &s.value)?;
    }
    for a in &node.addresses {
        nl.add_address(&a.dev, a.addr)?;
    }
    for dev in &node.up {
        nl.set_up(dev)?;
    }
    for r in &node.routes {
        nl.add_route(r)
            .with_context(|| format!("route `{}`", describe_route(r)))?;
    }
    for n in &node.neighbours {
        nl.add_neighbour(&n.dev, n.ip, &n.mac)?;
    }
    for (i, rs) in node.rulesets.iter().enumerate() {
        let (prog, args) = rs.kind.loader();
        let mut argv = vec![prog];
        argv.extend_from_slice(args);
        crate::netns::output_in(&node.netns, &argv, Some(&rs.text))
            .with_context(|| format!("ruleset #{} ({})", i + 1, rs.kind.key()))?;
    }
    Ok(())
}

/// How long links may take to get carrier before the build fails.
const RUNNING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until every link that is up is also running.
pub fn wait_running(nl: &Netlink) -> Result<()> {
    let deadline = std::time::Instant::now() + RUNNING_TIMEOUT;
    loop {
        let waiting = nl.links_not_running()?;
        if waiting.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "links still without carrier after {:?}: {} (is the peer end up? a bridge with no running port never runs)",
                RUNNING_TIMEOUT,
                waiting.join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
