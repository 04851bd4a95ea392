//! Keyed state owned by the host: key groups and the per-subtask backend.
//!
//! State is addressed by (operator, state name, key group), never by subtask
//! index: a key belongs to the key group `xxh3_64(key) % max_parallelism`,
//! and each subtask owns a contiguous range of key groups. That is what lets
//! a job resume at another parallelism. This module knows nothing of
//! execution or of Wasm.

mod backend;
mod keygroup;
mod snapshot;
pub mod timers;

pub use backend::{
    Change, DumpValue, GroupSnapshot, KeyedState, Refresh, StateError, StateKind, StateLimits,
    StateSnapshot, StateStats, TTL_PREFIX, Ttl,
};
pub use keygroup::{KeyGroup, KeyGroupRange, key_group_of, subtask_for_key_group};
pub use snapshot::SnapshotError;
pub use timers::{Domain, TIMERS_STATE, Timer, TimerQueue, is_reserved};
