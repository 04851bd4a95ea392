//! Checkpoint storage and the pure decisions around it.
//!
//! Storage (`store`): content-addressed chunks (blake3) and per-job
//! manifests, committed atomically, behind the [`CheckpointStore`] trait
//! with a filesystem implementation rooted at one directory handle and an
//! in-memory one for tests. Decisions (`retention`): which checkpoints to
//! keep, which chunks nothing references, which checkpoint to restore.
//! Keyed state (`keyed`): whole key group snapshots, deltas on them, and
//! reading a key group back. Savepoints (`savepoint`): registries of
//! records, and pins in the store that keep their chunks. This module never reaches into running
//! subtasks: the running job's coordinator (`exec`) drives it
//! (docs/architecture.md, "Layers").

mod keyed;
mod manifest;
mod operator_state;
mod retention;
mod savepoint;
mod store;

pub use keyed::{MAX_DELTAS, encode_threads, read_key_group, read_key_groups, write_key_groups};
pub use manifest::{
    CheckpointId, CheckpointManifest, ChunkHash, ChunkRef, KeyGroupRef, MANIFEST_FORMAT,
    OperatorStateRef, SinkState, SourcePosition, SplitState, StagedRef, SubtaskStateRef,
};
pub use operator_state::{OperatorStateChunk, decode_operator_state, encode_operator_state};
pub use retention::{choose_restore, to_delete, unreferenced_chunks};
pub use savepoint::{
    EXPORT_RECORD, Found, FsSavepoints, MemorySavepoints, SAVEPOINT_FORMAT, Savepoint,
    SavepointBackend, SavepointError, SavepointStore, check_name, dispose, drop_memory_pins,
    ensure_pins, export, exported, find, import, open_export, register,
    resolve as resolve_savepoint,
};
pub use store::{
    CheckpointStore, FsStore, MemStore, PIN_FORMAT, Pin, StoreError, Txn, TxnLock, begin,
    collect_garbage,
};
