//! faultlab: scenario file → namespaces → traffic → kernel counters → verdict table.

pub mod build;
pub mod evidence;
pub mod judge;
pub mod kconfig;
pub mod model;
pub mod mutants;
pub mod netns;
pub mod observe;
pub mod plan;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod traffic;
pub mod verdict;
pub mod vm;
