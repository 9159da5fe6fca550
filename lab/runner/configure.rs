//! Applies a `configure` step to a live node, in the order the model documents.

use crate::model::steps::{ConfigurePlan, Op};
use crate::model::{NodePlan, RulesetKind, RulesetPlan};
use anyhow::{Context, Result};

/// Empty tables, every built-in chain ACCEPT: what `flush` loads for the
/// iptables kinds (restore without --noflush replaces the tables it names).
const IPTABLES_EMPTY: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n\
*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n\
*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n\
*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

fn flush(netns: &str, kind: RulesetKind) -> Result<()> {
    let flushed = match kind {
        // Every nf_tables table of the namespace, iptables-nft's included.
        RulesetKind::Nft => crate::netns::nft::run(netns, "flush ruleset").map(|_| ()),
        other => {
            let (prog, _) = other.loader();
            crate::netns::output_in(netns, &[prog], Some(IPTABLES_EMPTY))
                .map(|_| ())
                .map_err(Into::into)
        }
    };
    flushed.with_context(|| format!("flushing {} rulesets", kind.key()))
}

/// Consecutive nft loads joined into one text, so they cost one nft transaction (and,
/// without libnftables, one `nft -f` process) instead of one each; other kinds stay one
/// load each. Yields
/// (first, last, ruleset) with 1-based positions in `loads`.
pub fn batched_loads(loads: &[RulesetPlan]) -> Vec<(usize, usize, RulesetPlan)> {
    let mut out: Vec<(usize, usize, RulesetPlan)> = Vec::new();
    for (i, rs) in loads.iter().enumerate() {
        match out.last_mut() {
            Some((_, last, prev))
                if prev.kind == RulesetKind::Nft && rs.kind == RulesetKind::Nft =>
            {
                if !prev.text.ends_with('\n') {
                    prev.text.push('\n');
                }
                prev.text.push_str(&rs.text);
                *last = i + 1;
            }
            _ => out.push((i + 1, i + 1, rs.clone())),
        }
    }
    out
}

/// The longest run at the start of `plans` of `configure` steps that only load nft
/// rulesets into one node, merged into one step (see [`batched_loads`]), and its length;
/// None when that run is shorter than two.
pub fn merge_nft_loads(plans: &[&ConfigurePlan]) -> Option<(ConfigurePlan, usize)> {
    let first = plans.first()?;
    let only_nft = |c: &ConfigurePlan| {
        c.node == first.node
            && !c.load.is_empty()
            && c.load.iter().all(|l| l.kind == RulesetKind::Nft)
            // Nothing but the loads: every other change keeps its own step.
            && ConfigurePlan {
                load: Vec::new(),
                ..c.clone()
            } == ConfigurePlan {
                node: c.node.clone(),
                ..Default::default()
            }
    };
    let n = plans.iter().take_while(|c| only_nft(c)).count();
    if n < 2 {
        return None;
    }
    let mut merged = (*first).clone();
    merged.load = plans[..n]
        .iter()
        .flat_map(|c| c.load.iter().cloned())
        .collect();
    Some((merged, n))
}

pub fn apply(netns: &str, c: &ConfigurePlan) -> Result<()> {
    crate::netns::with_netlink(netns, |nl| {
        if !c.add_devices.is_empty() {
            let node = NodePlan {
                name: c.node.clone(),
                netns: netns.to_string(),
                devices: c.add_devices.clone(),
                ..Default::default()
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
    for (first, last, rs) in batched_loads(&c.load) {
        let which = if first == last {
            format!("ruleset #{first} of the step")
        } else {
            format!("rulesets #{first}-#{last} of the step (loaded as one nft transaction)")
        };
        crate::setup::node::load_ruleset(netns, &rs).with_context(|| which)?;
    }
    crate::netns::with_netlink(netns, |nl| {
        for r in &c.routes {
            match r.op {
                Op::Add => nl.add_route(&r.what)?,
                Op::Replace => nl.replace_route(&r.what)?,
                Op::Delete => nl.delete_route(&r.what)?,
            }
        }
        for r in &c.ip_rules {
            match r.op {
                Op::Delete => nl.delete_ip_rule(&r.what)?,
                Op::Add | Op::Replace => nl.add_ip_rule(&r.what)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(kind: RulesetKind, text: &str) -> RulesetPlan {
        RulesetPlan {
            kind,
            text: text.into(),
        }
    }

    fn load_only(node: &str, loads: Vec<RulesetPlan>) -> ConfigurePlan {
        ConfigurePlan {
            node: node.into(),
            add_devices: vec![],
            links: vec![],
            sysctls: vec![],
            flush: vec![],
            load: loads,
            routes: vec![],
            ip_rules: vec![],
            neighbours: vec![],
            delete_devices: vec![],
        }
    }

    #[test]
    fn consecutive_nft_loads_become_one() {
        let b = batched_loads(&[
            rs(RulesetKind::Nft, "add table t"),
            rs(RulesetKind::Nft, "add chain t c\n"),
            rs(RulesetKind::Iptables, "*filter\nCOMMIT\n"),
            rs(RulesetKind::Nft, "add table u"),
        ]);
        let shape: Vec<(usize, usize, RulesetKind)> =
            b.iter().map(|(f, l, r)| (*f, *l, r.kind)).collect();
        assert_eq!(
            shape,
            vec![
                (1, 2, RulesetKind::Nft),
                (3, 3, RulesetKind::Iptables),
                (4, 4, RulesetKind::Nft)
            ]
        );
        assert_eq!(b[0].2.text, "add table t\nadd chain t c\n");
    }

    #[test]
    fn only_load_only_steps_of_one_node_merge() {
        let a = load_only(
            "n1",
            vec![rs(RulesetKind::Nft, "add element t s { 1 : 1 }")],
        );
        let b = load_only(
            "n1",
            vec![rs(RulesetKind::Nft, "add element t s { 2 : 2 }")],
        );
        let (m, n) = merge_nft_loads(&[&a, &b, &a]).unwrap();
        assert_eq!((m.load.len(), n), (3, 3));
        assert_eq!(batched_loads(&m.load).len(), 1);
        assert!(merge_nft_loads(&[&a]).is_none());
        let other = load_only("n2", b.load.clone());
        assert!(merge_nft_loads(&[&a, &other]).is_none());
        let mut flushing = b.clone();
        flushing.flush = vec![RulesetKind::Nft];
        assert!(merge_nft_loads(&[&a, &flushing]).is_none());
        let ipt = load_only("n1", vec![rs(RulesetKind::Iptables, "*filter\nCOMMIT\n")]);
        assert!(merge_nft_loads(&[&a, &ipt]).is_none());
        // The run stops at the first step that does something else.
        assert_eq!(merge_nft_loads(&[&a, &b, &ipt, &a]).unwrap().1, 2);
    }
}
