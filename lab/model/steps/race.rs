//! `kind = "race"`: the same-5-tuple race of SCENARIOS.md §1. Every iteration sends K
//! packets with one identical 5-tuple at the same instant; the source port moves on by one
//! per iteration so each iteration races for a fresh conntrack entry.
//! Parameters (the model); the generator is in `crate::traffic`.

use super::check;
use std::net::IpAddr;

/// Packet type raced.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RaceProto {
    /// UDP datagrams (conntrack resolves UDP clashes).
    #[default]
    Udp,
    /// TCP SYNs (no clash resolution for TCP).
    TcpSyn,
    /// ICMP / ICMPv6 echo requests; the identifier (conntrack's "port") is sport + iteration.
    IcmpEcho,
    /// SCTP INIT chunks (one chunk, verification tag 0, CRC32c filled).
    SctpInit,
    /// GRE version 1 (enhanced GRE, as PPTP), call ID = sport + iteration: the only GRE
    /// form whose conntrack tuple has a per-flow key (version 0 tuples carry no key).
    Gre,
}

/// How the K packets are sent.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RaceMode {
    /// K threads pinned to distinct CPUs, one IPPROTO_RAW socket each, released by a barrier.
    #[default]
    Raw,
    /// glibc form: one connected UDP socket, K sends back to back.
    Socket,
    /// One sendmmsg() of K datagrams on one connected UDP socket.
    Sendmmsg,
}

/// Same-tuple race. Metrics: `iterations` (completed), `sent`, `send_errors`, `pps` (send
/// rate while sending), `received` (distinct packets at `receiver`; only with a receiver),
/// `received_iterations_complete` (iterations whose K packets all arrived).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RaceParams {
    /// Observation prefix (default "race").
    #[serde(default)]
    pub name: Option<String>,
    /// Node that sends.
    pub from: String,
    /// Destination address (IPv4 or IPv6).
    pub to: IpAddr,
    /// Destination port (default 53).
    #[serde(default = "d_dport")]
    pub dport: u16,
    /// Source port of iteration 0; iteration i uses sport + i (default 20000).
    #[serde(default = "d_sport")]
    pub sport: u16,
    /// Source address for raw packets (default: the kernel's route source toward `to`).
    #[serde(default)]
    pub src: Option<IpAddr>,
    /// "udp" (default), or in raw mode "tcp-syn", "icmp-echo", "sctp-init", "gre"; for the
    /// last three the source port field gives the per-iteration ICMP id / call ID.
    #[serde(default)]
    pub proto: RaceProto,
    /// "raw" (default), "socket" or "sendmmsg".
    #[serde(default)]
    pub mode: RaceMode,
    /// K: packets per iteration; in raw mode one pinned thread each (default: number of CPUs).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Number of iterations (default 200).
    #[serde(default = "d_iterations")]
    pub iterations: u32,
    /// UDP payload bytes, at least 16 for the tag (default 32).
    #[serde(default = "d_payload")]
    pub payload: usize,
    /// Pause between iterations in milliseconds (default 1).
    #[serde(default = "d_gap")]
    pub gap_ms: u64,
    /// Node where the packets are counted (default: none).
    #[serde(default)]
    pub receiver: Option<String>,
    /// Port the packets arrive on at the receiver, if NAT changes it (default: dport).
    #[serde(default)]
    pub receiver_port: Option<u16>,
    /// How long the receiver waits for stragglers after the last send, ms (default 500).
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
}
fn d_dport() -> u16 {
    53
}
fn d_sport() -> u16 {
    20000
}
fn d_iterations() -> u32 {
    200
}
fn d_payload() -> usize {
    32
}
fn d_gap() -> u64 {
    1
}
fn d_timeout() -> u64 {
    500
}

impl RaceParams {
    pub fn validate(&self) -> Result<(), String> {
        check::node("from", &self.from)?;
        if let Some(r) = &self.receiver {
            check::node("receiver", r)?;
        }
        check::unicast("to", self.to)?;
        if let Some(s) = self.src {
            check::same_family("src", s, "to", self.to)?;
        }
        check::range("dport", self.dport, 1, 65535)?;
        check::range("sport", self.sport, 1, 65535)?;
        check::range("iterations", self.iterations, 1, 60_000)?;
        let last = u32::from(self.sport) + self.iterations - 1;
        if last > 65535 {
            return Err(format!(
                "sport = {} with iterations = {} needs source ports up to {last}: lower sport or iterations so sport + iterations - 1 <= 65535",
                self.sport, self.iterations
            ));
        }
        if let Some(k) = self.threads {
            check::range("threads", k, 1, 256)?;
        }
        check::range("payload", self.payload, 16, 1400)?;
        check::range("gap_ms", self.gap_ms, 0, 10_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 600_000)?;
        if self.proto != RaceProto::Udp && self.mode != RaceMode::Raw {
            return Err(format!(
                "proto = \"{}\" needs mode = \"raw\": set mode = \"raw\" or use proto = \"udp\"",
                self.proto.as_str()
            ));
        }
        Ok(())
    }
}

impl RaceProto {
    pub fn as_str(self) -> &'static str {
        match self {
            RaceProto::Udp => "udp",
            RaceProto::TcpSyn => "tcp-syn",
            RaceProto::IcmpEcho => "icmp-echo",
            RaceProto::SctpInit => "sctp-init",
            RaceProto::Gre => "gre",
        }
    }
}
