//! The one-line forms users write in scenario files, modelled on `ip` syntax:
//! link endpoints (`node:dev 192.0.2.1/24 mac=02:00:00:00:00:01`), routes
//! (`default via 192.0.2.254`), neighbours (`192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0`,
//! `10.0.0.2 lladdr @b:eth0 dev eth0`).

use crate::model::{Nexthop, RouteKind, RoutePlan};
use ipnet::IpNet;
use std::net::IpAddr;

/// `node:dev [ADDR/LEN ...] [mac=MAC]`
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub node: String,
    pub dev: String,
    pub addresses: Vec<IpNet>,
    /// From `mac=`, lowercase.
    pub mac: Option<String>,
}

fn endpoint_fix() -> String {
    "write `node:device [address/len ...] [mac=MAC]`, e.g. `a:eth0 192.0.2.1/24 mac=02:00:00:00:00:01`"
        .to_string()
}

pub fn parse_endpoint(s: &str) -> Result<EndpointSpec, (String, String)> {
    let mut words = s.split_whitespace();
    let head = words
        .next()
        .ok_or_else(|| ("empty link endpoint".to_string(), endpoint_fix()))?;
    let (node, dev) = head.split_once(':').ok_or_else(|| {
        (
            format!("`{head}` has no `node:device` form"),
            format!("write `NODE:{head}` with the node that owns the device"),
        )
    })?;
    check_ifname(dev)?;
    if node.is_empty() {
        return Err((
            format!("`{head}` names no node"),
            "write `node:device`".into(),
        ));
    }
    let mut addresses = Vec::new();
    let mut mac = None;
    for w in words {
        if let Some(m) = w.strip_prefix("mac=") {
            if mac.is_some() {
                return Err((
                    format!("`{s}` gives `mac=` twice"),
                    "give a link end one `mac=`".into(),
                ));
            }
            mac = Some(parse_device_mac(m)?);
        } else if is_mac(w) || w == "mac" || w.starts_with("mac:") {
            return Err((
                format!("`{w}` in `{s}` is not an address with a prefix length"),
                "write a MAC as `mac=aa:bb:cc:dd:ee:ff` (one word, no spaces)".into(),
            ));
        } else {
            addresses.push(parse_prefix(w)?);
        }
    }
    Ok(EndpointSpec {
        node: node.to_string(),
        dev: dev.to_string(),
        addresses,
        mac,
    })
}

/// Six two-digit hex bytes separated by `:`.
fn is_mac(s: &str) -> bool {
    s.split(':').count() == 6
        && s.split(':')
            .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
}

/// A MAC address a device can have (`aa:bb:cc:dd:ee:ff`: unicast, not all zero),
/// lowercased. The kernel refuses the others (EADDRNOTAVAIL).
pub fn parse_device_mac(s: &str) -> Result<String, (String, String)> {
    if !is_mac(s) {
        return Err((
            format!("`{s}` is not a MAC address"),
            "write six two-digit hex bytes, e.g. 02:00:00:00:00:01".into(),
        ));
    }
    let first = u8::from_str_radix(&s[..2], 16).unwrap();
    if first & 1 == 1 {
        return Err((
            format!("`{s}` is a multicast MAC address (the first byte is odd)"),
            "a device needs a unicast MAC: make the first byte even, e.g. 02:... (locally administered)"
                .into(),
        ));
    }
    if s.split(':').all(|b| b == "00") {
        return Err((
            "00:00:00:00:00:00 is not a usable MAC address".into(),
            "use a locally administered one such as 02:00:00:00:00:01".into(),
        ));
    }
    Ok(s.to_lowercase())
}

/// `node:dev` after `@` in `lladdr @node:dev` or a macvlan's `sources`.
pub fn parse_device_ref(s: &str) -> Result<(String, String), (String, String)> {
    let fix = || "write `@NODE:DEVICE`, e.g. `@b:eth0`, for the MAC of node b's eth0".to_string();
    let Some(rest) = s.strip_prefix('@') else {
        return Err((format!("`{s}` is not a `@node:device` reference"), fix()));
    };
    match rest.split_once(':') {
        Some((node, dev)) if !node.is_empty() && check_ifname(dev).is_ok() => {
            Ok((node.to_string(), dev.to_string()))
        }
        _ => Err((format!("`{s}` is not a `@node:device` reference"), fix())),
    }
}

