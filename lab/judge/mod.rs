//! Expectations evaluated over named observations, and the verdict of a cell. The
//! language itself (grammar, parser) lives in [`crate::model::expr`].

mod cell;
mod eval;
mod glob;
mod suggest;

pub(crate) use crate::model::expr::fmt_num;
pub use crate::model::expr::{Expectation, ExprError};
pub use crate::model::kernel::{KernelError, KernelRange, KernelVersion};
pub use cell::judge_cell;
pub use glob::matches as glob_matches;

use crate::verdict::Observations;

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

impl Expectation {
    /// True when the expression reads `name`, by name or through a glob.
    pub fn reads(&self, name: &str) -> bool {
        self.names()
            .iter()
            .any(|n| n == name || (n.contains('*') && glob::matches(n, name)))
    }

    /// Truth value and the observations read, `received=0 sent=20`.
    pub fn eval(&self, obs: &Observations) -> Result<(bool, String), EvalError> {
        let mut ev = eval::Eval::new(obs);
        let ok = ev.boolean(&self.expr)?;
        Ok((ok, ev.detail()))
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
