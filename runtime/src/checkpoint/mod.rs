//! Checkpoint storage and the pure decisions around it.
//!
//! Storage (`store`): content-addressed chunks (blake3) and per-job
//! manifests, committed atomically, behind the [`CheckpointStore`] trait
//! with a filesystem implementation rooted at one directory handle and an
//! in-memory one for tests. Decisions (`retention`): which checkpoints to
//! keep, which chunks nothing references, which checkpoint to restore.
//! This module never reaches into running subtasks: the running job drives
//! it (DESIGN.md, "Layers").
//!
//! Status: the storage layer and decisions are complete and tested; the
//! barrier-driven coordinator that fills them from a running job is the
//! next step of the checkpoint work.

mod manifest;
mod retention;
mod store;

pub use manifest::{
    CheckpointId, CheckpointManifest, ChunkHash, KeyGroupRef, MANIFEST_FORMAT, OperatorStateRef,
    SinkState, SourcePosition, SubtaskStateRef,
};
pub use retention::{choose_restore, to_delete, unreferenced_chunks};
pub use store::{CheckpointStore, FsStore, MemStore, StoreError};
