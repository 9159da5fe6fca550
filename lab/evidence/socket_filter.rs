//! The classic BPF program a capture attaches to its packet socket (SO_ATTACH_FILTER):
//! the union of the capture's libpcap-compiled filters, so the kernel drops a packet
//! none of them can match before it is queued to userspace, where each filter is then
//! matched on its own.
//!
//! libpcap does the equivalent inside `pcap_setfilter`, but only for a live handle it
//! opened itself; faultlab opens the socket (inside a lab namespace, with its own
//! timestamps and loss counters), so the two adjustments libpcap makes are redone here,
//! each where it is done.

use crate::model::pcap_filter::{BpfInsn, LinkType, PcapFilter};

const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_RET: u16 = 0x06;
const BPF_JMP: u16 = 0x05;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
/// Kernel ancillary loads (linux/filter.h): offsets from SKF_AD_OFF.
const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
const SKF_AD_PROTOCOL: u32 = 0;
const SKF_AD_PKTTYPE: u32 = 4;
const SKF_AD_VLAN_TAG_PRESENT: u32 = 48;
const SLL_HDR_LEN: u32 = 16;
/// The kernel's limit on a classic program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// The program that accepts a packet when any of `filters` (compiled for `link`)
/// accepts it, or `None` when the kernel cannot run it (userspace then filters alone).
///
/// - Frames with a VLAN tag are always accepted: the kernel strips the tag into skb
///   metadata before the packet reaches a packet socket (`skb_vlan_untag` in
///   `__netif_receive_skb_core`; hardware-accelerated tags on transmit), while the
///   userspace matcher sees the tag re-inserted, as libpcap re-inserts it; a program
///   compiled without libpcap's kernel-only VLAN extensions would judge the untagged
///   form wrongly.
/// - Cooked captures use SOCK_DGRAM, where the kernel runs the program on the packet
///   without a link-layer header: loads are moved down by the 16-byte SLL header and
///   the two header fields libpcap reads become ancillary loads (libpcap's
///   `fix_offset` in pcap-linux.c does the same; a load from any other header field
///   makes the program unusable in the kernel).
/// - An accepted packet is kept whole (the return value is the snap length the kernel
///   cuts to); the pcapng writer applies the capture's snaplen.
pub fn kernel_program(filters: &[&PcapFilter], link: LinkType) -> Option<Vec<BpfInsn>> {
    let programs: Vec<Vec<BpfInsn>> = filters.iter().map(|f| f.instructions()).collect();
    let mut out = vec![
        insn(
            BPF_LD | BPF_B | BPF_ABS,
            0,
            0,
            SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT,
        ),
        insn(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0),
        insn(BPF_RET | BPF_K, 0, 0, u32::MAX),
    ];
    let total: usize = programs.iter().map(Vec::len).sum();
    if programs.is_empty() || out.len() + total + 1 > MAX_INSNS {
        return None;
    }
    for prog in programs {
        for (i, ins) in prog.iter().enumerate() {
            let mut ins = *ins;
            if ins.code == BPF_RET | BPF_K {
                if ins.k == 0 {
                    // Rejected by this filter: on to the next one (or the final reject).
                    ins = insn(BPF_JMP | BPF_JA, 0, 0, (prog.len() - 1 - i) as u32);
                } else {
                    ins.k = u32::MAX;
                }
            } else if link == LinkType::LinuxSll && !fix_cooked_offset(&mut ins) {
                return None;
            }
            out.push(ins);
        }
    }
    out.push(insn(BPF_RET | BPF_K, 0, 0, 0));
    Some(out)
}

