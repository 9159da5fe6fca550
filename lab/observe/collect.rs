//! Reading a node's counters from inside its namespace (needs root).

use super::{NodeCounters, ProcTexts};
use crate::plan::RulesetKind;
use anyhow::{Context, Result};
use std::io::ErrorKind;

/// Reads the proc files from a thread inside `netns` and dumps each ruleset kind with
/// its counters.
pub fn snapshot_node(netns: &str, ruleset_kinds: &[RulesetKind]) -> Result<NodeCounters> {
    // /proc/self/net is the main thread's namespace; thread-self follows setns.
    let texts = crate::netns::run_in(netns, || {
        Ok(ProcTexts {
            nf_conntrack: read_optional("/proc/thread-self/net/stat/nf_conntrack")?,
            snmp: read("/proc/thread-self/net/snmp")?,
            netstat: read("/proc/thread-self/net/netstat")?,
            snmp6: read_optional("/proc/thread-self/net/snmp6")?,
            dev: read("/proc/thread-self/net/dev")?,
        })
    })?;
    let mut dumps = Vec::new();
    for &kind in ruleset_kinds {
        let (program, args) = kind.dumper();
        let argv: Vec<&str> = std::iter::once(program)
            .chain(args.iter().copied())
            .collect();
        let out = crate::netns::output_in(netns, &argv, None)
            .with_context(|| format!("dumping {} counters in `{netns}`", kind.key()))?;
        dumps.push((kind, String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    NodeCounters::parse(&texts, &dumps).with_context(|| format!("counters of `{netns}`"))
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

fn read_optional(path: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}
