//! Traffic generators: the `[[traffic]]` steps of a scenario, each measured by itself.
//!
//! Every generator runs its sender inside the `from`/`client` node's namespace and, when it
//! needs one, starts its own receiver or server in another node first (bound before the
//! first packet leaves). Metrics are only ever filled from measurements; a metric that
//! could not be measured is absent rather than zero.

mod capture;
mod churn;
mod common;
mod connects;
mod dns;
mod dnswire;
mod multiflow;
mod packet;
mod ping;
mod race;
mod servers;
mod tcp;
mod tcp_inject;
mod udp;

pub use crate::model::steps::TrafficSpec;
pub use packet::l4_checksum;
pub use servers::serve_main;

use std::collections::BTreeMap;
use std::path::Path;

/// What a generator needs from the runner.
#[derive(Clone, Copy)]
pub struct TrafficContext<'a> {
    /// node name -> netns name
    pub netns: &'a BTreeMap<String, String>,
    /// dir for files (pcaps, logs)
    pub artifacts: &'a Path,
    /// stop early when true (Ctrl-C)
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
    /// the step's `until` holds: start no new iteration, connection or packet (what
    /// was sent is still waited for); always false for a step without `until`
    pub enough: &'a (dyn Fn() -> bool + Sync),
    /// timing multiplier (1.0 host; >1 under emulation)
    pub slow: f64,
}

impl TrafficContext<'_> {
    /// True when the step should start no new work: interrupted, or its `until` holds.
    pub fn stop_starting(&self) -> bool {
        (self.interrupted)() || (self.enough)()
    }

    /// A duration from a scenario's milliseconds, stretched under emulation.
    pub fn slow_ms(&self, ms: u64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(ms as f64 / 1000.0 * self.slow.max(0.01))
    }
}

/// An `enough` for a step without `until`.
pub fn never() -> bool {
    false
}

/// Measured values, names WITHOUT the prefix; the runner prefixes "<name>.".
pub type Metrics = BTreeMap<String, f64>;

/// Runs one traffic step and returns what it measured.
pub fn run(spec: &TrafficSpec, ctx: &TrafficContext) -> anyhow::Result<Metrics> {
    spec.validate().map_err(anyhow::Error::msg)?;
    match spec {
        TrafficSpec::Ping(p) => ping::run(p, ctx),
        TrafficSpec::Udp(p) => udp::run(p, ctx),
        TrafficSpec::Tcp(p) => tcp::run(p, ctx),
        TrafficSpec::Race(p) => race::run(p, ctx),
        TrafficSpec::Dns(p) => dns::run(p, ctx),
        TrafficSpec::TcpInject(p) => tcp_inject::run(p, ctx),
        TrafficSpec::Churn(p) => churn::run(p, ctx),
        TrafficSpec::Multiflow(p) => multiflow::run(p, ctx),
    }
}

#[cfg(test)]
mod tests;
