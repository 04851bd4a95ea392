//! Paths of the repository's guest components, built by this crate's build
//! script (see `xtask`). Tests and benchmarks load components from here so
//! a test run builds each guest once.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
