//! Scenario file → one [`CellPlan`] per cell. Every semantic check happens here,
//! so a file that loads is a file that can run.

use crate::model::*;
use crate::scenario::error::{ScenarioError, SourceMap};
use crate::scenario::schema::*;
use crate::scenario::syntax;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use toml::Spanned;

type R<T> = Result<T, ScenarioError>;

/// Longest node name: the netns name `<run_id>-<node>` must stay readable.
const MAX_NODE_NAME: usize = 24;

/// Host-global sysctls a scenario may change in the root namespace (saved and restored).
pub const HOST_GLOBAL_SYSCTLS: &[&str] = &[
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_log_all_netns",
    "net.nf_conntrack_max",
    // net_ratelimit() (net_warn_ratelimited: "nf_conntrack: table full ...") interval/burst.
    "net.core.message_cost",
    "net.core.message_burst",
];

struct Ctx<'a> {
    src: &'a SourceMap,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, field: &str, (msg, fix): (String, String)) -> ScenarioError {
        self.src.error(span, field, msg, fix)
    }
    fn fail<T>(&self, span: Range<usize>, field: &str, msg: String, fix: &str) -> R<T> {
        Err(self.src.error(span, field, msg, fix))
    }
}

pub fn expand_cells(file: &ScenarioFile, src: &SourceMap) -> R<Vec<CellPlan>> {
    let cx = Ctx { src };
    if file.cells.is_empty() {
        return cx.fail(
            file.name.span(),
            "cells",
            "the scenario has no cells".into(),
            "add at least one [[cells]] with a name and an expect list",
        );
    }
    let base = expand_topology(&cx, file)?;
    let mut seen = BTreeSet::new();
    let mut cells = Vec::new();
    for (i, cell) in file.cells.iter().enumerate() {
        let field = format!("cells[{i}].name");
        check_name(&cx, &cell.name, &field, "cell")?;
        if !seen.insert(cell.name.get_ref().clone()) {
            return cx.fail(
                cell.name.span(),
                &field,
                format!("duplicate cell name `{}`", cell.name.get_ref()),
                "give every cell a distinct name",
            );
        }
        cells.push(expand_cell(&cx, file, &base, cell, i)?);
    }
    Ok(cells)
}

fn check_name(cx: &Ctx, name: &Spanned<String>, field: &str, what: &str) -> R<()> {
    let s = name.get_ref();
    let ok = !s.is_empty()
        && s.len() <= MAX_NODE_NAME.max(48)
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return cx.fail(
            name.span(),
            field,
            format!("`{s}` is not a valid {what} name"),
            "use letters, digits, `-` and `_`, starting with a letter or digit",
        );
    }
    Ok(())
}

/// Devices each node owns, built while expanding (veth ends, then devices).
type DeviceSets = BTreeMap<String, BTreeSet<String>>;

