//! Tokens of the expectation language.

use super::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Observation name, glob or function name.
    Ident(String),
    Num(f64),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Num(n) => format!("'{}'", super::fmt_num(*n)),
            Tok::Eof => "the end".to_owned(),
            t => format!("'{}'", t.symbol()),
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self {
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::And => "and",
            Tok::Or => "or",
            Tok::Not => "not",
            Tok::Ident(_) | Tok::Num(_) | Tok::Eof => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    /// 1-based column (in characters) of the token's first character.
    pub col: usize,
    /// Length in characters.
    pub len: usize,
}

pub fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '=' if next == Some('=') => (Tok::Eq, 2),
            '!' if next == Some('=') => (Tok::Ne, 2),
            '<' if next == Some('=') => (Tok::Le, 2),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '<' => (Tok::Lt, 1),
            '>' => (Tok::Gt, 1),
            '=' => return Err(ExprError::new(col, "single '='", "compare with '=='")),
            '&' => {
                return Err(ExprError::new(
                    col,
                    "unexpected '&'",
                    "join conditions with 'and'",
                ))
            }
            '|' => {
                return Err(ExprError::new(
                    col,
                    "unexpected '|'",
                    "join conditions with 'or'",
                ))
            }
            '!' => return Err(ExprError::new(col, "unexpected '!'", "negate with 'not'")),
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let len = number_len(&chars[i..]);
                let text: String = chars[i..i + len].iter().collect();
                let value = text.parse::<f64>().map_err(|_| {
                    ExprError::new(
                        col,
                        format!("bad number '{text}'"),
                        "write e.g. 20, 0.7 or 1e6",
                    )
                })?;
                if chars.get(i + len).is_some_and(|&c| is_ident_char(c)) {
                    return Err(ExprError::new(
                        i + len + 1,
                        format!("unexpected '{}' after number '{text}'", chars[i + len]),
                        "names start with a letter or '_'; put an operator between values",
                    ));
                }
                (Tok::Num(value), len)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let len = ident_len(&chars[i..]);
                let text: String = chars[i..i + len].iter().collect();
                let tok = match text.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Ident(text),
                };
                (tok, len)
            }
            c => {
                return Err(ExprError::new(
                    col,
                    format!("unexpected character '{c}'"),
                    "names use letters, digits and _ . * @ -",
                ))
            }
        };
        out.push(Token { tok, col, len });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        col: chars.len() + 1,
        len: 0,
    });
    Ok(out)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '*' | '@')
}

/// `-` belongs to a name only between two alphanumerics (`sw-a`); `a - b` subtracts.
/// A dotted name directly followed by `(` takes the balanced group as part of the
/// name: `ct.r.count(proto=udp dport=53)` and `ct.r.entry(dport=80).timeout` are
/// single observation names whose argument is a query (functions such as `sum(`
/// have no dot, so they stay function calls).
fn ident_len(s: &[char]) -> usize {
    let mut n = 1;
    while n < s.len() {
        let c = s[n];
        if c == '(' && s[..n].contains(&'.') && s[n - 1] != '.' {
            match group_len(&s[n..]) {
                Some(g) => {
                    n += g;
                    continue;
                }
                None => break,
            }
        }
        let hyphen = c == '-'
            && s[n - 1].is_ascii_alphanumeric()
            && s.get(n + 1).is_some_and(char::is_ascii_alphanumeric);
        if !(is_ident_char(c) || hyphen) {
            break;
        }
        n += 1;
    }
    n
}

/// Length of a balanced `( ... )` group at the start of `s`, or None if unclosed.
fn group_len(s: &[char]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in s.iter().enumerate() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn number_len(s: &[char]) -> usize {
    let digits = |from: usize| s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut n = digits(0);
    if s.get(n) == Some(&'.') {
        n += 1 + digits(n + 1);
    }
    if matches!(s.get(n), Some('e' | 'E')) {
        let sign = usize::from(matches!(s.get(n + 1), Some('+' | '-')));
        let exp = digits(n + 1 + sign);
        if exp > 0 {
            n += 1 + sign + exp;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_keep_their_argument() {
        let toks = lex("ct.r.count(proto=udp dport=53) >= sum(a.*)").unwrap();
        assert_eq!(
            toks[0].tok,
            Tok::Ident("ct.r.count(proto=udp dport=53)".into())
        );
        assert_eq!(toks[2].tok, Tok::Ident("sum".into()));
        let toks = lex("ct.r.entry(dport=80 status=ASSURED).timeout > 0").unwrap();
        assert_eq!(
            toks[0].tok,
            Tok::Ident("ct.r.entry(dport=80 status=ASSURED).timeout".into())
        );
    }

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn names_numbers_and_operators() {
        assert_eq!(
            toks("sw-a.x>=1e6 and not b<=.5"),
            [
                Tok::Ident("sw-a.x".into()),
                Tok::Ge,
                Tok::Num(1e6),
                Tok::And,
                Tok::Not,
                Tok::Ident("b".into()),
                Tok::Le,
                Tok::Num(0.5),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("a - b-c -1"),
            [
                Tok::Ident("a".into()),
                Tok::Minus,
                Tok::Ident("b-c".into()),
                Tok::Minus,
                Tok::Num(1.0),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("sum(conntrack.*.clashres)"),
            [
                Tok::Ident("sum".into()),
                Tok::LParen,
                Tok::Ident("conntrack.*.clashres".into()),
                Tok::RParen,
                Tok::Eof
            ]
        );
        assert_eq!(toks("2.5E-3")[0], Tok::Num(0.0025));
        assert_eq!(toks("a-")[..2], [Tok::Ident("a".into()), Tok::Minus]);
    }

    #[test]
    fn columns_are_one_based() {
        let t = lex("  ab != 3").unwrap();
        assert_eq!(t.iter().map(|t| t.col).collect::<Vec<_>>(), [3, 6, 9, 10]);
    }

    #[test]
    fn helpful_errors() {
        let e = lex("a = 1").unwrap_err();
        assert_eq!(e.to_string(), "single '=' at column 3; compare with '=='");
        assert_eq!(lex("a && b").unwrap_err().col, 3);
        assert!(lex("3x > 1").unwrap_err().to_string().contains("column 2"));
        assert!(lex("a $ b").is_err());
    }
}
