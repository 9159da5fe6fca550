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
            up: vec!["lo".into()],
            ..Default::default()
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
                mac: ep.mac,
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

    let macs = Macs {
        table: assign_macs(cx, file, &mut plan)?,
        devices: &devices,
    };

    for (name, spec) in &file.nodes {
        let node_name = name.get_ref().clone();
        let devs = devices[&node_name].clone();
        let mut new_devices = Vec::new();
        let mut addresses = Vec::new();
        for (dev_name, dev) in &spec.devices {
            let field = format!("nodes.{node_name}.devices.{}", dev_name.get_ref());
            new_devices.push(expand_device_in(
                cx,
                &node_name,
                &field,
                dev_name.get_ref(),
                dev,
                &devs,
                Some(&macs),
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
        check_masters(cx, &node_name, spec)?;
        let new_devices = creation_order(cx, &node_name, spec, new_devices)?;
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
        let ip_rules = expand_ip_rules(
            cx,
            &spec.ip_rules,
            &format!("nodes.{node_name}.ip_rules"),
            &node_name,
            &devs,
        )?;
        let mut neighbours = Vec::new();
        for (i, n) in spec.neighbours.iter().enumerate() {
            let field = format!("nodes.{node_name}.neighbours[{i}]");
            let (ip, lladdr, dev) = syntax::parse_neighbour_spec(n.get_ref())
                .map_err(|e| cx.err(n.span(), &field, e))?;
            known_device_at(cx, n.span(), &dev, &field, &node_name, &devs)?;
            let mac = match lladdr {
                syntax::Lladdr::Mac(mac) => mac,
                syntax::Lladdr::Device { node, dev } => {
                    macs.resolve(cx, n.span(), &field, &node, &dev)?
                }
            };
            neighbours.push(NeighbourPlan { dev, ip, mac });
        }
        let commands = expand_commands(cx, &spec.commands, &format!("nodes.{node_name}.commands"))?;
        let mut processes = Vec::new();
        for (i, p) in spec.processes.iter().enumerate() {
            let field = format!("nodes.{node_name}.processes[{i}]");
            processes.push(process_plan(cx, p, &field)?);
        }
        let node = node_mut(&mut plan, &node_name);
        for d in &new_devices {
            node.up.push(d.name.clone());
        }
        node.devices = new_devices;
        node.addresses.extend(addresses);
        node.routes = routes;
        node.ip_rules = ip_rules;
        node.neighbours = neighbours;
        node.commands = commands;
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
    known_device_at(cx, dev.span(), dev.get_ref(), field, node, devs)
}

/// [`known_device`] for a device named inside a line (a route's `dev`, a rule's `iif`):
/// the error points at the line.
pub(super) fn known_device_at(
    cx: &Ctx,
    span: Range<usize>,
    dev: &str,
    field: &str,
    node: &str,
    devs: &BTreeSet<String>,
) -> R<()> {
    if devs.contains(dev) {
        return Ok(());
    }
    cx.fail(
        span,
        field,
        format!("node `{node}` has no device `{dev}`"),
        &format!("use one of: {}", join(devs)),
    )
}

/// The MAC of every veth end and created device of the lab, by (node, device).
pub(super) type MacTable = BTreeMap<(String, String), String>;

/// The lab's MACs, for `@node:dev` references.
pub(super) struct Macs<'a> {
    pub(super) table: MacTable,
    pub(super) devices: &'a DeviceSets,
}

impl Macs<'_> {
    /// The MAC of `node`'s `dev`, or an error at `span` naming the devices that have one.
    pub(super) fn resolve(
        &self,
        cx: &Ctx,
        span: Range<usize>,
        field: &str,
        node: &str,
        dev: &str,
    ) -> R<String> {
        let Some(devs) = self.devices.get(node) else {
            return Err(undefined_node(
                cx,
                span,
                field,
                node,
                self.devices.keys().map(String::as_str),
            ));
        };
        if let Some(mac) = self.table.get(&(node.to_string(), dev.to_string())) {
            return Ok(mac.clone());
        }
        let with_mac: Vec<String> = self
            .table
            .keys()
            .filter(|(n, _)| n == node)
            .map(|(_, d)| format!("@{node}:{d}"))
            .collect();
        let fix = if with_mac.is_empty() {
            format!("node `{node}` has no device with a MAC: give it a link or a device")
        } else {
            format!("use one of: {}", with_mac.join(", "))
        };
        let msg = if devs.contains(dev) {
            format!("`@{node}:{dev}` has no MAC address (the loopback device)")
        } else {
            format!("node `{node}` has no device `{dev}`")
        };
        cx.fail(span, field, msg, &fix)
    }
}

fn is_passthru(dev: &DeviceSpec) -> bool {
    dev.kind.get_ref() == "macvlan" && dev.mode.as_ref().is_some_and(|m| m.get_ref() == "passthru")
}

/// Gives every veth end and created device its MAC: the scenario's own (`mac=` on a
/// link end, `mac` on a device) as written; the others [`derived_mac`], skipping MACs
/// already in the lab, in a fixed order (veth ends in link order, then devices by node
/// and name); a passthru macvlan gets its link's. Writes the veth ends' into `plan`.
fn assign_macs(cx: &Ctx, file: &ScenarioFile, plan: &mut LabPlan) -> R<MacTable> {
    let mut table = MacTable::new();
    let mut taken = BTreeSet::new();
    for e in plan.veths.iter().flat_map(|v| [&v.a, &v.b]) {
        if let Some(mac) = &e.mac {
            table.insert((e.node.clone(), e.dev.clone()), mac.clone());
            taken.insert(mac.clone());
        }
    }
    for (node, spec) in &file.nodes {
        for (name, dev) in &spec.devices {
            if let Some(m) = &dev.mac {
                let field = format!("nodes.{}.devices.{}.mac", node.get_ref(), name.get_ref());
                let mac = device_mac(cx, &field, dev, m)?;
                table.insert(
                    (node.get_ref().clone(), name.get_ref().clone()),
                    mac.clone(),
                );
                taken.insert(mac);
            }
        }
    }
    let mut derive = |node: &str, dev: &str| {
        let key = (node.to_string(), dev.to_string());
        if table.contains_key(&key) {
            return;
        }
        let mac = (0..)
            .map(|attempt| derived_mac(node, dev, attempt))
            .find(|m| !taken.contains(m))
            .expect("a free MAC");
        taken.insert(mac.clone());
        table.insert(key, mac);
    };
    for e in plan.veths.iter().flat_map(|v| [&v.a, &v.b]) {
        derive(&e.node, &e.dev);
    }
    for (node, spec) in &file.nodes {
        for (name, _) in spec.devices.iter().filter(|(_, d)| !is_passthru(d)) {
            derive(node.get_ref(), name.get_ref());
        }
    }
    // Passthru on passthru follows the chain; an unknown or missing link is reported
    // by `expand_device`.
    for _ in 0..file.nodes.values().map(|s| s.devices.len()).sum::<usize>() {
        let mut changed = false;
        for (node, spec) in &file.nodes {
            for (name, dev) in spec.devices.iter().filter(|(_, d)| is_passthru(d)) {
                let key = (node.get_ref().clone(), name.get_ref().clone());
                let Some(link) = &dev.link else { continue };
                let lower = table
                    .get(&(node.get_ref().clone(), link.get_ref().clone()))
                    .cloned();
                if let (Some(mac), std::collections::btree_map::Entry::Vacant(slot)) =
                    (lower, table.entry(key))
                {
                    slot.insert(mac);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for e in plan.veths.iter_mut().flat_map(|v| [&mut v.a, &mut v.b]) {
        e.mac = table.get(&(e.node.clone(), e.dev.clone())).cloned();
    }
    Ok(table)
}

/// A device's own `mac`, checked.
fn device_mac(cx: &Ctx, field: &str, dev: &DeviceSpec, m: &Spanned<String>) -> R<String> {
    if is_passthru(dev) {
        return cx.fail(
            m.span(),
            field,
            "a passthru macvlan takes the MAC of its link".into(),
            "remove `mac` here and set it on the link instead (`mac=` on its link end, or the link device's `mac`)",
        );
    }
    syntax::parse_device_mac(m.get_ref()).map_err(|e| cx.err(m.span(), field, e))
}

/// Expands one `[nodes.N.devices.NAME]` table. Outside the topology (no lab MACs at
/// hand) the device keeps only its own `mac`, and `@node:dev` sources are refused.
pub(super) fn expand_device(
    cx: &Ctx,
    node: &str,
    field: &str,
    name: &str,
    dev: &DeviceSpec,
    devs: &BTreeSet<String>,
) -> R<DevicePlan> {
    expand_device_in(cx, node, field, name, dev, devs, None)
}

/// Kinds a device table may name, for messages.
const DEVICE_KINDS: &str = "bridge, vxlan, dummy, macvlan or vrf";

/// Fields that only some kinds take: (field, kinds).
const KIND_FIELDS: [(&str, &[&str]); 10] = [
    ("ports", &["bridge", "vrf"]),
    ("vni", &["vxlan"]),
    ("local", &["vxlan"]),
    ("remote", &["vxlan"]),
    ("dev", &["vxlan"]),
    ("port", &["vxlan"]),
    ("link", &["macvlan"]),
    ("mode", &["macvlan"]),
    ("sources", &["macvlan"]),
    ("table", &["vrf"]),
];

/// Where each kind-specific field of `dev` is written, if it is.
fn kind_field_spans(dev: &DeviceSpec) -> [Option<Range<usize>>; 10] {
    let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.span());
    [
        dev.ports.first().map(|p| p.span()),
        dev.vni.as_ref().map(|v| v.span()),
        s(&dev.local),
        s(&dev.remote),
        s(&dev.dev),
        dev.port.map(|_| dev.kind.span()),
        s(&dev.link),
        s(&dev.mode),
        dev.sources.first().map(|p| p.span()),
        dev.table.as_ref().map(|t| t.span()),
    ]
}

/// Bridge and vrf ports: devices of the node, not the device itself, not `lo`.
fn check_ports(
    cx: &Ctx,
    node: &str,
    field: &str,
    name: &str,
    dev: &DeviceSpec,
    devs: &BTreeSet<String>,
) -> R<()> {
    let kind = dev.kind.get_ref();
    for p in &dev.ports {
        let f = format!("{field}.ports");
        known_device(cx, p, &f, node, devs)?;
        if p.get_ref() == name {
            return cx.fail(
                p.span(),
                &f,
                format!("a {kind} cannot be its own port"),
                "list the devices to enslave (veth ends, other devices)",
            );
        }
        if p.get_ref() == "lo" {
            return cx.fail(
                p.span(),
                &f,
                "the loopback device cannot be enslaved".into(),
                "list veth ends or other devices of the node",
            );
        }
    }
    Ok(())
}

fn expand_device_in(
    cx: &Ctx,
    node: &str,
    field: &str,
    name: &str,
    dev: &DeviceSpec,
    devs: &BTreeSet<String>,
    macs: Option<&Macs>,
) -> R<DevicePlan> {
    let kind_name = dev.kind.get_ref().as_str();
    if !["bridge", "vxlan", "dummy", "macvlan", "vrf"].contains(&kind_name) {
        return cx.fail(
            dev.kind.span(),
            &format!("{field}.kind"),
            format!("unknown device kind `{kind_name}`"),
            &format!("use {DEVICE_KINDS} (veth pairs are [[links]])"),
        );
    }
    for ((f, kinds), span) in KIND_FIELDS.iter().zip(kind_field_spans(dev)) {
        if let Some(span) = span {
            if !kinds.contains(&kind_name) {
                let only = kinds.join(" and ");
                let fix = match *kinds {
                    [k] => format!("remove `{f}` or set kind = \"{k}\""),
                    _ => format!("remove `{f}` (it is for {only} devices)"),
                };
                return cx.fail(
                    span,
                    &format!("{field}.{f}"),
                    format!("`{f}` does not apply to a {kind_name} device (only {only} take it)"),
                    &fix,
                );
            }
        }
    }
    let kind = match kind_name {
        "bridge" => {
            check_ports(cx, node, field, name, dev, devs)?;
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
        "macvlan" => {
            let f = format!("{field}.link");
            let Some(link) = &dev.link else {
                let mut others = devs.clone();
                others.remove(name);
                others.remove("lo");
                return cx.fail(
                    dev.kind.span(),
                    &f,
                    "a macvlan device needs the device it sits on".into(),
                    &format!(
                        "add link = \"DEVICE\" with a device of node `{node}`: {}",
                        join(&others)
                    ),
                );
            };
            known_device(cx, link, &f, node, devs)?;
            if link.get_ref() == name {
                return cx.fail(
                    link.span(),
                    &f,
                    "a macvlan cannot sit on itself".into(),
                    "set link to a veth end or another device of the node",
                );
            }
            if link.get_ref() == "lo" {
                return cx.fail(
                    link.span(),
                    &f,
                    "a macvlan needs an Ethernet device, not the loopback".into(),
                    "set link to a veth end, a bridge or another device of the node",
                );
            }
            let mode = match &dev.mode {
                None => MacvlanMode::Bridge,
                Some(m) => MacvlanMode::ALL
                    .into_iter()
                    .find(|x| x.key() == m.get_ref())
                    .ok_or_else(|| {
                        cx.err(
                            m.span(),
                            &format!("{field}.mode"),
                            (
                                format!("unknown macvlan mode `{}`", m.get_ref()),
                                "use bridge (the default), private, vepa, passthru or source"
                                    .into(),
                            ),
                        )
                    })?,
            };
            if mode != MacvlanMode::Source {
                if let Some(s) = dev.sources.first() {
                    return cx.fail(
                        s.span(),
                        &format!("{field}.sources"),
                        format!(
                            "`sources` needs mode = \"source\" (this macvlan is in {} mode)",
                            mode.key()
                        ),
                        "set mode = \"source\" or remove sources",
                    );
                }
            }
            let mut sources = Vec::new();
            for s in &dev.sources {
                let f = format!("{field}.sources");
                let text = s.get_ref();
                let mac = if text.starts_with('@') {
                    let (n, d) =
                        syntax::parse_device_ref(text).map_err(|e| cx.err(s.span(), &f, e))?;
                    match macs {
                        Some(macs) => macs.resolve(cx, s.span(), &f, &n, &d)?,
                        None => {
                            return cx.fail(
                                s.span(),
                                &f,
                                format!(
                                    "`{text}`: `@node:device` is only resolved in the topology"
                                ),
                                "write the MAC address itself",
                            )
                        }
                    }
                } else {
                    syntax::parse_device_mac(text).map_err(|e| cx.err(s.span(), &f, e))?
                };
                sources.push(mac);
            }
            DeviceKind::Macvlan {
                link: link.get_ref().clone(),
                mode,
                sources,
            }
        }
        "vrf" => {
            let f = format!("{field}.table");
            let Some(table) = &dev.table else {
                return cx.fail(
                    dev.kind.span(),
                    &f,
                    "a vrf device needs a routing table".into(),
                    "add table = 10 (any table but 0 and 253..=255)",
                );
            };
            let reserved = match *table.get_ref() {
                0 => Some("0 is no table"),
                253 => Some("253 is the `default` table"),
                254 => Some("254 is the `main` table"),
                255 => Some("255 is the `local` table"),
                _ => None,
            };
            if let Some(why) = reserved {
                return cx.fail(
                    table.span(),
                    &f,
                    format!("a vrf cannot use table {} ({why})", table.get_ref()),
                    "use another table number, e.g. table = 10",
                );
            }
            check_ports(cx, node, field, name, dev, devs)?;
            DeviceKind::Vrf {
                table: *table.get_ref(),
                ports: dev.ports.iter().map(|p| p.get_ref().clone()).collect(),
            }
        }
        _ => unreachable!("kinds checked above"),
    };
    let mac = if matches!(
        kind,
        DeviceKind::Macvlan {
            mode: MacvlanMode::Passthru,
            ..
        }
    ) {
        if let Some(m) = &dev.mac {
            device_mac(cx, &format!("{field}.mac"), dev, m)?;
        }
        None
    } else {
        match macs.and_then(|m| m.table.get(&(node.to_string(), name.to_string()))) {
            Some(mac) => Some(mac.clone()),
            None => dev
                .mac
                .as_ref()
                .map(|m| device_mac(cx, &format!("{field}.mac"), dev, m))
                .transpose()?,
        }
    };
    Ok(DevicePlan {
        name: name.to_string(),
        kind,
        mtu: dev.mtu,
        mac,
    })
}

/// One master per device (bridge or vrf); a vrf does not enslave a vrf; a macvlan does
/// not sit on a bridge port (both take the device's receive handler: EBUSY); a passthru
/// macvlan is the only macvlan of its link (EINVAL).
fn check_masters(cx: &Ctx, node: &str, spec: &NodeSpec) -> R<()> {
    let mut master: BTreeMap<&str, &str> = BTreeMap::new();
    let kind_of = |d: &str| -> Option<&str> {
        spec.devices
            .iter()
            .find(|(n, _)| n.get_ref() == d)
            .map(|(_, s)| s.kind.get_ref().as_str())
    };
    for (name, dev) in &spec.devices {
        let field = format!("nodes.{node}.devices.{}.ports", name.get_ref());
        for p in &dev.ports {
            if let Some(m) = master.insert(p.get_ref(), name.get_ref()) {
                if m != name.get_ref() {
                    return cx.fail(
                        p.span(),
                        &field,
                        format!("`{}` is already a port of `{m}`", p.get_ref()),
                        &format!(
                            "a device has one master: keep `{}` in the ports of `{m}` or of `{}`, not both",
                            p.get_ref(),
                            name.get_ref()
                        ),
                    );
                }
            }
            if dev.kind.get_ref() == "vrf" && kind_of(p.get_ref()) == Some("vrf") {
                return cx.fail(
                    p.span(),
                    &field,
                    format!(
                        "vrf `{}` cannot be a port of vrf `{}`",
                        p.get_ref(),
                        name.get_ref()
                    ),
                    "enslave the devices themselves to one of the vrfs",
                );
            }
        }
    }
    let macvlans: Vec<(&Spanned<String>, &DeviceSpec)> = spec
        .devices
        .iter()
        .filter(|(_, d)| d.kind.get_ref() == "macvlan")
        .collect();
    for (name, dev) in &macvlans {
        let Some(link) = &dev.link else { continue };
        let field = format!("nodes.{node}.devices.{}.link", name.get_ref());
        if let Some(m) = master.get(link.get_ref().as_str()) {
            if kind_of(m) == Some("bridge") {
                return cx.fail(
                    link.span(),
                    &field,
                    format!(
                        "`{}` is a port of bridge `{m}`: a macvlan cannot share a device with a bridge (both need its receive handler)",
                        link.get_ref()
                    ),
                    &format!(
                        "put the macvlan on the bridge (link = \"{m}\"), or take `{}` out of the ports of `{m}`",
                        link.get_ref()
                    ),
                );
            }
        }
        for (other, o) in &macvlans {
            if other.get_ref() != name.get_ref()
                && o.link.as_ref().map(|l| l.get_ref()) == Some(link.get_ref())
                && is_passthru(o)
            {
                return cx.fail(
                    link.span(),
                    &field,
                    format!(
                        "`{}` already carries the passthru macvlan `{}`, which must be its only macvlan",
                        link.get_ref(),
                        other.get_ref()
                    ),
                    "use mode = \"bridge\" (or private, vepa) for both, or put them on different devices",
                );
            }
        }
    }
    Ok(())
}

/// The node's devices in an order that creates each after the device it sits on (a
/// macvlan's `link`, a vxlan's `dev`), otherwise in file order.
fn creation_order(
    cx: &Ctx,
    node: &str,
    spec: &NodeSpec,
    devices: Vec<DevicePlan>,
) -> R<Vec<DevicePlan>> {
    let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
    let dep = |d: &DevicePlan| -> Option<String> {
        let lower = match &d.kind {
            DeviceKind::Macvlan { link, .. } => Some(link.clone()),
            DeviceKind::Vxlan { dev: Some(dev), .. } => Some(dev.clone()),
            _ => None,
        };
        lower.filter(|l| names.contains(l))
    };
    let mut slots: Vec<Option<DevicePlan>> = devices.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for start in 0..slots.len() {
        // Walk down to the first device not created yet whose lower device is created.
        let mut chain: Vec<usize> = Vec::new();
        let mut i = start;
        while let Some(d) = &slots[i] {
            if chain.contains(&i) {
                let (name, dev) = spec
                    .devices
                    .iter()
                    .find(|(n, _)| n.get_ref() == &names[i])
                    .expect("expanded from the spec");
                let (f, span) = match (&dev.link, &dev.dev) {
                    (Some(l), _) => ("link", l.span()),
                    (None, Some(d)) => ("dev", d.span()),
                    (None, None) => ("kind", dev.kind.span()),
                };
                let cycle: Vec<&str> = chain.iter().map(|&j| names[j].as_str()).collect();
                return cx.fail(
                    span,
                    &format!("nodes.{node}.devices.{}.{f}", name.get_ref()),
                    format!("devices {} sit on each other in a loop", cycle.join(" -> ")),
                    "put one of them on a veth end instead",
                );
            }
            chain.push(i);
            match dep(d).and_then(|l| names.iter().position(|n| *n == l)) {
                Some(j) if slots[j].is_some() => i = j,
                _ => break,
            }
        }
        while let Some(i) = chain.pop() {
            if let Some(d) = slots[i].take() {
                out.push(d);
            }
        }
    }
    Ok(out)
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
            known_device_at(cx, r.span(), d, &field, node, devs)?;
        }
        out.push(route);
    }
    Ok(out)
}

/// `ip rule` lines, checked: their syntax and that `iif`/`oif` name devices of the node
/// (the kernel takes any name, and a typo would match nothing, silently).
pub(super) fn expand_ip_rules(
    cx: &Ctx,
    rules: &[Spanned<String>],
    field: &str,
    node: &str,
    devs: &BTreeSet<String>,
) -> R<Vec<IpRulePlan>> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let rule =
            rule_syntax::parse_ip_rule(r.get_ref()).map_err(|e| cx.err(r.span(), &field, e))?;
        for d in rule.iif.iter().chain(&rule.oif) {
            known_device_at(cx, r.span(), d, &field, node, devs)?;
        }
        out.push(rule);
    }
    Ok(out)
}

/// Command lines, split into argvs.
pub(super) fn expand_commands(
    cx: &Ctx,
    lines: &[Spanned<String>],
    field: &str,
) -> R<Vec<CommandPlan>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            syntax::parse_command(l.get_ref())
                .map(|argv| CommandPlan { argv })
                .map_err(|e| cx.err(l.span(), &format!("{field}[{i}]"), e))
        })
        .collect()
}

