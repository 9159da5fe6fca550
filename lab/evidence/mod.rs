//! Evidence beyond counters: packet captures (pcapng + named counts, tcpdump filters) and drop reasons
//! (`skb:kfree_skb` in a private tracefs instance), and kernel log lines (`/dev/kmsg`).

pub mod bpf;
pub mod capture;
pub mod drops;
mod kallsyms;
pub mod kmsg;
mod packet_socket;
pub mod pcap;
mod socket_filter;
pub mod splat;
pub mod tracefs;

pub use crate::model::capture::CaptureSpec;
pub use crate::model::packet_info::PacketInfo;
pub use crate::model::pcap_filter::{LinkType, PcapFilter};
pub use capture::{Capture, CaptureSummary, CapturedPacket, CounterTiming};
pub use drops::{
    drops_observations, drops_observations_zero_filled, parse_reason_list, DropMethod, DropReport,
    DropTargets, DropTrace,
};
pub use kmsg::{KmsgSpec, KmsgWatch};
pub use splat::{SplatReport, SplatWatch};
pub use tracefs::{list_instances, remove_instance};
