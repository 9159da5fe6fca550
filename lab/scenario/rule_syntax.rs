//! Policy routing rules in `ip rule` syntax (the words after `ip rule add`):
//! `from 10.0.2.2 lookup 100`, `fwmark 0x1/0xff lookup 100 priority 100`,
//! `not from all fwmark 0xca6c lookup 51820`, `lookup main suppress_prefixlength 0`,
//! `-6 to 2001:db8:1::/64 iif eth1 lookup 7`, `ipproto udp dport 53 prohibit`,
//! `tos 0x10 table 100`, `uidrange 100-100 table 100`.

use super::syntax::{check_ifname, parse_addr, parse_prefix};
use crate::model::ip_rule::{TABLE_DEFAULT, TABLE_LOCAL, TABLE_MAIN};
use crate::model::{IpRuleAction, IpRulePlan};
use ipnet::IpNet;

fn rule_fix() -> String {
    "write `ip rule` words, e.g. `from 10.0.2.2 lookup 100`, `fwmark 1 lookup 100`, \
     `iif eth1 lookup 100 priority 10`, `-6 to 2001:db8::/64 lookup 7`, `lookup main suppress_prefixlength 0`"
        .into()
}

type E = (String, String);

/// One rule as `ip rule add` takes it. The family comes from `from`/`to`; a rule with
/// neither is IPv4 unless it starts with `-6`. No action means `lookup main`, as `ip`.
pub fn parse_ip_rule(s: &str) -> Result<IpRulePlan, E> {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() {
        return Err(("empty rule".into(), rule_fix()));
    }
    let explicit_v6 = match words[0] {
        "-6" => Some(true),
        "-4" => Some(false),
        _ => None,
    };
    if explicit_v6.is_some() {
        words.remove(0);
    }
    let mut rule = IpRulePlan::lookup(TABLE_MAIN);
    let mut action: Option<IpRuleAction> = None;
    let mut set_action = |a: IpRuleAction, word: &str| -> Result<(), E> {
        if action.replace(a).is_some() {
            return Err((
                format!("`{s}`: `{word}` is a second action (a rule has one of lookup, blackhole, unreachable, prohibit)"),
                rule_fix(),
            ));
        }
        Ok(())
    };
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let value = || {
            words
                .get(i + 1)
                .copied()
                .ok_or_else(|| (format!("`{s}`: `{w}` needs a value"), rule_fix()))
        };
        let mut takes_value = true;
        match w {
            "not" => {
                rule.not = true;
                takes_value = false;
            }
            "from" => rule.from = selector(s, value()?)?,
            "to" => rule.to = selector(s, value()?)?,
            "fwmark" => {
                let v = value()?;
                let (mark, mask) = match v.split_once('/') {
                    Some((m, k)) => (m, Some(k)),
                    None => (v, None),
                };
                rule.fwmark = Some(number(s, "fwmark", mark)?);
                rule.fwmask = mask.map(|k| number(s, "fwmark mask", k)).transpose()?;
            }
            "tos" | "dsfield" => {
                let v = value()?;
                rule.tos = Some(
                    u8::try_from(number(s, w, v)?)
                        .map_err(|_| (format!("`{s}`: {w} `{v}` is not 0..=255"), rule_fix()))?,
                );
            }
            "uidrange" => {
                let v = value()?;
                let bad = || (format!("`{s}`: uidrange `{v}` is not LOW-HIGH"), rule_fix());
                let (lo, hi) = v.split_once('-').ok_or_else(bad)?;
                let (lo, hi) = (
                    lo.parse::<u32>().map_err(|_| bad())?,
                    hi.parse::<u32>().map_err(|_| bad())?,
                );
                if lo > hi {
                    return Err(bad());
                }
                rule.uidrange = Some((lo, hi));
            }
            "iif" | "dev" => rule.iif = Some(device(value()?)?),
            "oif" => rule.oif = Some(device(value()?)?),
            "priority" | "pref" | "preference" | "order" => {
                rule.priority = Some(number(s, w, value()?)?)
            }
            "ipproto" => rule.ipproto = Some(protocol(s, value()?)?),
            "sport" => rule.sport = Some(port_range(s, w, value()?)?),
            "dport" => rule.dport = Some(port_range(s, w, value()?)?),
            "suppress_prefixlength" | "sup_pl" => {
                let v = value()?;
                let n = number(s, w, v)?;
                if n > 128 {
                    return Err((
                        format!("`{s}`: suppress_prefixlength `{v}` is longer than any prefix"),
                        rule_fix(),
                    ));
                }
                rule.suppress_prefixlength = Some(n);
            }
            "lookup" | "table" => set_action(IpRuleAction::Lookup(table(s, value()?)?), w)?,
            "blackhole" | "unreachable" | "prohibit" => {
                takes_value = false;
                let a = match w {
                    "blackhole" => IpRuleAction::Blackhole,
                    "unreachable" => IpRuleAction::Unreachable,
                    _ => IpRuleAction::Prohibit,
                };
                set_action(a, w)?;
            }
            other => return Err((format!("`{s}`: unknown word `{other}`"), rule_fix())),
        }
        i += if takes_value { 2 } else { 1 };
    }
    rule.action = action.unwrap_or(IpRuleAction::Lookup(TABLE_MAIN));
    let families: Vec<bool> = [rule.from, rule.to]
        .iter()
        .flatten()
        .map(|n: &IpNet| n.addr().is_ipv6())
        .collect();
    if families.windows(2).any(|f| f[0] != f[1]) {
        return Err((
            format!("`{s}`: `from` and `to` are of different families"),
            rule_fix(),
        ));
    }
    let v6 = match (families.first().copied(), explicit_v6) {
        (Some(addresses), Some(explicit)) if addresses != explicit => {
            return Err((
                format!(
                    "`{s}`: `{}` does not match the addresses' family",
                    if explicit { "-6" } else { "-4" }
                ),
                rule_fix(),
            ))
        }
        (Some(addresses), _) => addresses,
        (None, explicit) => explicit.unwrap_or(false),
    };
    rule.v6 = v6;
    if rule.suppress_prefixlength.is_some_and(|n| !v6 && n > 32) {
        return Err((
            format!("`{s}`: an IPv4 suppress_prefixlength is 0..=32"),
            rule_fix(),
        ));
    }
    Ok(rule)
}

