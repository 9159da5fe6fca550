//! How a machine's settings land on a lab node: `@uplink` and machine interface
//! names rewritten to the lab's devices (by the scenario's `host_check.interfaces`
//! globs), iptables-nft's own tables left out of the nft text, and what could not
//! be carried over said so.

use crate::model::host_check::glob_match;
use std::collections::BTreeSet;

/// `@uplink` in a sysctl key replaced by the machine's uplink device.
pub fn resolve_uplink(key: &str, uplink: Option<&str>) -> String {
    match uplink {
        Some(u) => key.replace("@uplink", u),
        None => key.to_string(),
    }
}

/// The interface mapping of one scenario, with the machine's uplink known.
pub struct Interfaces<'a> {
    pub map: &'a [(String, String)],
    pub uplink: Option<&'a str>,
}

/// Devices every namespace has: never "unmapped".
const EVERYWHERE: &[&str] = &["lo"];

impl Interfaces<'_> {
    /// The lab device (or lab glob ending in `*`) standing for a machine name; the
    /// name may be a wildcard itself (`cali*`). None: the mapping does not know it.
    pub fn lab_name(&self, host: &str) -> Option<String> {
        if EVERYWHERE.contains(&host) {
            return Some(host.to_string());
        }
        self.map.iter().find_map(|(glob, lab)| {
            let hit = if glob == "@uplink" {
                self.uplink == Some(host)
            } else if let Some(prefix) = host.strip_suffix('*') {
                // A wildcard on the machine matches a mapping glob it equals or that
                // covers its prefix (`cali*` for `cali*`, `cali*` for `calie*`).
                glob == host || glob_match(glob, prefix)
            } else {
                glob_match(glob, host)
            };
            hit.then(|| lab.clone())
        })
    }
}

/// A ruleset rewritten for the lab, with what did not carry over.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rewritten {
    pub text: String,
    /// Machine interface names the rules use that no lab device stands for (left
    /// as they are: those rules match nothing in the lab).
    pub unmapped: BTreeSet<String>,
    /// Lines left out, with why.
    pub dropped: Vec<String>,
}

