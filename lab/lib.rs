//! faultlab: scenario file → namespaces → traffic → kernel counters → verdict table.

pub mod cli;
pub mod evidence;
pub mod export;
pub mod hostcheck;
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
pub mod setup;
pub mod traffic;
pub mod verdict;
pub mod vm;
