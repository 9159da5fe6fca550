//! pcapng output (the `pcap-file` crate): one Interface Description Block per
//! node:device a capture sees, named `node:dev` with the namespace in its description,
//! so Wireshark and `tcpdump -r` show where each packet was seen.

use crate::model::pcap_filter::LinkType;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::io::{self, Write};
use std::time::Duration;

/// if_tsresol = 9: the crate writes Enhanced Packet Block times in nanoseconds.
const NANOSECONDS: u8 = 9;

pub struct PcapngWriter<W: Write> {
    out: PcapNgWriter<W>,
    snaplen: u32,
    interfaces: u32,
}

fn io_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the Section Header Block.
    pub fn new(out: W, snaplen: u32) -> io::Result<Self> {
        Ok(PcapngWriter {
            out: PcapNgWriter::new(out).map_err(io_err)?,
            snaplen,
            interfaces: 0,
        })
    }

    /// Writes an Interface Description Block; returns the interface id packets name.
    pub fn add_interface(
        &mut self,
        name: &str,
        description: &str,
        link: LinkType,
    ) -> io::Result<u32> {
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::from(u32::from(link.number())),
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(description.to_string())),
                InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
            ],
        };
        self.out.write_pcapng_block(idb).map_err(io_err)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// `ts` is the time since the Unix epoch; `data` is cut to the snaplen;
    /// `orig_len` is the length on the wire.
    pub fn write_packet(
        &mut self,
        interface: u32,
        ts: Duration,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let epb = EnhancedPacketBlock {
            interface_id: interface,
            timestamp: ts,
            original_len: orig_len.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options: vec![],
        };
        self.out.write_pcapng_block(epb).map_err(io_err)?;
        Ok(())
    }

    pub fn finish(self) -> io::Result<W> {
        let mut out = self.out.into_inner();
        out.flush()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    fn frame(src_last: u8) -> Vec<u8> {
        // Ethernet + IPv4 + UDP 10.0.0.<src_last>:1000 -> 10.0.0.9:2000, 4 bytes payload.
        let mut f = vec![2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, src_last, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, src_last, 10, 0, 0, 9,
        ]);
        f.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, b'f', b'l', b'a', b'b']);
        f
    }

    fn write_two_interfaces() -> Vec<u8> {
        let mut w = PcapngWriter::new(Vec::new(), 64).unwrap();
        let a = w
            .add_interface("host:eth0", "netns fl-1234-host", LinkType::Ethernet)
            .unwrap();
        let b = w
            .add_interface("router:eth1", "netns fl-1234-router", LinkType::Ethernet)
            .unwrap();
        let t = Duration::new(1_700_000_000, 123_456_789);
        w.write_packet(a, t, &frame(1), 46).unwrap();
        w.write_packet(b, t + Duration::from_millis(1), &frame(2), 46)
            .unwrap();
        w.write_packet(a, t + Duration::from_millis(2), &[7; 100], 1500)
            .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn interfaces_are_named_and_packets_read_back() {
        let bytes = write_two_interfaces();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut packets = Vec::new();
        while let Some(block) = r.next_block() {
            if let Block::EnhancedPacket(p) = block.unwrap() {
                packets.push((p.interface_id, p.timestamp, p.original_len, p.data.len()));
            }
        }
        let names: Vec<(String, String)> = r
            .interfaces()
            .iter()
            .map(|i| {
                let opt = |want: u8| {
                    i.options.iter().find_map(|o| match (want, o) {
                        (2, InterfaceDescriptionOption::IfName(n)) => Some(n.to_string()),
                        (3, InterfaceDescriptionOption::IfDescription(d)) => Some(d.to_string()),
                        _ => None,
                    })
                };
                (opt(2).unwrap(), opt(3).unwrap())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("host:eth0".to_string(), "netns fl-1234-host".to_string()),
                (
                    "router:eth1".to_string(),
                    "netns fl-1234-router".to_string()
                )
            ]
        );
        assert_eq!(packets.len(), 3);
        assert_eq!(
            packets[0],
            (0, Duration::new(1_700_000_000, 123_456_789), 46, 46)
        );
        assert_eq!(packets[1].0, 1);
        // Cut to the snaplen, the wire length kept.
        assert_eq!((packets[2].2, packets[2].3), (1500, 64));
    }

    /// tcpdump (libpcap) reads the file too, with the nanosecond times we wrote (if_tsresol).
    #[test]
    fn tcpdump_reads_it() {
        if std::process::Command::new("tcpdump")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("tcpdump not installed (scripts/install-deps.sh installs it): not run");
            return;
        }
        let dir = std::env::temp_dir().join(format!("faultlab-pcapng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two.pcapng");
        std::fs::write(&path, write_two_interfaces()).unwrap();
        let out = std::process::Command::new("tcpdump")
            .args(["-nn", "-tt", "-r"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("1700000000.123456 "), "{text}");
        assert!(
            text.contains("10.0.0.2.1000 > 10.0.0.9.2000: UDP, length 4"),
            "{text}"
        );
    }
}