/// A helper process as written, checked: a valid name and a non-empty argv.
pub(super) fn process_plan(cx: &Ctx, p: &ProcessSpec, field: &str) -> R<ProcessPlan> {
    check_name(cx, &p.name, &format!("{field}.name"), "process")?;
    if p.run.get_ref().is_empty() {
        return cx.fail(
            p.run.span(),
            &format!("{field}.run"),
            "empty command".into(),
            "write the argv, e.g. run = [\"faultlab\", \"serve\", \"dns\"]",
        );
    }
    Ok(ProcessPlan {
        name: p.name.get_ref().clone(),
        argv: p.run.get_ref().clone(),
        ready_port: p.ready_port,
    })
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::scenario::error::ScenarioError;

    const LAB: &str = r#"
name = "dev"
about = "devices"
[nodes.a]
neighbours = ["10.0.0.2 lladdr @b:eth0 dev eth0", "10.0.0.3 lladdr @b:mv0 dev eth0"]
[nodes.b.devices.mv0]
kind = "macvlan"
link = "eth0"
[nodes.b.devices.blue]
kind = "vrf"
table = 10
ports = ["eth1"]
[nodes.c]
[[links]]
a = "a:eth0 10.0.0.1/24 mac=02:00:00:00:00:01"
b = "b:eth0 10.0.0.2/24"
[[links]]
a = "b:eth1"
b = "c:eth0"
[[cells]]
name = "one"
expect = ["1 == 1"]
"#;

    fn plan(text: &str) -> LabPlan {
        let s = crate::scenario::parse("t.toml", text).unwrap_or_else(|e| panic!("{e}"));
        s.cells[0].lab.for_run("flTEST")
    }

    fn err(text: &str) -> ScenarioError {
        crate::scenario::parse("t.toml", text).expect_err("must be rejected")
    }

    /// 1-based line and column of the first `needle` in `text`.
    fn pos(text: &str, needle: &str) -> (usize, usize) {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in the text"));
        let line = text[..at].matches('\n').count() + 1;
        let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    /// `LAB` with `old` replaced, rejected at `at` (the first occurrence in the new text)
    /// in `field`, with a message containing `msg` and a fix containing `fix`.
    fn rejected(old: &str, new: &str, at: &str, field: &str, msg: &str, fix: &str) {
        assert!(LAB.contains(old), "`{old}` not in LAB");
        let text = LAB.replacen(old, new, 1);
        let e = err(&text);
        assert_eq!((e.line, e.column), pos(&text, at), "{e}");
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(msg), "message: {e}");
        assert!(e.fix.contains(fix), "fix: {e}");
        assert!(e.to_string().starts_with("t.toml:"), "{e}");
    }

    fn dev<'p>(plan: &'p LabPlan, node: &str, name: &str) -> &'p DevicePlan {
        let n = plan.node(node).unwrap();
        n.devices.iter().find(|d| d.name == name).unwrap()
    }

    #[test]
    fn macvlan_vrf_and_macs_expand() {
        let p = plan(LAB);
        let mv = dev(&p, "b", "mv0");
        assert_eq!(
            mv.kind,
            DeviceKind::Macvlan {
                link: "eth0".into(),
                mode: MacvlanMode::Bridge,
                sources: vec![],
            }
        );
        assert_eq!(
            dev(&p, "b", "blue").kind,
            DeviceKind::Vrf {
                table: 10,
                ports: vec!["eth1".into()]
            }
        );
        // Explicit MAC as written, the others derived, all distinct and unicast.
        assert_eq!(p.veths[0].a.mac.as_deref(), Some("02:00:00:00:00:01"));
        let mut all: Vec<String> = p
            .veths
            .iter()
            .flat_map(|v| [&v.a, &v.b])
            .map(|e| e.mac.clone().unwrap())
            .collect();
        all.extend(
            p.nodes
                .iter()
                .flat_map(|n| &n.devices)
                .map(|d| d.mac.clone().unwrap()),
        );
        assert_eq!(all.len(), 6);
        for m in &all {
            assert!(crate::scenario::syntax::parse_device_mac(m).is_ok(), "{m}");
            assert!(m.starts_with("02:"), "{m}");
        }
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(
            p.veths[0].b.mac.as_deref(),
            Some(derived_mac("b", "eth0", 0).as_str())
        );
        // `@node:dev` neighbours resolve to those MACs.
        let a = p.node("a").unwrap();
        assert_eq!(Some(&a.neighbours[0].mac), p.veths[0].b.mac.as_ref());
        assert_eq!(Some(&a.neighbours[1].mac), mv.mac.as_ref());
        assert!(p.node("b").unwrap().up.contains(&"mv0".to_string()));
        // Stable: the same file gives the same MACs.
        assert_eq!(plan(LAB), p);
    }

    #[test]
    fn devices_plan_is_pinned() {
        insta::assert_yaml_snapshot!("devices_plan", plan(LAB));
    }

    #[test]
    fn derived_macs_skip_the_ones_in_use() {
        // b:eth0 takes, by hand, the MAC a:eth0 would derive first.
        let taken = derived_mac("a", "eth0", 0);
        let text = LAB.replace(" mac=02:00:00:00:00:01", "").replace(
            "b = \"b:eth0 10.0.0.2/24\"",
            &format!("b = \"b:eth0 10.0.0.2/24 mac={taken}\""),
        );
        let p = plan(&text);
        assert_eq!(p.veths[0].b.mac.as_deref(), Some(taken.as_str()));
        assert_eq!(
            p.veths[0].a.mac.as_deref(),
            Some(derived_mac("a", "eth0", 1).as_str())
        );
        assert_ne!(derived_mac("a", "eth0", 0), derived_mac("a", "eth1", 0));
        assert_ne!(derived_mac("a", "eth0", 0), derived_mac("b", "eth0", 0));
        // Node and device names do not run into each other.
        assert_ne!(derived_mac("ab", "c", 0), derived_mac("a", "bc", 0));
    }

    #[test]
    fn device_mac_and_modes() {
        let text = LAB.replace(
            "link = \"eth0\"\n",
            "link = \"eth0\"\nmac = \"02:AA:00:00:00:01\"\nmode = \"private\"\n",
        );
        let p = plan(&text);
        let mv = dev(&p, "b", "mv0");
        assert_eq!(mv.mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert!(matches!(
            mv.kind,
            DeviceKind::Macvlan {
                mode: MacvlanMode::Private,
                ..
            }
        ));
        assert_eq!(p.node("a").unwrap().neighbours[1].mac, "02:aa:00:00:00:01");
        // passthru: no MAC of its own; `@b:mv0` is its link's.
        let p = plan(&LAB.replace(
            "link = \"eth0\"\n",
            "link = \"eth0\"\nmode = \"passthru\"\n",
        ));
        assert_eq!(dev(&p, "b", "mv0").mac, None);
        assert_eq!(
            Some(&p.node("a").unwrap().neighbours[1].mac),
            p.veths[0].b.mac.as_ref()
        );
        // source: sources are MACs or `@node:dev`.
        let p = plan(&LAB.replace(
            "link = \"eth0\"\n",
            "link = \"eth0\"\nmode = \"source\"\nsources = [\"@a:eth0\", \"02:00:00:00:00:09\"]\n",
        ));
        assert_eq!(
            dev(&p, "b", "mv0").kind,
            DeviceKind::Macvlan {
                link: "eth0".into(),
                mode: MacvlanMode::Source,
                sources: vec!["02:00:00:00:00:01".into(), "02:00:00:00:00:09".into()],
            }
        );
    }

    #[test]
    fn a_device_is_created_after_the_one_it_sits_on() {
        // `a0` sorts before `br0` but sits on it; `vx` sits on `a0`.
        let text = LAB.replace(
            "[nodes.c]\n",
            "[nodes.c.devices.a0]\nkind = \"macvlan\"\nlink = \"br0\"\n\
             [nodes.c.devices.br0]\nkind = \"bridge\"\n\
             [nodes.c.devices.vx]\nkind = \"vxlan\"\nvni = 5\ndev = \"a0\"\n\
             [nodes.c.devices.aa]\nkind = \"bridge\"\nports = [\"eth0\"]\n",
        );
        let p = plan(&text);
        let order: Vec<&str> = p
            .node("c")
            .unwrap()
            .devices
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(order, ["br0", "a0", "aa", "vx"]);
        let looped = LAB.replace(
            "[nodes.c]\n",
            "[nodes.c.devices.m1]\nkind = \"macvlan\"\nlink = \"m2\"\n\
             [nodes.c.devices.m2]\nkind = \"macvlan\"\nlink = \"m1\"\n",
        );
        let e = err(&looped);
        assert_eq!(e.field, "nodes.c.devices.m1.link", "{e}");
        assert!(e.message.contains("m1 -> m2"), "{e}");
        assert_eq!((e.line, e.column), pos(&looped, "\"m2\""), "{e}");
    }

    #[test]
    fn macvlan_errors() {
        rejected(
            "link = \"eth0\"",
            "link = \"eth9\"",
            "\"eth9\"",
            "nodes.b.devices.mv0.link",
            "node `b` has no device `eth9`",
            "use one of: blue, eth0, eth1, lo, mv0",
        );
        rejected(
            "link = \"eth0\"\n",
            "",
            "\"macvlan\"",
            "nodes.b.devices.mv0.link",
            "needs the device it sits on",
            "add link = \"DEVICE\" with a device of node `b`: blue, eth0, eth1",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"mv0\"",
            "\"mv0\"",
            "nodes.b.devices.mv0.link",
            "cannot sit on itself",
            "veth end",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"lo\"",
            "\"lo\"",
            "nodes.b.devices.mv0.link",
            "not the loopback",
            "veth end",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\nmode = \"bridged\"",
            "\"bridged\"",
            "nodes.b.devices.mv0.mode",
            "unknown macvlan mode `bridged`",
            "bridge (the default), private, vepa, passthru or source",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\nsources = [\"02:00:00:00:00:09\"]",
            "\"02:00:00:00:00:09\"",
            "nodes.b.devices.mv0.sources",
            "needs mode = \"source\"",
            "set mode = \"source\"",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\nmode = \"source\"\nsources = [\"@c:eth7\"]",
            "\"@c:eth7\"",
            "nodes.b.devices.mv0.sources",
            "node `c` has no device `eth7`",
            "use one of: @c:eth0",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\nmode = \"passthru\"\nmac = \"02:00:00:00:00:05\"",
            "\"02:00:00:00:00:05\"",
            "nodes.b.devices.mv0.mac",
            "a passthru macvlan takes the MAC of its link",
            "set it on the link instead",
        );
        rejected(
            "[nodes.c]\n",
            "[nodes.c.devices.mv1]\nkind = \"macvlan\"\nlink = \"eth0\"\nmode = \"passthru\"\n\
             [nodes.c.devices.mv2]\nkind = \"macvlan\"\nlink = \"eth0\"\n",
            "\"eth0\"\n[[links]]",
            "nodes.c.devices.mv2.link",
            "already carries the passthru macvlan `mv1`",
            "different devices",
        );
        // A bridge port cannot carry a macvlan.
        rejected(
            "[nodes.c]\n",
            "[nodes.c.devices.br0]\nkind = \"bridge\"\nports = [\"eth0\"]\n\
             [nodes.c.devices.mv1]\nkind = \"macvlan\"\nlink = \"eth0\"\n",
            "\"eth0\"\n[[links]]",
            "nodes.c.devices.mv1.link",
            "`eth0` is a port of bridge `br0`",
            "link = \"br0\"",
        );
    }

    #[test]
    fn vrf_errors() {
        rejected(
            "table = 10\n",
            "",
            "\"vrf\"",
            "nodes.b.devices.blue.table",
            "a vrf device needs a routing table",
            "add table = 10",
        );
        rejected(
            "table = 10",
            "table = 254",
            "254",
            "nodes.b.devices.blue.table",
            "254 is the `main` table",
            "table = 10",
        );
        rejected(
            "ports = [\"eth1\"]",
            "ports = [\"eth5\"]",
            "\"eth5\"",
            "nodes.b.devices.blue.ports",
            "node `b` has no device `eth5`",
            "use one of:",
        );
        rejected(
            "ports = [\"eth1\"]",
            "ports = [\"blue\"]",
            "\"blue\"]",
            "nodes.b.devices.blue.ports",
            "a vrf cannot be its own port",
            "devices to enslave",
        );
        rejected(
            "ports = [\"eth1\"]",
            "ports = [\"eth1\", \"lo\"]",
            "\"lo\"",
            "nodes.b.devices.blue.ports",
            "loopback device cannot be enslaved",
            "veth ends",
        );
        // One master per device.
        rejected(
            "[nodes.c]\n",
            "[nodes.b.devices.br0]\nkind = \"bridge\"\nports = [\"eth1\"]\n[nodes.c]\n",
            "\"eth1\"]\n[nodes.c]",
            "nodes.b.devices.br0.ports",
            "`eth1` is already a port of `blue`",
            "a device has one master",
        );
        // A bridge may be a vrf port, a vrf may not.
        let text = LAB.replace(
            "[nodes.c]\n",
            "[nodes.b.devices.br0]\nkind = \"bridge\"\n[nodes.c]\n",
        );
        plan(&text.replace("ports = [\"eth1\"]", "ports = [\"eth1\", \"br0\"]"));
        rejected(
            "[nodes.c]\n",
            "[nodes.b.devices.red]\nkind = \"vrf\"\ntable = 11\nports = [\"blue\"]\n[nodes.c]\n",
            "\"blue\"]",
            "nodes.b.devices.red.ports",
            "vrf `blue` cannot be a port of vrf `red`",
            "enslave the devices themselves",
        );
    }

    #[test]
    fn fields_of_other_kinds_are_refused() {
        rejected(
            "table = 10",
            "table = 10\nlink = \"eth0\"",
            "\"eth0\"\nports",
            "nodes.b.devices.blue.link",
            "`link` does not apply to a vrf device (only macvlan take it)",
            "remove `link` or set kind = \"macvlan\"",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\ntable = 3",
            "3\n[nodes.b.devices.blue]",
            "nodes.b.devices.mv0.table",
            "`table` does not apply to a macvlan device",
            "set kind = \"vrf\"",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\nports = [\"eth1\"]",
            "\"eth1\"]\n[nodes.b.devices.blue]",
            "nodes.b.devices.mv0.ports",
            "`ports` does not apply to a macvlan device (only bridge and vrf take it)",
            "remove `ports`",
        );
        rejected(
            "kind = \"vrf\"",
            "kind = \"vlan\"",
            "\"vlan\"",
            "nodes.b.devices.blue.kind",
            "unknown device kind `vlan`",
            "bridge, vxlan, dummy, macvlan or vrf",
        );
    }

    #[test]
    fn mac_errors() {
        rejected(
            "mac=02:00:00:00:00:01",
            "mac=02:00:00:00:01",
            "\"a:eth0",
            "links[0].a",
            "`02:00:00:00:01` is not a MAC address",
            "02:00:00:00:00:01",
        );
        rejected(
            "mac=02:00:00:00:00:01",
            "mac=03:00:00:00:00:01",
            "\"a:eth0",
            "links[0].a",
            "multicast",
            "first byte even",
        );
        rejected(
            "link = \"eth0\"",
            "link = \"eth0\"\nmac = \"zz:00:00:00:00:01\"",
            "\"zz:",
            "nodes.b.devices.mv0.mac",
            "not a MAC address",
            "two-digit hex",
        );
    }

    #[test]
    fn neighbour_reference_errors() {
        rejected(
            "@b:eth0",
            "@x:eth0",
            "\"10.0.0.2",
            "nodes.a.neighbours[0]",
            "undefined node `x`",
            "use one of: a, b, c",
        );
        rejected(
            "@b:eth0",
            "@b:eth3",
            "\"10.0.0.2",
            "nodes.a.neighbours[0]",
            "node `b` has no device `eth3`",
            "use one of: @b:blue, @b:eth0, @b:eth1, @b:mv0",
        );
        rejected(
            "@b:eth0",
            "@b:lo",
            "\"10.0.0.2",
            "nodes.a.neighbours[0]",
            "`@b:lo` has no MAC address",
            "@b:eth0",
        );
        rejected(
            "@b:eth0",
            "@b",
            "\"10.0.0.2",
            "nodes.a.neighbours[0]",
            "`@b` is not a `@node:device` reference",
            "@NODE:DEVICE",
        );
    }
}
