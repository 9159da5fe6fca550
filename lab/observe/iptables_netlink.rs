//! iptables-nft rule and policy counters read in-process over nfnetlink, named exactly
//! as [`super::iptables::parse`] names `iptables-nft-save -c`: no `iptables-save`
//! process per snapshot (under TCG one costs about 300 ms).
//!
//! Kernel and iptables-nft behaviour worth knowing: iptables-nft keeps each iptables
//! table as an nf_tables table of family ip (ip6 for ip6tables) with the iptables
//! name, and puts a counter expression in every rule. `-m comment` stays an x_tables
//! match (a `match` expression whose NFTA_MATCH_INFO is a `struct xt_comment_info`),
//! which is why `nft list` does not show it. A built-in chain is a base chain whose
//! NFTA_CHAIN_COUNTERS are the policy's counters; iptables-nft creates base chains on
//! first use, and iptables-nft-save prints every built-in chain of a table that
//! exists, with `[0:0]` for one never created: so does this.

use super::iptables::{insert_policy, insert_rules, Rule};
use super::nft_netlink::{comment, counter, string};
use super::RuleCounters;
use crate::netns::ctnetlink::{nested_attrs, nfnl_dump};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_GETRULE: u8 = 7;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_COUNTERS: u16 = 8;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_INFO: u16 = 3;

/// The iptables tables and their built-in chains, in iptables-save's order.
const BUILTIN: [(&str, &[&str]); 5] = [
    ("raw", &["PREROUTING", "OUTPUT"]),
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
    ("security", &["INPUT", "FORWARD", "OUTPUT"]),
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
];

/// (table, chain) of a chain.
type ChainKey = (String, String);
/// (packets, bytes).
type Counts = (u64, u64);

/// What one rule dump message says.
#[derive(Debug, PartialEq)]
struct RuleMsg {
    table: String,
    chain: String,
    comment: Option<String>,
    counts: (u64, u64),
}

/// Every rule and policy counter of the iptables-nft tables of `family`
/// (`libc::NFPROTO_IPV4` for iptables, `NFPROTO_IPV6` for ip6tables) in `netns`.
pub fn read(netns: &str, family: u8) -> Result<RuleCounters> {
    let is_iptables = |t: &str| BUILTIN.iter().any(|(name, _)| *name == t);
    let mut tables = Vec::new();
    nfnl_dump(netns, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE, |f, a| {
        if f == family {
            if let Some(&(_, v)) = a.iter().find(|(t, _)| *t == NFTA_TABLE_NAME) {
                tables.push(string(v));
            }
        }
        Ok(())
    })?;
    tables.retain(|t| is_iptables(t));
    let mut base_chains: HashMap<ChainKey, Counts> = HashMap::new();
    nfnl_dump(netns, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETCHAIN, |f, a| {
        if f == family {
            if let Some((key, counts)) = decode_base_chain(a)? {
                base_chains.insert(key, counts);
            }
        }
        Ok(())
    })?;
    let mut rules = Vec::new();
    nfnl_dump(netns, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE, |f, a| {
        if f == family {
            let r = decode_rule(a)?;
            if is_iptables(&r.table) {
                rules.push(r);
            }
        }
        Ok(())
    })?;
    Ok(name(&tables, &base_chains, rules))
}

/// The counters under iptables-save's names.
fn name(
    tables: &[String],
    base_chains: &HashMap<ChainKey, Counts>,
    rules: Vec<RuleMsg>,
) -> RuleCounters {
    let mut out = BTreeMap::new();
    for (table, chains) in BUILTIN {
        if !tables.iter().any(|t| t == table) {
            continue;
        }
        for chain in chains {
            let key = (table.to_string(), chain.to_string());
            let counts = base_chains.get(&key).copied().unwrap_or((0, 0));
            insert_policy(&mut out, table, chain, counts);
        }
    }
    // The dump gives each chain's rules in list order: their positions.
    let mut position: HashMap<(String, String), usize> = HashMap::new();
    let rules: Vec<Rule> = rules
        .into_iter()
        .map(|r| {
            let n = position
                .entry((r.table.clone(), r.chain.clone()))
                .or_default();
            *n += 1;
            Rule {
                position: *n,
                comment: r.comment.as_deref().and_then(super::comment_segment),
                packets: r.counts.0,
                bytes: r.counts.1,
                table: r.table,
                chain: r.chain,
            }
        })
        .collect();
    insert_rules(&mut out, &rules);
    out
}

/// `((table, chain), policy counters)` of a base chain; None for a user chain.
fn decode_base_chain(a: &[(u16, &[u8])]) -> Result<Option<(ChainKey, Counts)>, String> {
    let (mut table, mut chain, mut base, mut counts) =
        (String::new(), String::new(), false, (0, 0));
    for &(ty, v) in a {
        match ty {
            NFTA_CHAIN_TABLE => table = string(v),
            NFTA_CHAIN_NAME => chain = string(v),
            NFTA_CHAIN_HOOK => base = true,
            NFTA_CHAIN_COUNTERS => counts = counter(v)?,
            _ => {}
        }
    }
    Ok(base.then_some(((table, chain), counts)))
}

