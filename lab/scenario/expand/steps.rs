//! The timeline of a cell (`[[traffic]]` steps) and its evidence collectors.

use super::*;

pub(super) fn step_name(t: &toml::Table) -> String {
    t.get("name")
        .or_else(|| t.get("kind"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// One step table as it will be typed: the file's table with the cell's override
/// merged in, and where errors point.
struct RawStep {
    table: toml::Table,
    span: Range<usize>,
    field: String,
}

/// The cell's timeline: the file's `[[traffic]]` steps with the cell's overrides and
/// skips, and the cell's `extra_steps` placed at the end or `before` a named step.
pub(super) fn expand_steps(
    cx: &Ctx,
    file: &ScenarioFile,
    cell: &CellSpec,
    cf: &str,
    lab: &LabPlan,
    devices: &DeviceSets,
) -> R<Vec<Step>> {
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
    let mut raw = Vec::new();
    for (i, t) in file.traffic.iter().enumerate() {
        let name = &names[i];
        let mut step = RawStep {
            table: t.get_ref().clone(),
            span: t.span(),
            field: format!("traffic[{i}]"),
        };
        if let Some((_, over)) = cell.traffic.iter().find(|(n, _)| n.get_ref() == name) {
            for (k, v) in over.get_ref() {
                step.table.insert(k.clone(), v.clone());
            }
            step.span = over.span();
            step.field = format!("{cf}.traffic.{name}");
        }
        raw.push(step);
    }
    for (j, t) in cell.extra_steps.iter().enumerate() {
        let mut table = t.get_ref().clone();
        let field = format!("{cf}.extra_steps[{j}]");
        let at = match table.remove("before") {
            None => raw.len(),
            Some(toml::Value::String(before)) => {
                match raw.iter().position(|r| step_name(&r.table) == before) {
                    Some(at) => at,
                    None => {
                        let known: Vec<String> = raw.iter().map(|r| step_name(&r.table)).collect();
                        return cx.fail(
                            t.span(),
                            &format!("{field}.before"),
                            format!("no step named `{before}`"),
                            &format!("use one of: {}", known.join(", ")),
                        );
                    }
                }
            }
            Some(other) => {
                return cx.fail(
                    t.span(),
                    &format!("{field}.before"),
                    format!("before = {other} is not a step name"),
                    "write before = \"NAME\" (the step this one runs before)",
                )
            }
        };
        raw.insert(
            at,
            RawStep {
                table,
                span: t.span(),
                field,
            },
        );
    }

    let mut expanded = Vec::new();
    for r in raw {
        expanded.extend(repeated(cx, r)?);
    }
    let mut seen = BTreeSet::new();
    let mut out: Vec<Step> = Vec::new();
    for r in expanded {
        let name = step_name(&r.table);
        if !seen.insert(name.clone()) {
            return cx.fail(
                r.span,
                &r.field,
                format!("two steps are named `{name}`"),
                "give each step a distinct `name`",
            );
        }
        if let Some(step) = typed_step(cx, r, lab, devices)? {
            out.push(step);
        }
    }
    check_joins(cx, file, &out)?;
    Ok(out)
}

/// Most steps a `repeat` may make of one.
const MAX_REPEAT: i64 = 100_000;

/// `repeat = { var = "i", count = N }` makes N copies of a step, `${i}` (with the
/// templates' arithmetic: `${i+1000}`) replaced by 1..=N in every value; a value
/// that is exactly one placeholder becomes a number. Copies are named `NAME-i`
/// unless the name has a placeholder itself.
fn repeated(cx: &Ctx, mut r: RawStep) -> R<Vec<RawStep>> {
    let Some(spec) = r.table.remove("repeat") else {
        return Ok(vec![r]);
    };
    let field = format!("{}.repeat", r.field);
    let fix = "write repeat = { var = \"i\", count = 2000 } and use ${i} in the step's values";
    let toml::Value::Table(spec) = spec else {
        return cx.fail(r.span, &field, "repeat is not a table".into(), fix);
    };
    let var = match spec.get("var") {
        Some(toml::Value::String(v)) if !v.is_empty() => v.clone(),
        _ => {
            return cx.fail(
                r.span,
                &format!("{field}.var"),
                "repeat needs var = \"NAME\"".into(),
                fix,
            )
        }
    };
    let count = match spec.get("count") {
        Some(toml::Value::Integer(n)) if (1..=MAX_REPEAT).contains(n) => *n,
        _ => {
            return cx.fail(
                r.span,
                &format!("{field}.count"),
                format!("repeat needs count = N with 1 <= N <= {MAX_REPEAT}"),
                fix,
            )
        }
    };
    if let Some(extra) = spec.keys().find(|k| *k != "var" && *k != "count") {
        return cx.fail(
            r.span,
            &format!("{field}.{extra}"),
            format!("unknown field `{extra}`"),
            fix,
        );
    }
    let name = step_name(&r.table);
    let named = name.contains("${");
    let mut out = Vec::with_capacity(count as usize);
    for i in 1..=count {
        let scope = BTreeMap::from([(var.clone(), toml::Value::Integer(i))]);
        let toml::Value::Table(mut table) =
            crate::scenario::template::substitute(toml::Value::Table(r.table.clone()), &scope)
                .map_err(|e| cx.err(r.span.clone(), &r.field, (e, fix.into())))?
        else {
            unreachable!("a table substitutes to a table")
        };
        if !named {
            table.insert("name".into(), toml::Value::String(format!("{name}-{i}")));
        }
        out.push(RawStep {
            table,
            span: r.span.clone(),
            field: format!("{}[repeat {i}]", r.field),
        });
    }
    Ok(out)
}

/// A `join` names background steps that run before it.
fn check_joins(cx: &Ctx, file: &ScenarioFile, steps: &[Step]) -> R<()> {
    for (i, s) in steps.iter().enumerate() {
        if let Action::Join { steps: wanted, .. } = &s.action {
            for w in wanted {
                let ok = steps[..i].iter().any(|b| b.background && &b.name == w);
                if !ok {
                    let bg: Vec<&str> = steps[..i]
                        .iter()
                        .filter(|b| b.background)
                        .map(|b| b.name.as_str())
                        .collect();
                    return cx.fail(
                        file.name.span(),
                        &format!("steps.{}.steps", s.name),
                        format!("join `{}` waits for `{w}`, which is not a background step before it", s.name),
                        &format!(
                            "name one of the background steps before it ({}) or set background = true on `{w}`",
                            if bg.is_empty() { "none".to_string() } else { bg.join(", ") }
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

fn take_bool(cx: &Ctx, r: &mut RawStep, key: &str) -> R<Option<bool>> {
    match r.table.remove(key) {
        None => Ok(None),
        Some(toml::Value::Boolean(b)) => Ok(Some(b)),
        Some(v) => cx.fail(
            r.span.clone(),
            &format!("{}.{key}", r.field),
            format!("{key} = {v} is not a boolean"),
            &format!("write {key} = true or {key} = false"),
        ),
    }
}

/// Common keys (skip, background, sample), then the kind's own parameters.
fn typed_step(cx: &Ctx, mut r: RawStep, lab: &LabPlan, devices: &DeviceSets) -> R<Option<Step>> {
    if take_bool(cx, &mut r, "skip")? == Some(true) {
        return Ok(None);
    }
    let background = take_bool(cx, &mut r, "background")?.unwrap_or(false);
    let sample = sampling(cx, &mut r)?;
    let name = step_name(&r.table);
    let kind = r
        .table
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let control = CONTROL_KINDS.contains(&kind.as_str());
    // A `wait` has an `until` of its own (its condition); on traffic it ends the step.
    let until = if control {
        None
    } else {
        stop_when(cx, &mut r, &kind)?
    };
    let action = if control {
        if background || sample.is_some() {
            return cx.fail(
                r.span,
                &r.field,
                format!("a `{kind}` step cannot run in the background or be sampled"),
                "put background / sample on a traffic step",
            );
        }
        super::control::control_action(cx, &r.table, r.span.clone(), &r.field, lab, devices)?
    } else {
        let spec: TrafficSpec = typed(
            cx,
            r.table,
            r.span.clone(),
            &r.field,
            "see \"Traffic kinds\" and \"Timelines\" in README.md for each kind's parameters",
            TrafficSpec::validate,
        )?;
        for node in spec.nodes() {
            if lab.node(&node).is_none() {
                return Err(undefined_node(
                    cx,
                    r.span,
                    &r.field,
                    &node,
                    lab.nodes.iter().map(|n| n.name.as_str()),
                ));
            }
        }
        Action::Traffic(spec)
    };
    Ok(Some(Step {
        name,
        background,
        sample,
        until,
        action,
    }))
}

/// `until = "EXPR"` (and `until_every_ms`) on a traffic step of a kind that can stop early.
fn stop_when(cx: &Ctx, r: &mut RawStep, kind: &str) -> R<Option<StopWhen>> {
    let every = r.table.remove("until_every_ms");
    let Some(value) = r.table.remove("until") else {
        if every.is_some() {
            return cx.fail(
                r.span.clone(),
                &format!("{}.until_every_ms", r.field),
                "until_every_ms without until".into(),
                "add until = \"EXPR\" (the condition that ends the step early)",
            );
        }
        return Ok(None);
    };
    let field = format!("{}.until", r.field);
    let fix = "write until = \"conntrack.NODE.clashres >= 40\" (live observations; the step's \
               count is then a cap)";
    if !TrafficSpec::STOPS_EARLY.contains(&kind) {
        return cx.fail(
            r.span.clone(),
            &field,
            format!("a `{kind}` step cannot end early"),
            &format!(
                "put until on a {} step, or end the wait with a `wait` step",
                TrafficSpec::STOPS_EARLY.join(", ")
            ),
        );
    }
    let Some(text) = value.as_str() else {
        return cx.fail(
            r.span.clone(),
            &field,
            format!("{value} is not a string"),
            fix,
        );
    };
    let until = Expectation::parse(text).map_err(|e| {
        cx.err(
            r.span.clone(),
            &field,
            (format!("`{text}`: {e}"), fix.into()),
        )
    })?;
    let every_ms = every_ms(cx, r, ("until_every_ms", every), 25)?;
    Ok(Some(StopWhen { until, every_ms }))
}

/// A `*_every_ms` value: `default` when absent, else 1..=60000 ms.
fn every_ms(
    cx: &Ctx,
    r: &RawStep,
    (key, value): (&str, Option<toml::Value>),
    default: u64,
) -> R<u64> {
    match value {
        None => Ok(default),
        Some(toml::Value::Integer(n)) if (1..=60_000).contains(&n) => Ok(n as u64),
        Some(v) => cx.fail(
            r.span.clone(),
            &format!("{}.{key}", r.field),
            format!("{key} = {v} is out of range"),
            &format!("set it between 1 and 60000 (default {default})"),
        ),
    }
}

fn sampling(cx: &Ctx, r: &mut RawStep) -> R<Option<Sampling>> {
    let every = r.table.remove("sample_every_ms");
    let Some(list) = r.table.remove("sample") else {
        if every.is_some() {
            return cx.fail(
                r.span.clone(),
                &format!("{}.sample_every_ms", r.field),
                "sample_every_ms without sample".into(),
                "add sample = [\"ct.NODE.count\", ...] (what to read while the step runs)",
            );
        }
        return Ok(None);
    };
    let fix =
        "write sample = [\"ct.NODE.count\", \"conntrack.NODE.insert\"] (live observation names)";
    let field = format!("{}.sample", r.field);
    let toml::Value::Array(items) = list else {
        return cx.fail(r.span.clone(), &field, "sample is not a list".into(), fix);
    };
    let mut observe = Vec::new();
    for item in items {
        let Some(name) = item.as_str() else {
            return cx.fail(
                r.span.clone(),
                &field,
                format!("{item} is not a string"),
                fix,
            );
        };
        // A name parses as an operand: check it inside a comparison.
        let e = Expectation::parse(&format!("{name} == 0")).map_err(|e| {
            cx.err(
                r.span.clone(),
                &field,
                (format!("`{name}`: {e}"), fix.into()),
            )
        })?;
        if e.names() != [name.trim()] {
            return cx.fail(
                r.span.clone(),
                &field,
                format!("`{name}` is not one observation name"),
                fix,
            );
        }
        observe.push(name.trim().to_string());
    }
    let every_ms = every_ms(cx, r, ("sample_every_ms", every), 50)?;
    Ok(Some(Sampling { every_ms, observe }))
}

pub(super) fn expand_captures(
    cx: &Ctx,
    file: &ScenarioFile,
    lab: &LabPlan,
) -> R<Vec<crate::model::capture::CaptureSpec>> {
    named_specs(
        cx,
        &file.captures,
        (
            "captures",
            "a capture has name, node, dev, optional filter and [count]",
        ),
        lab,
        crate::model::capture::CaptureSpec::validate,
        |c: &crate::model::capture::CaptureSpec| (c.name.clone(), Some(c.node.clone())),
    )
}

pub(super) fn expand_kmsg(
    cx: &Ctx,
    file: &ScenarioFile,
    lab: &LabPlan,
) -> R<Vec<crate::model::kmsg::KmsgSpec>> {
    named_specs(
        cx,
        &file.kmsg,
        (
            "kmsg",
            "a kmsg counter has name, contains and an optional node",
        ),
        lab,
        crate::model::kmsg::KmsgSpec::validate,
        |k: &crate::model::kmsg::KmsgSpec| (k.name.clone(), k.node.clone()),
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
