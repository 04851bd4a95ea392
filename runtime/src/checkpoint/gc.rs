//! Garbage collection of chunks: the I/O around
//! [`unreferenced_chunks`](super::unreferenced_chunks).

use super::manifest::{CheckpointManifest, ChunkHash};
use super::retention::unreferenced_chunks;
use super::savepoint::Savepoint;
use super::store::{CheckpointStore, StoreError};
use std::collections::HashSet;

/// Deletes every chunk that no checkpoint of any job in the store and no
/// savepoint in `savepoints` references, and returns them. Chunks are
/// shared by every job, so a manifest that cannot be read stops the GC:
/// deleting what it might reference could lose state.
pub fn collect_garbage(
    store: &dyn CheckpointStore,
    savepoints: &[Savepoint],
) -> Result<Vec<ChunkHash>, StoreError> {
    let mut kept: Vec<CheckpointManifest> =
        savepoints.iter().map(|s| s.checkpoint.clone()).collect();
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