fn expand_topology(cx: &Ctx, file: &ScenarioFile) -> R<(LabPlan, DeviceSets)> {
    let mut plan = LabPlan {
        run_id: String::new(),
        nodes: Vec::new(),
        veths: Vec::new(),
        host_sysctls: Vec::new(),
    };
    let mut devices: DeviceSets = BTreeMap::new();
    if file.nodes.is_empty() {
        return cx.fail(
            file.name.span(),
            "nodes",
            "the scenario defines no nodes".into(),
            "add [nodes.NAME] tables (each node is a network namespace) or a [template]",
        );
    }
    for name in file.nodes.keys() {
        let field = format!("nodes.{}", name.get_ref());
        check_name(cx, name, &field, "node")?;
        if name.get_ref().len() > MAX_NODE_NAME {
            return cx.fail(
                name.span(),
                &field,
                format!(
                    "node name `{}` is longer than {MAX_NODE_NAME}",
                    name.get_ref()
                ),
                "shorten the node name",
            );
        }
        devices.insert(name.get_ref().clone(), BTreeSet::from(["lo".to_string()]));
        plan.nodes.push(NodePlan {
            name: name.get_ref().clone(),
            netns: name.get_ref().clone(),
            devices: Vec::new(),
            sysctls: Vec::new(),
            addresses: Vec::new(),
            up: vec!["lo".into()],
            routes: Vec::new(),
            neighbours: Vec::new(),
            rulesets: Vec::new(),
            processes: Vec::new(),
        });
    }
    let node_names: Vec<String> = devices.keys().cloned().collect();

    for (i, link) in file.links.iter().enumerate() {
        let mut ends = Vec::new();
        for (side, spec) in [("a", &link.a), ("b", &link.b)] {
            let field = format!("links[{i}].{side}");
            let ep = syntax::parse_endpoint(spec.get_ref())
                .map_err(|e| cx.err(spec.span(), &field, e))?;
            let Some(devs) = devices.get_mut(&ep.node) else {
                return Err(undefined_node(
                    cx,
                    spec.span(),
                    &field,
                    &ep.node,
                    node_names.iter().map(String::as_str),
                ));
            };
            if !devs.insert(ep.dev.clone()) {
                return cx.fail(
                    spec.span(),
                    &field,
                    format!("node `{}` already has a device `{}`", ep.node, ep.dev),
                    "device names must be unique within a node",
                );
            }
            let node = node_mut(&mut plan, &ep.node);
            node.up.push(ep.dev.clone());
            for addr in &ep.addresses {
                node.addresses.push(AddressPlan {
                    dev: ep.dev.clone(),
                    addr: *addr,
                });
            }
            ends.push(Endpoint {
                node: ep.node,
                dev: ep.dev,
            });
        }
        let b = ends.pop().unwrap();
        let a = ends.pop().unwrap();
        plan.veths.push(VethPlan {
            a,
            b,
            mtu: link.mtu,
        });
    }

    for (name, spec) in &file.nodes {
        let node_name = name.get_ref();
        for dev_name in spec.devices.keys() {
            let field = format!("nodes.{node_name}.devices.{}", dev_name.get_ref());
            syntax::check_ifname(dev_name.get_ref())
                .map_err(|e| cx.err(dev_name.span(), &field, e))?;
            if !devices
                .get_mut(node_name)
                .unwrap()
                .insert(dev_name.get_ref().clone())
            {
                return cx.fail(
                    dev_name.span(),
                    &field,
                    format!(
                        "node `{node_name}` already has a device `{}`",
                        dev_name.get_ref()
                    ),
                    "device names must be unique within a node (links create devices too)",
                );
            }
        }
    }

    for (name, spec) in &file.nodes {
        let node_name = name.get_ref().clone();
        let devs = devices[&node_name].clone();
        let mut new_devices = Vec::new();
        let mut addresses = Vec::new();
        for (dev_name, dev) in &spec.devices {
            let field = format!("nodes.{node_name}.devices.{}", dev_name.get_ref());
            new_devices.push(expand_device(
                cx,
                &node_name,
                &field,
                dev_name.get_ref(),
                dev,
                &devs,
            )?);
            for a in &dev.addresses {
                let addr = syntax::parse_prefix(a.get_ref())
                    .map_err(|e| cx.err(a.span(), &format!("{field}.addresses"), e))?;
                addresses.push(AddressPlan {
                    dev: dev_name.get_ref().clone(),
                    addr,
                });
            }
        }
        for (dev, list) in &spec.addresses {
            let field = format!("nodes.{node_name}.addresses.{}", dev.get_ref());
            known_device(cx, dev, &field, &node_name, &devs)?;
            for a in list {
                let addr =
                    syntax::parse_prefix(a.get_ref()).map_err(|e| cx.err(a.span(), &field, e))?;
                addresses.push(AddressPlan {
                    dev: dev.get_ref().clone(),
                    addr,
                });
            }
        }
        let routes = expand_routes(
            cx,
            &spec.routes,
            &format!("nodes.{node_name}.routes"),
            &node_name,
            &devs,
        )?;
        let mut neighbours = Vec::new();
        for (i, n) in spec.neighbours.iter().enumerate() {
            let field = format!("nodes.{node_name}.neighbours[{i}]");
            let (ip, mac, dev) =
                syntax::parse_neighbour(n.get_ref()).map_err(|e| cx.err(n.span(), &field, e))?;
            if !devs.contains(&dev) {
                return cx.fail(
                    n.span(),
                    &field,
                    format!("node `{node_name}` has no device `{dev}`"),
                    &format!("use one of: {}", join(&devs)),
                );
            }
            neighbours.push(NeighbourPlan { dev, ip, mac });
        }
        let mut processes = Vec::new();
        for (i, p) in spec.processes.iter().enumerate() {
            let field = format!("nodes.{node_name}.processes[{i}]");
            check_name(cx, &p.name, &format!("{field}.name"), "process")?;
            if p.run.get_ref().is_empty() {
                return cx.fail(
                    p.run.span(),
                    &format!("{field}.run"),
                    "empty command".into(),
                    "write the argv, e.g. run = [\"faultlab\", \"serve\", \"dns\"]",
                );
            }
            processes.push(ProcessPlan {
                name: p.name.get_ref().clone(),
                argv: p.run.get_ref().clone(),
                ready_port: p.ready_port,
            });
        }
        let node = node_mut(&mut plan, &node_name);
        for d in &new_devices {
            node.up.push(d.name.clone());
        }
        node.devices = new_devices;
        node.addresses.extend(addresses);
        node.routes = routes;
        node.neighbours = neighbours;
        node.processes = processes;
    }
    Ok((plan, devices))
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn node_mut<'p>(plan: &'p mut LabPlan, name: &str) -> &'p mut NodePlan {
    plan.nodes.iter_mut().find(|n| n.name == name).unwrap()
}

