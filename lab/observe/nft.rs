//! Rule and named-counter values from `nft -j list ruleset`.

use super::{comment_segment, segment, ParseError, RuleCounters};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

const FILE: &str = "nft -j list ruleset";

struct Entry {
    family: String,
    /// `<table>.<chain>.<rule>` or `<table>.counter.<name>`, minus the table.
    rest: String,
    table: String,
    packets: u64,
    bytes: u64,
}

/// One rule of a ruleset dump, in its chain's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleItem {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The rule's comment as written (blank counts as none).
    pub comment: Option<String>,
    /// (packets, bytes) of the rule's anonymous counter, if it has one.
    pub counter: Option<(u64, u64)>,
}

/// One named counter object (`counter NAME { }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterItem {
    pub family: String,
    pub table: String,
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Counter values keyed `<table>.<chain>.<comment|ruleN>` and `<table>.counter.<name>`
/// (each with `.packets` and `.bytes`).
///
/// Rules are named by their comment, or `rule<N>` (1-based position in the chain,
/// counting every rule) when uncommented or when the comment repeats in the chain.
/// Table names are shared across families (`ip filter`, `inet filter`): where that
/// makes two names equal, the table segment becomes `<table>@<family>`.
pub fn parse(json: &str) -> Result<RuleCounters, ParseError> {
    let root: Value = serde_json::from_str(json)
        .map_err(|e| ParseError::new(FILE, e.line(), format!("invalid JSON: {e}")))?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::new(FILE, 1, "no `nftables` array"))?;
    let (mut rules, mut objects) = (Vec::new(), Vec::new());
    for item in items {
        if let Some(rule) = item.get("rule") {
            rules.push(RuleItem {
                family: str_of(rule, "family"),
                table: str_of(rule, "table"),
                chain: str_of(rule, "chain"),
                comment: rule
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                counter: rule_counter(rule),
            });
        } else if let Some(counter) = item.get("counter") {
            objects.push(CounterItem {
                family: str_of(counter, "family"),
                table: str_of(counter, "table"),
                name: str_of(counter, "name"),
                packets: u64_of(counter, "packets"),
                bytes: u64_of(counter, "bytes"),
            });
        }
    }
    Ok(counters_of(&rules, &objects))
}

