//! `/proc/net/snmp`, `/proc/net/netstat` (header/value line pairs per group) and
//! `/proc/net/snmp6` (one `Ip6InReceives 3` line per counter).

use super::ParseError;
use std::collections::BTreeMap;

/// group (`Ip`, `TcpExt`, `Ip6`) → field (`InReceives`) → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnmpCounters {
    pub groups: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Fields that are settings or current levels, not event counters: a delta of them
/// means nothing, so observations carry their after value.
const GAUGES: &[(&str, &str)] = &[
    ("Ip", "Forwarding"),
    ("Ip", "DefaultTTL"),
    ("Tcp", "RtoAlgorithm"),
    ("Tcp", "RtoMin"),
    ("Tcp", "RtoMax"),
    ("Tcp", "MaxConn"),
    ("Tcp", "CurrEstab"),
    ("MPTcpExt", "MPCurrEstab"),
];

pub fn is_gauge(group: &str, field: &str) -> bool {
    GAUGES.contains(&(group, field))
}

impl SnmpCounters {
    /// Parses the `/proc/net/snmp` and `/proc/net/netstat` format: for each group a line
    /// `Group: Name1 Name2 ...` followed by `Group: v1 v2 ...`.
    pub fn parse_pairs(file: &'static str, text: &str) -> Result<Self, ParseError> {
        let mut out = SnmpCounters::default();
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        for pair in lines.chunks(2) {
            let (hn, header) = pair[0];
            let Some(&(vn, values)) = pair.get(1) else {
                return Err(ParseError::new(file, hn + 1, "header line without values"));
            };
            let (hgroup, names) = split_group(header)
                .ok_or_else(|| ParseError::new(file, hn + 1, "missing `Group:` prefix"))?;
            let (vgroup, vals) = split_group(values)
                .ok_or_else(|| ParseError::new(file, vn + 1, "missing `Group:` prefix"))?;
            if hgroup != vgroup {
                return Err(ParseError::new(
                    file,
                    vn + 1,
                    format!("values for `{vgroup}` follow header of `{hgroup}`"),
                ));
            }
            let names: Vec<&str> = names.split_whitespace().collect();
            let vals: Vec<&str> = vals.split_whitespace().collect();
            if names.len() != vals.len() {
                return Err(ParseError::new(
                    file,
                    vn + 1,
                    format!("{} values for {} names", vals.len(), names.len()),
                ));
            }
            let group = out.groups.entry(hgroup.to_owned()).or_default();
            for (name, val) in names.into_iter().zip(vals) {
                group.insert(name.to_owned(), parse_value(file, vn + 1, val)?);
            }
        }
        Ok(out)
    }

    /// Parses `/proc/net/snmp6`: `Ip6InReceives 3` → group `Ip6`, field `InReceives`.
    pub fn parse_snmp6(text: &str) -> Result<Self, ParseError> {
        const FILE: &str = "snmp6";
        let mut out = SnmpCounters::default();
        for (i, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(val)) = (words.next(), words.next()) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(ParseError::new(FILE, i + 1, "expected `Name value`"));
            };
            // The group is everything up to the first `6`: Ip6, Icmp6, Udp6, UdpLite6.
            let (group, field) = match key.find('6') {
                Some(p) if p + 1 < key.len() => key.split_at(p + 1),
                _ => ("Ip6", key),
            };
            out.groups
                .entry(group.to_owned())
                .or_default()
                .insert(field.to_owned(), parse_value(FILE, i + 1, val)?);
        }
        Ok(out)
    }

    /// Adds every group of `other` (files never share a group name).
    pub fn merge(&mut self, other: SnmpCounters) {
        for (group, fields) in other.groups {
            self.groups.entry(group).or_default().extend(fields);
        }
    }

    pub fn get(&self, group: &str, field: &str) -> Option<i64> {
        self.groups.get(group)?.get(field).copied()
    }
}

fn split_group(line: &str) -> Option<(&str, &str)> {
    let (group, rest) = line.split_once(':')?;
    let group = group.trim();
    (!group.is_empty() && !group.contains(char::is_whitespace)).then_some((group, rest))
}

fn parse_value(file: &'static str, line: usize, v: &str) -> Result<i64, ParseError> {
    v.parse::<i64>()
        .or_else(|_| v.parse::<u64>().map(|u| u as i64))
        .map_err(|_| ParseError::new(file, line, format!("`{v}` is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = include_str!("fixtures/snmp.txt");
    const NETSTAT: &str = include_str!("fixtures/netstat.txt");
    const SNMP6: &str = include_str!("fixtures/snmp6.txt");

    #[test]
    fn parses_snmp_groups() {
        let s = SnmpCounters::parse_pairs("snmp", SNMP).unwrap();
        let groups: Vec<&str> = s.groups.keys().map(String::as_str).collect();
        assert_eq!(groups, ["Icmp", "IcmpMsg", "Ip", "Tcp", "Udp", "UdpLite"]);
        assert_eq!(s.get("Ip", "InReceives"), Some(2639));
        assert_eq!(s.get("Tcp", "MaxConn"), Some(-1));
        assert_eq!(s.get("IcmpMsg", "InType3"), Some(1));
        assert_eq!(s.get("Udp", "OutDatagrams"), Some(72));
    }

    #[test]
    fn parses_netstat_groups() {
        let s = SnmpCounters::parse_pairs("netstat", NETSTAT).unwrap();
        assert_eq!(s.get("TcpExt", "TW"), Some(10));
        assert_eq!(s.get("IpExt", "InOctets"), Some(52971773));
        assert_eq!(s.get("TcpExt", "TCPAODroppedIcmps"), Some(0));
        assert!(s.groups.contains_key("MPTcpExt"));
    }

    #[test]
    fn parses_snmp6_names_into_groups() {
        let s = SnmpCounters::parse_snmp6(SNMP6).unwrap();
        assert_eq!(s.get("Ip6", "InReceives"), Some(1));
        assert_eq!(s.get("Ip6", "OutRequests"), Some(10));
        assert_eq!(s.get("Icmp6", "OutType135"), Some(4));
        assert_eq!(s.get("Udp6", "InDatagrams"), Some(0));
        assert_eq!(s.get("UdpLite6", "MemErrors"), Some(0));
        assert_eq!(s.groups.len(), 4);
    }

    #[test]
    fn rejects_mismatched_pairs() {
        let err = SnmpCounters::parse_pairs("snmp", "Ip: A B\nIp: 1\n").unwrap_err();
        assert_eq!(err.to_string(), "snmp line 2: 1 values for 2 names");
        assert!(SnmpCounters::parse_pairs("snmp", "Ip: A\nTcp: 1\n").is_err());
        assert!(SnmpCounters::parse_pairs("snmp", "Ip: A\n").is_err());
        assert!(SnmpCounters::parse_pairs("snmp", "Ip: A\nIp: x\n").is_err());
    }

    #[test]
    fn merge_keeps_all_files() {
        let mut s = SnmpCounters::parse_pairs("snmp", SNMP).unwrap();
        s.merge(SnmpCounters::parse_pairs("netstat", NETSTAT).unwrap());
        s.merge(SnmpCounters::parse_snmp6(SNMP6).unwrap());
        assert!(s.get("Ip", "InReceives").is_some());
        assert!(s.get("TcpExt", "TW").is_some());
        assert!(s.get("Ip6", "InReceives").is_some());
    }
}
