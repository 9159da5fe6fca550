//! `kind = "churn"`: many short TCP connections (SCENARIOS.md §2, conntrack table full).
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// How the client closes each connection.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CloseMode {
    /// Orderly close (FIN); the closing side goes through TIME_WAIT.
    #[default]
    Fin,
    /// Abortive close (SO_LINGER 0 → RST).
    Rst,
}

/// Short connections. Metrics: `attempted`, `connected`, `failed` (all that did not connect:
/// `timed_out` + `refused` + other errors), `timed_out`, `refused`, `server_accepted`
/// (only when the generator runs the server), and over the connections that connected
/// (absent when none did) `connect_ms_p50`, `connect_ms_p99`, `connect_ms_max`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChurnParams {
    /// Observation prefix (default "churn").
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
    /// Node where the generator starts the server (default: none; something must listen).
    #[serde(default)]
    pub server: Option<String>,
    /// Number of connections (default 1000).
    #[serde(default = "d_connections")]
    pub connections: u32,
    /// Connection attempts per second; 0 = as fast as possible (default 0).
    #[serde(default)]
    pub rate: f64,
    /// "fin" (default) or "rst" (SO_LINGER 0).
    #[serde(default)]
    pub close: CloseMode,
    /// The server closes first (its side then holds TIME_WAIT) (default false).
    #[serde(default)]
    pub server_closes_first: bool,
    /// Connect timeout in ms (default 1000). A SYN dropped for a full table is retried by
    /// the kernel after 1 s, so shorter values count such drops as timeouts.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Connects in flight at once (default 1: one after the other). With more, the
    /// next connect starts beside those in flight once they are left waiting (twice
    /// the slowest successful connect so far): connects that succeed stay one after
    /// the other, and one that only times out (its SYN was dropped) does not hold up
    /// the next ones. With `rate`, each still starts no earlier than its schedule.
    #[serde(default = "d_in_flight")]
    pub in_flight: u32,
}
fn d_in_flight() -> u32 {
    1
}
fn d_port() -> u16 {
    8080
}
fn d_connections() -> u32 {
    1000
}
fn d_connect_timeout() -> u64 {
    1000
}

impl ChurnParams {
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
        check::range("connections", self.connections, 1, 1_000_000)?;
        if !(self.rate >= 0.0 && self.rate <= 1e6) {
            return Err(format!("rate = {} is out of range: set it between 0 (as fast as possible) and 1000000 per second", self.rate));
        }
        check::range("in_flight", self.in_flight, 1, 1024)?;
        check::range("connect_timeout_ms", self.connect_timeout_ms, 1, 120_000)
    }
}