/// `all` is no selector; else a prefix or an address.
fn selector(s: &str, v: &str) -> Result<Option<IpNet>, E> {
    if v == "all" {
        return Ok(None);
    }
    parse_prefix(v)
        .map(|n| n.trunc())
        .or_else(|_| parse_addr(v).map(IpNet::from))
        .map(Some)
        .map_err(|_| {
            (
                format!("`{s}`: `{v}` is not an address or prefix"),
                rule_fix(),
            )
        })
}

fn number(s: &str, what: &str, v: &str) -> Result<u32, E> {
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => v.parse::<u32>(),
    };
    parsed.map_err(|_| (format!("`{s}`: {what} `{v}` is not a number"), rule_fix()))
}

fn device(v: &str) -> Result<String, E> {
    check_ifname(v)?;
    Ok(v.to_string())
}

fn table(s: &str, v: &str) -> Result<u32, E> {
    match v {
        "main" => Ok(TABLE_MAIN),
        "local" => Ok(TABLE_LOCAL),
        "default" => Ok(TABLE_DEFAULT),
        _ => match number(s, "table", v)? {
            0 => Err((format!("`{s}`: table 0 is no table"), rule_fix())),
            t => Ok(t),
        },
    }
}

fn protocol(s: &str, v: &str) -> Result<u8, E> {
    match v {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "ipv6-icmp" | "icmpv6" => Ok(58),
        "sctp" => Ok(132),
        "gre" => Ok(47),
        _ => v.parse::<u8>().map_err(|_| {
            (
                format!(
                    "`{s}`: ipproto `{v}` is not tcp, udp, icmp, icmpv6, sctp, gre or a number"
                ),
                rule_fix(),
            )
        }),
    }
}