fn known_device(
    cx: &Ctx,
    dev: &Spanned<String>,
    field: &str,
    node: &str,
    devs: &BTreeSet<String>,
) -> R<()> {
    if devs.contains(dev.get_ref()) {
        return Ok(());
    }
    cx.fail(
        dev.span(),
        field,
        format!("node `{node}` has no device `{}`", dev.get_ref()),
        &format!("use one of: {}", join(devs)),
    )
}

fn expand_device(
    cx: &Ctx,
    node: &str,
    field: &str,
    name: &str,
    dev: &DeviceSpec,
    devs: &BTreeSet<String>,
) -> R<DevicePlan> {
    let kind = match dev.kind.get_ref().as_str() {
        "bridge" => {
            for p in &dev.ports {
                known_device(cx, p, &format!("{field}.ports"), node, devs)?;
                if p.get_ref() == name {
                    return cx.fail(
                        p.span(),
                        &format!("{field}.ports"),
                        "a bridge cannot be its own port".into(),
                        "list the veth ends to enslave",
                    );
                }
            }
            DeviceKind::Bridge {
                ports: dev.ports.iter().map(|p| p.get_ref().clone()).collect(),
            }
        }
        "vxlan" => {
            let Some(vni) = &dev.vni else {
                return cx.fail(
                    dev.kind.span(),
                    &format!("{field}.vni"),
                    "a vxlan device needs a VNI".into(),
                    "add vni = 42",
                );
            };
            if *vni.get_ref() >= 1 << 24 {
                return cx.fail(
                    vni.span(),
                    &format!("{field}.vni"),
                    format!("VNI {} does not fit in 24 bits", vni.get_ref()),
                    "use a VNI below 16777216",
                );
            }
            let addr = |v: &Option<Spanned<String>>, f: &str| -> R<Option<std::net::IpAddr>> {
                v.as_ref()
                    .map(|s| {
                        syntax::parse_addr(s.get_ref())
                            .map_err(|e| cx.err(s.span(), &format!("{field}.{f}"), e))
                    })
                    .transpose()
            };
            if let Some(d) = &dev.dev {
                known_device(cx, d, &format!("{field}.dev"), node, devs)?;
            }
            DeviceKind::Vxlan {
                vni: *vni.get_ref(),
                local: addr(&dev.local, "local")?,
                remote: addr(&dev.remote, "remote")?,
                dev: dev.dev.as_ref().map(|d| d.get_ref().clone()),
                port: dev.port.unwrap_or(4789),
            }
        }
        "dummy" => DeviceKind::Dummy,
        other => {
            return cx.fail(
                dev.kind.span(),
                &format!("{field}.kind"),
                format!("unknown device kind `{other}`"),
                "use bridge, vxlan or dummy (veth pairs are [[links]])",
            )
        }
    };
    if !matches!(kind, DeviceKind::Bridge { .. }) && !dev.ports.is_empty() {
        return cx.fail(
            dev.kind.span(),
            &format!("{field}.ports"),
            "only bridges have ports".into(),
            "remove ports or set kind = \"bridge\"",
        );
    }
    Ok(DevicePlan {
        name: name.to_string(),
        kind,
        mtu: dev.mtu,
    })
}

