//! `kind = "tcp"`: TCP connections that each send a number of bytes to a sink, which
//! answers with the byte count it read (so "completed" means delivered end to end).
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// TCP transfers. Metrics: `connected`, `failed` (did not connect: refused, timed out or
/// other), `refused`, `timed_out`, `reset` (connection reset during the transfer),
/// `completed` (the sink confirmed every byte), `bytes_confirmed`, and over the connections
/// that connected (absent when none did) `connect_ms_p50`, `connect_ms_p99`, `connect_ms_max`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpParams {
    /// Observation prefix (default "tcp").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that connects.
    pub from: String,
    /// Server address (IPv4 or IPv6), as the client sees it.
    pub to: IpAddr,
    /// Source address the sender binds to; it must be configured on `from` (default: the
    /// kernel's route source toward `to`).
    #[serde(default)]
    pub src: Option<IpAddr>,
    /// Server port (default 8080).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Node where the generator starts the sink (default: none; expects `faultlab serve tcp-sink`).
    #[serde(default)]
    pub server: Option<String>,
    /// Number of connections, one after the other (default 10).
    #[serde(default = "d_connections")]
    pub connections: u32,
    /// Bytes sent per connection (default 65536).
    #[serde(default = "d_bytes")]
    pub bytes: u64,
    /// Connect timeout in ms (default 3000).
    #[serde(default = "d_connect")]
    pub connect_timeout_ms: u64,
    /// Timeout of each read/write in ms (default 5000).
    #[serde(default = "d_io")]
    pub io_timeout_ms: u64,
    /// Keep each connection open (ESTABLISHED, idle) this long after it connects and
    /// before the transfer, ms (default 0): a long-lived flow beside other steps.
    #[serde(default)]
    pub hold_ms: u64,
}
fn d_port() -> u16 {
    8080
}
fn d_connections() -> u32 {
    10
}
fn d_bytes() -> u64 {
    65536
}
fn d_connect() -> u64 {
    3000
}
fn d_io() -> u64 {
    5000
}

impl TcpParams {
    pub fn validate(&self) -> Result<(), String> {
        check::flow(
            &self.from,
            self.server.as_deref().map(|s| ("server", s)),
            self.to,
            self.port,
        )?;
        if let Some(src) = self.src {
            check::same_family("src", src, "to", self.to)?;
            check::unicast("src", src)?;
        }
        check::range("connections", self.connections, 1, 100_000)?;
        check::range("bytes", self.bytes, 0, 1 << 34)?;
        check::range("connect_timeout_ms", self.connect_timeout_ms, 1, 120_000)?;
        check::range("io_timeout_ms", self.io_timeout_ms, 1, 600_000)?;
        check::range("hold_ms", self.hold_ms, 0, 600_000)
    }
}
