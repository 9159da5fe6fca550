//! What building a lab does, as data: the one walk over a plan's kernel operations
//! ([`ops`]) and the same lab as shell commands (`ip`, `sysctl`, ruleset loaders), what
//! the benches compare faultlab's in-process engine against. Pure: no syscalls.

pub mod ops;
mod script;

pub use ops::{build_ops, Op, PlannedOp, Stage};
pub use script::*;