/// Linux interface names: 1..=15 bytes, no `/`, `:` or whitespace.
pub fn check_ifname(dev: &str) -> Result<(), (String, String)> {
    if dev.is_empty()
        || dev.len() > 15
        || dev.contains(['/', ':'])
        || dev.contains(char::is_whitespace)
    {
        return Err((
            format!("`{dev}` is not a valid interface name"),
            "use 1 to 15 characters without `/`, `:` or spaces (IFNAMSIZ is 16)".into(),
        ));
    }
    Ok(())
}

pub fn parse_prefix(s: &str) -> Result<IpNet, (String, String)> {
    s.parse::<IpNet>().map_err(|_| {
        (
            format!("`{s}` is not an address with a prefix length"),
            "write it as ADDRESS/LEN, e.g. 192.0.2.1/24 or 2001:db8::1/64".into(),
        )
    })
}

pub fn parse_addr(s: &str) -> Result<IpAddr, (String, String)> {
    s.parse::<IpAddr>().map_err(|_| {
        (
            format!("`{s}` is not an IPv4 or IPv6 address"),
            "write a plain address such as 192.0.2.1 or 2001:db8::1".into(),
        )
    })
}

fn route_fix() -> String {
    "write e.g. `default via 192.0.2.254`, `10.0.0.0/8 dev eth0`, `blackhole 10.9.0.0/16`, \
     `198.51.100.0/24 nexthop via 10.0.1.2 nexthop via 10.0.2.2`, or any of them with `table 10`"
        .into()
}

/// Routes in `ip route` syntax (the subset a lab needs).
pub fn parse_route(s: &str) -> Result<RoutePlan, (String, String)> {
    let mut words: Vec<&str> = s.split_whitespace().collect();
    let table = match words.iter().position(|w| *w == "table") {
        Some(at) => {
            let v = words
                .get(at + 1)
                .copied()
                .ok_or_else(|| (format!("`{s}`: `table` needs a value"), route_fix()))?;
            // 0 is no table; 253..=255 are the kernel's default, main and local.
            let t = v
                .parse::<u32>()
                .ok()
                .filter(|t| *t != 0 && !(253..=255).contains(t))
                .ok_or_else(|| {
                    (
                        format!("`{s}`: table `{v}` is not a table number (1..=252 or above 255; the main table is the default)"),
                        route_fix(),
                    )
                })?;
            words.drain(at..at + 2);
            Some(t)
        }
        None => None,
    };
    let mut route = parse_route_words(s, &words)?;
    route.table = table;
    Ok(route)
}

