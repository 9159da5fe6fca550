//! One `[[cells]]` entry: the base lab with its overrides, its steps and its expectations.

use super::*;

pub(super) fn expand_cell(
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
    for (node, routes) in &cell.routes {
        let field = format!("{cf}.routes.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        let devs = &devices[&n.name];
        n.routes = expand_routes(cx, routes, &field, &n.name.clone(), devs)?;
    }
    for (node, dsts) in &cell.remove_routes {
        let field = format!("{cf}.remove_routes.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        for (i, d) in dsts.iter().enumerate() {
            // `default` or `10.0.0.0/8`, with `table N` for another table than main.
            let gone = syntax::parse_route(&format!("{} dev lo", d.get_ref()))
                .map_err(|e| cx.err(d.span(), &format!("{field}[{i}]"), e))?;
            let (dst, table) = (gone.dst, gone.table);
            let before = n.routes.len();
            n.routes.retain(|r| (r.dst, r.table) != (dst, table));
            if n.routes.len() == before {
                let have: Vec<String> = n
                    .routes
                    .iter()
                    .map(|r| match r.table {
                        Some(t) => format!("{} table {t}", r.dst),
                        None => r.dst.to_string(),
                    })
                    .collect();
                let table = table.map(|t| format!(" in table {t}")).unwrap_or_default();
                return cx.fail(
                    d.span(),
                    &format!("{field}[{i}]"),
                    format!("node `{}` has no route to {dst}{table}", n.name),
                    &format!(
                        "remove one of: {}",
                        if have.is_empty() {
                            "(none)".into()
                        } else {
                            have.join(", ")
                        }
                    ),
                );
            }
        }
    }
    for (node, routes) in &cell.extra_routes {
        let field = format!("{cf}.extra_routes.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        let devs = &devices[&n.name];
        let extra = expand_routes(cx, routes, &field, &n.name.clone(), devs)?;
        n.routes.extend(extra);
    }
    for (node, rules) in &cell.ip_rules {
        let field = format!("{cf}.ip_rules.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        let devs = &devices[&n.name];
        n.ip_rules = expand_ip_rules(cx, rules, &field, &n.name.clone(), devs)?;
    }
    for (node, rules) in &cell.extra_ip_rules {
        let field = format!("{cf}.extra_ip_rules.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        let devs = &devices[&n.name];
        let extra = expand_ip_rules(cx, rules, &field, &n.name.clone(), devs)?;
        n.ip_rules.extend(extra);
    }
    for (node, lines) in &cell.commands {
        let field = format!("{cf}.commands.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        n.commands = expand_commands(cx, lines, &field)?;
    }
    for (node, lines) in &cell.extra_commands {
        let field = format!("{cf}.extra_commands.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        let extra = expand_commands(cx, lines, &field)?;
        n.commands.extend(extra);
    }
    for skip in &cell.skip_processes {
        let before: usize = lab.nodes.iter().map(|n| n.processes.len()).sum();
        for n in &mut lab.nodes {
            n.processes.retain(|p| &p.name != skip.get_ref());
        }
        if lab.nodes.iter().map(|n| n.processes.len()).sum::<usize>() == before {
            return cx.fail(
                skip.span(),
                &format!("{cf}.skip_processes"),
                format!("no helper process named `{}`", skip.get_ref()),
                "name a process of a node's `processes`",
            );
        }
    }
    for (node, procs) in &cell.processes {
        let field = format!("{cf}.processes.{}", node.get_ref());
        let n = cell_node(cx, &mut lab, node, &field)?;
        for (i, p) in procs.iter().enumerate() {
            n.processes
                .push(process_plan(cx, p, &format!("{field}[{i}]"))?);
        }
    }

    check_routes(cx, file, cell, &cf, &lab)?;
    check_ip_rules(cx, file, cell, &cf, &lab)?;
    let steps = expand_steps(cx, file, cell, &cf, &lab, devices)?;
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
    // A race that was not proven to fire says nothing: such a cell needs a trigger.
    let race = steps
        .iter()
        .find(|s| matches!(s.action, Action::Traffic(TrafficSpec::Race(_))));
    if let (Some(race), None) = (race, &trigger) {
        return cx.fail(
            cell.name.span(),
            &format!("{cf}.trigger"),
            format!(
                "cell `{}` runs the race step `{}` but has no trigger",
                cell.name.get_ref(),
                race.name
            ),
            &format!(
                "add trigger = \"sum(conntrack.*.clashres) + sum(conntrack.*.insert_failed) > 0\" (or what proves `{}` fired) to the cell or the scenario",
                race.name
            ),
        );
    }
    let mut by_kernel = Vec::new();
    for (j, k) in cell.expect_by_kernel.iter().enumerate() {
        let field = format!("{cf}.expect_by_kernel[{j}]");
        let kernel = crate::model::kernel::KernelRange::parse(k.kernel.get_ref()).map_err(|e| {
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
            kernel,
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
    let requires = requirements(file, cell, &lab, &steps);
    Ok(CellPlan {
        name: cell.name.get_ref().clone(),
        about: cell.about.clone(),
        repeat: repeat.map(|r| *r.get_ref()).unwrap_or(1),
        requires,
        lab,
        steps,
        captures,
        kmsg,
        drops: file.evidence.drops.unwrap_or(true),
        trigger,
        expect,
        by_kernel,
    })
}

pub(super) fn expression(cx: &Ctx, e: &Spanned<String>, field: &str) -> R<Expectation> {
    Expectation::parse(e.get_ref()).map_err(|err| {
        cx.err(
            e.span(),
            field,
            (
                format!("`{}`: {err}", e.get_ref()),
                "write a comparison over observation names, e.g. \"conntrack.sw.drop > 0\"".into(),
            ),
        )
    })
}

pub(super) fn expressions(cx: &Ctx, list: &[Spanned<String>], field: &str) -> R<Vec<Expectation>> {
    list.iter()
        .enumerate()
        .map(|(i, e)| expression(cx, e, &format!("{field}[{i}]")))
        .collect()
}

pub(super) fn requirements(
    file: &ScenarioFile,
    cell: &CellSpec,
    lab: &LabPlan,
    steps: &[Step],
) -> Requirements {
    let mut programs: BTreeSet<String> = BTreeSet::new();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    programs.extend(file.requires.programs.iter().cloned());
    programs.extend(cell.requires.programs.iter().cloned());
    paths.extend(file.requires.paths.iter().cloned());
    paths.extend(cell.requires.paths.iter().cloned());
    // The programs commands and exec steps run (not this faultlab itself).
    let mut runs = |argv: &[String]| {
        if let Some(p) = argv.first().filter(|p| *p != "faultlab") {
            programs.insert(p.clone());
        }
    };
    for node in &lab.nodes {
        node.commands.iter().for_each(|c| runs(&c.argv));
    }
    for step in steps {
        if let Action::Exec(e) = &step.action {
            runs(&e.argv);
        }
    }
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
    for step in steps {
        if let Action::Configure(c) = &step.action {
            for r in &c.load {
                programs.insert(r.kind.loader().0.to_string());
                programs.insert(r.kind.dumper().0.to_string());
            }
        }
    }
    let cpus = cell.requires.cpus.or(file.requires.cpus).unwrap_or(1);
    Requirements {
        programs: programs.into_iter().collect(),
        paths: paths.into_iter().collect(),
        cpus,
    }
}

pub(super) fn ruleset_kind(cx: &Ctx, key: &Spanned<String>, field: &str) -> R<RulesetKind> {
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

/// Routes the kernel would refuse with EEXIST at build time, caught at load: the
/// same destination twice, or a device route to a subnet the kernel already routes
/// because an address on that device is in it (the prefix route the kernel adds for
/// every address, `fib_add_ifaddr` / `addrconf_prefix_route`).
fn check_routes(cx: &Ctx, file: &ScenarioFile, cell: &CellSpec, cf: &str, lab: &LabPlan) -> R<()> {
    for node in &lab.nodes {
        let mut seen: Vec<&RoutePlan> = Vec::new();
        for r in &node.routes {
            let field = if cell.routes.keys().any(|k| k.get_ref() == &node.name) {
                format!("{cf}.routes.{}", node.name)
            } else if cell.extra_routes.keys().any(|k| k.get_ref() == &node.name) {
                format!("nodes.{0}.routes or {cf}.extra_routes.{0}", node.name)
            } else {
                format!("nodes.{}.routes", node.name)
            };
            let span = cell.name.span();
            if seen.iter().any(|o| o.dst == r.dst && o.table == r.table) {
                let table = r
                    .table
                    .map(|t| format!(" in table {t}"))
                    .unwrap_or_default();
                return cx.fail(
                    file_span(file, &node.name).unwrap_or(span),
                    &field,
                    format!(
                        "node `{}` has two routes to {}{table} (the kernel refuses the second: File exists)",
                        node.name, r.dst
                    ),
                    "keep one route per destination, or use a multipath route (`P nexthop via X nexthop via Y`)",
                );
            }
            // The prefix route of an address goes to the main table only.
            if let (
                RouteKind::Unicast {
                    via: None,
                    dev: Some(dev),
                    ..
                },
                None,
            ) = (&r.kind, r.table)
            {
                let connected = node.addresses.iter().find(|a| {
                    &a.dev == dev
                        && a.addr.trunc() == r.dst.trunc()
                        && a.addr.prefix_len() == r.dst.prefix_len()
                });
                if let Some(a) = connected {
                    return cx.fail(
                        file_span(file, &node.name).unwrap_or(span),
                        &field,
                        format!(
                            "node `{}`: the route `{} dev {dev}` already exists: the kernel adds it for the address {} on `{dev}`",
                            node.name, r.dst, a.addr
                        ),
                        "remove this route (the address brings it)",
                    );
                }
            }
            seen.push(r);
        }
    }
    Ok(())
}

/// The same rule twice in a node: the kernel refuses the second (fib_nl_newrule,
/// rule_exists: File exists).
fn check_ip_rules(
    cx: &Ctx,
    file: &ScenarioFile,
    cell: &CellSpec,
    cf: &str,
    lab: &LabPlan,
) -> R<()> {
    for node in &lab.nodes {
        for (i, r) in node.ip_rules.iter().enumerate() {
            if node.ip_rules[..i].contains(r) {
                let field = if cell.ip_rules.keys().any(|k| k.get_ref() == &node.name) {
                    format!("{cf}.ip_rules.{}", node.name)
                } else {
                    format!("nodes.{0}.ip_rules or {cf}.extra_ip_rules.{0}", node.name)
                };
                return cx.fail(
                    file_span(file, &node.name).unwrap_or(cell.name.span()),
                    &field,
                    format!(
                        "node `{}` has the rule `{r}` twice (the kernel refuses the second: File exists)",
                        node.name
                    ),
                    "keep one of them",
                );
            }
        }
    }
    Ok(())
}

/// Where node NAME is defined in the file, for errors about its final routes.
fn file_span(file: &ScenarioFile, node: &str) -> Option<std::ops::Range<usize>> {
    file.nodes
        .keys()
        .find(|k| k.get_ref() == node)
        .map(|k| k.span())
}
