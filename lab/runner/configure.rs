//! Applies a `configure` step to a live node, in the order the model documents.

use crate::model::steps::{ConfigurePlan, Op};
use crate::model::{NodePlan, RulesetKind};
use anyhow::{Context, Result};

/// Empty tables, every built-in chain ACCEPT: what `flush` loads for the
/// iptables kinds (restore without --noflush replaces the tables it names).
const IPTABLES_EMPTY: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n\
*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n\
*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n\
*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

fn flush(netns: &str, kind: RulesetKind) -> Result<()> {
    let (argv, stdin): (Vec<&str>, Option<&str>) = match kind {
        // Every nf_tables table of the namespace, iptables-nft's included.
        RulesetKind::Nft => (vec!["nft", "flush", "ruleset"], None),
        other => {
            let (prog, _) = other.loader();
            (vec![prog], Some(IPTABLES_EMPTY))
        }
    };
    crate::netns::output_in(netns, &argv, stdin)
        .with_context(|| format!("flushing {} rulesets", kind.key()))?;
    Ok(())
}

pub fn apply(netns: &str, c: &ConfigurePlan) -> Result<()> {
    crate::netns::with_netlink(netns, |nl| {
        if !c.add_devices.is_empty() {
            let node = NodePlan {
                name: c.node.clone(),
                netns: netns.to_string(),
                devices: c.add_devices.clone(),
                sysctls: vec![],
                addresses: vec![],
                up: vec![],
                routes: vec![],
                neighbours: vec![],
                rulesets: vec![],
                processes: vec![],
            };
            crate::setup::node::configure(nl, &node).context("adding devices")?;
            for d in &c.add_devices {
                nl.set_up(&d.name)?;
            }
        }
        for l in &c.links {
            if let Some(mac) = &l.mac {
                nl.set_mac(&l.dev, mac)?;
            }
            if let Some(mtu) = l.mtu {
                nl.set_mtu(&l.dev, mtu)?;
            }
            match l.up {
                Some(true) => nl.set_up(&l.dev)?,
                Some(false) => nl.set_down(&l.dev)?,
                None => {}
            }
        }
        for s in &c.sysctls {
            crate::netns::sysctl::write_here(&s.key, &s.value)?;
        }
        Ok(())
    })?;
    for &kind in &c.flush {
        flush(netns, kind)?;
    }
    for (i, rs) in c.load.iter().enumerate() {
        crate::setup::node::load_ruleset(netns, rs)
            .with_context(|| format!("ruleset #{} of the step", i + 1))?;
    }
    crate::netns::with_netlink(netns, |nl| {
        for r in &c.routes {
            match r.op {
                Op::Add => nl.add_route(&r.what)?,
                Op::Replace => nl.replace_route(&r.what)?,
                Op::Delete => nl.delete_route(&r.what)?,
            }
        }
        for n in &c.neighbours {
            let w = &n.what;
            match n.op {
                Op::Add => nl.add_neighbour(&w.dev, w.ip, &w.mac)?,
                Op::Replace => nl.replace_neighbour(&w.dev, w.ip, &w.mac)?,
                Op::Delete => nl.delete_neighbour(&w.dev, w.ip)?,
            }
        }
        for d in &c.delete_devices {
            nl.delete_link(d)?;
        }
        Ok(())
    })
}
