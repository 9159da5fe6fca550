//! Globs over dot-separated observation names.
//!
//! `*` matches any characters within one segment (`conntrack.*.drop`, `link.sw.sw-*.rx_drop`);
//! a segment that is exactly `**` matches one or more whole segments (`nft.sw.**.packets`).

pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let n: Vec<&str> = name.split('.').collect();
    match_segments(&p, &n)
}

fn match_segments(p: &[&str], n: &[&str]) -> bool {
    match (p.first(), n.first()) {
        (None, None) => true,
        (Some(&"**"), Some(_)) => (1..=n.len()).any(|k| match_segments(&p[1..], &n[k..])),
        (Some(ps), Some(ns)) => {
            match_segment(ps.as_bytes(), ns.as_bytes()) && match_segments(&p[1..], &n[1..])
        }
        _ => false,
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| match_segment(rest, &s[k..])),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn single_segment_star() {
        assert!(matches("conntrack.*.clashres", "conntrack.sw.clashres"));
        assert!(!matches("conntrack.*.clashres", "conntrack.clashres"));
        assert!(!matches("conntrack.*.clashres", "conntrack.a.b.clashres"));
        assert!(matches("link.sw.sw-*.rx_drop", "link.sw.sw-a.rx_drop"));
        assert!(matches("link.*.*.*_drop", "link.a.eth0.tx_drop"));
        assert!(!matches("link.*.*.*_drop", "link.a.eth0.tx_drops"));
        assert!(matches("exact.name", "exact.name"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(matches(
            "nft.sw.**.packets",
            "nft.sw.filter.fwd.rule1.packets"
        ));
        assert!(matches("nft.**", "nft.sw.x"));
        assert!(!matches("nft.sw.**.packets", "nft.sw.packets"));
        assert!(!matches(
            "nft.sw.**.packets",
            "nft.sw.filter.fwd.rule1.bytes"
        ));
    }
}
