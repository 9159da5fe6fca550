//! The namespace-local part of a build: one node, on a thread inside its namespace.

use crate::model::{DeviceKind, DevicePlan, NodePlan, VethPlan};
use crate::netns::netlink::{LinkOpts, Netlink, VxlanSpec};
use anyhow::{Context, Result};

pub use crate::netns::netlink::MissingFeature;

/// When `err` (a build error) comes from a device kind the running kernel lacks, the
/// reason to skip with: "kernel has no `vrf` devices (CONFIG_NET_VRF)".
pub fn missing_feature(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|e| e.downcast_ref::<MissingFeature>())
        .or_else(|| err.downcast_ref::<MissingFeature>())
        .map(MissingFeature::reason)
}

/// First ifindex given to veth ends; each veth of the plan gets two.
const VETH_INDEX_BASE: u32 = 1000;

/// Creates veth number `index` of the plan from its `a` node's namespace (where `nl`
/// is), the peer directly in `peer_ns`.
///
/// Both ends get distinct, explicit ifindexes. Left to the kernel, the two
/// ends of a veth between fresh namespaces often get the same number; then
/// `dev->ifindex == dev_get_iflink(dev)` and linkwatch treats the carrier event
/// as non-urgent, delaying it up to a second (net/core/link_watch.c,
/// linkwatch_urgent_event): the port does not forward and the build waits.
/// Each end gets its planned MAC in the same request.
pub fn create_veth(nl: &Netlink, index: usize, v: &VethPlan, peer_ns: &str) -> Result<()> {
    let i = index as u32;
    let indexes = (VETH_INDEX_BASE + 2 * i, VETH_INDEX_BASE + 2 * i + 1);
    let macs = (v.a.mac.as_deref(), v.b.mac.as_deref());
    nl.add_veth(&v.a.dev, &v.b.dev, peer_ns, v.mtu, Some(indexes), macs)
        .with_context(|| format!("link {}:{} <-> {}:{}", v.a.node, v.a.dev, v.b.node, v.b.dev))
}

/// Creates one planned device (not its ports) with its MTU and MAC. The device it
/// sits on (a macvlan's link, a vxlan's dev) must exist. A kernel without the kind
/// fails with a [`MissingFeature`] in the chain.
pub fn create_device(nl: &Netlink, d: &DevicePlan) -> Result<()> {
    let opts = LinkOpts {
        mtu: d.mtu,
        mac: d.mac.as_deref(),
    };
    let res = match &d.kind {
        DeviceKind::Bridge { .. } => nl.add_bridge(&d.name, opts),
        DeviceKind::Dummy => nl.add_dummy(&d.name, opts),
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
            opts,
        ),
        DeviceKind::Macvlan {
            link,
            mode,
            sources,
        } => nl.add_macvlan(&d.name, link, *mode, sources, opts),
        DeviceKind::Vrf { table, .. } => nl.add_vrf(&d.name, *table, opts),
    };
    res.with_context(|| format!("device `{}`", d.name))
}

/// Enslaves `port` to the bridge or vrf `master`.
pub fn enslave_port(nl: &Netlink, node: &str, master: &DevicePlan, port: &str) -> Result<()> {
    nl.set_master(port, &master.name).with_context(|| {
        format!(
            "{} `{}`: port `{port}` (ports must be devices of node `{node}`)",
            master.kind.name(),
            master.name
        )
    })
}

/// Devices, bridge and vrf ports, sysctls, addresses, up, routes, ip rules, neighbours,
/// rulesets, commands of `node`, in the build's order, on `nl` (inside the node's namespace).
pub fn configure(nl: &Netlink, node: &NodePlan) -> Result<()> {
    for op in crate::plan::ops::configure_ops(node) {
        super::rtnetlink::apply(nl, &op)?;
    }
    Ok(())
}

/// Loads one ruleset inside `netns`: nft in-process (lab/netns/nft.rs), the others with
/// their kind's loader (`*-restore`).
pub fn load_ruleset(netns: &str, rs: &crate::model::RulesetPlan) -> Result<()> {
    if rs.kind == crate::model::RulesetKind::Nft {
        crate::netns::nft::run(netns, &rs.text).context("loading a nft ruleset")?;
        return Ok(());
    }
    let (prog, args) = rs.kind.loader();
    let mut argv = vec![prog];
    argv.extend_from_slice(args);
    crate::netns::output_in(netns, &argv, Some(&rs.text))
        .with_context(|| format!("loading a {} ruleset", rs.kind.key()))?;
    Ok(())
}

/// How long a node's command may run while the lab is built (scaled like other caps).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one of the node's `commands` to completion inside `netns`; anything but exit
/// status 0 fails the build with what the program said.
pub fn run_command(netns: &str, cmd: &crate::model::CommandPlan) -> Result<()> {
    let argv = super::process::resolve_argv(&cmd.argv)?;
    let cap = super::caps::scaled(COMMAND_TIMEOUT);
    let done = crate::netns::exec::run_bounded(netns, &argv, cap)?;
    match done.status {
        Some(st) if st.success() => Ok(()),
        Some(st) => anyhow::bail!(
            "`{cmd}` failed ({st}): {}",
            crate::netns::exec::said(&done.stderr, &done.stdout)
        ),
        None => anyhow::bail!("`{cmd}` did not exit within {cap:?} and was killed"),
    }
}

/// How long links may take to get carrier before the build fails.
const RUNNING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until every link that is up is also running.
pub fn wait_running(nl: &Netlink) -> Result<()> {
    let cap = super::caps::scaled(RUNNING_TIMEOUT);
    let deadline = std::time::Instant::now() + cap;
    loop {
        let waiting = nl.links_not_running()?;
        if waiting.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "links still without carrier after {:?}: {} (is the peer end up? a bridge with no running port never runs)",
                cap,
                waiting.join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
