//! Capture filters in tcpdump's own language (pcap-filter(7)), compiled by libpcap
//! (`pcap_compile` on a dead handle of the link type the capture sees) and matched
//! with libpcap's interpreter, so a filter pasted from a tcpdump command line means
//! here exactly what it means there.

use pcap::{BpfProgram, Capture, Linktype};
use std::fmt;

/// The frames a capture hands to the filter (and writes to its pcapng file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// An Ethernet header first (SOCK_RAW on Ethernet and loopback devices).
    Ethernet,
    /// Linux cooked header (SLL): `any` and devices without an Ethernet header.
    LinuxSll,
}

impl LinkType {
    /// LINKTYPE_* number of the pcap and pcapng formats.
    pub fn number(self) -> u16 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
        }
    }

    /// What a capture on `dev` sees, as far as it is known before the device exists:
    /// `any` is cooked; every other device is taken as Ethernet (the capture compiles
    /// again for the link type it finds).
    pub fn of_dev(dev: &str) -> LinkType {
        if dev == "any" {
            LinkType::LinuxSll
        } else {
            LinkType::Ethernet
        }
    }
}

/// A filter libpcap accepted, with its source text.
pub struct PcapFilter {
    pub text: String,
    pub link: LinkType,
    program: BpfProgram,
}

impl fmt::Debug for PcapFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcapFilter({:?}, {:?})", self.text, self.link)
    }
}

/// One classic BPF instruction, as `struct bpf_insn` / `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[repr(C)]
struct RawProgram {
    len: u32,
    insns: *const BpfInsn,
}

#[repr(C)]
struct RawPacketHeader {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

// The pcap crate links libpcap; its `BpfProgram::filter` passes the captured length as
// the wire length too, which would give `len` / `greater` / `less` the wrong meaning
// for a snapped packet, so the matcher calls libpcap's pcap_offline_filter itself.
extern "C" {
    fn pcap_offline_filter(
        prog: *const RawProgram,
        h: *const RawPacketHeader,
        pkt: *const u8,
    ) -> libc::c_int;
}

impl PcapFilter {
    /// Compiles `text` for frames of `link`; the error is libpcap's message.
    pub fn compile(text: &str, link: LinkType) -> Result<PcapFilter, String> {
        let linktype = match link {
            LinkType::Ethernet => Linktype::ETHERNET,
            LinkType::LinuxSll => Linktype::LINUX_SLL,
        };
        let dead = Capture::dead(linktype).map_err(|e| e.to_string())?;
        let program = dead.compile(text, true).map_err(|e| match e {
            pcap::Error::PcapError(m) => m,
            other => other.to_string(),
        })?;
        Ok(PcapFilter {
            text: text.to_string(),
            link,
            program,
        })
    }

    /// The compiled program (what `tcpdump -d` prints, as numbers).
    pub fn instructions(&self) -> Vec<BpfInsn> {
        let insns = self.program.get_instructions();
        // SAFETY: pcap::BpfInstruction is #[repr(transparent)] over libpcap's
        // struct bpf_insn, which has BpfInsn's #[repr(C)] layout.
        unsafe { std::slice::from_raw_parts(insns.as_ptr().cast::<BpfInsn>(), insns.len()) }
            .to_vec()
    }

