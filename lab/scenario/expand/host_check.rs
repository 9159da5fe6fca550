//! `[host_check]`: validated against the cell it names, so a table that loads can run.

use super::*;
use crate::model::host_check::HostCheck;

pub fn expand_host_check(
    file: &ScenarioFile,
    src: &SourceMap,
    cells: &[CellPlan],
) -> R<Option<HostCheck>> {
    let Some(spec) = &file.host_check else {
        return Ok(None);
    };
    let cx = Ctx { src, at: None };
    let Some(cell) = cells.iter().find(|c| &c.name == spec.cell.get_ref()) else {
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        return cx.fail(
            spec.cell.span(),
            "host_check.cell",
            format!("no cell named `{}`", spec.cell.get_ref()),
            &format!("use one of: {}", names.join(", ")),
        );
    };
    let Some(node) = cell.lab.node(spec.node.get_ref()) else {
        return Err(undefined_node(
            &cx,
            spec.node.span(),
            "host_check.node",
            spec.node.get_ref(),
            cell.lab.nodes.iter().map(|n| n.name.as_str()),
        ));
    };
    let affected = expression(&cx, &spec.affected, "host_check.affected")?;
    for (i, k) in spec.sysctls.iter().enumerate() {
        // `@uplink` and machine device names are mapped later; check the rest.
        let probe = Spanned::new(k.span(), k.get_ref().replace('@', "x"));
        check_sysctl_key(&cx, &probe, &format!("host_check.sysctls[{i}]"))?;
    }
    let mut absent = Vec::new();
    for (k, v) in &spec.absent {
        let field = format!("host_check.absent.{}", k.get_ref());
        if !spec.sysctls.iter().any(|s| s.get_ref() == k.get_ref()) {
            return cx.fail(
                k.span(),
                &field,
                format!("`{}` is not in host_check.sysctls", k.get_ref()),
                "list the key in host_check.sysctls or remove it here",
            );
        }
        absent.push((k.get_ref().clone(), sysctl_value(&cx, &field, v)?));
    }
    let rulesets = spec
        .rulesets
        .iter()
        .enumerate()
        .map(|(i, k)| ruleset_kind(&cx, k, &format!("host_check.rulesets[{i}]")))
        .collect::<R<Vec<_>>>()?;
    // The lab devices of the node: its own devices and its veth ends.
    let devices: Vec<&str> = node
        .devices
        .iter()
        .map(|d| d.name.as_str())
        .chain(
            cell.lab
                .veths
                .iter()
                .flat_map(|v| [&v.a, &v.b])
                .filter(|e| e.node == node.name)
                .map(|e| e.dev.as_str()),
        )
        .collect();
    let mut interfaces = Vec::new();
    for (host, lab) in &spec.interfaces {
        let field = format!("host_check.interfaces.{}", host.get_ref());
        let l = lab.get_ref();
        let bad_glob = l.contains('*') && !(l.ends_with('*') && l.matches('*').count() == 1);
        if bad_glob
            || !devices
                .iter()
                .any(|d| crate::model::host_check::glob_match(l, d))
        {
            return cx.fail(
                lab.span(),
                &field,
                format!(
                    "`{l}` names no device of node `{}` in cell `{}`",
                    node.name, cell.name
                ),
                &format!(
                    "use one of: {} (a `*` is allowed at the end)",
                    devices.join(", ")
                ),
            );
        }
        interfaces.push((host.get_ref().clone(), l.clone()));
    }
    let rules = spec
        .rules
        .iter()
        .map(|(n, g)| (n.get_ref().clone(), g.texts()))
        .collect();
    Ok(Some(HostCheck {
        node: node.name.clone(),
        cell: cell.name.clone(),
        affected,
        says: spec.says.trim().to_string(),
        fix: spec.fix.trim().to_string(),
        sysctls: spec.sysctls.iter().map(|s| s.get_ref().clone()).collect(),
        absent,
        rulesets,
        interfaces,
        rules,
    }))
}
