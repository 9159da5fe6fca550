//! `kind = "multiflow"`: UDP over many flows (SCENARIOS.md §6: which ECMP paths are bad).
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// Many UDP flows. Flow f uses source port `sport_base + f` and source address
/// `sources[f % len]`. Metrics: `flows`, `packets_sent`, `packets_received`,
/// `flows_lossless` (all packets arrived), `flows_lossy` (some but not all),
/// `flows_dead` (none), `loss_fraction` (lost / sent), `dead_fraction` (dead / flows),
/// `send_errors` (sends the sender's own kernel refused; counted as sent and lost).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiflowParams {
    /// Observation prefix (default "multiflow").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that sends.
    pub from: String,
    /// Destination address (IPv4 or IPv6).
    pub to: IpAddr,
    /// Destination port (default 9000).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Node where a receiver counts packets per flow.
    pub receiver: String,
    /// Number of flows (default 64).
    #[serde(default = "d_flows")]
    pub flows: u32,
    /// Packets per flow (default 10).
    #[serde(default = "d_ppf")]
    pub packets_per_flow: u32,
    /// Source port of flow 0 (default 20000).
    #[serde(default = "d_sport")]
    pub sport_base: u16,
    /// Source addresses to rotate through; each must be configured on `from` (default: the
    /// route's source address).
    #[serde(default)]
    pub sources: Vec<IpAddr>,
    /// Payload bytes, at least 16 (default 64).
    #[serde(default = "d_size")]
    pub size: usize,
    /// Gap between packets of the whole run in microseconds (default 100).
    #[serde(default = "d_gap")]
    pub gap_us: u64,
    /// How long the receiver waits for stragglers, ms (default 1000).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
}
fn d_port() -> u16 {
    9000
}
fn d_flows() -> u32 {
    64
}
fn d_ppf() -> u32 {
    10
}
fn d_sport() -> u16 {
    20000
}
fn d_size() -> usize {
    64
}
fn d_gap() -> u64 {
    100
}
fn d_timeout() -> u64 {
    1000
}

impl MultiflowParams {
    pub fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        check::node("receiver", &self.receiver)?;
        check::unicast("to", self.to)?;
        for s in &self.sources {
            check::same_family("sources", *s, "to", self.to)?;
            check::unicast("sources", *s)?;
        }
        check::range("port", self.port, 1, 65535)?;
        check::range("flows", self.flows, 1, 60_000)?;
        check::range("packets_per_flow", self.packets_per_flow, 1, 100_000)?;
        check::range("sport_base", self.sport_base, 1, 65535)?;
        let last = u32::from(self.sport_base) + self.flows - 1;
        if last > 65535 {
            return Err(format!(
                "sport_base = {} with flows = {} needs source ports up to {last}: lower sport_base or flows",
                self.sport_base, self.flows
            ));
        }
        check::range("size", self.size, 16, 65000)?;
        check::range("gap_us", self.gap_us, 0, 1_000_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 600_000)
    }
}