/// The observation names and values of a dump's rules and named counters, whichever
/// way they were read (`nft -j` or nfnetlink).
pub fn counters_of(rules: &[RuleItem], objects: &[CounterItem]) -> RuleCounters {
    let mut entries: Vec<Entry> = objects
        .iter()
        .map(|c| Entry {
            family: c.family.clone(),
            table: c.table.clone(),
            rest: format!("counter.{}", segment(&c.name)),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    // (family, table, chain) → rules seen so far, for positions.
    let mut position: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut comments: HashMap<(&str, &str, &str, String), usize> = HashMap::new();
    let mut numbered = Vec::new();
    for rule in rules {
        let key = (
            rule.family.as_str(),
            rule.table.as_str(),
            rule.chain.as_str(),
        );
        let n = position.entry(key).or_default();
        *n += 1;
        numbered.push((*n, rule));
        if let Some(c) = rule.comment.as_deref().and_then(comment_segment) {
            *comments.entry((key.0, key.1, key.2, c)).or_default() += 1;
        }
    }
    for (n, rule) in numbered {
        let Some((packets, bytes)) = rule.counter else {
            continue;
        };
        let key = (
            rule.family.as_str(),
            rule.table.as_str(),
            rule.chain.as_str(),
        );
        let leaf = match rule.comment.as_deref().and_then(comment_segment) {
            Some(c) if comments[&(key.0, key.1, key.2, c.clone())] == 1 => c,
            _ => format!("rule{n}"),
        };
        entries.push(Entry {
            rest: format!("{}.{leaf}", segment(&rule.chain)),
            family: rule.family.clone(),
            table: rule.table.clone(),
            packets,
            bytes,
        });
    }

    let mut plain: HashMap<(String, String), usize> = HashMap::new();
    for e in &entries {
        *plain
            .entry((segment(&e.table), e.rest.clone()))
            .or_default() += 1;
    }
    let mut out = BTreeMap::new();
    for e in entries {
        let table = segment(&e.table);
        let table = if plain[&(table.clone(), e.rest.clone())] > 1 {
            format!("{table}@{}", segment(&e.family))
        } else {
            table
        };
        out.insert(format!("{table}.{}.packets", e.rest), e.packets);
        out.insert(format!("{table}.{}.bytes", e.rest), e.bytes);
    }
    out
}

/// The anonymous counter of a rule; `counter name x` references a named counter
/// object (reported with the object) and is skipped here.
fn rule_counter(rule: &Value) -> Option<(u64, u64)> {
    rule.get("expr")?
        .as_array()?
        .iter()
        .filter_map(|e| e.get("counter"))
        .find(|c| c.is_object())
        .map(|c| (u64_of(c, "packets"), u64_of(c, "bytes")))
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ruleset_fixture() {
        let c = parse(include_str!("fixtures/nft-ruleset.json")).unwrap();
        let names: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            names,
            [
                "filter.DOCKER-USER.rule1.bytes=0",
                "filter.DOCKER-USER.rule1.packets=0",
                "filter.FORWARD.rule1.bytes=0",
                "filter.FORWARD.rule1.packets=0",
                "filter.FORWARD.rule2.bytes=0",
                "filter.FORWARD.rule2.packets=0",
                "filter.FORWARD.rule3.bytes=0",
                "filter.FORWARD.rule3.packets=0",
                "filter.INPUT.rule1.bytes=640",
                "filter.INPUT.rule1.packets=5",
                "filter.counter.dropped_syn.bytes=180",
                "filter.counter.dropped_syn.packets=3",
                "filter.forward.fwd_policy_hit.bytes=0",
                "filter.forward.fwd_policy_hit.packets=0",
                "filter.input.ct-invalid.bytes=0",
                "filter.input.ct-invalid.packets=0",
                "filter.input.rule2.bytes=640",
                "filter.input.rule2.packets=5",
                // rule3 references the named counter: reported with the object.
                "filter.input.rule4.bytes=120",
                "filter.input.rule4.packets=3",
                "nat.postrouting.rule1.bytes=0",
                "nat.postrouting.rule1.packets=0",
            ]
        );
    }

    #[test]
    fn same_table_name_in_two_families_is_qualified_only_on_clash() {
        let json = r#"{"nftables":[
          {"metainfo":{"version":"1.0.9","release_name":"Old Doc Yak #3","json_schema_version":1}},
          {"table":{"family":"ip","name":"filter","handle":1}},
          {"table":{"family":"ip6","name":"filter","handle":2}},
          {"chain":{"family":"ip","table":"filter","name":"fwd","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"drop"}},
          {"chain":{"family":"ip6","table":"filter","name":"fwd","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"drop"}},
          {"rule":{"family":"ip","table":"filter","chain":"fwd","handle":2,"comment":"drops","expr":[{"counter":{"packets":7,"bytes":588}},{"drop":null}]}},
          {"rule":{"family":"ip6","table":"filter","chain":"fwd","handle":2,"comment":"drops","expr":[{"counter":{"packets":1,"bytes":104}},{"drop":null}]}},
          {"rule":{"family":"ip6","table":"filter","chain":"fwd","handle":3,"comment":"v6 only","expr":[{"counter":{"packets":2,"bytes":208}}]}}
        ]}"#;
        let c = parse(json).unwrap();
        assert_eq!(c["filter@ip.fwd.drops.packets"], 7);
        assert_eq!(c["filter@ip6.fwd.drops.packets"], 1);
        assert_eq!(c["filter.fwd.v6_only.bytes"], 208);
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn repeated_comment_falls_back_to_position() {
        let json = r#"{"nftables":[
          {"rule":{"family":"inet","table":"t","chain":"c","handle":2,"comment":"x","expr":[{"counter":{"packets":1,"bytes":10}}]}},
          {"rule":{"family":"inet","table":"t","chain":"c","handle":3,"comment":"x","expr":[{"counter":{"packets":2,"bytes":20}}]}}
        ]}"#;
        let c = parse(json).unwrap();
        assert_eq!(c["t.c.rule1.packets"], 1);
        assert_eq!(c["t.c.rule2.packets"], 2);
    }

    #[test]
    fn rejects_non_ruleset_json() {
        assert!(parse("{}").is_err());
        assert!(parse("not json").is_err());
    }
}
