//! Pratt parser with type checking: numbers and conditions never mix silently.

use super::ast::{Arith, Cmp, Expr, GlobFn};
use super::lexer::{lex, Tok, Token};
use super::ExprError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Bool,
}

/// A parsed sub-expression with its type and source span (1-based columns, end exclusive).
struct Typed {
    expr: Expr,
    ty: Ty,
    start: usize,
    end: usize,
}

const FUNCTIONS: &str = "abs(x), min(a, b), max(a, b), sum(glob), count(glob), exists(name)";

/// Parses a whole expectation; its value must be a condition.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let mut p = Parser {
        src: src.chars().collect(),
        toks: lex(src)?,
        pos: 0,
    };
    let t = p.expr(0)?;
    let next = p.peek();
    match next.tok {
        Tok::Eof => {}
        Tok::RParen => {
            return Err(ExprError::new(
                next.col,
                "unmatched ')'",
                "remove it or add a '(' before",
            ))
        }
        _ => return Err(p.expected_operator(&t)),
    }
    if t.ty != Ty::Bool {
        return Err(ExprError::new(
            t.start,
            format!(
                "'{}' is a number, but an expectation must be true or false",
                p.text(&t)
            ),
            format!("compare it, e.g. '{} > 0'", p.text(&t)),
        ));
    }
    Ok(t.expr)
}

struct Parser {
    src: Vec<char>,
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    /// Column just past the last consumed token.
    fn end_of_prev(&self) -> usize {
        let t = &self.toks[self.pos - 1];
        t.col + t.len
    }

    fn text(&self, t: &Typed) -> String {
        let end = t.end.min(self.src.len() + 1);
        self.src[t.start - 1..end - 1]
            .iter()
            .collect::<String>()
            .trim()
            .to_owned()
    }

    fn expected_operator(&self, after: &Typed) -> ExprError {
        let next = self.peek();
        ExprError::new(
            next.col,
            format!("expected an operator after '{}', found {}", self.text(after), next.tok.describe()),
            "use + - * / between numbers, == != < <= > >= to compare, 'and'/'or' between conditions",
        )
    }

    fn expr(&mut self, min_bp: u8) -> Result<Typed, ExprError> {
        let mut lhs = self.prefix()?;
        loop {
            let next = self.peek().clone();
            let (lbp, rbp) = match next.tok {
                Tok::Or => (1, 2),
                Tok::And => (3, 4),
                Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => (7, 8),
                Tok::Plus | Tok::Minus => (9, 10),
                Tok::Star | Tok::Slash => (11, 12),
                Tok::Eof | Tok::RParen | Tok::Comma => break,
                _ => return Err(self.expected_operator(&lhs)),
            };
            if lbp < min_bp {
                break;
            }
            self.bump();
            let rhs = self.expr(rbp)?;
            lhs = self.infix(&next, lhs, rhs)?;
            if matches!(lhs.expr, Expr::Cmp(..)) && is_comparison(&self.peek().tok) {
                return Err(ExprError::new(
                    self.peek().col,
                    "comparisons cannot be chained",
                    "write 'a < b and b < c'",
                ));
            }
        }
        Ok(lhs)
    }

