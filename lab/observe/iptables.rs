//! Chain policy and rule counters from `iptables-save -c` (and its ip6/legacy siblings).

use super::{comment_segment, segment, ParseError, RuleCounters};
use std::collections::{BTreeMap, HashMap};

const FILE: &str = "iptables-save -c";

/// One rule as both sources give it (`iptables-save -c`, and nfnetlink in
/// [`super::iptables_netlink`]).
pub(super) struct Rule {
    pub table: String,
    pub chain: String,
    /// 1-based position in the chain.
    pub position: usize,
    pub comment: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// Counter values keyed `<table>.<chain>.policy.packets|bytes` for built-in chains and
/// `<table>.<chain>.<comment|N>.packets|bytes` for rules (N = 1-based position in
/// the chain; also used when a comment repeats within the chain).
pub fn parse(text: &str) -> Result<RuleCounters, ParseError> {
    let mut out = BTreeMap::new();
    let mut table: Option<String> = None;
    let mut rules: Vec<Rule> = Vec::new();
    let mut position: HashMap<(String, String), usize> = HashMap::new();

    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.trim().to_owned());
            continue;
        }
        if line == "COMMIT" {
            table = None;
            continue;
        }
        let table = table
            .as_deref()
            .ok_or_else(|| ParseError::new(FILE, lineno, "line outside a `*table` block"))?;
        if let Some(decl) = line.strip_prefix(':') {
            // `:FORWARD DROP [12:1008]`; user chains have policy `-`.
            let mut words = decl.split_whitespace();
            let (Some(chain), Some(policy)) = (words.next(), words.next()) else {
                return Err(ParseError::new(
                    FILE,
                    lineno,
                    "expected `:CHAIN POLICY [p:b]`",
                ));
            };
            if policy != "-" {
                let counts = match words.next() {
                    Some(c) => parse_counts(c)
                        .ok_or_else(|| ParseError::new(FILE, lineno, "bad `[packets:bytes]`"))?,
                    None => (0, 0),
                };
                insert_policy(&mut out, table, chain, counts);
            }
            continue;
        }
        // `[5:420] -A FORWARD ...`
        let (counts, rule) = match line.strip_prefix('[') {
            Some(_) => {
                let end = line
                    .find(']')
                    .ok_or_else(|| ParseError::new(FILE, lineno, "unclosed `[`"))?;
                let counts = parse_counts(&line[..=end])
                    .ok_or_else(|| ParseError::new(FILE, lineno, "bad `[packets:bytes]`"))?;
                (counts, line[end + 1..].trim_start())
            }
            None => ((0, 0), line),
        };
        let words = split_words(rule);
        if words.first().map(String::as_str) != Some("-A") || words.len() < 2 {
            return Err(ParseError::new(FILE, lineno, "expected `-A CHAIN ...`"));
        }
        let chain = words[1].clone();
        let n = position
            .entry((table.to_owned(), chain.clone()))
            .or_default();
        *n += 1;
        let comment = words
            .windows(2)
            .find(|w| w[0] == "--comment")
            .and_then(|w| comment_segment(&w[1]));
        rules.push(Rule {
            table: table.to_owned(),
            chain,
            position: *n,
            comment,
            packets: counts.0,
            bytes: counts.1,
        });
    }

    insert_rules(&mut out, &rules);
    Ok(out)
}

/// `<table>.<chain>.policy.packets|bytes` of a built-in chain.
pub(super) fn insert_policy(out: &mut RuleCounters, table: &str, chain: &str, (p, b): (u64, u64)) {
    let base = format!("{}.{}.policy", segment(table), segment(chain));
    out.insert(format!("{base}.packets"), p);
    out.insert(format!("{base}.bytes"), b);
}

/// `<table>.<chain>.<comment|N>.packets|bytes` of every rule (N when the comment is
/// absent or repeats within the chain).
pub(super) fn insert_rules(out: &mut RuleCounters, rules: &[Rule]) {
    let mut comment_uses: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for r in rules {
        if let Some(comment) = &r.comment {
            *comment_uses
                .entry((&r.table, &r.chain, comment))
                .or_default() += 1;
        }
    }
    for r in rules {
        let leaf = match &r.comment {
            Some(cm) if comment_uses[&(r.table.as_str(), r.chain.as_str(), cm.as_str())] == 1 => {
                cm.clone()
            }
            _ => r.position.to_string(),
        };
        let base = format!("{}.{}.{leaf}", segment(&r.table), segment(&r.chain));
        out.insert(format!("{base}.packets"), r.packets);
        out.insert(format!("{base}.bytes"), r.bytes);
    }
}

/// `[12:1008]` → (12, 1008)
fn parse_counts(s: &str) -> Option<(u64, u64)> {
    let (p, b) = s.strip_prefix('[')?.strip_suffix(']')?.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

/// Splits on whitespace, honouring the double quotes and backslash escapes that
/// iptables-save puts around arguments with spaces.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_save_fixture() {
        let c = parse(include_str!("fixtures/iptables-save.txt")).unwrap();
        assert_eq!(c["filter.INPUT.policy.packets"], 11);
        assert_eq!(c["filter.INPUT.policy.bytes"], 1080);
        assert_eq!(c["filter.FORWARD.policy.packets"], 0);
        assert_eq!(c["filter.INPUT.udp-in.packets"], 5);
        assert_eq!(c["filter.INPUT.udp-in.bytes"], 640);
        assert_eq!(c["filter.FORWARD.1.packets"], 0);
        assert_eq!(c["filter.FORWARD.allow_established.packets"], 0);
        assert_eq!(c["filter.FORWARD.3.bytes"], 0);
        assert_eq!(c["filter.DOCKER-USER.1.packets"], 0);
        assert!(!c.contains_key("filter.DOCKER-USER.policy.packets"));
        assert_eq!(c["nat.POSTROUTING.policy.packets"], 0);
    }

    #[test]
    fn bridged_forward_drop() {
        let text = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:1008]
:OUTPUT ACCEPT [0:0]
[5:420] -A FORWARD -m physdev --physdev-is-bridged -j ACCEPT
[3:252] -A FORWARD -s 10.0.0.0/8 -m comment --comment "say \"hi\" twice" -j ACCEPT
[1:84] -A FORWARD -m comment --comment dup -j ACCEPT
[2:168] -A FORWARD -m comment --comment dup -j ACCEPT
COMMIT
"#;
        let c = parse(text).unwrap();
        assert_eq!(c["filter.FORWARD.policy.packets"], 12);
        assert_eq!(c["filter.FORWARD.policy.bytes"], 1008);
        assert_eq!(c["filter.FORWARD.1.packets"], 5);
        assert_eq!(c["filter.FORWARD.say__hi__twice.packets"], 3);
        assert_eq!(c["filter.FORWARD.3.packets"], 1);
        assert_eq!(c["filter.FORWARD.4.packets"], 2);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("*filter\n:FORWARD DROP [x:1]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "iptables-save -c line 2: bad `[packets:bytes]`"
        );
        assert!(parse("-A FORWARD -j ACCEPT\n").is_err());
    }

    #[test]
    fn words_with_quotes() {
        assert_eq!(
            split_words(r#"-A X --comment "a b" -j Y"#),
            ["-A", "X", "--comment", "a b", "-j", "Y"]
        );
        assert_eq!(split_words(r#"--comment "" x"#), ["--comment", "", "x"]);
    }
}