fn port_range(s: &str, what: &str, v: &str) -> Result<(u16, u16), E> {
    let bad = || {
        (
            format!("`{s}`: {what} `{v}` is not a port or a range LOW-HIGH"),
            rule_fix(),
        )
    };
    let (lo, hi) = match v.split_once('-') {
        Some((lo, hi)) => (lo, hi),
        None => (v, v),
    };
    let lo = lo.parse::<u16>().map_err(|_| bad())?;
    let hi = hi.parse::<u16>().map_err(|_| bad())?;
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> String {
        parse_ip_rule(s).unwrap().to_string()
    }

    #[test]
    fn rules_read_as_ip_rule_writes_them() {
        assert_eq!(
            args("from 10.0.2.2 lookup 100"),
            "from 10.0.2.2/32 lookup 100"
        );
        assert_eq!(
            args("fwmark 1 table 100 pref 10"),
            "priority 10 fwmark 0x1 lookup 100"
        );
        assert_eq!(
            args("not from all fwmark 0xca6c lookup 51820"),
            "not fwmark 0xca6c lookup 51820"
        );
        assert_eq!(
            args("table main suppress_prefixlength 0"),
            "lookup main suppress_prefixlength 0"
        );
        assert_eq!(
            args("-6 to 2001:db8:1::/64 iif eth1 lookup 7"),
            "-6 to 2001:db8:1::/64 iif eth1 lookup 7"
        );
        assert_eq!(
            args("to 2001:db8::1 lookup 7"),
            "-6 to 2001:db8::1/128 lookup 7"
        );
        assert_eq!(
            args("ipproto udp dport 53 prohibit"),
            "ipproto 17 dport 53 prohibit"
        );
        assert_eq!(
            args("sport 1000-2000 oif eth0 blackhole"),
            "oif eth0 sport 1000-2000 blackhole"
        );
        assert_eq!(
            args("fwmark 0x10/0xf0 lookup local"),
            "fwmark 0x10/0xf0 lookup local"
        );
        assert_eq!(args("from 10.0.0.0/8"), "from 10.0.0.0/8 lookup main");
        assert_eq!(
            args("tos 0x10 uidrange 100-100 table 100"),
            "tos 0x10 uidrange 100-100 lookup 100"
        );
        let r = parse_ip_rule("from 10.1.2.3/8 lookup 5").unwrap();
        assert_eq!(r.from.unwrap().to_string(), "10.0.0.0/8");
        assert!(!r.v6);
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("", "empty"),
            ("from 10.0.0.1 lookup", "`lookup` needs a value"),
            ("form 10.0.0.1 lookup 5", "unknown word `form`"),
            ("from 10.0.0.1 to 2001:db8::1", "different families"),
            ("-6 from 10.0.0.1 lookup 5", "does not match"),
            ("lookup 5 blackhole", "second action"),
            ("fwmark x lookup 5", "fwmark `x`"),
            ("lookup 0", "table 0"),
            ("dport 9-1 lookup 5", "dport `9-1`"),
            ("ipproto foo lookup 5", "ipproto `foo`"),
            (
                "iif averyveryverylongname lookup 5",
                "averyveryverylongname",
            ),
            ("lookup main suppress_prefixlength 33", "0..=32"),
            ("from 10.0.0.300 lookup 5", "10.0.0.300"),
            ("tos 256 lookup 5", "0..=255"),
            ("uidrange 100 lookup 5", "LOW-HIGH"),
        ] {
            let (msg, fix) = parse_ip_rule(bad).unwrap_err();
            assert!(msg.contains(says), "{bad}: {msg}");
            assert!(!fix.is_empty());
        }
    }
}
