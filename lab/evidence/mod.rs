//! Evidence beyond counters: packet captures (pcap + named counts) and drop reasons
//! (`skb:kfree_skb` in a private tracefs instance), and kernel log lines (`/dev/kmsg`).

pub mod capture;
pub mod drops;
pub mod filter;
mod kallsyms;
pub mod kmsg;
pub mod packet;
mod packet_socket;
pub mod pcap;
pub mod tracefs;

pub use capture::{Capture, CaptureSpec, CaptureSummary, CapturedPacket};
pub use drops::{drops_observations, DropReport, DropTrace};
pub use filter::{Filter, FilterError};
pub use kmsg::{KmsgSpec, KmsgWatch};
pub use packet::PacketInfo;
pub use tracefs::{list_instances, remove_instance};
