//! Garbage collection of chunks: the I/O around
//! [`unreferenced_chunks`](super::unreferenced_chunks).

use super::manifest::{CheckpointManifest, ChunkHash};
use super::retention::unreferenced_chunks;
use super::savepoint::Savepoint;
use super::store::{CheckpointStore, StoreError};
use std::collections::HashSet;
use std::sync::{RwLock, RwLockReadGuard};

/// Writers of chunks that no committed manifest or savepoint references
/// yet hold this shared; the collector holds it exclusively. Without it,
/// one job's collector (or a dispose) could delete the chunks another job's
/// checkpoint has just written (or found already there) before that
/// checkpoint's manifest commits. One process owns a data directory (its
/// lock file), so a process-wide lock covers every writer.
static WRITERS: RwLock<()> = RwLock::new(());

/// Held while writing chunks and then committing what references them.
pub fn write_guard() -> RwLockReadGuard<'static, ()> {
    WRITERS.read().unwrap_or_else(|p| p.into_inner())
}

/// Deletes every chunk that no checkpoint of any job in the store and no
/// savepoint `savepoints` lists references, and returns them. Chunks are
/// shared by every job, so a manifest that cannot be read stops the GC:
/// deleting what it might reference could lose state. `savepoints` is
/// called under the collector's lock, so a savepoint registered while the
/// collector waited for it counts.
pub fn collect_garbage(
    store: &dyn CheckpointStore,
    savepoints: impl FnOnce() -> Result<Vec<Savepoint>, StoreError>,
) -> Result<Vec<ChunkHash>, StoreError> {
    let _exclusive = WRITERS.write().unwrap_or_else(|p| p.into_inner());
    let mut kept: Vec<CheckpointManifest> =
        savepoints()?.iter().map(|s| s.checkpoint.clone()).collect();
    for job in store.list_jobs()? {
        for id in store.list_checkpoints(&job)? {
            kept.push(store.get_manifest(&job, id)?);
        }
    }
    let dead = unreferenced_chunks(&store.list_chunks()?, &kept, &HashSet::new());
    for chunk in &dead {
        store.delete_chunk(chunk)?;
    }
    Ok(dead)
}