impl Rewritten {
    pub fn notes(&self, kind: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unmapped.is_empty() {
            out.push(format!(
                "{kind}: rules on {} match nothing in the lab (no lab device stands for them)",
                self.unmapped.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for d in &self.dropped {
            out.push(format!("{kind}: not loaded: {d}"));
        }
        out
    }
}

const IPT_IFACE_OPTS: &[&str] = &[
    "-i",
    "-o",
    "--in-interface",
    "--out-interface",
    "--physdev-in",
    "--physdev-out",
];

/// iptables-save text with interface names mapped. iptables' wildcard is a
/// trailing `+`. Rules matching an ipset (`-m set --match-set`) are left out: the
/// sets are not copied into the lab and iptables-restore refuses the whole table
/// for a missing one.
pub fn rewrite_iptables(text: &str, ifaces: &Interfaces) -> Rewritten {
    let mut out = Rewritten::default();
    let mut lines = Vec::new();
    for line in text.lines() {
        let is_rule = line.starts_with("-A ") || line.starts_with("-I ");
        if !is_rule {
            lines.push(line.to_string());
            continue;
        }
        if line.contains("--match-set") {
            out.dropped
                .push(format!("`{line}` (matches an ipset the lab does not have)"));
            continue;
        }
        let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
        for i in 0..words.len().saturating_sub(1) {
            if IPT_IFACE_OPTS.contains(&words[i].as_str()) {
                let host = words[i + 1].clone();
                let as_glob = match host.strip_suffix('+') {
                    Some(p) => format!("{p}*"),
                    None => host.clone(),
                };
                match ifaces.lab_name(&as_glob) {
                    Some(lab) => {
                        words[i + 1] = match lab.strip_suffix('*') {
                            Some(p) => format!("{p}+"),
                            None => lab,
                        }
                    }
                    None => {
                        out.unmapped.insert(host);
                    }
                }
            }
        }
        lines.push(words.join(" "));
    }
    out.text = lines.join("\n") + "\n";
    out
}

/// The `(family, table)` pairs an iptables-save text defines (`*filter` → `ip filter`).
pub fn iptables_tables(text: &str, family: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix('*'))
        .map(|t| (family.to_string(), t.trim().to_string()))
        .collect()
}

/// `nft list ruleset` text with interface names mapped, and the tables that
/// iptables-nft owns (`skip`: they are loaded from the iptables saves instead, and
/// their `xt` expressions do not load as nft text) left out. `iif`/`oif` become
/// `iifname`/`oifname`: they resolve the device when the rule is loaded, which
/// fails for a device the lab lacks, and the lab's ifindexes are not the machine's.
pub fn rewrite_nft(text: &str, ifaces: &Interfaces, skip: &[(String, String)]) -> Rewritten {
    let mut out = Rewritten::default();
    let mut lines = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if let Some(head) = line.strip_prefix("table ") {
            let w: Vec<&str> = head.split_whitespace().collect();
            if w.len() >= 2 {
                skipping = skip.iter().any(|(f, t)| f == w[0] && t == w[1]);
            }
        }
        if skipping {
            if line == "}" {
                skipping = false;
            }
            continue;
        }
        lines.push(rewrite_nft_line(line, ifaces, &mut out.unmapped));
    }
    out.text = lines.join("\n") + "\n";
    out
}

fn rewrite_nft_line(line: &str, ifaces: &Interfaces, unmapped: &mut BTreeSet<String>) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let mut i = 0;
    while i < words.len() {
        let key = words[i].as_str();
        let renamed = match key {
            "iif" => Some("iifname"),
            "oif" => Some("oifname"),
            "iifname" | "oifname" => Some(key),
            _ => None,
        };
        let Some(renamed) = renamed else {
            i += 1;
            continue;
        };
        words[i] = renamed.to_string();
        let mut j = i + 1;
        if words.get(j).is_some_and(|w| w == "!=") {
            j += 1;
        }
        // One name, or a set `{ "a", "b" }`.
        let in_set = words.get(j).is_some_and(|w| w == "{");
        if in_set {
            j += 1;
        }
        while j < words.len() {
            let w = words[j].clone();
            if w == "}" {
                break;
            }
            let comma = w.ends_with(',');
            let bare = w.trim_end_matches(',').trim_matches('"').to_string();
            match ifaces.lab_name(&bare) {
                Some(lab) => words[j] = format!("\"{lab}\"{}", if comma { "," } else { "" }),
                None => {
                    unmapped.insert(bare);
                }
            }
            j += 1;
            if !in_set {
                break;
            }
        }
        i = j;
    }
    format!("{indent}{}", words.join(" "))
}

/// A sysctl key as it is named in the lab: a device component (`conf.DEV.`,
/// `neigh.DEV.`) mapped through the interfaces. Err: no lab device stands for it.
pub fn lab_sysctl_key(host_key: &str, ifaces: &Interfaces) -> Result<String, String> {
    let parts: Vec<&str> = host_key.split('.').collect();
    let dev_at = parts
        .iter()
        .position(|p| *p == "conf" || *p == "neigh")
        .map(|i| i + 1)
        .filter(|&i| i + 1 < parts.len() && parts[0] == "net");
    let Some(i) = dev_at else {
        return Ok(host_key.to_string());
    };
    let dev = parts[i];
    if dev == "all" || dev == "default" {
        return Ok(host_key.to_string());
    }
    match ifaces.lab_name(dev) {
        Some(lab) if !lab.contains('*') => {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[i] = lab;
            Ok(p.join("."))
        }
        _ => Err(format!("no lab device stands for `{dev}`")),
    }
}

