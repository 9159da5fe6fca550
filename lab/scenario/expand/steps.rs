//! The timeline of a cell (`[[traffic]]` steps) and its evidence collectors.

use super::*;

pub(super) fn step_name(t: &toml::Table) -> String {
    t.get("name")
        .or_else(|| t.get("kind"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

pub(super) fn expand_traffic(
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

pub(super) fn expand_captures(
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

pub(super) fn expand_kmsg(
    cx: &Ctx,
    file: &ScenarioFile,
    lab: &LabPlan,
) -> R<Vec<crate::evidence::KmsgSpec>> {
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

/// Named evidence collectors (captures, kmsg counters): typed, on a defined
/// node, each name used once.
pub(super) fn named_specs<T: serde::de::DeserializeOwned>(
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
