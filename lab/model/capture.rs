//! One `[[captures]]` entry of a scenario: where to capture and the named counters.

use super::pcap_filter::{LinkType, PcapFilter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Observation names a count may not take.
const RESERVED: [&str; 3] = ["packets", "seen", "lost"];
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// How many gaps between consecutive matches of a count are observations
/// (`capture.<name>.<count>.gap1_ms` ... `.gap32_ms`).
pub const TIMING_GAPS: usize = 32;

/// One `[[captures]]` entry of a scenario.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// Observation prefix: `capture.<name>.<counter>`.
    pub name: String,
    pub node: String,
    /// Device name inside the node, or `any`.
    pub dev: String,
    /// What is written to the pcapng file, in tcpdump's filter language (libpcap);
    /// every packet when absent. The kernel drops what neither `filter` nor a count
    /// matches before it reaches the capture (SO_ATTACH_FILTER).
    #[serde(default)]
    pub filter: Option<String>,
    /// Named counters, each a tcpdump filter evaluated on every packet the capture
    /// sees (whether or not `filter` keeps it). Each gives `capture.<name>.<count>` and the
    /// times of its matches since the capture started, in ms: `.first_ms`, `.last_ms`,
    /// `.gap_min_ms`, `.gap_max_ms`, `.gap1_ms` ... `.gap32_ms` (only those measured).
    #[serde(default)]
    pub count: BTreeMap<String, String>,
    #[serde(default)]
    pub snaplen: Option<u32>,
}

impl CaptureSpec {
    /// Checks the fields and compiles the filters for the link type `dev` is known to
    /// have before it exists ([`LinkType::of_dev`]).
    pub fn validate(&self) -> Result<(), String> {
        self.compile(LinkType::of_dev(&self.dev)).map(|_| ())
    }

    /// Compiles the filters for frames of `link`, the link type actually captured.
    pub fn compile(&self, link: LinkType) -> Result<Compiled, String> {
        let ctx = format!("capture `{}`", self.name);
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !ident(&self.name) {
            return Err(format!(
                "{ctx}: field `name` must be non-empty letters, digits, `_` or `-` \
                 (it prefixes observations capture.<name>.*)"
            ));
        }
        if self.node.is_empty() {
            return Err(format!(
                "{ctx}: field `node` is empty; name the node to capture in"
            ));
        }
        if self.dev.is_empty() || self.dev.len() > 15 || self.dev.contains('/') {
            return Err(format!(
                "{ctx}: field `dev` = {:?} is not a device name (1-15 characters, no `/`); \
                 use a device of node `{}` or \"any\"",
                self.dev, self.node
            ));
        }
        if self.snaplen == Some(0) {
            return Err(format!(
                "{ctx}: field `snaplen` must be > 0 (or omitted: {DEFAULT_SNAPLEN})"
            ));
        }
        let compile = |field: &str, text: &str| {
            PcapFilter::compile(text, link).map_err(|e| {
                format!(
                    "{ctx}: field `{field}` = {text:?}: libpcap: {e} (write it as tcpdump \
                     takes it, see pcap-filter(7); try `tcpdump -d '{text}'`)"
                )
            })
        };
        let keep = match &self.filter {
            Some(f) => Some(compile("filter", f)?),
            None => None,
        };
        let mut counts = Vec::new();
        for (name, f) in &self.count {
            if !ident(name) || RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "{ctx}: count name `{name}` must be letters, digits, `_` or `-` and not one \
                     of {RESERVED:?} (observations already use those names); rename it"
                ));
            }
            counts.push((name.clone(), compile(&format!("count.{name}"), f)?));
        }
        Ok(Compiled { keep, counts })
    }
}

/// A capture spec with its filters parsed.
pub struct Compiled {
    pub keep: Option<PcapFilter>,
    pub counts: Vec<(String, PcapFilter)>,
}
