//! `kind = "ping"`: ICMP / ICMPv6 echo over raw sockets.
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// ICMP echo from a node. Metrics: `sent` (requests the kernel accepted), `send_errors`
/// (requests it refused), `received` (requests answered at least once), `lost`
/// (`sent - received`), `replies` (echo replies, several per request when several hosts
/// answer a broadcast), `responders` (distinct addresses that replied), `rtt_avg_ms` (only
/// when something came back), `errors` (ICMP errors about our echoes, e.g. unreachable).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PingParams {
    /// Observation prefix (default "ping").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that sends the echo requests.
    pub from: String,
    /// Destination address (IPv4 or IPv6).
    pub to: IpAddr,
    /// Number of echo requests (default 10).
    #[serde(default = "d_count")]
    pub count: u32,
    /// Gap between requests in milliseconds (default 100).
    #[serde(default = "d_interval")]
    pub interval_ms: u64,
    /// How long a reply may take before the request counts as lost, ms (default 1000).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Echo payload bytes (default 56).
    #[serde(default = "d_size")]
    pub size: usize,
    /// A fresh ICMP identifier per request (base + sequence number), so every echo is its
    /// own conntrack entry (default false: one identifier for the whole run).
    #[serde(default)]
    pub fresh_id: bool,
    /// Allow a broadcast `to` (SO_BROADCAST): every host that answers is counted in
    /// `responders`, and the run waits the full `timeout_ms` after the last request for
    /// late responders (default false; a broadcast `to` is then refused).
    #[serde(default)]
    pub broadcast: bool,
}
fn d_count() -> u32 {
    10
}
fn d_interval() -> u64 {
    100
}
fn d_timeout() -> u64 {
    1000
}
fn d_size() -> usize {
    56
}

impl PingParams {
    pub fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        match self.to {
            IpAddr::V6(_) if self.broadcast => {
                return Err(format!(
                    "broadcast = true with to = {}: IPv6 has no broadcast; set broadcast = false or use an IPv4 broadcast address",
                    self.to
                ))
            }
            IpAddr::V4(v4) if self.broadcast => {
                if v4.is_unspecified() || v4.is_multicast() {
                    return Err(format!(
                        "to = {v4} is neither a unicast nor a broadcast address: use a subnet's broadcast address (e.g. 10.0.0.255) or 255.255.255.255"
                    ));
                }
            }
            IpAddr::V4(v4) if v4.is_broadcast() => {
                return Err(format!(
                    "to = {v4} is a broadcast address: set broadcast = true to ping every host on the link (answers counted in `responders`), or use a node's address"
                ))
            }
            _ => check::unicast("to", self.to)?,
        }
        check::range("count", self.count, 1, 100_000)?;
        if self.fresh_id && self.count > 65_536 {
            return Err(format!(
                "count = {} with fresh_id = true needs more than the 65536 ICMP identifiers: lower count to 65536 or set fresh_id = false",
                self.count
            ));
        }
        check::range("interval_ms", self.interval_ms, 0, 60_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 60_000)?;
        check::range("size", self.size, 0, 1400)
    }
}