    fn infix(&self, op: &Token, lhs: Typed, rhs: Typed) -> Result<Typed, ExprError> {
        let (start, end) = (lhs.start, rhs.end);
        let sym = op.tok.symbol();
        let (expr, ty) = match op.tok {
            Tok::And | Tok::Or => {
                for side in [&lhs, &rhs] {
                    self.want(side, Ty::Bool, &format!("'{sym}' joins conditions"))?;
                }
                let (a, b) = (Box::new(lhs.expr), Box::new(rhs.expr));
                let e = if op.tok == Tok::And {
                    Expr::And(a, b)
                } else {
                    Expr::Or(a, b)
                };
                (e, Ty::Bool)
            }
            Tok::Plus | Tok::Minus | Tok::Star | Tok::Slash => {
                for side in [&lhs, &rhs] {
                    self.want(side, Ty::Num, &format!("'{sym}' needs numbers"))?;
                }
                let a = match op.tok {
                    Tok::Plus => Arith::Add,
                    Tok::Minus => Arith::Sub,
                    Tok::Star => Arith::Mul,
                    _ => Arith::Div,
                };
                (
                    Expr::Arith(a, Box::new(lhs.expr), Box::new(rhs.expr)),
                    Ty::Num,
                )
            }
            _ => {
                for side in [&lhs, &rhs] {
                    self.want(side, Ty::Num, &format!("'{sym}' compares numbers"))?;
                }
                let c = match op.tok {
                    Tok::Eq => Cmp::Eq,
                    Tok::Ne => Cmp::Ne,
                    Tok::Lt => Cmp::Lt,
                    Tok::Le => Cmp::Le,
                    Tok::Gt => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                (
                    Expr::Cmp(c, Box::new(lhs.expr), Box::new(rhs.expr)),
                    Ty::Bool,
                )
            }
        };
        Ok(Typed {
            expr,
            ty,
            start,
            end,
        })
    }

    fn want(&self, t: &Typed, ty: Ty, why: &str) -> Result<(), ExprError> {
        if t.ty == ty {
            return Ok(());
        }
        let text = self.text(t);
        Err(match ty {
            Ty::Bool => ExprError::new(
                t.start,
                format!("'{text}' is a number, but {why}"),
                format!("compare it, e.g. '{text} > 0'"),
            ),
            Ty::Num => ExprError::new(
                t.start,
                format!("'{text}' is true/false, but {why}"),
                "put parentheses around arithmetic, or join conditions with 'and'/'or'",
            ),
        })
    }

    fn prefix(&mut self) -> Result<Typed, ExprError> {
        let t = self.bump();
        let start = t.col;
        let (expr, ty) = match t.tok {
            Tok::Num(n) => (Expr::Num(n), Ty::Num),
            Tok::Ident(name) if self.peek().tok == Tok::LParen => return self.call(name, start),
            Tok::Ident(name) => {
                if let Some(i) = name.find('*') {
                    return Err(ExprError::new(
                        start + name[..i].chars().count(),
                        format!("'*' inside the name '{name}'"),
                        "a glob needs sum(), count() or exists(); to multiply, put spaces: 'a * b'",
                    ));
                }
                (Expr::Name(name), Ty::Num)
            }
            Tok::LParen => {
                let inner = self.expr(0)?;
                self.close(start, &inner)?;
                return Ok(Typed {
                    start,
                    end: self.end_of_prev(),
                    ..inner
                });
            }
            Tok::Minus => {
                let inner = self.expr(13)?;
                self.want(&inner, Ty::Num, "'-' negates numbers")?;
                (Expr::Neg(Box::new(inner.expr)), Ty::Num)
            }
            Tok::Not => {
                let inner = self.expr(5)?;
                self.want(&inner, Ty::Bool, "'not' negates conditions")?;
                (Expr::Not(Box::new(inner.expr)), Ty::Bool)
            }
            Tok::Eof => {
                return Err(ExprError::new(
                    t.col,
                    "expression ends too early",
                    "complete it, e.g. 'received == sent'",
                ))
            }
            other => {
                return Err(ExprError::new(
                    t.col,
                    format!("expected a value, found {}", other.describe()),
                    "values are observation names, numbers, function calls or '(...)'",
                ))
            }
        };
        Ok(Typed {
            expr,
            ty,
            start,
            end: self.end_of_prev(),
        })
    }

    fn close(&mut self, open_col: usize, inner: &Typed) -> Result<(), ExprError> {
        match self.peek().tok {
            Tok::RParen => {
                self.bump();
                Ok(())
            }
            Tok::Eof => Err(ExprError::new(
                open_col,
                "unclosed '('",
                "add ')' at the end of what it groups",
            )),
            _ => Err(self.expected_operator(inner)),
        }
    }

    fn call(&mut self, name: String, start: usize) -> Result<Typed, ExprError> {
        let open = self.bump();
        let glob = match name.as_str() {
            "sum" => Some(GlobFn::Sum),
            "count" => Some(GlobFn::Count),
            "exists" => Some(GlobFn::Exists),
            "abs" | "min" | "max" => None,
            _ => {
                return Err(ExprError::new(
                    start,
                    format!("unknown function '{name}'"),
                    format!("functions are {FUNCTIONS}"),
                ))
            }
        };
        if let Some(func) = glob {
            let arg = self.bump();
            let (Tok::Ident(pattern), Tok::RParen) = (arg.tok.clone(), self.peek().tok.clone())
            else {
                return Err(ExprError::new(
                    arg.col,
                    format!("{name}() takes one observation name or glob"),
                    "e.g. sum(conntrack.*.drop); '*' matches within one dot-separated part, '**' spans parts",
                ));
            };
            self.bump();
            let ty = if func == GlobFn::Exists {
                Ty::Bool
            } else {
                Ty::Num
            };
            return Ok(Typed {
                expr: Expr::Glob(func, pattern),
                ty,
                start,
                end: self.end_of_prev(),
            });
        }
        let mut args = Vec::new();
        if self.peek().tok != Tok::RParen {
            loop {
                let a = self.expr(0)?;
                self.want(&a, Ty::Num, &format!("{name}() takes numbers"))?;
                args.push(a.expr);
                match self.peek().tok {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RParen => break,
                    Tok::Eof => {
                        return Err(ExprError::new(
                            open.col,
                            "unclosed '('",
                            format!("close the call: {name}(...)"),
                        ))
                    }
                    _ => {
                        return Err(ExprError::new(
                            self.peek().col,
                            format!("expected ',' or ')' in {name}()"),
                            format!("functions are {FUNCTIONS}"),
                        ))
                    }
                }
            }
        }
        self.bump();
        let end = self.end_of_prev();
        let arity_err = |want: &str| {
            ExprError::new(
                start,
                format!("{name}() takes {want}, got {}", args.len()),
                format!("functions are {FUNCTIONS}"),
            )
        };
        let expr = match name.as_str() {
            "abs" if args.len() == 1 => Expr::Abs(Box::new(args.remove(0))),
            "abs" => return Err(arity_err("1 argument")),
            _ if args.len() < 2 => return Err(arity_err("2 or more arguments")),
            "min" => Expr::Min(args),
            _ => Expr::Max(args),
        };
        Ok(Typed {
            expr,
            ty: Ty::Num,
            start,
            end,
        })
    }
}

fn is_comparison(t: &Tok) -> bool {
    matches!(t, Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(src: &str) -> String {
        parse(src).unwrap().to_string()
    }

    fn err(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn precedence_and_printing() {
        assert_eq!(round_trip("received == sent"), "received == sent");
        assert_eq!(round_trip("a + b * c > 1"), "a + b * c > 1");
        assert_eq!(round_trip("(a + b) * c > 1"), "(a + b) * c > 1");
        assert_eq!(round_trip("a - (b - c) > 0"), "a - (b - c) > 0");
        assert_eq!(round_trip("a - b - c > 0"), "a - b - c > 0");
        assert_eq!(
            round_trip("a > 1 or b > 1 and c > 1"),
            "a > 1 or b > 1 and c > 1"
        );
        assert_eq!(
            round_trip("(a > 1 or b > 1) and c > 1"),
            "(a > 1 or b > 1) and c > 1"
        );
        assert_eq!(round_trip("not a > 1 and b < 2"), "not a > 1 and b < 2");
        assert_eq!(round_trip("not (a > 1 and b < 2)"), "not (a > 1 and b < 2)");
        assert_eq!(round_trip("-a * 2 >= -1e6"), "-a * 2 >= -1000000");
        assert_eq!(
            round_trip("abs(flows.loss_fraction - 0.25) <= 0.08"),
            "abs(flows.loss_fraction - 0.25) <= 0.08"
        );
        assert_eq!(
            round_trip("min(a, b, 3) < max(c,d)"),
            "min(a, b, 3) < max(c, d)"
        );
        assert_eq!(
            round_trip("sum(conntrack.*.clashres) > 0"),
            "sum(conntrack.*.clashres) > 0"
        );
        assert_eq!(
            round_trip("exists(x) and not exists(y.**)"),
            "exists(x) and not exists(y.**)"
        );
        assert_eq!(round_trip("sw-a.x - 1 > 0"), "sw-a.x - 1 > 0");
    }

    #[test]
    fn expected_operator_names_the_column() {
        assert_eq!(
            err("received sent"),
            "expected an operator after 'received', found 'sent' at column 10; \
             use + - * / between numbers, == != < <= > >= to compare, 'and'/'or' between conditions"
        );
        assert!(err("(a + b) c > 1").contains("after '(a + b)', found 'c' at column 9"));
        assert!(err("a > 1.5 2").contains("after '1.5', found '2' at column 9"));
        assert!(err("a > 1e-3 2").contains("after '1e-3', found '2' at column 10"));
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            err("received"),
            "'received' is a number, but an expectation must be true or false at column 1; \
             compare it, e.g. 'received > 0'"
        );
        assert!(err("a and b > 1")
            .starts_with("'a' is a number, but 'and' joins conditions at column 1"));
        assert!(
            err("(a > 1) + 2 > 0").starts_with("'(a > 1)' is true/false, but '+' needs numbers")
        );
        assert!(err("not a").contains("'not' negates conditions"));
        assert!(err("-(a > 1) > 0").contains("'-' negates numbers"));
        assert!(err("abs(a > 1) > 0").contains("abs() takes numbers"));
        assert!(err("a < b < c").contains("comparisons cannot be chained at column 7"));
    }

    #[test]
    fn structural_errors() {
        assert!(err("a >").contains("expression ends too early at column 4"));
        assert!(err("(a > 1").contains("unclosed '(' at column 1"));
        assert!(err("a > 1)").contains("unmatched ')' at column 6"));
        assert!(err("a > > 1").contains("expected a value, found '>' at column 5"));
        assert!(err("foo(a) > 1").contains("unknown function 'foo' at column 1"));
        assert!(err("abs(a, b) > 1").contains("abs() takes 1 argument, got 2"));
        assert!(err("min(a) > 1").contains("min() takes 2 or more arguments, got 1"));
        assert!(
            err("sum(a + b) > 1").contains("sum() takes one observation name or glob at column 5")
        );
        assert!(err("a*2 > 1").contains("'*' inside the name 'a*2' at column 2"));
        assert!(err("").contains("expression ends too early at column 1"));
    }
}
