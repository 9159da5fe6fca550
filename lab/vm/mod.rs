//! Kernel matrix: run faultlab under other kernels in QEMU (`faultlab vm`), and
//! compare verdicts across kernels (`faultlab diff`).
//!
//! Pure parts (apt configuration, package resolution parsing, module ordering,
//! cpio, guest scripts, console markers, QEMU arguments, diff) are unit-tested;
//! `kernel`, `initramfs`, `virtiofsd`, `boot` and `run` touch the system.

pub mod apt;
pub mod boot;
pub mod cpio;
pub mod diff;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod marker;
pub mod modules;
pub mod preload;
pub mod qemu;
pub mod record;
pub mod run;
pub mod spec;
pub mod virtiofsd;

pub use boot::{EXIT_INFRA, EXIT_TIMEOUT};
pub use run::{run, AccelChoice, ShareChoice, VmOptions};
pub use spec::KernelSpec;
