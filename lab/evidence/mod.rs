//! Evidence beyond counters: packet captures (pcap + named counts) and drop reasons
//! (`skb:kfree_skb` in a private tracefs instance), and kernel log lines (`/dev/kmsg`).

pub mod capture;
pub mod drops;
mod kallsyms;
pub mod kmsg;
mod packet_socket;
pub mod pcap;
pub mod tracefs;

pub use crate::model::capture::CaptureSpec;
pub use crate::model::capture_filter::{Filter, FilterError};
pub use crate::model::packet_info::PacketInfo;
pub use capture::{Capture, CaptureSummary, CapturedPacket};
pub use drops::{drops_observations, DropReport, DropTrace};
pub use kmsg::{KmsgSpec, KmsgWatch};
pub use tracefs::{list_instances, remove_instance};
