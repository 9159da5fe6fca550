//! `kind = "ping"`: ICMP / ICMPv6 echo over raw sockets.
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// ICMP echo from a node. Metrics: `sent`, `received`, `lost`, `rtt_avg_ms` (only when
/// something came back), `errors` (ICMP errors about our echoes, e.g. unreachable).
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
        check::unicast("to", self.to)?;
        check::range("count", self.count, 1, 100_000)?;
        check::range("interval_ms", self.interval_ms, 0, 60_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 60_000)?;
        check::range("size", self.size, 0, 1400)
    }
}