fn parse_route_words(s: &str, words: &[&str]) -> Result<RoutePlan, (String, String)> {
    let Some(&first) = words.first() else {
        return Err(("empty route".into(), route_fix()));
    };
    let special = match first {
        "blackhole" => Some(RouteKind::Blackhole),
        "unreachable" => Some(RouteKind::Unreachable),
        "prohibit" => Some(RouteKind::Prohibit),
        _ => None,
    };
    if let Some(kind) = special {
        if words.len() != 2 {
            return Err((
                format!("`{s}`: {first} takes exactly one prefix"),
                route_fix(),
            ));
        }
        return Ok(RoutePlan {
            dst: parse_dst(words[1], None)?,
            kind,
            table: None,
        });
    }
    let mut via = None;
    let mut dev = None;
    let mut onlink = false;
    let mut nexthops: Vec<Nexthop> = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        let arg = words.get(i + 1).copied();
        let need =
            |name: &str| arg.ok_or_else(|| (format!("`{s}`: `{name}` needs a value"), route_fix()));
        match w {
            "via" => {
                let a = parse_addr(need("via")?)?;
                match nexthops.last_mut() {
                    Some(nh) => nh.via = Some(a),
                    None => via = Some(a),
                }
                i += 2;
            }
            "dev" => {
                let d = need("dev")?;
                check_ifname(d)?;
                match nexthops.last_mut() {
                    Some(nh) => nh.dev = Some(d.to_string()),
                    None => dev = Some(d.to_string()),
                }
                i += 2;
            }
            "weight" => {
                let nh = nexthops.last_mut().ok_or_else(|| {
                    (
                        format!("`{s}`: `weight` only follows `nexthop`"),
                        route_fix(),
                    )
                })?;
                let v = need("weight")?;
                nh.weight =
                    v.parse::<u8>().ok().filter(|w| *w >= 1).ok_or_else(|| {
                        (format!("`{s}`: weight `{v}` is not 1..=255"), route_fix())
                    })?;
                i += 2;
            }
            "nexthop" => {
                nexthops.push(Nexthop {
                    via: None,
                    dev: None,
                    weight: 1,
                });
                i += 1;
            }
            "onlink" => {
                onlink = true;
                i += 1;
            }
            other => {
                return Err((format!("`{s}`: unknown word `{other}`"), route_fix()));
            }
        }
    }
    let family_hint = via.or_else(|| nexthops.iter().find_map(|n| n.via));
    let dst = parse_dst(first, family_hint)?;
    if !nexthops.is_empty() {
        if via.is_some() || dev.is_some() {
            return Err((
                format!("`{s}`: put `via`/`dev` after each `nexthop`, not before"),
                route_fix(),
            ));
        }
        if let Some(nh) = nexthops.iter().find(|n| n.via.is_none() && n.dev.is_none()) {
            let _ = nh;
            return Err((
                format!("`{s}`: every `nexthop` needs `via` or `dev`"),
                route_fix(),
            ));
        }
        return Ok(RoutePlan {
            dst,
            kind: RouteKind::Multipath { nexthops },
            table: None,
        });
    }
    if via.is_none() && dev.is_none() {
        return Err((format!("`{s}`: a route needs `via` or `dev`"), route_fix()));
    }
    Ok(RoutePlan {
        dst,
        kind: RouteKind::Unicast { via, dev, onlink },
        table: None,
    })
}

fn parse_dst(s: &str, family_hint: Option<IpAddr>) -> Result<IpNet, (String, String)> {
    match s {
        "default" => Ok(match family_hint {
            Some(IpAddr::V6(_)) => "::/0".parse().unwrap(),
            _ => "0.0.0.0/0".parse().unwrap(),
        }),
        "default6" => Ok("::/0".parse().unwrap()),
        _ => {
            if let Ok(net) = s.parse::<IpNet>() {
                return Ok(net.trunc());
            }
            parse_addr(s)
                .map(IpNet::from)
                .map_err(|_| (format!("`{s}` is not a destination prefix"), route_fix()))
        }
    }
}

/// The link-layer address of a neighbour entry as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lladdr {
    /// `aa:bb:cc:dd:ee:ff`, lowercase.
    Mac(String),
    /// `@node:dev`: the MAC that device of the lab has (resolved by the loader).
    Device { node: String, dev: String },
}

fn neighbour_fix() -> String {
    "write `IP lladdr aa:bb:cc:dd:ee:ff dev DEVICE` or `IP lladdr @NODE:DEVICE dev DEVICE`"
        .to_string()
}

