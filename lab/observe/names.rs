//! Turning kernel names (devices, chains, rule comments) into observation-name segments.

/// One dot-separated segment of an observation name, readable by the judge's lexer:
/// keeps `[A-Za-z0-9_@]`, keeps `-` between two alphanumerics (`sw-a`, `DOCKER-USER`),
/// and turns everything else (spaces, dots, quotes, `*`) into `_`.
pub fn segment(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.is_empty() {
        return "_".to_owned();
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            c if c.is_ascii_alphanumeric() || c == '_' || c == '@' => c,
            '-' if i > 0
                && chars[i - 1].is_ascii_alphanumeric()
                && chars.get(i + 1).is_some_and(char::is_ascii_alphanumeric) =>
            {
                '-'
            }
            _ => '_',
        })
        .collect()
}

/// A rule comment as a name segment; blank comments count as none.
pub fn comment_segment(raw: &str) -> Option<String> {
    (!raw.trim().is_empty()).then(|| segment(raw.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(segment("sw-a"), "sw-a");
        assert_eq!(segment("KUBE-SVC-ABC123"), "KUBE-SVC-ABC123");
        assert_eq!(segment("eth0.100"), "eth0_100");
        assert_eq!(segment("fwd policy hit"), "fwd_policy_hit");
        assert_eq!(segment("-x-"), "_x_");
        assert_eq!(segment("a--b"), "a__b");
        assert_eq!(segment("*"), "_");
        assert_eq!(segment(""), "_");
        assert_eq!(comment_segment("  "), None);
        assert_eq!(comment_segment(" drop it ").as_deref(), Some("drop_it"));
    }
}
