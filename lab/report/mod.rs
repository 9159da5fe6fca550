//! Output formats of a run: terminal table, JSON, markdown summary, KTAP and JUnit,
//! and its progress while it runs.

mod evidence;
#[cfg(test)]
mod fixture;
mod json;
mod junit;
mod ktap;
mod markdown;
pub mod progress;
mod table;

pub use evidence::{evidence, Totals};
pub use json::{json, read_json};
pub use junit::junit;
pub use ktap::{aborted as ktap_aborted, kselftest, ktap, test_name, Aborted};
pub use markdown::markdown_summary;
pub use table::table;
