//! Scenario file → one [`CellPlan`] per cell. Every semantic check happens here,
//! so a file that loads is a file that can run.

use crate::model::steps::*;
use crate::model::*;
use crate::scenario::error::{ScenarioError, SourceMap};
use crate::scenario::schema::*;
use crate::scenario::{rule_syntax, syntax};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use toml::Spanned;

mod cells;
mod control;
mod host_check;
mod steps;
mod sysctls;
mod topology;

use cells::*;
use steps::*;
use sysctls::*;
use topology::*;

pub use host_check::expand_host_check;
pub use sysctls::HOST_GLOBAL_SYSCTLS;

type R<T> = Result<T, ScenarioError>;

struct Ctx<'a> {
    src: &'a SourceMap,
    /// When set, every error points here: the spans of a table that was re-read
    /// from its own text (a step's nested tables) do not index the file.
    at: Option<Range<usize>>,
}

impl<'a> Ctx<'a> {
    fn err(&self, span: Range<usize>, field: &str, (msg, fix): (String, String)) -> ScenarioError {
        self.src
            .error(self.at.clone().unwrap_or(span), field, msg, fix)
    }
    fn fail<T>(&self, span: Range<usize>, field: &str, msg: String, fix: &str) -> R<T> {
        Err(self.err(span, field, (msg, fix.to_string())))
    }
    /// The same context with every error pinned to `span`.
    fn pinned(&self, span: Range<usize>) -> Ctx<'a> {
        Ctx {
            src: self.src,
            at: Some(span),
        }
    }
}

pub fn expand_cells(file: &ScenarioFile, src: &SourceMap) -> R<Vec<CellPlan>> {
    let cx = Ctx { src, at: None };
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

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn node_mut<'p>(plan: &'p mut LabPlan, name: &str) -> &'p mut NodePlan {
    plan.nodes.iter_mut().find(|n| n.name == name).unwrap()
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
