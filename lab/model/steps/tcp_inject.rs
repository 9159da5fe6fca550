//! `kind = "tcp-inject"` (SCENARIOS.md §3): segments injected from the server node into a
//! live TCP connection, at seq/ack offsets relative to the server socket's live values.
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// One injected segment; seq/ack are offsets from the server's live snd_nxt / rcv_nxt.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// Added to the server's next sequence number (default 0).
    #[serde(default)]
    pub seq_offset: i64,
    /// Added to the server's next expected sequence number from the client (default 0).
    #[serde(default)]
    pub ack_offset: i64,
    /// Payload bytes (default 0).
    #[serde(default)]
    pub payload: usize,
    /// TCP flags as letters S A R F P (default "A").
    #[serde(default = "d_flags")]
    pub flags: String,
}
fn d_flags() -> String {
    "A".into()
}

/// Injection into a live connection. Metrics: `injected`, `reached_client` (injections
/// seen arriving in the client node), `rst_to_server` (injections after which a RST
/// arrived at the server node), `rst_seq_in_window` (injections whose RST carried
/// seq == the server's rcv_nxt, the only RST seq `tcp_validate_incoming` accepts),
/// `server_reset` / `client_reset` (1/0: that side's socket ended in CLOSE), and per
/// injection N: `injN.reached_client`, `injN.rst_to_server`, `injN.rst_seq_in_window`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpInjectParams {
    /// Observation prefix (default "tcp-inject").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that opens the connection.
    pub client: String,
    /// Node that runs the server and injects.
    pub server: String,
    /// Server address (IPv4 or IPv6), as the client sees it.
    pub to: IpAddr,
    /// Server port (default 8080).
    #[serde(default = "d_port")]
    pub port: u16,
    /// Segments to inject, in order.
    pub injections: Vec<Injection>,
    /// Wait after each injection before looking at captures and sockets, ms (default 300).
    #[serde(default = "d_settle")]
    pub settle_ms: u64,
    /// Connect timeout in ms (default 3000).
    #[serde(default = "d_connect")]
    pub connect_timeout_ms: u64,
}
fn d_port() -> u16 {
    8080
}
fn d_settle() -> u64 {
    300
}
fn d_connect() -> u64 {
    3000
}

impl TcpInjectParams {
    pub fn validate(&self) -> Result<(), String> {
        check::node("client", &self.client)?;
        check::node("server", &self.server)?;
        check::unicast("to", self.to)?;
        check::range("port", self.port, 1, 65535)?;
        check::range("settle_ms", self.settle_ms, 1, 60_000)?;
        check::range("connect_timeout_ms", self.connect_timeout_ms, 1, 120_000)?;
        if self.injections.is_empty() {
            return Err(
                "injections is empty: add at least one { seq_offset, ack_offset, payload, flags }"
                    .into(),
            );
        }
        check::range("injections (count)", self.injections.len(), 1, 1000)?;
        for (i, inj) in self.injections.iter().enumerate() {
            check::parse_tcp_flags(&inj.flags)
                .map_err(|e| format!("injections[{i}].flags: {e}"))?;
            check::range(&format!("injections[{i}].payload"), inj.payload, 0, 1400)?;
            let lim = 1i64 << 32;
            check::range(
                &format!("injections[{i}].seq_offset"),
                inj.seq_offset,
                -lim,
                lim,
            )?;
            check::range(
                &format!("injections[{i}].ack_offset"),
                inj.ack_offset,
                -lim,
                lim,
            )?;
        }
        Ok(())
    }
}
