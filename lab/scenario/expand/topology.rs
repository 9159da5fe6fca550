//! Nodes, links, devices, addresses and routes: the lab every cell starts from.

use super::*;

/// Longest node name: the netns name `<run_id>-<node>` must stay readable.
pub(super) const MAX_NODE_NAME: usize = 24;

/// Devices each node owns, built while expanding (veth ends, then devices).
pub(super) type DeviceSets = BTreeMap<String, BTreeSet<String>>;

pub(super) fn expand_topology(cx: &Ctx, file: &ScenarioFile) -> R<(LabPlan, DeviceSets)> {
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

pub(super) fn known_device(
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

pub(super) fn expand_device(
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

pub(super) fn expand_routes(
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
