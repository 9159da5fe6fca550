//! Kernel health of a cell, as netdev's CI checks it: the taint mask before and after,
//! and the kernel's bug reports ("splats") logged in between — WARN, BUG, KASAN, UBSAN,
//! Oops, `kernel BUG at`, general protection fault, refcount_t and list corruption,
//! RCU stalls, soft and hard lockups, hung tasks.
//!
//! A report is recognised by its headline, the kernel's own first line of it:
//! the line after `------------[ cut here ]------------` (whatever it says: WARN(),
//! refcount_t, list corruption, kernel BUG at), or a line starting `WARNING: CPU: `,
//! `BUG: ` (KASAN, KCSAN, NULL pointer dereference, sleeping in atomic), `KASAN: `,
//! `UBSAN: `, `Oops: `, `kernel BUG at `, `general protection fault`, `refcount_t: `,
//! `list_add corruption`, `list_del corruption`, `Unable to handle kernel `,
//! `Internal error: `, or any `WARNING: ` right after a `=====` line (lockdep,
//! suspicious RCU usage); or a line containing `BUG: soft lockup`, `detected hard LOCKUP`,
//! `INFO: rcu...stall` (RCU stall) or `INFO: task ... blocked for more than` (hung task).
//! Its evidence is the headline and the next [`CONTEXT_LINES`] lines. A report ends at
//! `---[ end trace`, at the `=====` line that closes a KASAN/UBSAN/KCSAN report, or at the
//! next `cut here`; headlines inside a report's context (the WARNING under a refcount_t
//! line, the KASAN line under a general protection fault) belong to it, later ones start
//! a new report. Only the kernel's records count (facility 0): text that a program writes
//! to /dev/kmsg is never a splat.
//!
//! The kernel log and the taint mask are global: a splat caused by something else on the
//! machine while the cell ran is reported too.

use super::kmsg::{drain, open_at_end, parse_record};
use crate::verdict::Observations;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;

const TAINTED: &str = "/proc/sys/kernel/tainted";
/// Lines kept after a report's headline.
pub const CONTEXT_LINES: usize = 20;

const CUT_HERE: &str = "------------[ cut here ]------------";
const HEADLINE_STARTS: [&str; 13] = [
    "WARNING: CPU: ",
    "BUG: ",
    "KASAN: ",
    "UBSAN: ",
    "Oops: ",
    "kernel BUG at ",
    "general protection fault",
    "refcount_t: ",
    "list_add corruption",
    "list_del corruption",
    "Unable to handle kernel ",
    "Internal error: ",
    "Kernel panic - not syncing",
];

fn is_separator(line: &str) -> bool {
    line.len() >= 20 && line.bytes().all(|b| b == b'=')
}

fn is_end(line: &str) -> bool {
    line.starts_with("---[ end trace") || line.starts_with("---[ end Kernel panic")
}

/// Does `line` start a report? `after_separator`: the previous line was `=====`.
pub fn is_headline(line: &str, after_separator: bool) -> bool {
    HEADLINE_STARTS.iter().any(|p| line.starts_with(p))
        || (after_separator && line.starts_with("WARNING: "))
        || line.contains("BUG: soft lockup")
        || line.contains("detected hard LOCKUP")
        || (line.contains("INFO: rcu") && line.contains("stall"))
        || (line.starts_with("INFO: task ") && line.contains(" blocked for more than "))
}

struct Open {
    lines: Vec<String>,
    /// Started after a `=====` line: the next one closes it.
    separated: bool,
}

/// Folds kernel log lines into splat reports.
#[derive(Default)]
pub struct SplatParser {
    splats: Vec<String>,
    open: Option<Open>,
    after_cut: bool,
    after_separator: bool,
}

impl SplatParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// One raw /dev/kmsg record (`prio,seq,ts,flags;message`); records of userspace
    /// (facility ≠ 0) and unparsable ones are ignored.
    pub fn feed_record(&mut self, record: &str) {
        let Some(r) = parse_record(record) else {
            return;
        };
        if r.facility != 0 {
            return;
        }
        for line in r.message.split('\n') {
            self.feed_line(line);
        }
    }

    /// One line of the kernel's log (the message, without the record header).
    pub fn feed_line(&mut self, line: &str) {
        let line = line.trim_end();
        if line == CUT_HERE {
            self.close();
            self.after_cut = true;
            self.after_separator = false;
            return;
        }
        if is_separator(line) {
            // Closes a KASAN-style report; before anything else it may open one.
            let closing = self.open.as_ref().is_some_and(|o| o.separated);
            self.close();
            self.after_separator = !closing;
            self.after_cut = false;
            return;
        }
        if is_end(line) {
            if let Some(o) = &mut self.open {
                o.push(line);
            }
            self.close();
            return;
        }
        let starts = self.after_cut || is_headline(line, self.after_separator);
        let separated = self.after_separator;
        self.after_cut = false;
        self.after_separator = false;
        match &mut self.open {
            // Inside a report's context every line is its own, headlines included.
            Some(o) if !(starts && o.full()) => o.push(line),
            _ if starts => {
                self.close();
                self.open = Some(Open {
                    lines: vec![line.to_string()],
                    separated,
                });
            }
            _ => {}
        }
    }

    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            self.splats.push(o.lines.join("\n"));
        }
    }

    /// The reports, each its headline and up to [`CONTEXT_LINES`] lines after it.
    pub fn finish(mut self) -> Vec<String> {
        self.close();
        self.splats
    }
}

