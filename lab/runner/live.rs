//! Observations read from the running lab at any moment of a timeline: conntrack
//! table queries over ctnetlink and node counters as deltas from the cell's start.
//!
//! Conntrack queries are observation names with a filter argument (README
//! "Conntrack observations"):
//!   `ct.NODE.count`            entries in NODE's table
//!   `ct.NODE.count(FILTER)`    entries the filter matches
//!   `ct.NODE.entry(FILTER).F`  field F of the first matching entry (absent if none)

use crate::model::ct_filter::CtFilter;
use crate::model::{LabPlan, RulesetKind};
use crate::observe::NodeCounters;
use crate::verdict::Observations;
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// One parsed `ct.…` name.
#[derive(Debug, Clone, PartialEq)]
pub struct CtQuery {
    pub name: String,
    pub node: String,
    pub filter: Option<CtFilter>,
    /// `None`: a count; `Some(field)`: a field of the first match.
    pub field: Option<String>,
}

impl CtQuery {
    /// Parses `ct.NODE.count`, `ct.NODE.count(F)` or `ct.NODE.entry(F).FIELD`; other
    /// names are not queries (`Ok(None)`); a malformed query is an error naming the fix.
    pub fn parse(name: &str) -> Result<Option<CtQuery>, String> {
        let Some(rest) = name.strip_prefix("ct.") else {
            return Ok(None);
        };
        let Some((node, what)) = rest.split_once('.') else {
            return Err(format!(
                "`{name}`: write ct.NODE.count, ct.NODE.count(FILTER) or ct.NODE.entry(FILTER).FIELD"
            ));
        };
        let query = |filter: Option<CtFilter>, field: Option<String>| CtQuery {
            name: name.to_string(),
            node: node.to_string(),
            filter,
            field,
        };
        let parse_filter = |f: &str| CtFilter::parse(f).map_err(|e| format!("`{name}`: {e}"));
        if what == "count" {
            return Ok(Some(query(None, None)));
        }
        if let Some(arg) = what
            .strip_prefix("count(")
            .and_then(|a| a.strip_suffix(')'))
        {
            return Ok(Some(query(Some(parse_filter(arg)?), None)));
        }
        if let Some(arg) = what.strip_prefix("entry(") {
            if let Some((f, field)) = arg.rsplit_once(").") {
                return Ok(Some(query(Some(parse_filter(f)?), Some(field.to_string()))));
            }
        }
        Err(format!(
            "`{name}`: after ct.{node}. write count, count(FILTER) or entry(FILTER).FIELD \
             (fields: timeout, mark, zone, id, proto, orig.sport, orig.dport, reply.sport, \
             reply.dport, status.BIT, state.STATE)"
        ))
    }
}

/// Every conntrack query among `names`; names that are not queries are ignored.
pub fn ct_queries<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<CtQuery> {
    let mut out: Vec<CtQuery> = Vec::new();
    for n in names {
        if let Ok(Some(q)) = CtQuery::parse(n) {
            if !out.iter().any(|o| o.name == q.name) {
                out.push(q);
            }
        }
    }
    out
}

/// Reads live values of a running lab.
pub struct Live<'a> {
    pub plan: &'a LabPlan,
    /// Ruleset kinds whose counters are read, per node.
    pub kinds: &'a BTreeMap<String, Vec<RulesetKind>>,
    /// Counters at the cell's start.
    pub before: &'a BTreeMap<String, NodeCounters>,
}

impl Live<'_> {
    /// Resolves conntrack queries (one table dump per node).
    pub fn conntrack(&self, queries: &[CtQuery]) -> Result<Observations> {
        let mut obs = Observations::new();
        let mut dumps: BTreeMap<&str, Vec<crate::model::ct_filter::CtEntry>> = BTreeMap::new();
        for q in queries {
            let netns = crate::setup::netns_for(self.plan, &q.node)?;
            if q.filter.is_none() && q.field.is_none() {
                let n = crate::netns::ctnetlink::count(netns)
                    .with_context(|| format!("reading `{}`", q.name))?;
                obs.insert(q.name.clone(), n as f64);
                continue;
            }
            if !dumps.contains_key(q.node.as_str()) {
                let d = crate::netns::ctnetlink::dump(netns)
                    .with_context(|| format!("reading `{}`", q.name))?;
                dumps.insert(q.node.as_str(), d);
            }
            let entries = &dumps[q.node.as_str()];
            let filter = q.filter.clone().unwrap_or_default();
            let mut matching = entries.iter().filter(|e| filter.matches(e));
            match &q.field {
                None => {
                    obs.insert(q.name.clone(), matching.count() as f64);
                }
                Some(field) => {
                    if let Some(e) = matching.next() {
                        if let Some((_, v)) = e.fields().into_iter().find(|(k, _)| k == field) {
                            obs.insert(q.name.clone(), v);
                        }
                    }
                }
            }
        }
        Ok(obs)
    }

    /// Every node's counters as deltas from the cell's start.
    pub fn counters(&self) -> Result<Observations> {
        self.counters_where(self.kinds, |_| true)
    }

    /// The counters of only the nodes `names` mention (`conntrack.r.drop` reads `r`),
    /// and of their rulesets only the kinds named (`nft.r.…`): no `iptables-save` is
    /// spawned for a name that reads conntrack statistics, which under TCG costs
    /// about a second.
    pub fn counters_for(&self, names: &[String]) -> Result<Observations> {
        let mut kinds = BTreeMap::new();
        for (node, all) in self.kinds {
            let seg = crate::observe::segment(node);
            let named = |k: &RulesetKind| {
                let prefix = format!("{}.{seg}.", k.key());
                names.iter().any(|n| n.starts_with(&prefix))
            };
            kinds.insert(node.clone(), all.iter().copied().filter(named).collect());
        }
        self.counters_where(&kinds, |node| {
            let seg = format!(".{}.", crate::observe::segment(node));
            names.iter().any(|n| n.contains(&seg))
        })
    }

    fn counters_where(
        &self,
        kinds: &BTreeMap<String, Vec<RulesetKind>>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Observations> {
        let now = super::cell::snapshot_nodes(self.plan, kinds, &wanted)?;
        let mut obs = Observations::new();
        for node in self.plan.nodes.iter().filter(|n| wanted(&n.name)) {
            obs.extend(crate::observe::observations_delta(
                &node.name,
                &self.before[&node.name],
                &now[&node.name],
            ));
        }
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries() {
        let q = CtQuery::parse("ct.r.count").unwrap().unwrap();
        assert_eq!((q.node.as_str(), q.filter, q.field), ("r", None, None));
        let q = CtQuery::parse("ct.r.count(proto=udp dport=53)")
            .unwrap()
            .unwrap();
        assert_eq!(
            q.filter.unwrap().to_string(),
            CtFilter::parse("proto=udp dport=53").unwrap().to_string()
        );
        let q = CtQuery::parse("ct.fw.entry(proto=tcp dport=80).status.ASSURED")
            .unwrap()
            .unwrap();
        assert_eq!(q.field.as_deref(), Some("status.ASSURED"));
        assert_eq!(q.node, "fw");
        assert_eq!(CtQuery::parse("conntrack.r.insert").unwrap(), None);
        assert!(CtQuery::parse("ct.r.cnt")
            .unwrap_err()
            .contains("write count, count(FILTER) or entry(FILTER).FIELD"));
        assert!(CtQuery::parse("ct.r.count(dprt=1)")
            .unwrap_err()
            .contains("dprt"));
    }
}
