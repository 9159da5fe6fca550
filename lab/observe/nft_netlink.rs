//! Rule and named-counter values of every nf_tables table in a namespace, read in-process
//! over nfnetlink (`NFT_MSG_GETRULE` and `NFT_MSG_GETOBJ` dumps), named exactly as
//! [`super::nft::parse`] names `nft -j list ruleset`: no `nft` process per snapshot.
//!
//! Own decoder, not a crate: `nftnl` / `rustables` wrap libnftnl or generate bindings at
//! build time and bring far more than the five attributes needed here (table, chain,
//! counter expression, comment, counter object), which are decoded below against
//! include/uapi/linux/netfilter/nf_tables.h on the socket layer of
//! [`crate::netns::ctnetlink`].
//!
//! Kernel behaviour worth knowing: a dump with family NFPROTO_UNSPEC walks every family's
//! tables (`nf_tables_dump_rules`), each chain's rules in list order, which is the order
//! `nft list` prints and so gives the same `ruleN` positions. The comment is not an
//! attribute of its own: nft stores it in `NFTA_RULE_USERDATA` as a libnftnl TLV
//! (`NFTNL_UDATA_RULE_COMMENT`, NUL-terminated), and iptables-nft does the same.

use super::nft::{counters_of, CounterItem, RuleItem};
use super::RuleCounters;
use crate::netns::ctnetlink::{nested_attrs, nfnl_dump};
use anyhow::Result;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETRULE: u8 = 7;
const NFT_MSG_GETOBJ: u8 = 19;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// Every rule counter and named counter of `netns`'s nf_tables ruleset.
pub fn read(netns: &str) -> Result<RuleCounters> {
    let mut rules = Vec::new();
    nfnl_dump(netns, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE, |family, a| {
        rules.push(decode_rule(family, a)?);
        Ok(())
    })?;
    let mut objects = Vec::new();
    nfnl_dump(netns, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETOBJ, |family, a| {
        if let Some(c) = decode_counter_object(family, a)? {
            objects.push(c);
        }
        Ok(())
    })?;
    Ok(counters_of(&rules, &objects))
}

/// nft's name of an NFPROTO_* family.
fn family_name(f: u8) -> String {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        other => return format!("family{other}"),
    }
    .to_owned()
}

pub(super) fn string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn be64(ty: u16, v: &[u8]) -> Result<u64, String> {
    v.get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        .ok_or_else(|| format!("attribute {ty}: {} bytes, want 8", v.len()))
}

/// (packets, bytes) of a counter's attributes.
pub(super) fn counter(data: &[u8]) -> Result<(u64, u64), String> {
    let (mut packets, mut bytes) = (0, 0);
    for (ty, v) in nested_attrs(data)? {
        match ty {
            NFTA_COUNTER_PACKETS => packets = be64(ty, v)?,
            NFTA_COUNTER_BYTES => bytes = be64(ty, v)?,
            _ => {}
        }
    }
    Ok((packets, bytes))
}

fn decode_rule(family: u8, a: &[(u16, &[u8])]) -> Result<RuleItem, String> {
    let mut r = RuleItem {
        family: family_name(family),
        table: String::new(),
        chain: String::new(),
        comment: None,
        counter: None,
    };
    for &(ty, v) in a {
        match ty {
            NFTA_RULE_TABLE => r.table = string(v),
            NFTA_RULE_CHAIN => r.chain = string(v),
            NFTA_RULE_USERDATA => r.comment = comment(v),
            NFTA_RULE_EXPRESSIONS if r.counter.is_none() => {
                for (lty, elem) in nested_attrs(v)? {
                    if lty != NFTA_LIST_ELEM {
                        continue;
                    }
                    let e = nested_attrs(elem)?;
                    let is_counter = e
                        .iter()
                        .any(|&(t, n)| t == NFTA_EXPR_NAME && string(n) == "counter");
                    let data = e.iter().find(|&&(t, _)| t == NFTA_EXPR_DATA);
                    if let (true, Some(&(_, d))) = (is_counter, data) {
                        r.counter = Some(counter(d)?);
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// The comment in a rule's userdata TLVs (type u8, length u8, value).
pub(super) fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(string(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

fn decode_counter_object(family: u8, a: &[(u16, &[u8])]) -> Result<Option<CounterItem>, String> {
    let (mut table, mut name, mut ty_obj, mut data) = (String::new(), String::new(), 0, None);
    for &(ty, v) in a {
        match ty {
            NFTA_OBJ_TABLE => table = string(v),
            NFTA_OBJ_NAME => name = string(v),
            NFTA_OBJ_TYPE if v.len() >= 4 => {
                ty_obj = u32::from_be_bytes(v[..4].try_into().unwrap())
            }
            NFTA_OBJ_DATA => data = Some(v),
            _ => {}
        }
    }
    if ty_obj != NFT_OBJECT_COUNTER {
        return Ok(None);
    }
    let (packets, bytes) = data.map_or(Ok((0, 0)), counter)?;
    Ok(Some(CounterItem {
        family: family_name(family),
        table,
        name,
        packets,
        bytes,
    }))
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

    #[test]
    fn rule_with_counter_and_comment() {
        let counter_data = [
            nla(NFTA_COUNTER_BYTES, &840u64.to_be_bytes()),
            nla(NFTA_COUNTER_PACKETS, &10u64.to_be_bytes()),
        ]
        .concat();
        let exprs = [
            nla(NFTA_LIST_ELEM, &nla(NFTA_EXPR_NAME, b"meta\0")),
            nla(
                NFTA_LIST_ELEM,
                &[
                    nla(NFTA_EXPR_NAME, b"counter\0"),
                    nla(NFTA_EXPR_DATA, &counter_data),
                ]
                .concat(),
            ),
        ]
        .concat();
        let udata = [&[NFTNL_UDATA_RULE_COMMENT, 7][..], b"drop v\0"].concat();
        let a: Vec<(u16, &[u8])> = vec![
            (NFTA_RULE_TABLE, b"filter\0"),
            (NFTA_RULE_CHAIN, b"input\0"),
            (NFTA_RULE_EXPRESSIONS, &exprs),
            (NFTA_RULE_USERDATA, &udata),
        ];
        let r = decode_rule(1, &a).unwrap();
        assert_eq!(
            r,
            RuleItem {
                family: "inet".into(),
                table: "filter".into(),
                chain: "input".into(),
                comment: Some("drop v".into()),
                counter: Some((10, 840)),
            }
        );
    }

    #[test]
    fn only_counter_objects_are_kept() {
        let data = nla(NFTA_COUNTER_PACKETS, &3u64.to_be_bytes());
        let mk = |t: [u8; 4]| -> Vec<(u16, Vec<u8>)> {
            vec![
                (NFTA_OBJ_TABLE, b"t\0".to_vec()),
                (NFTA_OBJ_NAME, b"related\0".to_vec()),
                (NFTA_OBJ_TYPE, t.to_vec()),
                (NFTA_OBJ_DATA, data.clone()),
            ]
        };
        let c = mk(NFT_OBJECT_COUNTER.to_be_bytes());
        let c: Vec<(u16, &[u8])> = c.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        let o = decode_counter_object(2, &c).unwrap().unwrap();
        assert_eq!(
            (o.family.as_str(), o.name.as_str(), o.packets),
            ("ip", "related", 3)
        );
        let q = mk(2u32.to_be_bytes()); // NFT_OBJECT_QUOTA
        let q: Vec<(u16, &[u8])> = q.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        assert!(decode_counter_object(2, &q).unwrap().is_none());
    }
}