impl Open {
    fn full(&self) -> bool {
        self.lines.len() > CONTEXT_LINES
    }

    fn push(&mut self, line: &str) {
        if !self.full() {
            self.lines.push(line.to_string());
        }
    }
}

/// The splats in a text of /dev/kmsg records, one record a line (lines that are not a
/// record, such as ` SUBSYSTEM=` continuation lines, are skipped).
pub fn splats_in_records(text: &str) -> Vec<String> {
    let mut p = SplatParser::new();
    for line in text.lines() {
        p.feed_record(line);
    }
    p.finish()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplatReport {
    pub tainted_before: u64,
    pub tainted_after: u64,
    /// Each report: its headline and up to [`CONTEXT_LINES`] lines after it.
    pub splats: Vec<String>,
}

impl SplatReport {
    /// Taint bits set after that were not set before.
    pub fn taint_new(&self) -> u64 {
        self.tainted_after & !self.tainted_before
    }

    /// `kernel.tainted` (after), `kernel.taint_new`, `kernel.splats` (count).
    pub fn observations(&self) -> Observations {
        [
            ("kernel.tainted", self.tainted_after as f64),
            ("kernel.taint_new", self.taint_new() as f64),
            ("kernel.splats", self.splats.len() as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The taint mask, as /proc/sys/kernel/tainted prints it.
pub fn read_tainted() -> Result<u64> {
    let s = std::fs::read_to_string(TAINTED).with_context(|| format!("read {TAINTED}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("parse {TAINTED}: {s:?}"))
}

/// The taint mask and a /dev/kmsg reader positioned at the end of the log, from `start`.
pub struct SplatWatch {
    file: File,
    tainted_before: u64,
}

impl SplatWatch {
    pub fn start() -> Result<SplatWatch> {
        let tainted_before = read_tainted()?;
        let file = open_at_end().context("watching the kernel log for splats")?;
        Ok(SplatWatch {
            file,
            tainted_before,
        })
    }

    /// Reads the records logged since `start`. If the taint mask cannot be read now
    /// (it could at start) it is taken as unchanged.
    pub fn stop(mut self) -> SplatReport {
        let mut parser = SplatParser::new();
        drain(&mut self.file, |record| parser.feed_record(record));
        SplatReport {
            tainted_before: self.tainted_before,
            tainted_after: read_tainted().unwrap_or(self.tainted_before),
            splats: parser.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WARN: &str = include_str!("testdata/splat_warn.txt");
    const KASAN: &str = include_str!("testdata/splat_kasan.txt");

    fn lines(text: &str) -> Vec<String> {
        let mut p = SplatParser::new();
        for l in text.lines() {
            p.feed_line(l);
        }
        p.finish()
    }

    #[test]
    fn warn_and_refcount_reports() {
        let s = splats_in_records(WARN);
        assert_eq!(s.len(), 2, "{s:#?}");
        let first: Vec<&str> = s[0].lines().collect();
        assert!(first[0].starts_with(
            "WARNING: CPU: 1 PID: 4242 at net/netfilter/nf_conntrack_core.c:1236 \
             __nf_conntrack_confirm+0x3e1/0x6b0 [nf_conntrack]"
        ));
        assert_eq!(first.len(), 1 + CONTEXT_LINES);
        assert!(first[1].starts_with("Modules linked in:"));
        assert!(first.contains(&"Call Trace:"));
        // The refcount_t line is the headline; the WARNING under it is the same report.
        let second: Vec<&str> = s[1].lines().collect();
        assert_eq!(second[0], "refcount_t: underflow; use-after-free.");
        assert!(second[1].starts_with("WARNING: CPU: 0 PID: 17 at lib/refcount.c:28"));
        // The fixture's fake "BUG:" written by a program (facility 1) is not a splat.
        assert!(!s.iter().any(|x| x.contains("written by userspace")));
    }

    #[test]
    fn kasan_report() {
        let s = splats_in_records(KASAN);
        assert_eq!(s.len(), 1, "{s:#?}");
        let l: Vec<&str> = s[0].lines().collect();
        assert_eq!(
            l[0],
            "BUG: KASAN: slab-use-after-free in nf_ct_tmpl_free+0x2b/0x50 [nf_conntrack]"
        );
        assert_eq!(
            l[1],
            "Read of size 8 at addr ffff88810b3c5a28 by task kworker/u8:3/211"
        );
        assert_eq!(l.len(), 1 + CONTEXT_LINES);
    }

    #[test]
    fn other_report_kinds() {
        let one = |text: &str, headline: &str| {
            let s = lines(text);
            assert_eq!(s.len(), 1, "{text}: {s:#?}");
            assert_eq!(s[0].lines().next().unwrap(), headline);
        };
        one(
            "BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
             #PF: supervisor read access in kernel mode\n\
             PGD 0 P4D 0\n\
             Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI\n\
             CPU: 0 UID: 0 PID: 9 Comm: x Not tainted 6.18.0 #1\n",
            "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        );
        one(
            "Oops: general protection fault, probably for non-canonical address \
             0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI\n\
             KASAN: null-ptr-deref in range [0x0000000000000008-0x000000000000000f]\n\
             CPU: 1 UID: 0 PID: 3 Comm: x Not tainted 6.18.0 #1\n",
            "Oops: general protection fault, probably for non-canonical address \
             0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI",
        );
        one(
            "------------[ cut here ]------------\n\
             kernel BUG at net/core/skbuff.c:212!\n\
             Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI\n",
            "kernel BUG at net/core/skbuff.c:212!",
        );
        one(
            "------------[ cut here ]------------\n\
             list_add corruption. prev->next should be next (ffff8881), but was 0000. (prev=ffff8882).\n\
             WARNING: CPU: 0 PID: 1 at lib/list_debug.c:32 __list_add_valid_or_report+0x6e/0xd0\n",
            "list_add corruption. prev->next should be next (ffff8881), but was 0000. (prev=ffff8882).",
        );
        one(
            "================================================================================\n\
             UBSAN: array-index-out-of-bounds in net/ipv4/route.c:123:45\n\
             index 8 is out of range for type 'u32 [8]'\n\
             ---[ end trace ]---\n\
             eth0: link up\n",
            "UBSAN: array-index-out-of-bounds in net/ipv4/route.c:123:45",
        );
        one(
            "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [ksoftirqd/1:22]\n",
            "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [ksoftirqd/1:22]",
        );
        one(
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
             rcu: \t1-....: (5249 ticks this GP) idle=d94c/1/0x4000000000000000\n",
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
        );
        one(
            "INFO: task kworker/u8:1:37 blocked for more than 122 seconds.\n",
            "INFO: task kworker/u8:1:37 blocked for more than 122 seconds.",
        );
        one(
            "\n======================================================\n\
             WARNING: possible circular locking dependency detected\n\
             6.18.0 #1 Not tainted\n\
             ------------------------------------------------------\n",
            "WARNING: possible circular locking dependency detected",
        );
        // WARN() with its own message: the line after cut here is the headline.
        one(
            "------------[ cut here ]------------\n\
             netdevice: veth0: failed to disable LRO!\n\
             WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 dev_disable_lro+0x1/0x2\n",
            "netdevice: veth0: failed to disable LRO!",
        );
    }

    #[test]
    fn benign_lines_and_window() {
        assert!(lines(
            "br0: port 1(veth0) entered forwarding state\n\
             nf_conntrack: table full, dropping packet\n\
             WARNING: this is not after a separator\n\
             ==================================================\n\
             not a headline\n\
             Spectre V2 : WARNING: Unprivileged eBPF is enabled\n"
        )
        .is_empty());
        // Two soft lockups 30 lines apart are two reports; within the window, one.
        let mut text = String::from("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]\n");
        for i in 0..30 {
            text.push_str(&format!(" frame_{i}+0x1/0x2\n"));
        }
        text.push_str("watchdog: BUG: soft lockup - CPU#0 stuck for 48s! [a:1]\n");
        let s = lines(&text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].lines().count(), 1 + CONTEXT_LINES);
        assert_eq!(s[1].lines().count(), 1);
    }

    #[test]
    fn report_observations() {
        let r = SplatReport {
            tainted_before: 0x200, // W already
            tainted_after: 0x200 | 0x20 | 0x1000,
            splats: vec!["BUG: x".into()],
        };
        let obs = r.observations();
        assert_eq!(obs["kernel.tainted"], (0x1220) as f64);
        assert_eq!(obs["kernel.taint_new"], (0x1020) as f64);
        assert_eq!(obs["kernel.splats"], 1.0);
        assert_eq!(obs.len(), 3);
    }
}
