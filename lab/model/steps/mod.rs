//! The steps of a cell's timeline as typed parameters: what each `[[traffic]]` table
//! of a scenario means once loaded, and the checks that make a file that loads a
//! file that can run. The generators that run them are in `crate::traffic`.

mod churn;
mod dns;
mod multiflow;
mod ping;
mod race;
mod tcp;
mod tcp_inject;
mod timeline;
mod udp;

pub use churn::{ChurnParams, CloseMode};
pub use dns::DnsParams;
pub use multiflow::MultiflowParams;
pub use ping::PingParams;
pub use race::{RaceMode, RaceParams, RaceProto};
pub use tcp::TcpParams;
pub use tcp_inject::{Injection, TcpInjectParams};
pub use timeline::*;
pub use udp::UdpParams;

/// One traffic step as written in a scenario file: `[[traffic]] kind = "ping" ...`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TrafficSpec {
    /// ICMP/ICMPv6 echo over raw sockets.
    Ping(PingParams),
    /// UDP datagrams, optionally counted (and echoed) by a receiver node.
    Udp(UdpParams),
    /// TCP connections that each transfer a number of bytes to a sink.
    Tcp(TcpParams),
    /// Same-5-tuple race: K packets with one tuple released together on K CPUs.
    Race(RaceParams),
    /// glibc-like resolver: A and AAAA back to back from one socket.
    Dns(DnsParams),
    /// Segments injected into a live TCP connection at chosen seq/ack offsets.
    TcpInject(TcpInjectParams),
    /// Many short TCP connections (conntrack table pressure).
    Churn(ChurnParams),
    /// UDP over many flows (source ports / source addresses), loss per flow.
    Multiflow(MultiflowParams),
}

impl TrafficSpec {
    /// The kinds an `until` can end early: each starts its work in a loop.
    pub const STOPS_EARLY: [&'static str; 5] = ["race", "churn", "tcp", "udp", "ping"];

    /// The kind as written in scenario files.
    pub fn kind(&self) -> &'static str {
        match self {
            TrafficSpec::Ping(_) => "ping",
            TrafficSpec::Udp(_) => "udp",
            TrafficSpec::Tcp(_) => "tcp",
            TrafficSpec::Race(_) => "race",
            TrafficSpec::Dns(_) => "dns",
            TrafficSpec::TcpInject(_) => "tcp-inject",
            TrafficSpec::Churn(_) => "churn",
            TrafficSpec::Multiflow(_) => "multiflow",
        }
    }

    /// Observation prefix: `name` if given, else the kind.
    pub fn name(&self) -> String {
        let n = match self {
            TrafficSpec::Ping(p) => &p.name,
            TrafficSpec::Udp(p) => &p.name,
            TrafficSpec::Tcp(p) => &p.name,
            TrafficSpec::Race(p) => &p.name,
            TrafficSpec::Dns(p) => &p.name,
            TrafficSpec::TcpInject(p) => &p.name,
            TrafficSpec::Churn(p) => &p.name,
            TrafficSpec::Multiflow(p) => &p.name,
        };
        n.clone().unwrap_or_else(|| self.kind().to_string())
    }

    /// Nodes this step references (for validation against the topology).
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = match self {
            TrafficSpec::Ping(p) => vec![p.from.clone()],
            TrafficSpec::Udp(p) => [Some(&p.from), p.receiver.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            TrafficSpec::Tcp(p) => [Some(&p.from), p.server.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            TrafficSpec::Race(p) => [Some(&p.from), p.receiver.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            TrafficSpec::Dns(p) => [Some(&p.from), p.server.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            TrafficSpec::TcpInject(p) => vec![p.client.clone(), p.server.clone()],
            TrafficSpec::Churn(p) => [Some(&p.from), p.server.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            TrafficSpec::Multiflow(p) => vec![p.from.clone(), p.receiver.clone()],
        };
        v.dedup();
        v
    }

    /// Rejects impossible values; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let r = match self {
            TrafficSpec::Ping(p) => p.validate(),
            TrafficSpec::Udp(p) => p.validate(),
            TrafficSpec::Tcp(p) => p.validate(),
            TrafficSpec::Race(p) => p.validate(),
            TrafficSpec::Dns(p) => p.validate(),
            TrafficSpec::TcpInject(p) => p.validate(),
            TrafficSpec::Churn(p) => p.validate(),
            TrafficSpec::Multiflow(p) => p.validate(),
        };
        r.map_err(|e| format!("traffic '{}' ({}): {e}", self.name(), self.kind()))
    }
}

/// Shared checks for `validate()` implementations.
pub mod check {
    /// `value` must lie in `lo..=hi`.
    /// The part every client/server generator shares: the sending node, the
    /// optional node that serves or receives (`peer_field` names it), a unicast
    /// destination and a port.
    pub fn flow(
        from: &str,
        peer: Option<(&str, &str)>,
        to: std::net::IpAddr,
        port: u16,
    ) -> Result<(), String> {
        node("from", from)?;
        if let Some((field, value)) = peer {
            node(field, value)?;
        }
        unicast("to", to)?;
        range("port", port, 1, 65535)
    }

    pub fn range<T: PartialOrd + std::fmt::Display>(
        field: &str,
        value: T,
        lo: T,
        hi: T,
    ) -> Result<(), String> {
        if value < lo || value > hi {
            return Err(format!(
                "{field} = {value} is out of range: set it between {lo} and {hi}"
            ));
        }
        Ok(())
    }

    /// A node name must be non-empty.
    pub fn node(field: &str, value: &str) -> Result<(), String> {
        if value.trim().is_empty() {
            return Err(format!("{field} is empty: set it to the name of a node"));
        }
        Ok(())
    }

    /// Two addresses must share a family.
    pub fn same_family(
        field: &str,
        a: std::net::IpAddr,
        other: &str,
        b: std::net::IpAddr,
    ) -> Result<(), String> {
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!("{field} = {a} and {other} = {b} are different IP families: use both IPv4 or both IPv6"));
        }
        Ok(())
    }

    /// A destination must be a unicast address (the lab never broadcasts or multicasts).
    pub fn unicast(field: &str, a: std::net::IpAddr) -> Result<(), String> {
        let bad = a.is_unspecified()
            || a.is_multicast()
            || matches!(a, std::net::IpAddr::V4(v4) if v4.is_broadcast());
        if bad {
            return Err(format!(
                "{field} = {a} is not a unicast address: use a node's address"
            ));
        }
        Ok(())
    }

    use crate::model::packet_info::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

    /// Parses TCP flag letters (`S A R F P`, any order) into the flags byte.
    pub fn parse_tcp_flags(s: &str) -> Result<u8, String> {
        let mut f = 0u8;
        for c in s.chars() {
            f |= match c.to_ascii_uppercase() {
                'S' => TCP_SYN,
                'A' => TCP_ACK,
                'R' => TCP_RST,
                'F' => TCP_FIN,
                'P' => TCP_PSH,
                other => return Err(format!("unknown TCP flag letter '{other}' (use S A R F P)")),
            };
        }
        Ok(f)
    }
}
