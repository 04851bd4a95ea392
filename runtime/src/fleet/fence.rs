//! The fence of a job's owner (`exec::Fence`) on etcd: every reservation
//! and commit is one transaction that succeeds only while `owners/<job>`
//! still holds exactly the owner record this node was given. The scheduler
//! raises the epoch whenever it moves the job, so an owner cut off from the
//! fleet (or paused, and back) can write nothing that counts: its
//! transaction finds another value and fails, and it stops the job.

use super::{COMMITTED_KEPT, Committed, Etcd, key};
use crate::exec::{Fence, FenceError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// One owner's fence for one job.
pub struct EtcdFence {
    etcd: Arc<Etcd>,
    job: String,
    /// The exact bytes of `owners/<job>` this owner was given.
    owner: Vec<u8>,
    /// The epoch in them, for messages.
    epoch: u64,
    /// `checkpoints/<job>` as this owner last wrote or read it: while it
    /// owns the job, no one else writes it.
    state: Mutex<Option<Committed>>,
}

impl std::fmt::Debug for EtcdFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdFence")
            .field("job", &self.job)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl EtcdFence {
    /// The fence of the owner whose record in `owners/<job>` is `owner`.
    pub fn new(etcd: Arc<Etcd>, job: &str, owner: Vec<u8>, epoch: u64) -> EtcdFence {
        EtcdFence {
            etcd,
            job: job.to_string(),
            owner,
            epoch,
            state: Mutex::new(None),
        }
    }

    /// The epoch this owner holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn state(&self) -> Result<Committed, FenceError> {
        if let Some(s) = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(s);
        }
        let kv = self
            .etcd
            .get(&key("checkpoints", &self.job))
            .map_err(|e| FenceError::Unavailable(e.to_string()))?;
        let s = match kv {
            Some(kv) => serde_json::from_slice(kv.value()).map_err(|e| {
                FenceError::Unavailable(format!(
                    "the committed checkpoints of job '{}' in etcd are unreadable: {e}",
                    self.job
                ))
            })?,
            None => Committed::default(),
        };
        Ok(s)
    }

    /// Writes `next` as the job's committed state if this owner still owns
    /// the job.
    fn write(&self, next: Committed, what: &str) -> Result<(), FenceError> {
        let value = serde_json::to_vec(&next)
            .map_err(|e| FenceError::Unavailable(format!("cannot encode {what}: {e}")))?;
        let owners = key("owners", &self.job);
        let txn = Txn::new()
            .when([Compare::value(
                owners.as_str(),
                CompareOp::Equal,
                self.owner.clone(),
            )])
            .and_then([TxnOp::put(key("checkpoints", &self.job), value, None)]);
        let r = self
            .etcd
            .txn(txn)
            .map_err(|e| FenceError::Unavailable(format!("cannot {what}: {e}")))?;
        if !r.succeeded() {
            return Err(FenceError::Fenced(format!(
                "job '{}' has another owner than this node (epoch {}) now; cannot {what}",
                self.job, self.epoch
            )));
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
        Ok(())
    }
}

impl Fence for EtcdFence {
    fn committed(&self) -> Result<(BTreeSet<u64>, u64), FenceError> {
        let s = self.state()?;
        Ok((s.ids.iter().copied().collect(), s.next))
    }

    fn reserve(&self, id: u64) -> Result<(), FenceError> {
        let mut s = self.state()?;
        s.next = s.next.max(id + 1);
        self.write(s, &format!("reserve checkpoint {id}"))
    }

    fn commit(&self, id: u64) -> Result<(), FenceError> {
        let mut s = self.state()?;
        s.next = s.next.max(id + 1);
        if !s.ids.contains(&id) {
            s.ids.push(id);
        }
        let over = s.ids.len().saturating_sub(COMMITTED_KEPT);
        s.ids.drain(..over);
        self.write(s, &format!("commit checkpoint {id}"))
    }
}
