//! What a run has put on the machine and how it is taken off again, one job per
//! module: the state file ([`store`]), whether a recorded process still lives
//! ([`liveness`]), undoing what a state lists ([`undo`]), the host-sysctl lock
//! ([`host_lock`]) and the sweep of dead runs ([`sweep`]).

pub mod host_lock;
pub mod liveness;
pub mod store;
pub mod sweep;
pub mod undo;

pub use host_lock::{HostLock, HOST_LOCK_FILE};
pub use liveness::{is_alive, process_start_time, terminate};
pub use store::{state_path, Helper, RunState, SavedSysctl, StateFile, STATE_DIR};
pub use sweep::{scratch_dir, sweep_all, sweep_dead, sweep_dead_holding, SCRATCH_PREFIX};
pub use undo::{clean, remove_tracefs_instance, write_host_sysctl, TRACEFS_INSTANCES};
