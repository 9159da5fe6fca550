//! Classic libpcap file format (magic 0xa1b2c3d4, version 2.4, microsecond timestamps).

use std::io::{self, Read, Write};
use std::time::Duration;

pub const MAGIC: u32 = 0xa1b2_c3d4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LinkType {
    Ethernet = 1,
    LinuxSll = 113,
}

pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut out: W, linktype: LinkType, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&(linktype as u32).to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// `ts` is the time since the Unix epoch; `data` is cut to the snaplen;
    /// `orig_len` is the length on the wire.
    pub fn write_packet(&mut self, ts: Duration, data: &[u8], orig_len: u32) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(ts.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    pub ts: Duration,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Reads a little-endian classic pcap file: (linktype, snaplen, records).
pub fn read_pcap(mut r: impl Read) -> io::Result<(u32, u32, Vec<PcapRecord>)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut h = [0u8; 24];
    r.read_exact(&mut h)?;
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if le32(&h, 0) != MAGIC {
        return Err(bad("not a little-endian microsecond pcap file"));
    }
    let (snaplen, linktype) = (le32(&h, 16), le32(&h, 20));
    let mut records = Vec::new();
    loop {
        let mut rh = [0u8; 16];
        match r.read_exact(&mut rh) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let caplen = le32(&rh, 8) as usize;
        if caplen > snaplen as usize {
            return Err(bad("record longer than snaplen"));
        }
        let mut data = vec![0; caplen];
        r.read_exact(&mut data)?;
        records.push(PcapRecord {
            ts: Duration::new(u64::from(le32(&rh, 0)), le32(&rh, 4) * 1000),
            orig_len: le32(&rh, 12),
            data,
        });
    }
    Ok((linktype, snaplen, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_snaplen() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::LinuxSll, 8).unwrap();
        w.write_packet(Duration::new(1_700_000_000, 123_456_000), &[1, 2, 3], 3)
            .unwrap();
        w.write_packet(Duration::new(1_700_000_001, 0), &[9; 20], 1500)
            .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(bytes.len(), 24 + 16 + 3 + 16 + 8);
        let (lt, snap, recs) = read_pcap(&bytes[..]).unwrap();
        assert_eq!((lt, snap), (113, 8));
        assert_eq!(recs[0].ts, Duration::new(1_700_000_000, 123_456_000));
        assert_eq!(recs[0].data, vec![1, 2, 3]);
        assert_eq!((recs[1].data.len(), recs[1].orig_len), (8, 1500));
    }
}
