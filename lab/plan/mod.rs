//! Pure planning: scenario file → validated cells → the labs `build` creates.
//! No syscalls here, so everything is testable without root.

mod cell;
mod expand;
mod model;
mod script;

pub use cell::*;
pub use expand::expand_cells;
pub use model::*;
pub use script::*;