/// Moves one instruction of a program compiled for DLT_LINUX_SLL onto the SOCK_DGRAM
/// packet; false when it reads a header field the kernel has no ancillary load for.
fn fix_cooked_offset(ins: &mut BpfInsn) -> bool {
    let class = ins.code & 0x07;
    let mode = ins.code & 0xe0;
    let loads_packet =
        (class == BPF_LD || class == BPF_LDX) && matches!(mode, BPF_ABS | BPF_IND | BPF_MSH);
    if !loads_packet || ins.k >= SKF_AD_OFF {
        return true;
    }
    if ins.k >= SLL_HDR_LEN {
        ins.k -= SLL_HDR_LEN;
    } else if ins.k == 0 {
        ins.k = SKF_AD_OFF + SKF_AD_PKTTYPE;
    } else if ins.k == 14 {
        ins.k = SKF_AD_OFF + SKF_AD_PROTOCOL;
    } else {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pcap_filter::run_program;
    use crate::model::pcap_filter::tests::{tagged, tcp_frame};

    fn compiled(texts: &[&str]) -> Vec<PcapFilter> {
        texts
            .iter()
            .map(|t| PcapFilter::compile(t, LinkType::Ethernet).unwrap())
            .collect()
    }

    /// libpcap's interpreter fails the ancillary VLAN load (it knows no SKF_AD_*), so
    /// the tests run the program without the three-instruction prologue.
    fn userspace_part(p: &[BpfInsn]) -> &[BpfInsn] {
        assert_eq!(p[0].k, SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT);
        &p[3..]
    }

    #[test]
    fn union_accepts_what_any_filter_accepts() {
        let filters = compiled(&["tcp dst port 80", "tcp[tcpflags] & tcp-rst != 0", "udp"]);
        let refs: Vec<&PcapFilter> = filters.iter().collect();
        let prog = kernel_program(&refs, LinkType::Ethernet).unwrap();
        let body = userspace_part(&prog);
        let frames = [
            (tcp_frame(40000, 80, 0x02), true),
            (tcp_frame(80, 40000, 0x14), true),
            (tcp_frame(80, 40000, 0x10), false),
            (tcp_frame(40000, 81, 0x02), false),
        ];
        for (frame, want) in &frames {
            let any = filters.iter().any(|f| f.matches(frame, frame.len() as u32));
            assert_eq!(any, *want);
            assert_eq!(run_program(body, frame), *want, "{frame:?}");
        }
        // Every accept keeps the whole packet; the last instruction rejects.
        assert!(prog
            .iter()
            .filter(|i| i.code == BPF_RET | BPF_K)
            .all(|i| i.k == u32::MAX || i.k == 0));
        assert_eq!(prog.last().unwrap().k, 0);
    }

    #[test]
    fn vlan_filters_in_a_union_keep_their_own_offsets() {
        // libpcap's `vlan` shifts every later offset of the same expression, so
        // `vlan or udp` as one text would look for UDP behind a tag; the union of
        // separately compiled programs does not.
        let filters = compiled(&["vlan and tcp", "tcp port 80"]);
        let refs: Vec<&PcapFilter> = filters.iter().collect();
        let prog = kernel_program(&refs, LinkType::Ethernet).unwrap();
        let plain = tcp_frame(40000, 80, 0x02);
        assert!(run_program(userspace_part(&prog), &plain));
        assert!(run_program(userspace_part(&prog), &tagged(&plain, 7)));
    }

    #[test]
    fn cooked_program_reads_the_packet_without_the_sll_header() {
        let f = PcapFilter::compile("tcp port 80", LinkType::LinuxSll).unwrap();
        let prog = kernel_program(&[&f], LinkType::LinuxSll).unwrap();
        // The protocol field (SLL offset 14) became the ancillary protocol load.
        assert!(prog
            .iter()
            .any(|i| i.code == BPF_LD | 0x08 | BPF_ABS && i.k == SKF_AD_OFF + SKF_AD_PROTOCOL));
        // The TCP port load: 16 (SLL) + 2 in the cooked program, 2 here.
        let orig = f.instructions();
        let ind: Vec<u32> = orig
            .iter()
            .filter(|i| i.code & 0x07 == BPF_LD && i.code & 0xe0 == BPF_IND)
            .map(|i| i.k)
            .collect();
        let fixed: Vec<u32> = prog
            .iter()
            .filter(|i| i.code & 0x07 == BPF_LD && i.code & 0xe0 == BPF_IND)
            .map(|i| i.k)
            .collect();
        assert!(!ind.is_empty());
        assert_eq!(
            fixed,
            ind.iter().map(|k| k - SLL_HDR_LEN).collect::<Vec<_>>()
        );
        // A filter on the SLL address bytes cannot run in the kernel.
        let mac = PcapFilter::compile("ether[6] == 2", LinkType::LinuxSll);
        if let Ok(mac) = mac {
            assert_eq!(kernel_program(&[&mac], LinkType::LinuxSll), None);
        }
    }
}
