//! `/proc/net/dev`: two header lines naming the receive and transmit columns, then
//! `name: v1 v2 ...` per device.

use super::ParseError;
use std::collections::BTreeMap;

const FILE: &str = "dev";

/// device → stat (`rx_bytes`, `rx_drop`, `tx_packets` ...) → value.
pub type DevStats = BTreeMap<String, BTreeMap<String, u64>>;

pub fn parse(text: &str) -> Result<DevStats, ParseError> {
    let mut lines = text.lines().enumerate();
    lines.next(); // "Inter-|   Receive   |  Transmit"
    let (_, header) = lines
        .next()
        .ok_or_else(|| ParseError::new(FILE, 2, "missing column header"))?;
    let names = column_names(header)
        .ok_or_else(|| ParseError::new(FILE, 2, "expected ` face |rx columns|tx columns`"))?;
    let mut out = DevStats::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        // Large counters can touch the colon: `eth0:53005304`.
        let (dev, vals) = line
            .split_once(':')
            .ok_or_else(|| ParseError::new(FILE, i + 1, "expected `device: values`"))?;
        let vals = vals
            .split_whitespace()
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ParseError::new(FILE, i + 1, format!("bad value: {e}")))?;
        if vals.len() != names.len() {
            return Err(ParseError::new(
                FILE,
                i + 1,
                format!("{} values for {} columns", vals.len(), names.len()),
            ));
        }
        out.insert(
            dev.trim().to_owned(),
            names.iter().cloned().zip(vals).collect(),
        );
    }
    Ok(out)
}

fn column_names(header: &str) -> Option<Vec<String>> {
    let mut parts = header.split('|');
    parts.next()?;
    let rx = parts.next()?;
    let tx = parts.next()?;
    let mut names: Vec<String> = rx.split_whitespace().map(|n| format!("rx_{n}")).collect();
    names.extend(tx.split_whitespace().map(|n| format!("tx_{n}")));
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_fixture() {
        let d = parse(include_str!("fixtures/dev.txt")).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["eth0", "ifb0", "ifb1", "lo"]);
        assert_eq!(d["eth0"]["rx_bytes"], 53005304);
        assert_eq!(d["eth0"]["tx_packets"], 1554);
        assert_eq!(d["lo"].len(), 16);
        let cols: Vec<&str> = d["lo"].keys().map(String::as_str).collect();
        assert!(cols.contains(&"rx_multicast") && cols.contains(&"tx_colls"));
    }

    #[test]
    fn counter_touching_the_colon() {
        let text = "Inter-|   Receive  |  Transmit\n face |bytes packets|bytes packets\n  eth0:4294967296 12 7 1\n";
        let d = parse(text).unwrap();
        assert_eq!(d["eth0"]["rx_bytes"], 4294967296);
        assert_eq!(d["eth0"]["tx_packets"], 1);
    }

    #[test]
    fn rejects_short_row() {
        let text = "Inter-|\n face |bytes packets|bytes packets\n  eth0: 1 2 3\n";
        assert!(parse(text).is_err());
    }
}
