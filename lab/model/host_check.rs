//! A scenario's `[host_check]` table once validated: which node plays the machine
//! being checked, what is taken from the machine, and which observations mean
//! "affected".

use super::expr::Expectation;
use super::lab::RulesetKind;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostCheck {
    /// The lab node that plays the machine.
    pub node: String,
    /// The cell whose lab and timeline are run (it exists in the scenario).
    pub cell: String,
    /// Holds when the machine is affected.
    pub affected: Expectation,
    pub says: String,
    pub fix: String,
    /// Machine sysctl keys (may contain `@uplink` or a machine device name).
    pub sysctls: Vec<String>,
    /// Value used when the machine has no such sysctl.
    pub absent: Vec<(String, String)>,
    /// Ruleset kinds taken from the machine, replacing the node's own.
    pub rulesets: Vec<RulesetKind>,
    /// Machine interface glob (or `@uplink`) → lab device, first match wins.
    pub interfaces: Vec<(String, String)>,
    /// Deciding rules: name → globs over the machine's rule lines (any matches).
    pub rules: Vec<(String, Vec<String>)>,
}

/// `*` matches any run of characters (dots and spaces included), everything else
/// itself. Hand-written: interface names and rule lines need nothing more, and the
/// observation globs of `judge` are segment-based (a `.` ends a `*` there).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| go(rest, &s[k..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_cross_dots_and_spaces() {
        assert!(glob_match("cali*", "cali12ab"));
        assert!(glob_match(
            "*INPUT*INVALID*DROP*",
            "-A INPUT -m conntrack --ctstate INVALID -j DROP"
        ));
        assert!(!glob_match("cali*", "tap1"));
        assert!(glob_match("eth0.100", "eth0.100"));
        assert!(!glob_match("eth0", "eth0.100"));
    }
}
