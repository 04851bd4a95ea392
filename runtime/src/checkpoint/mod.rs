//! Checkpoint storage and the pure decisions around it.
//!
//! Storage (`store`): the checkpoint repository over a blob store (a
//! directory, S3, memory: `crate::blob`): chunks verified by blake3 and
//! written as segments, per-job manifests created once, pins, and garbage
//! collection by marking with a grace period. Decisions (`retention`):
//! which checkpoints to keep, which objects to delete, which checkpoint to
//! restore.
//! Keyed state (`keyed`): whole key group snapshots, deltas on them, and
//! reading a key group back. Savepoints (`savepoint`): registries of
//! records, and pins in the store that keep their chunks. This module never reaches into running
//! subtasks: the running job's coordinator (`exec`) drives it
//! (docs/architecture.md, "Layers").

mod keyed;
mod manifest;
mod operator_state;
mod registry;
mod retention;
mod savepoint;
mod store;

pub use keyed::{MAX_DELTAS, encode_threads, read_key_group, read_key_groups, write_key_groups};
pub use manifest::{
    CheckpointId, CheckpointManifest, ChunkHash, ChunkRef, KeyGroupRef, Loc, MANIFEST_FORMAT,
    MANIFEST_FORMATS_READ, OperatorStateRef, SinkState, SourcePosition, Span, SplitState,
    StagedRef, SubtaskStateRef,
};
pub use operator_state::{OperatorStateChunk, decode_operator_state, encode_operator_state};
pub use registry::BlobSavepoints;
pub use retention::{choose_restore, garbage, to_delete};
pub use savepoint::{
    EXPORT_RECORD, Found, FsSavepoints, MemorySavepoints, SAVEPOINT_FORMAT, Savepoint,
    SavepointBackend, SavepointError, SavepointStore, check_name, dispose, drop_memory_pins,
    ensure_pins, export, exported, find, import, open_export, register,
    resolve as resolve_savepoint,
};
pub use store::{
    CheckpointStore, PIN_FORMAT, Pin, SegmentWriter, StoreError, Txn, begin, collect_garbage,
    object_key,
};
