//! The expression tree, printed back with only the parentheses it needs.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Functions over a glob of observation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobFn {
    Sum,
    Count,
    Exists,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Name(String),
    Neg(Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Abs(Box<Expr>),
    Min(Vec<Expr>),
    Max(Vec<Expr>),
    Glob(GlobFn, String),
}

impl Arith {
    pub fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
        }
    }
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

impl GlobFn {
    pub fn name(self) -> &'static str {
        match self {
            GlobFn::Sum => "sum",
            GlobFn::Count => "count",
            GlobFn::Exists => "exists",
        }
    }
}

impl Expr {
    /// Binding strength, for printing.
    fn prec(&self) -> u8 {
        match self {
            Expr::Or(..) => 1,
            Expr::And(..) => 2,
            Expr::Not(_) => 3,
            Expr::Cmp(..) => 4,
            Expr::Arith(Arith::Add | Arith::Sub, ..) => 5,
            Expr::Arith(Arith::Mul | Arith::Div, ..) => 6,
            Expr::Neg(_) => 7,
            _ => 8,
        }
    }

    /// Every observation name and glob the expression reads, in order.
    pub fn names(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Name(n) | Expr::Glob(_, n) => {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
            Expr::Neg(e) | Expr::Not(e) | Expr::Abs(e) => e.names(out),
            Expr::Arith(_, a, b) | Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.names(out);
                b.names(out);
            }
            Expr::Min(args) | Expr::Max(args) => args.iter().for_each(|a| a.names(out)),
        }
    }
}

struct Child<'a>(&'a Expr, u8);

impl fmt::Display for Child<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prec() < self.1 {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn list(f: &mut fmt::Formatter<'_>, name: &str, args: &[Expr]) -> fmt::Result {
    write!(f, "{name}(")?;
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{a}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.prec();
        match self {
            Expr::Num(n) => f.write_str(&super::fmt_num(*n)),
            Expr::Name(n) => f.write_str(n),
            Expr::Neg(e) => write!(f, "-{}", Child(e, p)),
            Expr::Not(e) => write!(f, "not {}", Child(e, p)),
            // Left-associative: a right operand of equal strength needs parentheses.
            Expr::Arith(op, a, b) => {
                write!(f, "{} {} {}", Child(a, p), op.symbol(), Child(b, p + 1))
            }
            Expr::Cmp(op, a, b) => {
                write!(f, "{} {} {}", Child(a, p + 1), op.symbol(), Child(b, p + 1))
            }
            Expr::And(a, b) => write!(f, "{} and {}", Child(a, p), Child(b, p + 1)),
            Expr::Or(a, b) => write!(f, "{} or {}", Child(a, p), Child(b, p + 1)),
            Expr::Abs(e) => write!(f, "abs({e})"),
            Expr::Min(args) => list(f, "min", args),
            Expr::Max(args) => list(f, "max", args),
            Expr::Glob(func, g) => write!(f, "{}({g})", func.name()),
        }
    }
}
