//! `kind = "udp"`: tagged UDP datagrams, counted at a receiver node and/or echoed back.
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// UDP datagrams from a node. Metrics: `sent`, `send_errors`, `received` (distinct
/// datagrams counted at `receiver`; only with a receiver), `replies` (distinct datagrams
/// echoed back to the sender, by the receiver with `echo` or by a `faultlab serve udp-echo`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UdpParams {
    /// Observation prefix (default "udp").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that sends.
    pub from: String,
    /// Destination address (IPv4 or IPv6).
    pub to: IpAddr,
    /// Source address the sender binds to; it must be configured on `from` (default: the
    /// kernel's route source toward `to`).
    #[serde(default)]
    pub src: Option<IpAddr>,
    /// Destination port (default 9000).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Number of datagrams (default 100).
    #[serde(default = "d_count")]
    pub count: u32,
    /// Payload bytes per datagram, at least 16 for the tag (default 64).
    #[serde(default = "d_size")]
    pub size: usize,
    /// Fixed source port (default: an ephemeral port).
    #[serde(default)]
    pub src_port: Option<u16>,
    /// Node where a receiver bound to `port` counts the datagrams (default: none).
    #[serde(default)]
    pub receiver: Option<String>,
    /// The receiver echoes each datagram back (default true).
    #[serde(default = "d_true")]
    pub echo: bool,
    /// Gap between datagrams in milliseconds (default 0: back to back).
    #[serde(default)]
    pub interval_ms: u64,
    /// How long to wait for stragglers after the last send, ms (default 1000).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
}
fn d_port() -> u16 {
    9000
}
fn d_count() -> u32 {
    100
}
fn d_size() -> usize {
    64
}
fn d_true() -> bool {
    true
}
fn d_timeout() -> u64 {
    1000
}

impl UdpParams {
    pub fn validate(&self) -> Result<(), String> {
        check::flow(
            &self.from,
            self.receiver.as_deref().map(|r| ("receiver", r)),
            self.to,
            self.port,
        )?;
        if let Some(src) = self.src {
            check::same_family("src", src, "to", self.to)?;
            check::unicast("src", src)?;
        }
        check::range("count", self.count, 1, 10_000_000)?;
        check::range("size", self.size, 16, 65000)?;
        check::range("interval_ms", self.interval_ms, 0, 60_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 600_000)
    }
}
