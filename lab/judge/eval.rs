//! Evaluating a parsed expression against observations, remembering what it read.

use super::{fmt_num, glob, suggest, EvalError};
use crate::model::expr::ast::{Arith, Cmp, Expr, GlobFn};
use crate::verdict::Observations;

pub struct Eval<'a> {
    obs: &'a Observations,
    /// `label=value` of everything read, in first-read order.
    reads: Vec<(String, String)>,
}

impl<'a> Eval<'a> {
    pub fn new(obs: &'a Observations) -> Self {
        Eval {
            obs,
            reads: Vec::new(),
        }
    }

    /// `received=0 sent=20`
    pub fn detail(&self) -> String {
        self.reads
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn read(&mut self, label: String, value: String) {
        if !self.reads.iter().any(|(k, _)| *k == label) {
            self.reads.push((label, value));
        }
    }

    fn closest(&self, wanted: &str) -> Vec<String> {
        suggest::closest(wanted, self.obs.keys(), 5)
    }

    pub fn num(&mut self, e: &Expr) -> Result<f64, EvalError> {
        Ok(match e {
            Expr::Num(n) => *n,
            Expr::Name(name) => {
                let Some(&v) = self.obs.get(name) else {
                    return Err(EvalError::UnknownName {
                        name: name.clone(),
                        closest: self.closest(name),
                    });
                };
                self.read(name.clone(), fmt_num(v));
                v
            }
            Expr::Neg(e) => -self.num(e)?,
            Expr::Arith(op, a, b) => {
                let (a, bv) = (self.num(a)?, self.num(b)?);
                match op {
                    Arith::Add => a + bv,
                    Arith::Sub => a - bv,
                    Arith::Mul => a * bv,
                    Arith::Div if bv == 0.0 => {
                        return Err(EvalError::DivisionByZero {
                            divisor: b.to_string(),
                            detail: self.detail(),
                        })
                    }
                    Arith::Div => a / bv,
                }
            }
            Expr::Abs(e) => self.num(e)?.abs(),
            Expr::Min(args) => self.fold(args, f64::min)?,
            Expr::Max(args) => self.fold(args, f64::max)?,
            Expr::Glob(func, pattern) => {
                let matched: Vec<f64> = self
                    .obs
                    .iter()
                    .filter(|(k, _)| glob::matches(pattern, k))
                    .map(|(_, v)| *v)
                    .collect();
                let v = match func {
                    GlobFn::Count => matched.len() as f64,
                    _ if matched.is_empty() => {
                        return Err(EvalError::NoMatch {
                            glob: pattern.clone(),
                            closest: self.closest(pattern),
                        })
                    }
                    _ => matched.iter().sum(),
                };
                self.read(e.to_string(), fmt_num(v));
                v
            }
            Expr::Cmp(..) | Expr::Not(_) | Expr::And(..) | Expr::Or(..) => {
                unreachable!("the parser types conditions apart from numbers")
            }
        })
    }

    fn fold(&mut self, args: &[Expr], f: fn(f64, f64) -> f64) -> Result<f64, EvalError> {
        let mut acc: Option<f64> = None;
        for a in args {
            let v = self.num(a)?;
            acc = Some(acc.map_or(v, |x| f(x, v)));
        }
        Ok(acc.unwrap_or(f64::NAN))
    }

    pub fn boolean(&mut self, e: &Expr) -> Result<bool, EvalError> {
        Ok(match e {
            Expr::Cmp(op, a, b) => {
                let (a, b) = (self.num(a)?, self.num(b)?);
                match op {
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                    Cmp::Lt => a < b,
                    Cmp::Le => a <= b,
                    Cmp::Gt => a > b,
                    Cmp::Ge => a >= b,
                }
            }
            Expr::Not(e) => !self.boolean(e)?,
            // Short-circuit, so `exists(x) and x > 0` works when x is missing.
            Expr::And(a, b) => self.boolean(a)? && self.boolean(b)?,
            Expr::Or(a, b) => self.boolean(a)? || self.boolean(b)?,
            Expr::Glob(GlobFn::Exists, pattern) => {
                let found = self.obs.keys().any(|k| glob::matches(pattern, k));
                self.read(e.to_string(), found.to_string());
                found
            }
            _ => unreachable!("the parser types numbers apart from conditions"),
        })
    }
}
