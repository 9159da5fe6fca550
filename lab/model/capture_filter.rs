//! A small tcpdump-like filter language over [`PacketInfo`].
//!
//! ```text
//! expr      := and ( ("or" | "||") and )*
//! and       := unary ( ("and" | "&&") unary )*
//! unary     := ("not" | "!") unary | "(" expr ")" | primitive
//! primitive := ip | ip6 | arp | tcp | udp | icmp | icmp6
//!            | (src | dst | host) ADDR[/PREFIX]
//!            | (port | sport | dport) N
//!            | syn | ack | rst | fin | psh          (TCP flag set)
//!            | icmp-type N | icmp-code N          (ICMP or ICMPv6)
//!            | len (> | < | >= | <= | == | !=) N  (L3 length in bytes)
//! ```

use super::packet_info::{self as packet, PacketInfo};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

const PRIMITIVES: &str = "ip ip6 arp tcp udp icmp icmp6 src dst host port sport dport \
                          syn ack rst fin psh icmp-type icmp-code len";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 1-based character column in the filter text.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for FilterError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Ip,
    Ip6,
    Arp,
    /// L4 protocol number (tcp 6, udp 17, icmp 1, icmp6 58).
    Proto(u8),
    Src(IpNet),
    Dst(IpNet),
    Host(IpNet),
    Port(u16),
    Sport(u16),
    Dport(u16),
    /// All bits of the mask set in the TCP flags.
    TcpFlags(u8),
    IcmpType(u8),
    IcmpCode(u8),
    Len(Cmp, usize),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn matches(&self, p: &PacketInfo) -> bool {
        let within = |net: &IpNet, a: Option<IpAddr>| a.is_some_and(|a| net.contains(&a));
        match self {
            Expr::Ip => p.ethertype == packet::ETH_P_IP,
            Expr::Ip6 => p.ethertype == packet::ETH_P_IPV6,
            Expr::Arp => p.ethertype == packet::ETH_P_ARP,
            Expr::Proto(n) => p.ip_proto == Some(*n),
            Expr::Src(net) => within(net, p.src),
            Expr::Dst(net) => within(net, p.dst),
            Expr::Host(net) => within(net, p.src) || within(net, p.dst),
            Expr::Port(n) => p.sport == Some(*n) || p.dport == Some(*n),
            Expr::Sport(n) => p.sport == Some(*n),
            Expr::Dport(n) => p.dport == Some(*n),
            Expr::TcpFlags(mask) => p.has_tcp_flags(*mask),
            Expr::IcmpType(t) => p.icmp_type == Some(*t),
            Expr::IcmpCode(c) => p.icmp_code == Some(*c),
            Expr::Len(cmp, n) => {
                let l = p.l3_len;
                match cmp {
                    Cmp::Gt => l > *n,
                    Cmp::Lt => l < *n,
                    Cmp::Ge => l >= *n,
                    Cmp::Le => l <= *n,
                    Cmp::Eq => l == *n,
                    Cmp::Ne => l != *n,
                }
            }
            Expr::Not(e) => !e.matches(p),
            Expr::And(a, b) => a.matches(p) && b.matches(p),
            Expr::Or(a, b) => a.matches(p) || b.matches(p),
        }
    }
}

