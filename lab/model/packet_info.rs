//! Key fields of a captured frame (Ethernet, Linux cooked or bare L3), enough for the
//! filter language and for tests that look at individual packets.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// How a frame's bytes begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Ethernet,
    /// Linux cooked header (LINKTYPE_LINUX_SLL, 16 bytes).
    LinuxSll,
    /// Bare L3 packet of the given ethertype.
    Raw(u16),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketInfo {
    /// L3 protocol as an ethertype (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP).
    pub ethertype: u16,
    /// IP source, or ARP sender protocol address.
    pub src: Option<IpAddr>,
    /// IP destination, or ARP target protocol address.
    pub dst: Option<IpAddr>,
    /// L4 protocol (after IPv6 extension headers); None for non-IP.
    pub ip_proto: Option<u8>,
    /// Length of the L3 packet as it was on the wire (IP total length when known).
    pub l3_len: usize,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<u8>,
    pub seq: Option<u32>,
    pub ack: Option<u32>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

impl PacketInfo {
    pub fn parse(framing: Framing, frame: &[u8]) -> PacketInfo {
        match framing {
            Framing::Ethernet => {
                if frame.len() < 14 {
                    return PacketInfo::default();
                }
                let mut ethertype = be16(frame, 12);
                let mut off = 14;
                while (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD)
                    && frame.len() >= off + 4
                {
                    ethertype = be16(frame, off + 2);
                    off += 4;
                }
                Self::parse_l3(ethertype, &frame[off..])
            }
            Framing::LinuxSll => {
                if frame.len() < 16 {
                    return PacketInfo::default();
                }
                Self::parse_l3(be16(frame, 14), &frame[16..])
            }
            Framing::Raw(ethertype) => Self::parse_l3(ethertype, frame),
        }
    }

    pub fn parse_l3(ethertype: u16, p: &[u8]) -> PacketInfo {
        let mut info = PacketInfo {
            ethertype,
            l3_len: p.len(),
            ..PacketInfo::default()
        };
        match ethertype {
            ETH_P_IP if p.len() >= 20 && p[0] >> 4 == 4 => {
                let ihl = usize::from(p[0] & 0x0f) * 4;
                info.l3_len = usize::from(be16(p, 2));
                info.src = Some(IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])));
                info.dst = Some(IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])));
                info.ip_proto = Some(p[9]);
                let frag_offset = be16(p, 6) & 0x1fff;
                if frag_offset == 0 && p.len() > ihl {
                    info.parse_l4(p[9], &p[ihl..]);
                }
            }
            ETH_P_IPV6 if p.len() >= 40 && p[0] >> 4 == 6 => {
                info.l3_len = 40 + usize::from(be16(p, 4));
                info.src = Some(IpAddr::V6(Ipv6Addr::from(arr16(&p[8..24]))));
                info.dst = Some(IpAddr::V6(Ipv6Addr::from(arr16(&p[24..40]))));
                let (mut next, mut off) = (p[6], 40);
                let mut l4 = true;
                loop {
                    match next {
                        // hop-by-hop, routing, destination options
                        0 | 43 | 60 if p.len() >= off + 8 => {
                            next = p[off];
                            off += (usize::from(p[off + 1]) + 1) * 8;
                        }
                        44 if p.len() >= off + 8 => {
                            l4 &= be16(p, off + 2) & 0xfff8 == 0;
                            next = p[off];
                            off += 8;
                        }
                        _ => break,
                    }
                }
                info.ip_proto = Some(next);
                if l4 && p.len() > off {
                    info.parse_l4(next, &p[off..]);
                }
            }
            // Ethernet/IPv4 ARP only: sender and target protocol addresses.
            ETH_P_ARP if p.len() >= 28 && p[4] == 6 && p[5] == 4 => {
                info.src = Some(IpAddr::V4(Ipv4Addr::new(p[14], p[15], p[16], p[17])));
                info.dst = Some(IpAddr::V4(Ipv4Addr::new(p[24], p[25], p[26], p[27])));
            }
            _ => {}
        }
        info
    }

    fn parse_l4(&mut self, proto: u8, l4: &[u8]) {
        match proto {
            IPPROTO_TCP if l4.len() >= 14 => {
                self.sport = Some(be16(l4, 0));
                self.dport = Some(be16(l4, 2));
                self.seq = Some(be32(l4, 4));
                self.ack = Some(be32(l4, 8));
                self.tcp_flags = Some(l4[13]);
            }
            IPPROTO_UDP if l4.len() >= 4 => {
                self.sport = Some(be16(l4, 0));
                self.dport = Some(be16(l4, 2));
            }
            IPPROTO_ICMP | IPPROTO_ICMPV6 if l4.len() >= 2 => {
                self.icmp_type = Some(l4[0]);
                self.icmp_code = Some(l4[1]);
            }
            _ => {}
        }
    }

    pub fn has_tcp_flags(&self, mask: u8) -> bool {
        self.tcp_flags.is_some_and(|f| f & mask == mask)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn arr16(b: &[u8]) -> [u8; 16] {
    let mut a = [0; 16];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP RST from 192.0.2.1:80 to 203.0.113.2:40000, seq 1000.
    pub(crate) fn tcp_rst_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
        ip[16..20].copy_from_slice(&[203, 0, 113, 2]);
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&80u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = TCP_RST | TCP_ACK;
        f
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let p = PacketInfo::parse(Framing::Ethernet, &tcp_rst_frame());
        assert_eq!(p.ethertype, ETH_P_IP);
        assert_eq!(p.src, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.dst, Some("203.0.113.2".parse().unwrap()));
        assert_eq!((p.sport, p.dport), (Some(80), Some(40000)));
        assert_eq!(p.seq, Some(1000));
        assert!(p.has_tcp_flags(TCP_RST));
        assert!(!p.has_tcp_flags(TCP_SYN));
        assert_eq!(p.l3_len, 40);
    }

    #[test]
    fn cooked_and_truncated() {
        let eth = tcp_rst_frame();
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETH_P_IP.to_be_bytes());
        sll.extend_from_slice(&eth[14..]);
        assert_eq!(
            PacketInfo::parse(Framing::LinuxSll, &sll),
            PacketInfo::parse(Framing::Ethernet, &eth)
        );
        assert_eq!(PacketInfo::parse(Framing::Ethernet, &eth[..20]).src, None);
        assert_eq!(PacketInfo::parse(Framing::Ethernet, &eth[..36]).sport, None);
    }

    #[test]
    fn ipv6_icmp_after_hop_by_hop() {
        let mut p = vec![0u8; 40 + 8 + 8];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&16u16.to_be_bytes());
        p[6] = 0; // hop-by-hop
        p[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p[40] = IPPROTO_ICMPV6;
        p[48] = 128;
        let info = PacketInfo::parse(Framing::Raw(ETH_P_IPV6), &p);
        assert_eq!(info.ip_proto, Some(IPPROTO_ICMPV6));
        assert_eq!(info.icmp_type, Some(128));
        assert_eq!(info.dst, Some("2001:db8::2".parse().unwrap()));
    }
}
