//! The namespace engine: named network namespaces (iproute2-compatible), running code
//! and programs inside them, sysctls, and typed rtnetlink operations. No `ip` processes.

pub mod changes;
pub mod ctnetlink;
pub mod exec;
pub mod ip_rules;
pub mod netlink;
pub mod nft;
pub mod ns;
pub mod sysctl;
#[cfg(all(test, feature = "lab"))]
pub mod throwaway;

pub use exec::{command, output_in, ExecError};
pub use netlink::{with_netlink, Netlink};
pub use ns::{create, delete, enter, exists, list, open, path_of, run_in, NETNS_RUN_DIR};
pub use sysctl::{sysctl_read, sysctl_write};
