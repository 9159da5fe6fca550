//! Checksums and packet builders for raw sends (IPv4/IPv6 + UDP/TCP, ICMP echo).
//!
//! The kernel fills only the IPv4 header checksum of an IP_HDRINCL packet
//! (`raw_send_hdrinc`); UDP/TCP checksums and the whole IPv6 header are ours.

use std::net::IpAddr;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

#[cfg(test)]
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
#[cfg(test)]
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum.
pub fn sum_words(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a sum to 16 bits and complements it (RFC 1071).
pub fn finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Internet checksum of `data` (its checksum field must be zero).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum_words(data, 0))
}

/// UDP/TCP/ICMPv6 checksum over the pseudo-header and `segment` (checksum field zeroed).
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut sum = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = sum_words(&s.octets(), sum);
            sum = sum_words(&d.octets(), sum);
            sum = sum.wrapping_add(u32::from(proto));
            sum = sum.wrapping_add(segment.len() as u32);
        }
        (s, d) => {
            sum = sum_words(&v6_octets(s), sum);
            sum = sum_words(&v6_octets(d), sum);
            let len = segment.len() as u32;
            sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
            sum = sum.wrapping_add(u32::from(proto));
        }
    }
    finish(sum_words(segment, sum))
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A UDP header + payload with a valid checksum.
pub fn udp_segment(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&(len as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let mut c = l4_checksum(src, dst, PROTO_UDP, &s);
    if c == 0 {
        c = 0xffff; // 0 means "no checksum" for UDP
    }
    s[6..8].copy_from_slice(&c.to_be_bytes());
    s
}

/// TCP header fields for [`tcp_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFields {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// A TCP header (no options) + payload with a valid checksum.
pub fn tcp_segment(src: IpAddr, dst: IpAddr, f: &TcpFields, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&f.sport.to_be_bytes());
    s.extend_from_slice(&f.dport.to_be_bytes());
    s.extend_from_slice(&f.seq.to_be_bytes());
    s.extend_from_slice(&f.ack.to_be_bytes());
    s.push(5 << 4);
    s.push(f.flags);
    s.extend_from_slice(&f.window.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(payload);
    let c = l4_checksum(src, dst, PROTO_TCP, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// Wraps an L4 segment in an IPv4 or IPv6 header (both addresses must be the same family).
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, segment: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + segment.len();
            let mut p = Vec::with_capacity(total);
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&(total as u16).to_be_bytes());
            // id 0: raw_send_hdrinc() picks one with ip_select_ident().
            p.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend_from_slice(segment);
            p
        }
        _ => {
            let mut p = Vec::with_capacity(40 + segment.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            p.push(proto);
            p.push(ttl);
            p.extend_from_slice(&v6_octets(src));
            p.extend_from_slice(&v6_octets(dst));
            p.extend_from_slice(segment);
            p
        }
    }
}

/// A complete IP+UDP packet.
pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ip_packet(
        src,
        dst,
        PROTO_UDP,
        64,
        &udp_segment(src, dst, sport, dport, payload),
    )
}

/// A complete IP+TCP packet.
pub fn tcp_packet(src: IpAddr, dst: IpAddr, f: &TcpFields, payload: &[u8]) -> Vec<u8> {
    ip_packet(src, dst, PROTO_TCP, 64, &tcp_segment(src, dst, f, payload))
}

/// ICMP (v4, checksum filled) or ICMPv6 (checksum left 0: the kernel always computes it
/// for IPPROTO_ICMPV6 raw sockets, `rawv6_push_pending_frames`) echo request.
pub fn icmp_echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    if !v6 {
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

pub use crate::model::steps::check::parse_tcp_flags;

/// A parsed TCP segment seen by a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSeen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload_len: usize,
}