fn decode_rule(a: &[(u16, &[u8])]) -> Result<RuleMsg, String> {
    let mut r = RuleMsg {
        table: String::new(),
        chain: String::new(),
        comment: None,
        counts: (0, 0),
    };
    let mut counted = false;
    for &(ty, v) in a {
        match ty {
            NFTA_RULE_TABLE => r.table = string(v),
            NFTA_RULE_CHAIN => r.chain = string(v),
            NFTA_RULE_USERDATA => r.comment = r.comment.take().or_else(|| comment(v)),
            NFTA_RULE_EXPRESSIONS => {
                for (lty, elem) in nested_attrs(v)? {
                    if lty != NFTA_LIST_ELEM {
                        continue;
                    }
                    let e = nested_attrs(elem)?;
                    let name = e
                        .iter()
                        .find(|(t, _)| *t == NFTA_EXPR_NAME)
                        .map(|(_, n)| string(n));
                    let Some(&(_, data)) = e.iter().find(|(t, _)| *t == NFTA_EXPR_DATA) else {
                        continue;
                    };
                    match name.as_deref() {
                        Some("counter") if !counted => {
                            r.counts = counter(data)?;
                            counted = true;
                        }
                        Some("match") => {
                            if let Some(c) = comment_match(data)? {
                                r.comment = Some(c);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// The text of an x_tables `comment` match (`struct xt_comment_info`, a NUL-padded
/// char array); None for any other match.
fn comment_match(data: &[u8]) -> Result<Option<String>, String> {
    let a = nested_attrs(data)?;
    let is_comment = a
        .iter()
        .any(|&(t, v)| t == NFTA_MATCH_NAME && string(v) == "comment");
    Ok(is_comment
        .then(|| {
            a.iter()
                .find(|(t, _)| *t == NFTA_MATCH_INFO)
                .map(|&(_, v)| string(v))
        })
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut b = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(v);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn expr(name: &str, data: &[u8]) -> Vec<u8> {
        let n = format!("{name}\0");
        nla(
            NFTA_LIST_ELEM,
            &[nla(NFTA_EXPR_NAME, n.as_bytes()), nla(NFTA_EXPR_DATA, data)].concat(),
        )
    }

    fn counts(p: u64, b: u64) -> Vec<u8> {
        [nla(1, &b.to_be_bytes()), nla(2, &p.to_be_bytes())].concat()
    }

    #[test]
    fn a_rule_with_a_comment_match_and_its_counter() {
        let mut info = b"established".to_vec();
        info.resize(256, 0);
        let m = [
            nla(NFTA_MATCH_NAME, b"comment\0"),
            nla(2, &0u32.to_be_bytes()),
            nla(NFTA_MATCH_INFO, &info),
        ]
        .concat();
        let state = [
            nla(NFTA_MATCH_NAME, b"state\0"),
            nla(NFTA_MATCH_INFO, &[6, 0, 0, 0]),
        ]
        .concat();
        let exprs = [
            expr("match", &state),
            expr("match", &m),
            expr("counter", &counts(7, 588)),
        ]
        .concat();
        let a: Vec<(u16, &[u8])> = vec![
            (NFTA_RULE_TABLE, b"filter\0"),
            (NFTA_RULE_CHAIN, b"FORWARD\0"),
            (NFTA_RULE_EXPRESSIONS, &exprs),
        ];
        assert_eq!(
            decode_rule(&a).unwrap(),
            RuleMsg {
                table: "filter".into(),
                chain: "FORWARD".into(),
                comment: Some("established".into()),
                counts: (7, 588),
            }
        );
    }

    #[test]
    fn names_match_iptables_save() {
        // What iptables-nft-save -c prints for the same state.
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [12:1008]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n[5:420] -A FORWARD -m comment --comment established -j ACCEPT\n[1:84] -A FORWARD -m comment --comment dup -j ACCEPT\n[2:168] -A FORWARD -m comment --comment dup -j ACCEPT\n[3:1] -A DOCKER -j RETURN\nCOMMIT\n";
        let tables = vec!["filter".to_string(), "ip-native".to_string()];
        let base: HashMap<_, _> =
            [(("filter".to_string(), "FORWARD".to_string()), (12, 1008))].into();
        let rule = |chain: &str, comment: Option<&str>, counts| RuleMsg {
            table: "filter".into(),
            chain: chain.into(),
            comment: comment.map(String::from),
            counts,
        };
        let rules = vec![
            rule("FORWARD", Some("established"), (5, 420)),
            rule("DOCKER", None, (3, 1)),
            rule("FORWARD", Some("dup"), (1, 84)),
            rule("FORWARD", Some("dup"), (2, 168)),
        ];
        assert_eq!(
            name(&tables, &base, rules),
            super::super::iptables::parse(save).unwrap()
        );
    }

    #[test]
    fn user_chains_have_no_policy() {
        let user: Vec<(u16, &[u8])> = vec![
            (NFTA_CHAIN_TABLE, b"filter\0"),
            (NFTA_CHAIN_NAME, b"DOCKER\0"),
        ];
        assert_eq!(decode_base_chain(&user).unwrap(), None);
        let c = counts(4, 336);
        let hook = nla(1, &1u32.to_be_bytes());
        let base: Vec<(u16, &[u8])> = vec![
            (NFTA_CHAIN_TABLE, b"nat\0"),
            (NFTA_CHAIN_NAME, b"POSTROUTING\0"),
            (NFTA_CHAIN_HOOK, &hook),
            (NFTA_CHAIN_COUNTERS, &c),
        ];
        assert_eq!(
            decode_base_chain(&base).unwrap(),
            Some((("nat".into(), "POSTROUTING".into()), (4, 336)))
        );
    }
}
