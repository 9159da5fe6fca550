//! The cell check-host runs for one scenario: the `[host_check]` cell with the
//! machine's sysctls on the node that plays it, the machine's rules in place of the
//! node's own, and the `affected` expression as its only expectation.

use super::mapping::{self, Interfaces};
use super::reader::HostReading;
use crate::model::host_check::{glob_match, HostCheck};
use crate::model::{CellPlan, RulesetKind, RulesetPlan, Sysctl};
use crate::scenario::Scenario;

/// Sysctls that are one value for the whole machine (the ones a scenario may set
/// in `host_sysctls`, and the read-only entry count): a lab namespace cannot have
/// its own, so the lab always runs under the running kernel's value.
fn machine_wide(key: &str) -> bool {
    crate::scenario::HOST_GLOBAL_SYSCTLS.contains(&key) || key == "net.netfilter.nf_conntrack_count"
}

/// What was carried over, for the verdict's "deciding" column.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub cell: CellPlan,
    /// `key=value (from the machine | absent on the machine: default)` per sysctl taken.
    pub settings: Vec<String>,
    /// `name: present (line)` / `name: absent` per deciding rule.
    pub rules: Vec<String>,
    /// What could not be carried over.
    pub notes: Vec<String>,
}

pub fn prepare(scn: &Scenario, hc: &HostCheck, host: &HostReading) -> Prepared {
    let mut cell = scn
        .cells
        .iter()
        .find(|c| c.name == hc.cell)
        .expect("host_check.cell was validated at load")
        .clone();
    let mut notes = Vec::new();
    let uplink = host.uplink.value();
    if uplink.is_none() && hc.interfaces.iter().any(|(g, _)| g == "@uplink") {
        if let super::reader::Reading::Absent(why) = &host.uplink {
            notes.push(format!("uplink: {why}; `@uplink` maps nothing"));
        }
    }
    let ifaces = Interfaces {
        map: &hc.interfaces,
        uplink,
    };
    // Host-global values: the machine's own, never the cell's test values.
    if !cell.lab.host_sysctls.is_empty() {
        notes.push(format!(
            "the cell's host-global sysctls ({}) are not set: the lab runs under the machine's",
            cell.lab
                .host_sysctls
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        cell.lab.host_sysctls.clear();
    }
    let node = cell
        .lab
        .nodes
        .iter_mut()
        .find(|n| n.name == hc.node)
        .expect("host_check.node was validated at load");

    let mut settings = Vec::new();
    for key in &hc.sysctls {
        let host_key = mapping::resolve_uplink(key, uplink);
        let read = host.sysctls.get(&host_key).and_then(|r| r.value());
        let default = hc.absent.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let (value, origin) = match (read, default) {
            (Some(v), _) => (v.to_string(), "machine"),
            (None, Some(d)) => (d.clone(), "absent on the machine: default"),
            (None, None) => {
                notes.push(format!(
                    "{host_key}: not on the machine; the lab keeps its own"
                ));
                continue;
            }
        };
        if machine_wide(&host_key) {
            settings.push(format!(
                "{host_key}={value} ({origin}; machine-wide, not applied)"
            ));
            continue;
        }
        match mapping::lab_sysctl_key(&host_key, &ifaces) {
            Ok(lab_key) => {
                node.sysctls.retain(|s| s.key != lab_key);
                node.sysctls.push(Sysctl {
                    key: lab_key,
                    value: value.clone(),
                });
                settings.push(format!("{host_key}={value} ({origin})"));
            }
            Err(why) => notes.push(format!("{host_key}: {why}; not applied")),
        }
    }

    // Tables iptables-nft owns are loaded from the saves, not from the nft text.
    let mut ipt_tables = Vec::new();
    for (kind, family) in [
        (RulesetKind::Iptables, "ip"),
        (RulesetKind::Ip6tables, "ip6"),
    ] {
        if let Some(t) = host.rulesets.get(kind.key()).and_then(|r| r.value()) {
            ipt_tables.extend(mapping::iptables_tables(t, family));
        }
    }
    node.rulesets.retain(|r| !hc.rulesets.contains(&r.kind));
    for kind in &hc.rulesets {
        let text = match host.rulesets.get(kind.key()) {
            Some(super::reader::Reading::Value(t)) => t,
            Some(super::reader::Reading::Absent(why)) => {
                notes.push(format!(
                    "{}: cannot tell: {why}; the lab has none",
                    kind.key()
                ));
                continue;
            }
            None => continue,
        };
        let rw = match kind {
            RulesetKind::Nft => mapping::rewrite_nft(text, &ifaces, &ipt_tables),
            _ => mapping::rewrite_iptables(text, &ifaces),
        };
        notes.extend(rw.notes(kind.key()));
        if has_content(*kind, &rw.text) {
            cell.requires.programs.push(kind.loader().0.to_string());
            cell.requires.programs.push(kind.dumper().0.to_string());
            node.rulesets.push(RulesetPlan {
                kind: *kind,
                text: rw.text,
            });
        }
    }
    cell.requires.programs.sort();
    cell.requires.programs.dedup();

    let lines: Vec<String> = host
        .rulesets
        .iter()
        .flat_map(|(k, r)| mapping::rule_lines(k, r.value().unwrap_or("")))
        .collect();
    let rules = hc
        .rules
        .iter()
        .map(|(name, globs)| {
            match lines
                .iter()
                .find(|l| globs.iter().any(|g| glob_match(g, l)))
            {
                Some(l) => format!("{name}: present (`{l}`)"),
                None => format!("{name}: absent"),
            }
        })
        .collect();

    // Judge "affected" only: the trigger still decides whether the run says anything.
    cell.expect = vec![hc.affected.clone()];
    for k in &mut cell.by_kernel {
        k.expect.clear();
    }
    cell.repeat = 1;
    Prepared {
        cell,
        settings,
        rules,
        notes,
    }
}

/// True when a save/list text defines any table (an empty `nft list ruleset` or a
/// save of nothing but comments loads nothing).
fn has_content(kind: RulesetKind, text: &str) -> bool {
    text.lines().any(|l| match kind {
        RulesetKind::Nft => l.starts_with("table "),
        _ => l.starts_with('*'),
    })
}