/// `IP lladdr MAC dev DEV`, `IP lladdr @NODE:DEV dev DEV`
pub fn parse_neighbour_spec(s: &str) -> Result<(IpAddr, Lladdr, String), (String, String)> {
    let fix = neighbour_fix;
    let w: Vec<&str> = s.split_whitespace().collect();
    if w.len() != 5 {
        return Err((format!("`{s}` is not a neighbour entry"), fix()));
    }
    let ip = parse_addr(w[0])?;
    let (mut mac, mut dev) = (None, None);
    for pair in w[1..].chunks(2) {
        match pair[0] {
            "lladdr" => mac = Some(pair[1]),
            "dev" => dev = Some(pair[1]),
            other => return Err((format!("`{s}`: unknown word `{other}`"), fix())),
        }
    }
    let (Some(mac), Some(dev)) = (mac, dev) else {
        return Err((format!("`{s}` needs both `lladdr` and `dev`"), fix()));
    };
    check_ifname(dev)?;
    let lladdr = if mac.starts_with('@') {
        let (node, dev) = parse_device_ref(mac)?;
        Lladdr::Device { node, dev }
    } else if is_mac(mac) {
        Lladdr::Mac(mac.to_lowercase())
    } else {
        return Err((format!("`{mac}` is not a MAC address"), fix()));
    };
    Ok((ip, lladdr, dev.to_string()))
}

/// `IP lladdr MAC dev DEV` with a literal MAC (no `@node:dev`).
pub fn parse_neighbour(s: &str) -> Result<(IpAddr, String, String), (String, String)> {
    match parse_neighbour_spec(s)? {
        (ip, Lladdr::Mac(mac), dev) => Ok((ip, mac, dev)),
        (_, Lladdr::Device { .. }, _) => Err((
            format!("`{s}`: `@node:device` is only resolved in a node's `neighbours`"),
            "write the MAC address itself".into(),
        )),
    }
}

