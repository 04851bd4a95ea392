//! Ownership of a job's checkpoints, where more than one process could run
//! the job (a fleet, docs/fleet.md). The coordinator asks its [`Fence`]
//! before it writes a checkpoint's manifest (`reserve`: the ID is this
//! owner's, so no two owners ever write the same manifest) and after
//! (`commit`: the checkpoint becomes one the job may restore from, and
//! only then are the sinks told to commit). A fence that answers
//! [`FenceError::Fenced`] has lost the job to another owner: the job ends
//! at once, without a restart. Restores consider only committed
//! checkpoints. Without a fence (one process, `wrun run`, a plain `wrun
//! serve`), every manifest in the store is committed by being written.

use std::collections::BTreeSet;

/// A fence that refused, or could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FenceError {
    /// Another owner holds the job now: this one must write nothing more.
    #[error("{0}")]
    Fenced(String),
    /// The fence could not be asked (its store is unreachable): this
    /// checkpoint fails, a later one may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// What an owner may write and restore (see the module's docs).
pub trait Fence: Send + Sync {
    /// The checkpoint IDs committed so far (the newest ones kept), and the
    /// lowest ID this owner may still use.
    fn committed(&self) -> Result<(BTreeSet<u64>, u64), FenceError>;
    /// Claims `id` for this owner before its manifest is written.
    fn reserve(&self, id: u64) -> Result<(), FenceError>;
    /// Commits checkpoint `id`, whose manifest is durable.
    fn commit(&self, id: u64) -> Result<(), FenceError>;
}

impl From<FenceError> for super::ExecError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::Fenced(m) => super::ExecError::Fenced(m),
            FenceError::Unavailable(m) => super::ExecError::Restore { id: 0, detail: m },
        }
    }
}