/// Parses an IPv4/IPv6 packet (no IPv6 extension headers) carrying TCP.
pub fn parse_tcp(l3: &[u8]) -> Option<TcpSeen> {
    use pnet_packet::ipv4::Ipv4Packet;
    use pnet_packet::ipv6::Ipv6Packet;
    use pnet_packet::tcp::TcpPacket;
    use pnet_packet::Packet;
    let (src, dst, l4): (IpAddr, IpAddr, Vec<u8>) = match l3.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new(l3)?;
            if ip.get_next_level_protocol().0 != PROTO_TCP || ip.get_fragment_offset() != 0 {
                return None;
            }
            let hl = usize::from(ip.get_header_length()) * 4;
            let tl = usize::from(ip.get_total_length()).min(l3.len());
            let body = l3.get(hl..tl)?.to_vec();
            (ip.get_source().into(), ip.get_destination().into(), body)
        }
        6 => {
            let ip = Ipv6Packet::new(l3)?;
            if ip.get_next_header().0 != PROTO_TCP {
                return None;
            }
            (
                ip.get_source().into(),
                ip.get_destination().into(),
                ip.payload().to_vec(),
            )
        }
        _ => return None,
    };
    let t = TcpPacket::new(&l4)?;
    let off = usize::from(t.get_data_offset()) * 4;
    Some(TcpSeen {
        src,
        dst,
        sport: t.get_source(),
        dport: t.get_destination(),
        seq: t.get_sequence(),
        ack: t.get_acknowledgement(),
        flags: t.get_flags(),
        payload_len: l4.len().saturating_sub(off),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::ipv4::Ipv4Packet;
    use pnet_packet::ipv6::Ipv6Packet;
    use pnet_packet::tcp::TcpPacket;
    use pnet_packet::udp::UdpPacket;
    use pnet_packet::Packet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn ipv4_header_vector() {
        // The classic example header; its checksum is b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
    }

    #[test]
    fn udp_v4_parses_back_and_checksum_matches_pnet() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let p = udp_packet(s.into(), d.into(), 40000, 53, b"hello world");
        let ip = Ipv4Packet::new(&p).unwrap();
        assert_eq!(ip.get_total_length() as usize, p.len());
        assert_eq!(ip.get_checksum(), pnet_packet::ipv4::checksum(&ip));
        assert_eq!(ip.get_source(), s);
        let u = UdpPacket::new(ip.payload()).unwrap();
        assert_eq!((u.get_source(), u.get_destination()), (40000, 53));
        assert_eq!(u.payload(), b"hello world");
        assert_eq!(
            u.get_checksum(),
            pnet_packet::udp::ipv4_checksum(&u, &s, &d)
        );
    }

    #[test]
    fn udp_v6_parses_back_and_checksum_matches_pnet() {
        let s: Ipv6Addr = "fd00::1".parse().unwrap();
        let d: Ipv6Addr = "fd00::2".parse().unwrap();
        let p = udp_packet(s.into(), d.into(), 1234, 9000, b"abc");
        let ip = Ipv6Packet::new(&p).unwrap();
        assert_eq!(ip.get_payload_length() as usize, p.len() - 40);
        assert_eq!(ip.get_next_header().0, PROTO_UDP);
        let u = UdpPacket::new(ip.payload()).unwrap();
        assert_eq!(
            u.get_checksum(),
            pnet_packet::udp::ipv6_checksum(&u, &s, &d)
        );
    }

    #[test]
    fn tcp_v4_and_v6_checksums_match_pnet_and_parse_back() {
        let f = TcpFields {
            sport: 80,
            dport: 5555,
            seq: 0xdead_beef,
            ack: 7,
            flags: TCP_ACK | TCP_PSH,
            window: 512,
        };
        let (s4, d4) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7));
        let p = tcp_packet(s4.into(), d4.into(), &f, b"xyz");
        let ip = Ipv4Packet::new(&p).unwrap();
        let t = TcpPacket::new(ip.payload()).unwrap();
        assert_eq!(
            t.get_checksum(),
            pnet_packet::tcp::ipv4_checksum(&t, &s4, &d4)
        );
        let seen = parse_tcp(&p).unwrap();
        assert_eq!(
            (seen.seq, seen.ack, seen.flags, seen.payload_len),
            (0xdead_beef, 7, 0x18, 3)
        );

        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let p6 = tcp_packet(s6.into(), d6.into(), &f, b"");
        let ip6 = Ipv6Packet::new(&p6).unwrap();
        let t6 = TcpPacket::new(ip6.payload()).unwrap();
        assert_eq!(
            t6.get_checksum(),
            pnet_packet::tcp::ipv6_checksum(&t6, &s6, &d6)
        );
        assert_eq!(parse_tcp(&p6).unwrap().dport, 5555);
    }

    #[test]
    fn icmp_echo_v4_checksum_verifies() {
        let m = icmp_echo_request(false, 0x1234, 7, b"payload!");
        assert_eq!(checksum(&m), 0);
        assert_eq!(m[0], 8);
    }

    #[test]
    fn tcp_flags_parse() {
        assert_eq!(parse_tcp_flags("SA"), Ok(TCP_SYN | TCP_ACK));
        assert_eq!(parse_tcp_flags("rf"), Ok(TCP_RST | TCP_FIN));
        assert!(parse_tcp_flags("AX").unwrap_err().contains("'X'"));
    }
}
