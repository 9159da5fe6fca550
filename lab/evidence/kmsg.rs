//! Kernel log lines written while a cell's traffic ran: `/dev/kmsg` read from its end at
//! the start and drained at the stop, with named counters of the lines that contain a
//! text (e.g. `nf_conntrack: table full in netns 4026532518, dropping packet`).
//! A counter may be restricted to one node: the line must then carry the node's network
//! namespace inode (`stat /run/netns/<netns>`) as a whole number, as the netfilter
//! messages do ("in netns <inode>").

pub use crate::model::kmsg::KmsgSpec;
use crate::verdict::Observations;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

const KMSG: &str = "/dev/kmsg";

/// Does one message (the text after `;` of a /dev/kmsg record) count?
pub fn matches(message: &str, contains: &str, inode: Option<u64>) -> bool {
    if !message.contains(contains) {
        return false;
    }
    match inode {
        None => true,
        Some(ino) => message
            .split(|c: char| !c.is_ascii_digit())
            .any(|w| w.parse::<u64>().ok() == Some(ino)),
    }
}

/// The message part of one /dev/kmsg record (`prio,seq,ts,flags;message\n[ KEY=V\n]...`).
fn message_of(record: &str) -> &str {
    let first = record.lines().next().unwrap_or("");
    first.split_once(';').map_or(first, |(_, m)| m)
}

/// One /dev/kmsg record, header parsed and the message's `\xNN` escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 0 for the kernel's own messages; what userspace writes to /dev/kmsg is never 0.
    pub facility: u32,
    pub level: u32,
    pub seq: u64,
    /// Microseconds since boot.
    pub ts_usec: u64,
    /// The message; a record holding several lines has them separated by `\n`.
    pub message: String,
}

/// Parses one record (`prio,seq,ts,flags[,...];message` and optional ` KEY=V` lines).
pub fn parse_record(record: &str) -> Option<Record> {
    let first = record.lines().next()?;
    let (header, message) = first.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    Some(Record {
        facility: prio >> 3,
        level: prio & 7,
        seq,
        ts_usec,
        message: unescape(message),
    })
}

/// /dev/kmsg writes bytes < 0x20, >= 0x7f and `\` as `\xNN`.
fn unescape(m: &str) -> String {
    let b = m.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 2]), hex(b[i + 3])) {
                out.push((h * 16 + l) as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// /dev/kmsg opened non-blocking, positioned after the last record already written.
pub fn open_at_end() -> Result<File> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(KMSG)
        .with_context(|| format!("open {KMSG}"))?;
    // SEEK_END on /dev/kmsg skips every record already in the buffer.
    file.seek(SeekFrom::End(0))
        .with_context(|| format!("seek to the end of {KMSG}"))?;
    Ok(file)
}

/// Calls `f` with every record readable now (each read(2) of /dev/kmsg returns one);
/// returns how many times records were overwritten before they could be read (EPIPE).
pub fn drain(file: &mut File, mut f: impl FnMut(&str)) -> u64 {
    let mut overwritten = 0;
    let mut buf = vec![0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => f(&String::from_utf8_lossy(&buf[..n])),
            // EPIPE: records were overwritten before we read them; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => overwritten += 1,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break, // EAGAIN: nothing more
        }
    }
    overwritten
}

/// The inode of a named network namespace (what the kernel prints as `netns <inode>`).
pub fn netns_inode(netns: &str) -> Result<u64> {
    let path = crate::netns::path_of(netns)?;
    Ok(std::fs::metadata(&path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino())
}

/// A reader positioned at the end of the kernel log when the cell's traffic starts.
pub struct KmsgWatch {
    file: File,
    /// (name, contains, inode)
    specs: Vec<(String, String, Option<u64>)>,
}

impl KmsgWatch {
    /// `specs` with the netns inode of their node already resolved.
    pub fn start(specs: Vec<(String, String, Option<u64>)>) -> Result<KmsgWatch> {
        Ok(KmsgWatch {
            file: open_at_end()?,
            specs,
        })
    }

    /// Reads every record written since `start` and counts the matches.
    pub fn stop(mut self) -> Observations {
        let mut counts = vec![0u64; self.specs.len()];
        drain(&mut self.file, |record| {
            let msg = message_of(record);
            for (i, (_, contains, ino)) in self.specs.iter().enumerate() {
                counts[i] += u64::from(matches(msg, contains, *ino));
            }
        });
        self.specs
            .iter()
            .zip(counts)
            .map(|((name, _, _), n)| (format!("kmsg.{name}"), n as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_text_and_inode() {
        let m = "nf_conntrack: nf_conntrack: table full in netns 4026532518, dropping packet";
        assert!(matches(m, "table full", None));
        assert!(matches(m, "table full", Some(4026532518)));
        assert!(!matches(m, "table full", Some(402653251)));
        assert!(!matches(m, "table is full", None));
    }

    #[test]
    fn message_after_the_header() {
        let r = "4,5635,1545952549,-;nf_conntrack: table full in netns 7, dropping packet\n SUBSYSTEM=x\n";
        assert_eq!(
            message_of(r),
            "nf_conntrack: table full in netns 7, dropping packet"
        );
    }

    #[test]
    fn records_parsed_and_unescaped() {
        let r = parse_record(
            "4,812,1545952549,-;WARNING: CPU: 1 PID: 7 at x.c:3 f+0x1/0x2\n SUBSYSTEM=net\n",
        )
        .unwrap();
        assert_eq!(
            (r.facility, r.level, r.seq, r.ts_usec),
            (0, 4, 812, 1545952549)
        );
        assert_eq!(r.message, "WARNING: CPU: 1 PID: 7 at x.c:3 f+0x1/0x2");
        let r = parse_record("12,9,10,-,caller=T1;a\\x5cb\\x0asecond\\x09tab").unwrap();
        assert_eq!((r.facility, r.level), (1, 4));
        assert_eq!(r.message, "a\\b\nsecond\ttab");
        // A broken escape stays as it is.
        assert_eq!(parse_record("6,1,1,-;100\\x").unwrap().message, "100\\x");
        assert_eq!(parse_record(" SUBSYSTEM=net"), None);
    }

    #[test]
    fn validate_names() {
        let s = |name: &str, contains: &str| KmsgSpec {
            name: name.into(),
            contains: contains.into(),
            node: None,
        };
        assert!(s("table_full", "table full").validate().is_ok());
        assert!(s("a.b", "x").validate().is_err());
        assert!(s("ok", " ").validate().is_err());
    }
}