fn expand_routes(
    cx: &Ctx,
    routes: &[Spanned<String>],
    field: &str,
    node: &str,
    devs: &BTreeSet<String>,
) -> R<Vec<RoutePlan>> {
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let route = syntax::parse_route(r.get_ref()).map_err(|e| cx.err(r.span(), &field, e))?;
        let used: Vec<&String> = match &route.kind {
            RouteKind::Unicast { dev, .. } => dev.iter().collect(),
            RouteKind::Multipath { nexthops } => {
                nexthops.iter().filter_map(|n| n.dev.as_ref()).collect()
            }
            _ => vec![],
        };
        for d in used {
            if !devs.contains(d) {
                return cx.fail(
                    r.span(),
                    &field,
                    format!("node `{node}` has no device `{d}`"),
                    &format!("use one of: {}", join(devs)),
                );
            }
        }
        out.push(route);
    }
    Ok(out)
}

fn sysctl_value(cx: &Ctx, field: &str, v: &Spanned<toml::Value>) -> R<String> {
    match v.get_ref() {
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(if *b { "1" } else { "0" }.into()),
        other => cx.fail(
            v.span(),
            field,
            format!(
                "a sysctl value must be an integer or a string, not {}",
                other.type_str()
            ),
            "write e.g. 1 or \"4096 87380 6291456\"",
        ),
    }
}

fn check_sysctl_key(cx: &Ctx, key: &Spanned<String>, field: &str) -> R<()> {
    let k = key.get_ref();
    let ok = k.starts_with("net.")
        && !k.contains("..")
        && !k.contains('/')
        && k.split('.').all(|s| !s.is_empty());
    if !ok {
        return cx.fail(
            key.span(),
            field,
            format!("`{k}` is not a network sysctl"),
            "write a dotted key under net., e.g. \"net.ipv4.ip_forward\"",
        );
    }
    if HOST_GLOBAL_SYSCTLS.contains(&k.as_str()) {
        return cx.fail(
            key.span(),
            field,
            format!("`{k}` is host-global: it is read-only inside a namespace"),
            "set it in the scenario's or cell's [host_sysctls]; it is saved and restored",
        );
    }
    Ok(())
}

fn merge_sysctls(cx: &Ctx, into: &mut Vec<Sysctl>, map: &SysctlMap, field: &str) -> R<()> {
    merge_checked(cx, into, map, field, check_sysctl_key)
}

fn merge_host_sysctls(cx: &Ctx, into: &mut Vec<Sysctl>, map: &SysctlMap, field: &str) -> R<()> {
    merge_checked(cx, into, map, field, |cx, k, f| {
        if HOST_GLOBAL_SYSCTLS.contains(&k.get_ref().as_str()) {
            return Ok(());
        }
        cx.fail(
            k.span(),
            f,
            format!(
                "`{}` is not a host-global sysctl faultlab may change",
                k.get_ref()
            ),
            &format!(
                "per-namespace keys go in nodes.NAME.sysctls; host-global ones allowed here: {}",
                HOST_GLOBAL_SYSCTLS.join(", ")
            ),
        )
    })
}

