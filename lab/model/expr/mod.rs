//! The expression language of triggers, expectations and waits: parsed once, at load.
//!
//! Grammar (loosest first): `or`, `and`, `not`, comparisons `== != < <= > >=` (not
//! chainable), `+ -`, `* /`, unary `-`, then numbers (`20`, `0.7`, `1e6`), names,
//! `(...)` and functions `abs(x)`, `min(a, b, ...)`, `max(a, b, ...)`, `sum(glob)`,
//! `count(glob)`, `exists(glob)`.
//!
//! Names are `[A-Za-z_][A-Za-z0-9_.*@-]*` with `-` only between two alphanumerics, so
//! `link.sw.sw-a.rx_drop` is one name and subtraction needs spaces: `a - b`. In globs
//! `*` matches within one dot-separated segment and a `**` segment matches one or more
//! segments. `sum` of a glob that matches nothing is an error (a typo, most likely);
//! `count` is then 0 and `exists` false.

pub(crate) mod ast;
mod lexer;
mod parser;

use serde::{Deserialize, Serialize};
use std::fmt;

/// A parse error with the 1-based column it points at and a hint to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} at column {col}; {hint}")]
pub struct ExprError {
    pub col: usize,
    pub msg: String,
    pub hint: String,
}

impl ExprError {
    fn new(col: usize, msg: impl Into<String>, hint: impl Into<String>) -> Self {
        ExprError {
            col,
            msg: msg.into(),
            hint: hint.into(),
        }
    }
}

/// A parsed expectation (or trigger); keeps its source text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Expectation {
    source: String,
    pub(crate) expr: ast::Expr,
}

impl Expectation {
    pub fn parse(src: &str) -> Result<Expectation, ExprError> {
        Ok(Expectation {
            source: src.trim().to_owned(),
            expr: parser::parse(src)?,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Observation names and globs the expression reads.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.expr.names(&mut out);
        out
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Expectation {
    type Err = ExprError;
    fn from_str(s: &str) -> Result<Self, ExprError> {
        Expectation::parse(s)
    }
}

impl TryFrom<String> for Expectation {
    type Error = ExprError;
    fn try_from(s: String) -> Result<Self, ExprError> {
        Expectation::parse(&s)
    }
}

impl From<Expectation> for String {
    fn from(e: Expectation) -> String {
        e.source
    }
}

/// Numbers as people write them: `20`, `0.25`, `-1`.
pub(crate) fn fmt_num(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}
