//! `/proc/net/stat/nf_conntrack`: a header of field names, then one hex row per CPU.

use super::ParseError;
use std::collections::BTreeMap;

const FILE: &str = "nf_conntrack";

/// Per-CPU conntrack statistics, columns in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackStat {
    pub fields: Vec<String>,
    /// One row per CPU, `fields.len()` values each.
    pub cpus: Vec<Vec<u64>>,
}

/// `entries` is a global gauge that the kernel prints once per CPU row.
const GAUGES: &[&str] = &["entries"];

impl ConntrackStat {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| ParseError::new(FILE, 1, "empty file"))?;
        let fields: Vec<String> = header.split_whitespace().map(str::to_owned).collect();
        let mut cpus = Vec::new();
        for (i, line) in lines {
            let row = line
                .split_whitespace()
                .map(|v| u64::from_str_radix(v, 16))
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|e| ParseError::new(FILE, i + 1, format!("bad hex value: {e}")))?;
            if row.len() != fields.len() {
                return Err(ParseError::new(
                    FILE,
                    i + 1,
                    format!("{} values for {} fields", row.len(), fields.len()),
                ));
            }
            cpus.push(row);
        }
        Ok(ConntrackStat { fields, cpus })
    }

    /// Value of `field` on every CPU row.
    /// The same table from ctnetlink's per-CPU statistics (keyed by the procfs column
    /// names) and the entry count, which procfs repeats on every CPU's row.
    pub fn from_per_cpu(entries: u64, rows: &[BTreeMap<String, u64>]) -> Self {
        let mut fields = vec!["entries".to_string()];
        if let Some(first) = rows.first() {
            fields.extend(first.keys().filter(|k| *k != "entries").cloned());
        }
        let cpus = rows
            .iter()
            .map(|row| {
                fields
                    .iter()
                    .map(|f| {
                        if f == "entries" {
                            entries
                        } else {
                            row.get(f).copied().unwrap_or(0)
                        }
                    })
                    .collect()
            })
            .collect();
        ConntrackStat { fields, cpus }
    }

    fn column(&self, field: &str) -> Option<impl Iterator<Item = u64> + '_> {
        let idx = self.fields.iter().position(|f| f == field)?;
        Some(self.cpus.iter().map(move |row| row[idx]))
    }

    /// Sum over CPUs of (after − before) for counters; the after value for gauges.
    pub fn delta(before: &ConntrackStat, after: &ConntrackStat) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for field in &after.fields {
            let after_vals: Vec<u64> = after.column(field).into_iter().flatten().collect();
            let value = if GAUGES.contains(&field.as_str()) {
                after_vals.first().copied().unwrap_or(0) as f64
            } else {
                let before_vals: Vec<u64> = before.column(field).into_iter().flatten().collect();
                after_vals
                    .iter()
                    .enumerate()
                    .map(|(cpu, &a)| {
                        let b = before_vals.get(cpu).copied().unwrap_or(0);
                        // The per-CPU counters are 32-bit and wrap.
                        (a.wrapping_sub(b) & 0xffff_ffff) as f64
                    })
                    .sum()
            };
            out.insert(field.clone(), value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_statistics_read_like_procfs() {
        let row = |found: u64, drop: u64| {
            BTreeMap::from([("found".to_string(), found), ("drop".to_string(), drop)])
        };
        let before = ConntrackStat::from_per_cpu(3, &[row(1, 0), row(2, 0)]);
        let after = ConntrackStat::from_per_cpu(5, &[row(4, 1), row(2, 2)]);
        assert_eq!(before.fields, ["entries", "drop", "found"]);
        let d = ConntrackStat::delta(&before, &after);
        assert_eq!(d["entries"], 5.0);
        assert_eq!(d["found"], 3.0);
        assert_eq!(d["drop"], 3.0);
    }

    const BEFORE: &str = include_str!("fixtures/nf_conntrack-before.txt");
    const AFTER: &str = include_str!("fixtures/nf_conntrack-after.txt");

    #[test]
    fn parses_header_and_rows() {
        let s = ConntrackStat::parse(AFTER).unwrap();
        assert_eq!(s.fields.len(), 17);
        assert_eq!(s.fields[0], "entries");
        assert_eq!(s.fields[16], "search_restart");
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[0][1], 0x0c);
    }

    #[test]
    fn delta_sums_counters_and_keeps_entries_once() {
        let d = ConntrackStat::delta(
            &ConntrackStat::parse(BEFORE).unwrap(),
            &ConntrackStat::parse(AFTER).unwrap(),
        );
        assert_eq!(d["entries"], 41.0);
        assert_eq!(d["clashres"], (12 + 17 - 1) as f64);
        assert_eq!(d["invalid"], 2.0);
        assert_eq!(d["insert_failed"], 4.0);
        assert_eq!(d["drop"], 4.0);
        assert_eq!(d["chainlength"], 3.0);
        assert_eq!(d["search_restart"], 1.0);
        assert_eq!(d["early_drop"], 0.0);
        assert_eq!(d.len(), 17);
    }

    #[test]
    fn counter_wrap_is_a_small_delta() {
        let b = ConntrackStat::parse("entries drop\n00000001 fffffffe\n").unwrap();
        let a = ConntrackStat::parse("entries drop\n00000001 00000001\n").unwrap();
        assert_eq!(ConntrackStat::delta(&b, &a)["drop"], 3.0);
    }

    #[test]
    fn rejects_ragged_rows() {
        let err = ConntrackStat::parse("entries drop\n00000001\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(ConntrackStat::parse("entries drop\n0000000g 0\n").is_err());
    }
}
