//! wrun: a stream job runtime whose operators are WebAssembly components.
//!
//! Data flows one way: manifest ([`job`]) → job graph → deployment
//! ([`module`] resolved, [`sandbox`] compiled, IDs fixed) → running
//! subtasks ([`exec`]) over host-owned keyed [`state`] → [`checkpoint`]s
//! and savepoints. Running jobs are reached through the HTTP [`api`]. The
//! `wrun` binary ([`cli`]) drives it. See docs/architecture.md.

pub mod api;
pub mod batch;
pub mod blob;
pub mod catalog;
pub mod checkpoint;
pub mod cli;
pub mod connect;
pub mod datadir;
pub mod deployment;
pub mod exec;
pub(crate) mod fault;
pub mod fleet;
pub mod fsutil;
pub mod ids;
pub mod job;
pub mod module;
pub mod names;
pub mod report;
pub mod sandbox;
pub mod serve;
pub mod state;
pub mod time;