/// The machine's rule lines in the form the scenarios' `host_check.rules` globs
/// read: `iptables TABLE -A CHAIN ...` (also `ip6tables`, `iptables-legacy`, ...)
/// and `nft FAMILY TABLE CHAIN RULE`.
pub fn rule_lines(kind: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if kind == "nft" {
        let (mut family, mut table, mut chain) = (String::new(), String::new(), String::new());
        for line in text.lines() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix("table ") {
                let w: Vec<&str> = h.split_whitespace().collect();
                family = w.first().unwrap_or(&"").to_string();
                table = w.get(1).unwrap_or(&"").to_string();
            } else if let Some(h) = t.strip_prefix("chain ") {
                chain = h.split_whitespace().next().unwrap_or("").to_string();
            } else if !t.is_empty() && t != "}" && !chain.is_empty() {
                out.push(format!("nft {family} {table} {chain} {t}"));
            }
        }
    } else {
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if line.starts_with("-A ") || line.starts_with(':') {
                out.push(format!("{kind} {table} {line}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Vec<(String, String)> {
        vec![
            ("docker0".into(), "br0".into()),
            ("cali*".into(), "cali*".into()),
            ("tap*".into(), "tap1".into()),
            ("@uplink".into(), "eth0".into()),
        ]
    }

    #[test]
    fn iptables_names_and_wildcards_are_mapped() {
        let m = map();
        let i = Interfaces {
            map: &m,
            uplink: Some("ens3"),
        };
        let r = rewrite_iptables(
            "*filter\n-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD -i cali+ -j cali-from-wl\n-A INPUT -i ens3 -j ACCEPT\n-A FORWARD -o br-1a2b -j DROP\n-A cali-x -m set --match-set cali40s src -j ACCEPT\nCOMMIT\n",
            &i,
        );
        assert_eq!(
            r.text,
            "*filter\n-A FORWARD -i br0 ! -o br0 -j ACCEPT\n-A FORWARD -i cali+ -j cali-from-wl\n-A INPUT -i eth0 -j ACCEPT\n-A FORWARD -o br-1a2b -j DROP\nCOMMIT\n"
        );
        assert_eq!(r.unmapped, BTreeSet::from(["br-1a2b".to_string()]));
        assert_eq!(r.dropped.len(), 1);
    }

    #[test]
    fn nft_names_sets_and_iif_are_mapped_and_iptables_tables_skipped() {
        let m = map();
        let i = Interfaces {
            map: &m,
            uplink: Some("ens3"),
        };
        let text = "table ip filter {\n\tchain FORWARD {\n\t\tcounter\n\t}\n}\ntable inet fw {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tiif \"ens3\" ct state invalid drop\n\t\tiifname { \"docker0\", \"tap9\" } accept\n\t\toifname != \"weird0\" accept\n\t}\n}\n";
        let r = rewrite_nft(text, &i, &[("ip".into(), "filter".into())]);
        assert_eq!(
            r.text,
            "table inet fw {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tiifname \"eth0\" ct state invalid drop\n\t\tiifname { \"br0\", \"tap1\" } accept\n\t\toifname != \"weird0\" accept\n\t}\n}\n"
        );
        assert_eq!(r.unmapped, BTreeSet::from(["weird0".to_string()]));
    }

    #[test]
    fn sysctl_device_components_are_mapped() {
        let m = map();
        let i = Interfaces {
            map: &m,
            uplink: Some("ens3"),
        };
        assert_eq!(
            lab_sysctl_key("net.ipv4.conf.ens3.send_redirects", &i).unwrap(),
            "net.ipv4.conf.eth0.send_redirects"
        );
        assert_eq!(
            lab_sysctl_key("net.ipv4.conf.all.rp_filter", &i).unwrap(),
            "net.ipv4.conf.all.rp_filter"
        );
        assert!(lab_sysctl_key("net.ipv4.conf.wg0.rp_filter", &i).is_err());
        assert_eq!(
            lab_sysctl_key("net.netfilter.nf_conntrack_tcp_be_liberal", &i).unwrap(),
            "net.netfilter.nf_conntrack_tcp_be_liberal"
        );
    }
}
