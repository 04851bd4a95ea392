//! Integration tests of the runtime, linked once: real guest components
//! (built by `wrun-test-guests`), real jobs, and the `wrun` binary.

mod api;
mod checkpoint;
mod common;
mod components;
mod crash;
mod dashboard;
mod datadir;
mod errors;
mod examples;
mod finish;
mod fleet;
mod fuzz;
mod io;
mod kafka;
mod languages;
mod limits;
mod nats;
mod openapi;
mod options;
mod pacing;
mod partition;
mod restore;
mod s3;
mod savepoint;
mod serve;
mod time;
mod timers;
mod wordcount;