/// Later values of a key replace earlier ones in place; new keys keep file order.
fn merge_checked(
    cx: &Ctx,
    into: &mut Vec<Sysctl>,
    map: &SysctlMap,
    field: &str,
    check: impl Fn(&Ctx, &Spanned<String>, &str) -> R<()>,
) -> R<()> {
    for (k, v) in map {
        let f = format!("{field}.\"{}\"", k.get_ref());
        check(cx, k, &f)?;
        let value = sysctl_value(cx, &f, v)?;
        match into.iter_mut().find(|s| &s.key == k.get_ref()) {
            Some(s) => s.value = value,
            None => into.push(Sysctl {
                key: k.get_ref().clone(),
                value,
            }),
        }
    }
    Ok(())
}

fn ruleset_kind(cx: &Ctx, key: &Spanned<String>, field: &str) -> R<RulesetKind> {
    RulesetKind::ALL
        .into_iter()
        .find(|k| k.key() == key.get_ref())
        .ok_or_else(|| {
            cx.err(
                key.span(),
                field,
                (
                    format!("unknown ruleset kind `{}`", key.get_ref()),
                    "use nft, iptables, ip6tables, iptables-legacy or ip6tables-legacy".into(),
                ),
            )
        })
}

/// "undefined node" naming the nodes that do exist.
fn undefined_node<'a>(
    cx: &Ctx,
    span: Range<usize>,
    field: &str,
    node: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> ScenarioError {
    let known: Vec<&str> = known.into_iter().collect();
    cx.err(
        span,
        field,
        (
            format!("undefined node `{node}`"),
            format!("define [nodes.{node}] or use one of: {}", known.join(", ")),
        ),
    )
}

fn cell_node<'p>(
    cx: &Ctx,
    plan: &'p mut LabPlan,
    node: &Spanned<String>,
    field: &str,
) -> R<&'p mut NodePlan> {
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    match plan.nodes.iter_mut().find(|n| &n.name == node.get_ref()) {
        Some(n) => Ok(n),
        None => Err(undefined_node(
            cx,
            node.span(),
            field,
            node.get_ref(),
            names.iter().map(String::as_str),
        )),
    }
}

