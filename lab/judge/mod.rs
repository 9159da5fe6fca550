//! Expectations over named observations, and the verdict of a cell.
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

mod ast;
mod cell;
mod eval;
mod glob;
mod kernel;
mod lexer;
mod parser;
mod suggest;

pub use cell::judge_cell;
pub use kernel::{KernelError, KernelRange, KernelVersion};

use crate::verdict::Observations;
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error(
        "no observation named `{name}`{}{}",
        closest_list(closest),
        subtraction_hint(name)
    )]
    UnknownName { name: String, closest: Vec<String> },
    #[error("no observation matches `{glob}`{}", closest_list(closest))]
    NoMatch { glob: String, closest: Vec<String> },
    #[error("division by zero: `{divisor}` is 0{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    DivisionByZero { divisor: String, detail: String },
}

fn closest_list(names: &[String]) -> String {
    if names.is_empty() {
        "; nothing was observed".to_owned()
    } else {
        format!("; closest: {}", names.join(", "))
    }
}

fn subtraction_hint(name: &str) -> &'static str {
    if name.contains('-') {
        " (to subtract, put spaces around '-')"
    } else {
        ""
    }
}

/// A parsed expectation (or trigger); keeps its source text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Expectation {
    source: String,
    expr: ast::Expr,
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

    /// Truth value and the observations read, `received=0 sent=20`.
    pub fn eval(&self, obs: &Observations) -> Result<(bool, String), EvalError> {
        let mut ev = eval::Eval::new(obs);
        let ok = ev.boolean(&self.expr)?;
        Ok((ok, ev.detail()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(pairs: &[(&str, f64)]) -> Observations {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn eval(src: &str, o: &Observations) -> Result<(bool, String), EvalError> {
        Expectation::parse(src).unwrap().eval(o)
    }

    fn holds(src: &str, o: &Observations) -> bool {
        eval(src, o).unwrap().0
    }

    #[test]
    fn evaluates_with_detail() {
        let o = obs(&[
            ("received", 0.0),
            ("sent", 20.0),
            ("ping.received", 15.0),
            ("ping.sent", 20.0),
            ("flows.loss_fraction", 0.3),
            ("conntrack.a.clashres", 2.0),
            ("conntrack.sw.clashres", 3.0),
            ("conntrack.sw.drop", 1.0),
            ("iptables.sw.filter.FORWARD.policy.packets", 20.0),
            ("link.sw.sw-a.rx_drop", 4.0),
        ]);
        assert_eq!(
            eval("received == sent", &o).unwrap(),
            (false, "received=0 sent=20".into())
        );
        assert_eq!(
            eval("received == 0", &o).unwrap(),
            (true, "received=0".into())
        );
        assert_eq!(
            eval(
                "ping.received / ping.sent >= 0.7 and ping.received < ping.sent",
                &o
            )
            .unwrap(),
            (true, "ping.received=15 ping.sent=20".into())
        );
        assert_eq!(
            eval("abs(flows.loss_fraction - 0.25) <= 0.08", &o).unwrap(),
            (true, "flows.loss_fraction=0.3".into())
        );
        assert_eq!(
            eval("sum(conntrack.*.clashres) > 0", &o).unwrap(),
            (true, "sum(conntrack.*.clashres)=5".into())
        );
        assert!(holds("count(conntrack.sw.*) == 2", &o));
        assert!(holds("count(nothing.*) == 0", &o));
        assert!(holds("iptables.sw.filter.FORWARD.policy.packets >= 20", &o));
        assert!(holds("link.sw.sw-a.rx_drop - 4 == 0", &o));
        assert!(holds("min(sent, 3) == 3 and max(sent, 3, 50) == 50", &o));
        assert!(holds("-sent < 0 and not sent < 0", &o));
        assert_eq!(
            eval("exists(missing) and missing > 0", &o).unwrap(),
            (false, "exists(missing)=false".into())
        );
        assert_eq!(
            eval("received > 0 or sent > 0", &o).unwrap(),
            (true, "received=0 sent=20".into())
        );
        assert!(holds("sent == 2e1", &o));
    }

    #[test]
    fn evaluation_errors() {
        let o = obs(&[("ping.received", 0.0), ("ping.sent", 0.0), ("sw-a", 1.0)]);
        assert_eq!(
            eval("ping.recieved > 0", &o).unwrap_err().to_string(),
            "no observation named `ping.recieved`; closest: ping.received, ping.sent, sw-a"
        );
        assert_eq!(
            eval("sw-b > 0", &o).unwrap_err().to_string(),
            "no observation named `sw-b`; closest: sw-a, ping.sent, ping.received \
             (to subtract, put spaces around '-')"
        );
        assert_eq!(
            eval("ping.received / ping.sent > 0.5", &o)
                .unwrap_err()
                .to_string(),
            "division by zero: `ping.sent` is 0 (ping.received=0 ping.sent=0)"
        );
        assert!(eval("sum(conntrack.*.drop) > 0", &o)
            .unwrap_err()
            .to_string()
            .starts_with("no observation matches `conntrack.*.drop`; closest: "));
        assert_eq!(
            eval("x > 0", &Observations::new()).unwrap_err().to_string(),
            "no observation named `x`; nothing was observed"
        );
    }

    #[test]
    fn serde_and_names() {
        let e: Expectation = serde_json::from_str("\"a + b > sum(c.*)\"").unwrap();
        assert_eq!(e.names(), ["a", "b", "c.*"]);
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"a + b > sum(c.*)\"");
        assert!(serde_json::from_str::<Expectation>("\"a +\"").is_err());
        assert_eq!(
            "x == 1".parse::<Expectation>().unwrap().to_string(),
            "x == 1"
        );
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(fmt_num(20.0), "20");
        assert_eq!(fmt_num(-1.0), "-1");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(1e20), "100000000000000000000");
        assert_eq!(fmt_num(f64::NAN), "NaN");
    }
}