/// A command line split into words as a shell would (quotes and backslashes work; no
/// shell runs it, so no pipes, globs or variables).
pub fn parse_command(s: &str) -> Result<Vec<String>, (String, String)> {
    let words = shlex::split(s).ok_or_else(|| {
        (
            format!("`{s}` has an unclosed quote or a trailing backslash"),
            "close the quote; for pipes or redirections write `sh -c '...'`".to_string(),
        )
    })?;
    if words.is_empty() {
        return Err((
            "empty command".into(),
            "write a command line, e.g. `tc qdisc add dev eth0 root tbf rate 1mbit burst 4k latency 20ms`".into(),
        ));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_with_addresses() {
        let e = parse_endpoint("a:eth0 192.0.2.1/24 2001:db8::1/64").unwrap();
        assert_eq!(e.node, "a");
        assert_eq!(e.dev, "eth0");
        assert_eq!(e.addresses.len(), 2);
        assert!(parse_endpoint("eth0").is_err());
        assert!(parse_endpoint("a:averyveryverylongname").is_err());
        assert!(parse_endpoint("a:eth0 192.0.2.300/24").is_err());
    }

    #[test]
    fn routes() {
        let r = parse_route("default via 192.0.2.254").unwrap();
        assert_eq!(r.dst.to_string(), "0.0.0.0/0");
        let r = parse_route("default via 2001:db8::fe").unwrap();
        assert_eq!(r.dst.to_string(), "::/0");
        let r = parse_route("198.51.100.0/24 nexthop via 10.0.1.2 weight 2 nexthop via 10.0.2.2")
            .unwrap();
        match r.kind {
            RouteKind::Multipath { nexthops } => {
                assert_eq!(nexthops.len(), 2);
                assert_eq!(nexthops[0].weight, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_route("blackhole 10.9.0.0/16").unwrap().kind,
            RouteKind::Blackhole
        );
        let r = parse_route("default via 169.254.1.1 dev eth0 onlink").unwrap();
        assert!(matches!(r.kind, RouteKind::Unicast { onlink: true, .. }));
        assert_eq!(r.table, None);
        let r = parse_route("default via 10.0.0.1 table 10").unwrap();
        assert_eq!(r.table, Some(10));
        assert!(matches!(r.kind, RouteKind::Unicast { via: Some(_), .. }));
        let r = parse_route("blackhole 10.9.0.0/16 table 100").unwrap();
        assert_eq!((r.kind, r.table), (RouteKind::Blackhole, Some(100)));
        for bad in [
            "default via 10.0.0.1 table",
            "default via 10.0.0.1 table 254",
            "default via 10.0.0.1 table x",
        ] {
            let (msg, _) = parse_route(bad).unwrap_err();
            assert!(msg.contains("table"), "{bad}: {msg}");
        }
        assert!(parse_route("10.0.0.0/8").is_err());
        assert!(parse_route("10.0.0.0/8 vai 1.2.3.4").is_err());
        assert!(parse_route("10.0.0.0/8 nexthop weight 3").is_err());
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            parse_command("sh -c 'tc -s qdisc show | grep -c drop'").unwrap(),
            ["sh", "-c", "tc -s qdisc show | grep -c drop"]
        );
        assert_eq!(
            parse_command("tc  qdisc\tshow").unwrap(),
            ["tc", "qdisc", "show"]
        );
        assert!(parse_command("sh -c 'oops")
            .unwrap_err()
            .0
            .contains("unclosed"));
        assert!(parse_command("   ").unwrap_err().0.contains("empty"));
    }

    #[test]
    fn neighbours() {
        let (ip, mac, dev) =
            parse_neighbour("192.0.2.9 lladdr 02:00:00:00:00:09 dev eth0").unwrap();
        assert_eq!(ip.to_string(), "192.0.2.9");
        assert_eq!(mac, "02:00:00:00:00:09");
        assert_eq!(dev, "eth0");
        assert!(parse_neighbour("192.0.2.9 lladdr 02:00:00:00:00 dev eth0").is_err());
        assert!(parse_neighbour("192.0.2.9 lladdr @b:eth0 dev eth0").is_err());
        let (_, l, _) = parse_neighbour_spec("10.0.0.2 lladdr @b:eth0 dev eth0").unwrap();
        assert_eq!(
            l,
            Lladdr::Device {
                node: "b".into(),
                dev: "eth0".into()
            }
        );
        let (_, l, _) = parse_neighbour_spec("10.0.0.2 lladdr 02:AA:00:00:00:01 dev eth0").unwrap();
        assert_eq!(l, Lladdr::Mac("02:aa:00:00:00:01".into()));
        for bad in ["@b", "@:eth0", "@b:", "@b:a/b"] {
            let e = parse_neighbour_spec(&format!("10.0.0.2 lladdr {bad} dev eth0")).unwrap_err();
            assert!(
                e.0.contains("not a `@node:device` reference"),
                "{bad}: {e:?}"
            );
            assert!(e.1.contains("@NODE:DEVICE"), "{e:?}");
        }
    }

    #[test]
    fn endpoint_macs() {
        let e = parse_endpoint("a:eth0 192.0.2.1/24 mac=02:00:00:00:00:0A").unwrap();
        assert_eq!(e.mac.as_deref(), Some("02:00:00:00:00:0a"));
        assert_eq!(e.addresses.len(), 1);
        let e = parse_endpoint("a:eth0 mac=02:00:00:00:00:01 10.0.0.1/24").unwrap();
        assert_eq!(e.addresses.len(), 1);
        assert_eq!(parse_endpoint("a:eth0").unwrap().mac, None);
        let (msg, fix) = parse_endpoint("a:eth0 mac=02:00:00:00:00").unwrap_err();
        assert!(msg.contains("not a MAC address"), "{msg}");
        assert!(fix.contains("02:00:00:00:00:01"), "{fix}");
        let (msg, fix) = parse_endpoint("a:eth0 mac=01:00:5e:00:00:01").unwrap_err();
        assert!(msg.contains("multicast"), "{msg}");
        assert!(fix.contains("even"), "{fix}");
        assert!(parse_endpoint("a:eth0 mac=00:00:00:00:00:00").is_err());
        let (msg, _) =
            parse_endpoint("a:eth0 mac=02:00:00:00:00:01 mac=02:00:00:00:00:02").unwrap_err();
        assert!(msg.contains("twice"), "{msg}");
        let (_, fix) = parse_endpoint("a:eth0 02:00:00:00:00:01").unwrap_err();
        assert!(fix.contains("mac=aa:bb:cc:dd:ee:ff"), "{fix}");
        let (_, fix) = parse_endpoint("a:eth0 mac 02:00:00:00:00:01").unwrap_err();
        assert!(fix.contains("mac="), "{fix}");
    }
}
