//! "Did you mean": the available names closest to a misspelt one.

/// Up to `n` candidates by ascending edit distance (ties by name).
pub fn closest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a String>,
    n: usize,
) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = candidates
        .into_iter()
        .map(|c| (edit_distance(wanted, c), c))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, c)| c.clone()).collect()
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn closest_first() {
        let names: Vec<String> = [
            "ping.sent",
            "ping.received",
            "conntrack.sw.drop",
            "a",
            "b",
            "c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            closest("ping.recieved", &names, 2),
            ["ping.received", "ping.sent"]
        );
        assert_eq!(closest("x", &names, 5).len(), 5);
    }
}
