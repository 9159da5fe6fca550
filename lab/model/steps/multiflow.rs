//! `kind = "multiflow"`: UDP over many flows (SCENARIOS.md §6: which ECMP paths are bad).
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// Many UDP flows. Without `sports`/`dports`, flow f uses source port `sport_base + f`,
/// source address `sources[f % len]` and destination port `port`. With either list the
/// flows are every combination `sources × sports × dports` (in that order; an absent list
/// counts as one entry: the route source, `sport_base + f`, `port`). Metrics: `flows`,
/// `packets_sent`, `packets_received`, `flows_lossless` (all packets arrived), `flows_lossy`
/// (some but not all), `flows_dead` (none), `loss_fraction` (lost / sent), `dead_fraction`
/// (dead / flows), `send_errors` (sends the sender's own kernel refused; counted as sent
/// and lost).
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
    /// Destination port (default 9000); replaced by `dports` when that is given.
    #[serde(default = "d_port")]
    pub port: u16,
    /// Destination ports: every source (× source port) sends one flow to each, and the
    /// receiver listens on all of them (default: none, only `port`).
    #[serde(default)]
    pub dports: Vec<u16>,
    /// Source ports: every source sends one flow from each (default: none, flow f uses
    /// `sport_base + f`).
    #[serde(default)]
    pub sports: Vec<u16>,
    /// Node where a receiver counts packets per flow.
    pub receiver: String,
    /// Number of flows (default 64). With `sports`/`dports` the number follows from the
    /// lists; a `flows` given then must equal it.
    #[serde(default)]
    pub flows: Option<u32>,
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

/// Most destination ports one run listens on (one receiver thread each).
pub const MAX_DPORTS: usize = 256;

impl MultiflowParams {
    /// Flows are the product `sources × sports × dports` (true when either port list is given).
    pub fn is_product(&self) -> bool {
        !self.dports.is_empty() || !self.sports.is_empty()
    }

    /// The number of flows the step sends.
    pub fn flow_count(&self) -> u64 {
        if self.is_product() {
            let n = |l: usize| l.max(1) as u64;
            n(self.sources.len()) * n(self.sports.len()) * n(self.dports.len())
        } else {
            u64::from(self.flows.unwrap_or(64))
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        check::node("receiver", &self.receiver)?;
        check::unicast("to", self.to)?;
        for s in &self.sources {
            check::same_family("sources", *s, "to", self.to)?;
            check::unicast("sources", *s)?;
        }
        check::range("port", self.port, 1, 65535)?;
        for (field, list) in [("dports", &self.dports), ("sports", &self.sports)] {
            for (i, &p) in list.iter().enumerate() {
                check::range(&format!("{field}[{i}]"), p, 1, 65535)?;
                if list[..i].contains(&p) {
                    return Err(format!("{field} lists port {p} twice: list each port once"));
                }
            }
        }
        if self.dports.len() > MAX_DPORTS {
            return Err(format!(
                "dports has {} ports: list at most {MAX_DPORTS} (one receiver each)",
                self.dports.len()
            ));
        }
        let flows = self.flow_count();
        if self.is_product() {
            for (i, s) in self.sources.iter().enumerate() {
                if self.sources[..i].contains(s) {
                    return Err(format!(
                        "sources lists {s} twice: with sports/dports every source is its own set of flows, list each once"
                    ));
                }
            }
            let formula = format!(
                "sources ({}) × sports ({}) × dports ({}) = {flows} flows",
                self.sources.len().max(1),
                self.sports.len().max(1),
                self.dports.len().max(1)
            );
            if let Some(f) = self.flows.filter(|&f| u64::from(f) != flows) {
                return Err(format!(
                    "flows = {f} but {formula}: remove flows (it follows from the lists) or set it to {flows}"
                ));
            }
            if flows > 60_000 {
                return Err(format!("{formula}, more than 60000: shorten the lists"));
            }
        } else {
            check::range("flows", flows, 1, 60_000)?;
        }
        check::range("packets_per_flow", self.packets_per_flow, 1, 100_000)?;
        check::range("sport_base", self.sport_base, 1, 65535)?;
        let last = u64::from(self.sport_base) + flows - 1;
        if self.sports.is_empty() && last > 65535 {
            return Err(format!(
                "sport_base = {} with {flows} flows needs source ports up to {last}: lower sport_base or the number of flows",
                self.sport_base
            ));
        }
        check::range("size", self.size, 16, 65000)?;
        check::range("gap_us", self.gap_us, 0, 1_000_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 600_000)
    }
}
