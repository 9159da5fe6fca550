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
    /// Payload bytes per datagram, at least 16 for the tag (default 64; with `text`,
    /// the text's end, padded with spaces up to `size` when given).
    #[serde(default)]
    pub size: Option<usize>,
    /// A payload of spaces with this text at byte `text_at` instead of the tagged one
    /// (content matches such as xt_string); such datagrams carry no tag, so there is no
    /// `receiver` count or `replies`.
    #[serde(default)]
    pub text: Option<String>,
    /// Offset of `text` in the UDP payload (default 0).
    #[serde(default)]
    pub text_at: usize,
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
fn d_true() -> bool {
    true
}
fn d_timeout() -> u64 {
    1000
}

impl UdpParams {
    /// Bytes of UDP payload per datagram.
    pub fn payload_len(&self) -> usize {
        match &self.text {
            None => self.size.unwrap_or(64),
            Some(t) => self.size.unwrap_or(0).max(self.text_at + t.len()),
        }
    }

    /// The payload of datagram `seq`: tagged for counting, or the `text` one.
    pub fn payload(
        &self,
        run: u32,
        seq: u32,
        tagged: impl Fn(u32, u32, u32, usize) -> Vec<u8>,
    ) -> Vec<u8> {
        match &self.text {
            None => tagged(run, 0, seq, self.payload_len()),
            Some(t) => {
                let mut p = vec![b' '; self.payload_len()];
                p[self.text_at..self.text_at + t.len()].copy_from_slice(t.as_bytes());
                p
            }
        }
    }

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
        match &self.text {
            None => {
                check::range("size", self.payload_len(), 16, 65000)?;
                if self.text_at != 0 {
                    return Err("text_at without text: add text = \"...\" or remove text_at".into());
                }
            }
            Some(text) => {
                if self.receiver.is_some() {
                    return Err("a receiver counts tagged datagrams, and a `text` payload has no tag: remove receiver (count with a capture or rule counters)".into());
                }
                let end = self.text_at + text.len();
                if let Some(size) = self.size {
                    if size < end {
                        return Err(format!("size = {size} is shorter than text_at + the text ({end}): raise size or drop it"));
                    }
                }
                check::range("text_at + text length", end, 1, 65000)?;
            }
        }
        check::range("interval_ms", self.interval_ms, 0, 60_000)?;
        check::range("timeout_ms", self.timeout_ms, 1, 600_000)
    }
}
