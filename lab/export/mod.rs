//! The catalogue in other tools' layouts (a kselftest target), and the kselftest
//! conventions faultlab follows when a fleet runs it.

pub mod kselftest;
