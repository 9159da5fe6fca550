//! The ground floor: what a scenario means once it is loaded, as plain typed data.
//!
//! The scenario loader produces these types; the runner, traffic generators,
//! evidence collectors and observers consume them. This module imports nothing
//! else of the crate, so data flows one way.

pub mod capture;
pub mod cell;
pub mod ct_filter;
pub mod expr;
pub mod host_check;
pub mod ip_rule;
pub mod kernel;
pub mod kmsg;
pub mod lab;
pub mod packet_info;
pub mod pcap_filter;
pub mod steps;
pub mod sysctl_key;

pub use cell::*;
pub use expr::Expectation;
pub use ip_rule::{IpRuleAction, IpRulePlan};
pub use lab::*;