fn expand_cell(
    cx: &Ctx,
    file: &ScenarioFile,
    (base, devices): &(LabPlan, DeviceSets),
    cell: &CellSpec,
    i: usize,
) -> R<CellPlan> {
    let cf = format!("cells[{i}]");
    let mut lab = base.clone();

    // Sysctls: node's own, then the cell's overrides.
    for (name, spec) in &file.nodes {
        let node = node_mut(&mut lab, name.get_ref());
        merge_sysctls(
            cx,
            &mut node.sysctls,
            &spec.sysctls,
            &format!("nodes.{}.sysctls", name.get_ref()),
        )?;
    }
    for (node, map) in &cell.sysctls {
        let field = format!("{cf}.sysctls.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        merge_sysctls(cx, &mut n.sysctls, map, &field)?;
    }
    merge_host_sysctls(
        cx,
        &mut lab.host_sysctls,
        &file.host_sysctls,
        "host_sysctls",
    )?;
    merge_host_sysctls(
        cx,
        &mut lab.host_sysctls,
        &cell.host_sysctls,
        &format!("{cf}.host_sysctls"),
    )?;

    // Rulesets: node's own by kind, replaced by the cell's, then extras
    // (the node's, then the cell's).
    for (name, spec) in &file.nodes {
        let mut by_kind: BTreeMap<RulesetKind, Vec<String>> = BTreeMap::new();
        for (k, text) in &spec.rulesets {
            let kind = ruleset_kind(cx, k, &format!("nodes.{}.rulesets", name.get_ref()))?;
            by_kind.insert(kind, text.texts());
        }
        if let Some(over) = cell
            .rulesets
            .iter()
            .find(|(n, _)| n.get_ref() == name.get_ref())
        {
            for (k, text) in over.1 {
                let kind = ruleset_kind(cx, k, &format!("{cf}.rulesets.{}", name.get_ref()))?;
                by_kind.insert(kind, text.texts());
            }
        }
        let mut rulesets: Vec<RulesetPlan> = by_kind
            .into_iter()
            .flat_map(|(kind, texts)| {
                texts
                    .into_iter()
                    .map(move |text| RulesetPlan { kind, text })
            })
            .collect();
        for (k, text) in &spec.extra_rulesets {
            let kind = ruleset_kind(cx, k, &format!("nodes.{}.extra_rulesets", name.get_ref()))?;
            rulesets.extend(
                text.texts()
                    .into_iter()
                    .map(|text| RulesetPlan { kind, text }),
            );
        }
        node_mut(&mut lab, name.get_ref()).rulesets = rulesets;
    }
    for node in cell.rulesets.keys() {
        cell_node(
            cx,
            &mut lab,
            node,
            &format!("{cf}.rulesets.{}", node.get_ref()),
        )?;
    }
    for (node, map) in &cell.extra_rulesets {
        let field = format!("{cf}.extra_rulesets.{}", node.get_ref());
        let mut extra = Vec::new();
        for (k, text) in map {
            let kind = ruleset_kind(cx, k, &field)?;
            extra.extend(
                text.texts()
                    .into_iter()
                    .map(|text| RulesetPlan { kind, text }),
            );
        }
        cell_node(cx, &mut lab, node, &field)?
            .rulesets
            .extend(extra);
    }
    for (node, routes) in &cell.extra_routes {
        let field = format!("{cf}.extra_routes.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        let devs = &devices[&n.name];
        let extra = expand_routes(cx, routes, &field, &n.name.clone(), devs)?;
        n.routes.extend(extra);
    }

    let traffic = expand_traffic(cx, file, cell, &cf, &lab)?;
    let captures = expand_captures(cx, file, &lab)?;
    let kmsg = expand_kmsg(cx, file, &lab)?;

    let expect = expressions(cx, &cell.expect, &format!("{cf}.expect"))?;
    if expect.is_empty() && cell.expect_by_kernel.is_empty() {
        return cx.fail(
            cell.name.span(),
            &format!("{cf}.expect"),
            format!("cell `{}` expects nothing", cell.name.get_ref()),
            "add expect = [\"...\"] with what the kernel should do, e.g. \"ping.received == ping.sent\"",
        );
    }
    let trigger = match cell.trigger.as_ref().or(file.trigger.as_ref()) {
        Some(t) if t.get_ref().trim().is_empty() => None,
        Some(t) => Some(expression(cx, t, &format!("{cf}.trigger"))?),
        None => None,
    };
    let mut by_kernel = Vec::new();
    for (j, k) in cell.expect_by_kernel.iter().enumerate() {
        let field = format!("{cf}.expect_by_kernel[{j}]");
        crate::judge::KernelRange::parse(k.kernel.get_ref()).map_err(|e| {
            cx.err(
                k.kernel.span(),
                &format!("{field}.kernel"),
                (
                    e.to_string(),
                    "write e.g. \">=5.6\", \"<4.19\" or \">=4.19, <5.6\"".into(),
                ),
            )
        })?;
        by_kernel.push(KernelExpect {
            kernel: k.kernel.get_ref().clone(),
            trigger: k
                .trigger
                .as_ref()
                .map(|t| expression(cx, t, &format!("{field}.trigger")))
                .transpose()?,
            expect: expressions(cx, &k.expect, &format!("{field}.expect"))?,
        });
    }

    let repeat = cell.repeat.as_ref().or(file.repeat.as_ref());
    if let Some(r) = repeat {
        if *r.get_ref() == 0 {
            return cx.fail(r.span(), "repeat", "repeat is 0".into(), "use 1 or more");
        }
    }
    let requires = requirements(file, cell, &lab, &traffic);
    Ok(CellPlan {
        name: cell.name.get_ref().clone(),
        about: cell.about.clone(),
        repeat: repeat.map(|r| *r.get_ref()).unwrap_or(1),
        requires,
        lab,
        traffic,
        captures,
        kmsg,
        drops: file.evidence.drops.unwrap_or(true),
        trigger,
        expect,
        by_kernel,
    })
}

fn expression(cx: &Ctx, e: &Spanned<String>, field: &str) -> R<String> {
    crate::judge::Expectation::parse(e.get_ref()).map_err(|err| {
        cx.err(
            e.span(),
            field,
            (
                format!("`{}`: {err}", e.get_ref()),
                "write a comparison over observation names, e.g. \"conntrack.sw.drop > 0\"".into(),
            ),
        )
    })?;
    Ok(e.get_ref().clone())
}

fn expressions(cx: &Ctx, list: &[Spanned<String>], field: &str) -> R<Vec<String>> {
    list.iter()
        .enumerate()
        .map(|(i, e)| expression(cx, e, &format!("{field}[{i}]")))
        .collect()
}

fn step_name(t: &toml::Table) -> String {
    t.get("name")
        .or_else(|| t.get("kind"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

fn expand_traffic(
    cx: &Ctx,
    file: &ScenarioFile,
    cell: &CellSpec,
    cf: &str,
    lab: &LabPlan,
) -> R<Vec<crate::traffic::TrafficSpec>> {
    let names: Vec<String> = file
        .traffic
        .iter()
        .map(|t| step_name(t.get_ref()))
        .collect();
    for step in cell.traffic.keys() {
        if !names.contains(step.get_ref()) {
            return cx.fail(
                step.span(),
                &format!("{cf}.traffic"),
                format!("no traffic step named `{}`", step.get_ref()),
                &format!("override one of: {}", names.join(", ")),
            );
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, t) in file.traffic.iter().enumerate() {
        let field = format!("traffic[{i}]");
        let name = &names[i];
        if !seen.insert(name.clone()) {
            return cx.fail(
                t.span(),
                &field,
                format!("two traffic steps are named `{name}`"),
                "give each step a distinct `name`",
            );
        }
        let mut table = t.get_ref().clone();
        let mut span = t.span();
        let mut where_ = field.clone();
        if let Some((_, over)) = cell.traffic.iter().find(|(n, _)| n.get_ref() == name) {
            for (k, v) in over.get_ref() {
                table.insert(k.clone(), v.clone());
            }
            span = over.span();
            where_ = format!("{cf}.traffic.{name}");
        }
        // `skip = true` (in the step or a cell's override) leaves the step out of this cell.
        if let Some(skip) = table.remove("skip") {
            match skip.as_bool() {
                Some(true) => continue,
                Some(false) => {}
                None => {
                    return cx.fail(
                        span,
                        &format!("{where_}.skip"),
                        format!("skip = {skip} is not a boolean"),
                        "write skip = true (leave the step out) or skip = false",
                    )
                }
            }
        }
        let spec: crate::traffic::TrafficSpec = typed(
            cx,
            table,
            span.clone(),
            &where_,
            "see \"Traffic kinds\" in README.md for each kind's parameters",
            crate::traffic::TrafficSpec::validate,
        )?;
        for node in spec.nodes() {
            if lab.node(&node).is_none() {
                return Err(undefined_node(
                    cx,
                    span,
                    &where_,
                    &node,
                    lab.nodes.iter().map(|n| n.name.as_str()),
                ));
            }
        }
        out.push(spec);
    }
    Ok(out)
}

/// A table of the file deserialized into a typed spec, validated by the spec
/// itself; errors point at the table.
fn typed<T: serde::de::DeserializeOwned>(
    cx: &Ctx,
    table: toml::Table,
    span: Range<usize>,
    field: &str,
    hint: &str,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> R<T> {
    let spec: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            cx.err(span.clone(), field, (e.message().to_string(), hint.into()))
        })?;
    validate(&spec)
        .map_err(|m| cx.err(span, field, (m, "fix the value as the message says".into())))?;
    Ok(spec)
}

/// Named evidence collectors (captures, kmsg counters): typed, on a defined
/// node, each name used once.
fn named_specs<T: serde::de::DeserializeOwned>(
    cx: &Ctx,
    tables: &[Spanned<toml::Table>],
    what: (&str, &str),
    lab: &LabPlan,
    validate: impl Fn(&T) -> Result<(), String>,
    name_and_node: impl Fn(&T) -> (String, Option<String>),
) -> R<Vec<T>> {
    let (key, hint) = what;
    let mut out: Vec<T> = Vec::new();
    let mut names = BTreeSet::new();
    for (i, t) in tables.iter().enumerate() {
        let field = format!("{key}[{i}]");
        let spec: T = typed(cx, t.get_ref().clone(), t.span(), &field, hint, &validate)?;
        let (name, node) = name_and_node(&spec);
        if let Some(node) = node.filter(|n| lab.node(n).is_none()) {
            return Err(undefined_node(
                cx,
                t.span(),
                &format!("{field}.node"),
                &node,
                lab.nodes.iter().map(|n| n.name.as_str()),
            ));
        }
        if !names.insert(name.clone()) {
            return cx.fail(
                t.span(),
                &format!("{field}.name"),
                format!("two {key} entries are named `{name}`"),
                "give each a distinct name",
            );
        }
        out.push(spec);
    }
    Ok(out)
}

fn expand_captures(
    cx: &Ctx,
    file: &ScenarioFile,
    lab: &LabPlan,
) -> R<Vec<crate::evidence::CaptureSpec>> {
    named_specs(
        cx,
        &file.captures,
        (
            "captures",
            "a capture has name, node, dev, optional filter and [count]",
        ),
        lab,
        crate::evidence::CaptureSpec::validate,
        |c: &crate::evidence::CaptureSpec| (c.name.clone(), Some(c.node.clone())),
    )
}

fn expand_kmsg(cx: &Ctx, file: &ScenarioFile, lab: &LabPlan) -> R<Vec<crate::evidence::KmsgSpec>> {
    named_specs(
        cx,
        &file.kmsg,
        (
            "kmsg",
            "a kmsg counter has name, contains and an optional node",
        ),
        lab,
        crate::evidence::KmsgSpec::validate,
        |k: &crate::evidence::KmsgSpec| (k.name.clone(), k.node.clone()),
    )
}

fn requirements(
    file: &ScenarioFile,
    cell: &CellSpec,
    lab: &LabPlan,
    _traffic: &[crate::traffic::TrafficSpec],
) -> Requirements {
    let mut programs: BTreeSet<String> = BTreeSet::new();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    programs.extend(file.requires.programs.iter().cloned());
    programs.extend(cell.requires.programs.iter().cloned());
    paths.extend(file.requires.paths.iter().cloned());
    paths.extend(cell.requires.paths.iter().cloned());
    for node in &lab.nodes {
        for r in &node.rulesets {
            programs.insert(r.kind.loader().0.to_string());
            programs.insert(r.kind.dumper().0.to_string());
        }
        if node.addresses.iter().any(|a| a.addr.addr().is_ipv6()) {
            paths.insert("/proc/sys/net/ipv6".into());
        }
        if node
            .sysctls
            .iter()
            .any(|s| s.key.starts_with("net.bridge."))
        {
            paths.insert("/proc/sys/net/bridge".into());
        }
    }
    let cpus = cell.requires.cpus.or(file.requires.cpus).unwrap_or(1);
    Requirements {
        programs: programs.into_iter().collect(),
        paths: paths.into_iter().collect(),
        cpus,
    }
}
