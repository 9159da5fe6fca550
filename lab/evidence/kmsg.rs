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
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(KMSG)
            .with_context(|| format!("open {KMSG}"))?;
        // SEEK_END on /dev/kmsg skips every record already in the buffer.
        file.seek(SeekFrom::End(0))
            .with_context(|| format!("seek to the end of {KMSG}"))?;
        Ok(KmsgWatch { file, specs })
    }

    /// Reads every record written since `start` and counts the matches.
    pub fn stop(mut self) -> Observations {
        let mut counts = vec![0u64; self.specs.len()];
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let record = String::from_utf8_lossy(&buf[..n]);
                    let msg = message_of(&record);
                    for (i, (_, contains, ino)) in self.specs.iter().enumerate() {
                        counts[i] += u64::from(matches(msg, contains, *ino));
                    }
                }
                // EPIPE: records were overwritten before we read them; go on with the next.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // EAGAIN: nothing more
            }
        }
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
