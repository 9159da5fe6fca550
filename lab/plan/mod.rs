//! A lab plan as shell commands (`ip`, `sysctl`, ruleset loaders): what the benches
//! compare faultlab's in-process engine against. Pure: no syscalls.

mod script;

pub use script::*;