    /// Whether the frame (captured bytes; `wire_len` bytes on the wire) matches.
    pub fn matches(&self, frame: &[u8], wire_len: u32) -> bool {
        let insns = self.program.get_instructions();
        let prog = RawProgram {
            len: insns.len() as u32,
            insns: insns.as_ptr().cast(),
        };
        let h = RawPacketHeader {
            ts: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            caplen: frame.len() as u32,
            len: wire_len.max(frame.len() as u32),
        };
        // SAFETY: the program lives as long as self; the header's caplen is the frame's
        // length, which bounds every load the interpreter makes.
        unsafe { pcap_offline_filter(&prog, &h, frame.as_ptr()) > 0 }
    }
}

/// Runs an arbitrary classic BPF program with libpcap's interpreter (for tests of
/// programs built from compiled ones).
pub fn run_program(insns: &[BpfInsn], frame: &[u8]) -> bool {
    let prog = RawProgram {
        len: insns.len() as u32,
        insns: insns.as_ptr(),
    };
    let h = RawPacketHeader {
        ts: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        caplen: frame.len() as u32,
        len: frame.len() as u32,
    };
    // SAFETY: as in `matches`; libpcap validates nothing, so callers pass programs
    // made of libpcap's own output (forward jumps inside the program only). An accept
    // may return u32::MAX, which the C int shows as -1.
    unsafe { pcap_offline_filter(&prog, &h, frame.as_ptr()) != 0 }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP 192.0.2.1:sport -> 203.0.113.2:dport with `flags`.
    pub fn tcp_frame(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 203, 0, 113, 2,
        ]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    /// The same frame with an 802.1Q tag (VLAN `id`) after the MAC addresses.
    pub fn tagged(frame: &[u8], id: u16) -> Vec<u8> {
        let mut f = frame[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frame[12..]);
        f
    }

    const RST_ACK: u8 = 0x14;
    const SYN: u8 = 0x02;

    fn m(filter: &str, frame: &[u8]) -> bool {
        PcapFilter::compile(filter, LinkType::Ethernet)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(frame, frame.len() as u32)
    }

    #[test]
    fn tcpdump_primitives_match_and_miss() {
        let http = tcp_frame(40000, 80, SYN);
        let rst = tcp_frame(80, 40000, RST_ACK);
        for f in [
            "tcp port 80",
            "tcp dst port 80",
            "src host 192.0.2.1",
            "dst host 203.0.113.2",
            "net 192.0.2.0/24",
            "portrange 1000-50000",
            "ip and tcp",
            "len == 54",
            "tcp[tcpflags] & tcp-syn != 0",
        ] {
            assert!(m(f, &http), "{f} should match");
        }
        for f in [
            "tcp port 81",
            "udp port 80",
            "tcp src port 80",
            "src host 203.0.113.2",
            "net 10.0.0.0/8",
            "portrange 1000-2000",
            "tcp[tcpflags] & tcp-rst != 0",
            "len > 54",
            "vlan",
            "ip6",
        ] {
            assert!(!m(f, &http), "{f} should not match");
        }
        assert!(m("tcp[tcpflags] & tcp-rst != 0", &rst));
        assert!(m(
            "tcp[tcpflags] & (tcp-rst|tcp-ack) == (tcp-rst|tcp-ack)",
            &rst
        ));
        assert!(!m("tcp[tcpflags] & (tcp-rst|tcp-ack) == tcp-rst", &rst));
    }

    #[test]
    fn vlan_moves_the_rest_of_the_filter_past_the_tag() {
        let plain = tcp_frame(40000, 80, SYN);
        let tagged = tagged(&plain, 10);
        assert!(m("vlan", &tagged));
        assert!(m("vlan 10 and tcp port 80", &tagged));
        assert!(!m("vlan 11", &tagged));
        // As in tcpdump: without `vlan` the tag hides the IP header.
        assert!(!m("tcp port 80", &tagged));
        assert!(!m("vlan and tcp port 80", &plain));
    }

    #[test]
    fn len_is_the_wire_length_even_when_snapped() {
        let f = PcapFilter::compile("greater 1000", LinkType::Ethernet).unwrap();
        let frame = tcp_frame(1, 2, SYN);
        assert!(!f.matches(&frame, frame.len() as u32));
        assert!(f.matches(&frame, 1500));
    }

    #[test]
    fn cooked_frames_need_a_cooked_program() {
        let eth = tcp_frame(40000, 80, SYN);
        // SLL: packet type 4 (outgoing), ARPHRD_ETHER, 6-byte address, protocol IPv4.
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&eth[14..]);
        let f = PcapFilter::compile("tcp port 80", LinkType::LinuxSll).unwrap();
        assert!(f.matches(&sll, sll.len() as u32));
        assert!(!f.matches(&eth, eth.len() as u32));
    }

    #[test]
    fn libpcap_errors_are_its_own_messages() {
        for (f, msg) in [
            ("tcp prot 80", "syntax error"),
            ("port 70000", "illegal port number 70000 > 65535"),
            ("net 10.0.0.1/8", "non-network bits set in \"10.0.0.1/8\""),
            ("tcp[tcpflags] & tcp-rts != 0", "syntax error"),
        ] {
            let e = PcapFilter::compile(f, LinkType::Ethernet).expect_err(f);
            assert!(e.contains(msg), "{f}: {e}");
        }
        assert!(PcapFilter::compile("", LinkType::Ethernet).is_ok());
    }
}
