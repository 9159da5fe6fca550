//! `kind = "dns"`: a resolver that behaves like glibc's: A and AAAA back to back from one
//! UDP socket (or the `single-request` / `single-request-reopen` variants), timeout, retry.
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// glibc-like lookups. Metrics: `lookups`, `ok` (both answers), `retried` (ok or not, needed
/// more than one attempt), `failed`, `latency_p50_ms` / `latency_p99_ms` / `latency_max_ms`
/// (over ok lookups), `queries_sent`, `replies_received`, `server_queries` (answered by the
/// generator's own responder).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsParams {
    /// Observation prefix (default "dns").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that resolves.
    pub from: String,
    /// Address of the DNS server (IPv4 or IPv6), as the client sees it.
    pub to: IpAddr,
    /// Server port (default 53).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Node where the generator starts its responder (needed unless start_server = false).
    #[serde(default)]
    pub server: Option<String>,
    /// Start the responder thread in `server` (default true); false expects a running
    /// `faultlab serve dns`.
    #[serde(default = "d_true")]
    pub start_server: bool,
    /// Name queried (default "svc.lab.test").
    #[serde(default = "d_qname")]
    pub qname: String,
    /// Number of lookups (default 20).
    #[serde(default = "d_lookups")]
    pub lookups: u32,
    /// Gap between lookup starts in milliseconds (default 50).
    #[serde(default = "d_interval")]
    pub interval_ms: u64,
    /// Per-attempt timeout like glibc's `options timeout:` in ms (default 5000).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Attempts per lookup like glibc's `options attempts:` (default 2).
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    /// glibc `single-request`: send A, wait for its answer, then AAAA (default false).
    #[serde(default)]
    pub single_request: bool,
    /// glibc `single-request-reopen`: AAAA from a new socket (new source port) (default false).
    #[serde(default)]
    pub single_request_reopen: bool,
}
fn d_port() -> u16 {
    53
}
fn d_true() -> bool {
    true
}
fn d_qname() -> String {
    "svc.lab.test".into()
}
fn d_lookups() -> u32 {
    20
}
fn d_interval() -> u64 {
    50
}
fn d_timeout() -> u64 {
    5000
}
fn d_attempts() -> u32 {
    2
}

impl DnsParams {
    pub fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        check::unicast("to", self.to)?;
        match (&self.server, self.start_server) {
            (Some(s), _) => check::node("server", s)?,
            (None, true) => {
                return Err("server is not set: name the node for the responder, or set start_server = false if `faultlab serve dns` runs there".into())
            }
            (None, false) => {}
        }
        check::range("port", self.port, 1, 65535)?;
        check::range("lookups", self.lookups, 1, 100_000)?;
        check::range("interval_ms", self.interval_ms, 0, 60_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 60_000)?;
        check::range("attempts", self.attempts, 1, 5)?;
        if self.single_request && self.single_request_reopen {
            return Err(
                "single_request and single_request_reopen are both true: choose one".into(),
            );
        }
        if self.qname.is_empty() || self.qname.split('.').any(|l| l.len() > 63) {
            return Err(format!(
                "qname = {:?} is not a valid name: use labels of 1-63 characters",
                self.qname
            ));
        }
        Ok(())
    }
}