/// A parsed filter together with its source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub text: String,
    pub expr: Expr,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Err(FilterError {
                column: 1,
                message: "empty filter; write a primitive such as `tcp` (or omit the filter)"
                    .into(),
            });
        }
        let mut p = Parser {
            tokens,
            pos: 0,
            end_col: text.chars().count() + 1,
        };
        let expr = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.err_at(
                t.col,
                if t.text == ")" {
                    "`)` without a matching `(`; remove it or add `(` before".to_string()
                } else {
                    format!(
                        "unexpected `{}` after a complete expression; join with `and` or `or`",
                        t.text
                    )
                },
            ));
        }
        Ok(Filter {
            text: text.to_string(),
            expr,
        })
    }

    pub fn matches(&self, p: &PacketInfo) -> bool {
        self.expr.matches(p)
    }
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    col: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let len = if ["&&", "||", ">=", "<=", "==", "!="].contains(&two.as_str()) {
            2
        } else if "()!<>".contains(c) {
            1
        } else if c.is_ascii_alphanumeric() || ".:/-_".contains(c) {
            chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || ".:/-_".contains(**c))
                .count()
        } else {
            return Err(FilterError {
                column: col,
                message: format!("unexpected character `{c}`; use words, numbers, addresses, `(` `)` `!` `&&` `||`"),
            });
        };
        out.push(Token {
            text: chars[i..i + len].iter().collect(),
            col,
        });
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_col: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err_at(&self, column: usize, message: String) -> FilterError {
        FilterError { column, message }
    }

    fn peek_is(&self, words: &[&str]) -> bool {
        self.peek()
            .is_some_and(|t| words.contains(&t.text.as_str()))
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.and()?;
        while self.peek_is(&["or", "||"]) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.unary()?;
        while self.peek_is(&["and", "&&"]) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let Some(t) = self.next() else {
            return Err(self.err_at(
                self.end_col,
                "filter ends where a primitive was expected; complete or remove the last operator"
                    .into(),
            ));
        };
        match t.text.as_str() {
            "not" | "!" => Ok(Expr::Not(Box::new(self.unary()?))),
            "(" => {
                let e = self.or()?;
                match self.next() {
                    Some(c) if c.text == ")" => Ok(e),
                    Some(c) => Err(self.err_at(
                        c.col,
                        format!(
                            "expected `)` to close `(` at column {}, found `{}`",
                            t.col, c.text
                        ),
                    )),
                    None => Err(self.err_at(
                        self.end_col,
                        format!("unclosed `(` opened at column {}; add `)`", t.col),
                    )),
                }
            }
            _ => self.primitive(t),
        }
    }

    fn primitive(&mut self, t: Token) -> Result<Expr, FilterError> {
        let flag = |m| Ok(Expr::TcpFlags(m));
        match t.text.as_str() {
            "ip" => Ok(Expr::Ip),
            "ip6" => Ok(Expr::Ip6),
            "arp" => Ok(Expr::Arp),
            "tcp" => Ok(Expr::Proto(packet::IPPROTO_TCP)),
            "udp" => Ok(Expr::Proto(packet::IPPROTO_UDP)),
            "icmp" => Ok(Expr::Proto(packet::IPPROTO_ICMP)),
            "icmp6" => Ok(Expr::Proto(packet::IPPROTO_ICMPV6)),
            "syn" => flag(packet::TCP_SYN),
            "ack" => flag(packet::TCP_ACK),
            "rst" => flag(packet::TCP_RST),
            "fin" => flag(packet::TCP_FIN),
            "psh" => flag(packet::TCP_PSH),
            "src" => Ok(Expr::Src(self.net(&t)?)),
            "dst" => Ok(Expr::Dst(self.net(&t)?)),
            "host" => Ok(Expr::Host(self.net(&t)?)),
            "port" => Ok(Expr::Port(self.number(&t, "80")?)),
            "sport" => Ok(Expr::Sport(self.number(&t, "80")?)),
            "dport" => Ok(Expr::Dport(self.number(&t, "80")?)),
            "icmp-type" => Ok(Expr::IcmpType(self.number(&t, "5")?)),
            "icmp-code" => Ok(Expr::IcmpCode(self.number(&t, "1")?)),
            "len" => {
                let op = self.next();
                let cmp =
                    match op.as_ref().map(|o| o.text.as_str()) {
                        Some(">") => Cmp::Gt,
                        Some("<") => Cmp::Lt,
                        Some(">=") => Cmp::Ge,
                        Some("<=") => Cmp::Le,
                        Some("==") => Cmp::Eq,
                        Some("!=") => Cmp::Ne,
                        _ => return Err(self.err_at(
                            op.map_or(self.end_col, |o| o.col),
                            "`len` needs a comparison, e.g. `len > 1000` (one of > < >= <= == !=)"
                                .into(),
                        )),
                    };
                Ok(Expr::Len(cmp, self.number(&t, "1000")?))
            }
            "and" | "or" | "&&" | "||" => Err(self.err_at(
                t.col,
                format!(
                    "`{}` needs an expression on its left, e.g. `tcp {} udp`",
                    t.text, t.text
                ),
            )),
            ")" => Err(self.err_at(
                t.col,
                "`)` where a primitive was expected; remove it".into(),
            )),
            other => Err(self.err_at(
                t.col,
                format!("unknown primitive `{other}`; expected one of: {PRIMITIVES}"),
            )),
        }
    }

    fn operand(&mut self, kw: &Token, example: &str) -> Result<Token, FilterError> {
        match self.next() {
            Some(v)
                if !["and", "or", "not", "(", ")", "&&", "||", "!"].contains(&v.text.as_str()) =>
            {
                Ok(v)
            }
            v => Err(self.err_at(
                v.map_or(self.end_col, |v| v.col),
                format!("`{}` needs a value, e.g. `{} {example}`", kw.text, kw.text),
            )),
        }
    }

    fn number<N: std::str::FromStr>(
        &mut self,
        kw: &Token,
        example: &str,
    ) -> Result<N, FilterError> {
        let v = self.operand(kw, example)?;
        v.text.parse().map_err(|_| {
            self.err_at(
                v.col,
                format!(
                    "`{}` needs a number in range, e.g. `{} {example}`, got `{}`",
                    kw.text, kw.text, v.text
                ),
            )
        })
    }

    fn net(&mut self, kw: &Token) -> Result<IpNet, FilterError> {
        let v = self.operand(kw, "192.0.2.1")?;
        if let Ok(a) = v.text.parse::<IpAddr>() {
            return Ok(IpNet::from(a));
        }
        v.text.parse::<IpNet>().map_err(|_| {
            self.err_at(
                v.col,
                format!(
                    "`{}` needs an IP address or CIDR, e.g. `{} 192.0.2.1` or `{} 10.0.0.0/8`, got `{}`",
                    kw.text, kw.text, kw.text, v.text
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::packet_info::Framing;

    fn rst() -> PacketInfo {
        PacketInfo::parse(
            Framing::Ethernet,
            &crate::model::packet_info::tests::tcp_rst_frame(),
        )
    }

    fn m(f: &str, p: &PacketInfo) -> bool {
        Filter::parse(f)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .matches(p)
    }

    #[test]
    fn evaluates_primitives_and_combinators() {
        let p = rst();
        for f in [
            "tcp",
            "ip",
            "tcp and rst and dst 203.0.113.2",
            "rst and ack",
            "src 192.0.2.0/24",
            "host 203.0.113.2",
            "port 80 and sport 80 and dport 40000",
            "not udp",
            "udp or (tcp and not syn)",
            "!syn && (rst || fin)",
            "len == 40",
            "len >= 40 and len < 41",
            "tcp or icmp",
        ] {
            assert!(m(f, &p), "{f} should match");
        }
        for f in [
            "udp",
            "ip6",
            "icmp",
            "syn",
            "dst 192.0.2.1",
            "src 2001:db8::/32",
            "port 81",
            "icmp and icmp-type 5",
            "not (tcp and rst)",
            "len > 40",
            "arp",
        ] {
            assert!(!m(f, &p), "{f} should not match");
        }
    }

    #[test]
    fn precedence_not_and_or() {
        let p = rst();
        // (udp and tcp) or rst  => true; udp and (tcp or rst) => false
        assert!(m("udp and tcp or rst", &p));
        assert!(!m("udp and (tcp or rst)", &p));
        assert!(m("not udp and tcp", &p));
    }

    #[test]
    fn icmp_type() {
        let mut icmp = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        icmp.extend_from_slice(&[5, 1, 0, 0, 0, 0, 0, 0]);
        let p = PacketInfo::parse(Framing::Raw(packet::ETH_P_IP), &icmp);
        assert!(m("icmp and icmp-type 5 and icmp-code 1", &p));
        assert!(!m("icmp-type 8", &p));
    }

    #[test]
    fn errors_name_column_and_fix() {
        let cases = [
            ("tcp and rts", 9, "unknown primitive `rts`"),
            ("tcp and", 8, "filter ends"),
            ("port http", 6, "needs a number"),
            ("port 70000", 6, "needs a number"),
            ("dst 300.1.1.1", 5, "IP address or CIDR"),
            ("(tcp or udp", 12, "unclosed `(` opened at column 1"),
            ("tcp)", 4, "without a matching `(`"),
            ("tcp udp", 5, "join with `and` or `or`"),
            ("src", 4, "`src` needs a value"),
            ("len 5", 5, "`len` needs a comparison"),
            ("tcp $", 5, "unexpected character"),
            ("or tcp", 1, "needs an expression on its left"),
            ("   ", 1, "empty filter"),
        ];
        for (f, col, msg) in cases {
            let e = Filter::parse(f).expect_err(f);
            assert_eq!(e.column, col, "{f}: {e}");
            assert!(e.message.contains(msg), "{f}: {e}");
        }
    }
}
