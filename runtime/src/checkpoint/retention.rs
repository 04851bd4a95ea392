//! Pure decisions: what to keep, what to delete, what to restore. No I/O;
//! the caller reads and writes the store.

use super::manifest::{CheckpointId, CheckpointManifest, ChunkHash};
use std::collections::{BTreeSet, HashSet};

/// The checkpoints retention deletes: all but the newest `keep` and the
/// pinned ones (savepoints point at checkpoints and pin them).
pub fn to_delete(
    existing: &[CheckpointId],
    keep: usize,
    pinned: &BTreeSet<CheckpointId>,
) -> Vec<CheckpointId> {
    let mut sorted: Vec<CheckpointId> = existing.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    sorted
        .into_iter()
        .skip(keep)
        .filter(|id| !pinned.contains(id))
        .collect()
}

/// The chunks no kept manifest references. (Chunks of a checkpoint still
/// being written are safe by the store's transactions, not by this.)
pub fn unreferenced_chunks<'a>(
    all: &[ChunkHash],
    kept: impl IntoIterator<Item = &'a CheckpointManifest>,
) -> Vec<ChunkHash> {
    let referenced: HashSet<ChunkHash> = kept
        .into_iter()
        .flat_map(|m| m.chunks().collect::<Vec<_>>())
        .collect();
    all.iter()
        .filter(|c| !referenced.contains(c))
        .copied()
        .collect()
}

/// The checkpoint to restore: the newest one that `usable` accepts (its
/// manifest reads and its chunks verify). Returns it with the reasons the
/// newer ones were skipped.
pub fn choose_restore<E: std::fmt::Display>(
    existing: &[CheckpointId],
    mut usable: impl FnMut(CheckpointId) -> Result<(), E>,
) -> (Option<CheckpointId>, Vec<(CheckpointId, String)>) {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut skipped = Vec::new();
    for id in sorted {
        match usable(id) {
            Ok(()) => return (Some(id), skipped),
            Err(e) => skipped.push((id, e.to_string())),
        }
    }
    (None, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{KeyGroupRef, MANIFEST_FORMAT, OperatorStateRef};

    fn ids(v: &[u64]) -> Vec<CheckpointId> {
        v.iter().map(|&i| CheckpointId(i)).collect()
    }

    fn manifest(id: u64, chunks: &[u8]) -> CheckpointManifest {
        CheckpointManifest {
            format: MANIFEST_FORMAT,
            job: "j".into(),
            id: CheckpointId(id),
            triggered_at_ms: 0,
            duration_ms: 0,
            graph_fingerprint: String::new(),
            max_parallelism: 128,
            operators: vec![OperatorStateRef {
                operator_id: "00".into(),
                uid: None,
                name: "op".into(),
                parallelism: 1,
                module: String::new(),
                state_format: None,
                key_groups: chunks
                    .iter()
                    .map(|&c| KeyGroupRef {
                        key_group: u16::from(c),
                        chunk: ChunkHash([c; 32]),
                        bytes: 1,
                        deltas: vec![],
                    })
                    .collect(),
                operator_state: vec![],
            }],
            sources: vec![],
            sinks: vec![],
            full_bytes: 0,
            new_bytes: 0,
            input_ended: false,
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_the_pinned() {
        let pinned = BTreeSet::from([CheckpointId(2)]);
        assert_eq!(to_delete(&ids(&[1, 2, 3, 4, 5]), 3, &pinned), ids(&[1]));
        assert_eq!(to_delete(&ids(&[5, 1, 4]), 3, &BTreeSet::new()), ids(&[]));
        assert_eq!(
            to_delete(&ids(&[1, 2, 3, 4, 5]), 1, &BTreeSet::new()),
            ids(&[4, 3, 2, 1])
        );
    }

    #[test]
    fn gc_deletes_exactly_what_nothing_references() {
        let kept = [manifest(3, &[1, 2]), manifest(4, &[2, 3])];
        let all: Vec<ChunkHash> = (1..=5).map(|c| ChunkHash([c; 32])).collect();
        assert_eq!(
            unreferenced_chunks(&all, &kept),
            vec![ChunkHash([4; 32]), ChunkHash([5; 32])]
        );
    }

    #[test]
    fn restore_falls_back_past_unusable_checkpoints() {
        let (chosen, skipped) = choose_restore(&ids(&[3, 5, 4]), |id| {
            if id.0 == 5 {
                Err("chunk corrupt")
            } else {
                Ok(())
            }
        });
        assert_eq!(chosen, Some(CheckpointId(4)));
        assert_eq!(
            skipped,
            vec![(CheckpointId(5), "chunk corrupt".to_string())]
        );
        let (none, skipped) = choose_restore(&ids(&[1]), |_| Err("gone"));
        assert_eq!((none, skipped.len()), (None, 1));
    }
}
