//! Pure decisions: what to keep, what to delete, what to restore. No I/O;
//! the caller reads and writes the store.

use super::manifest::CheckpointId;
use crate::blob::BlobMeta;
use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

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

/// The objects garbage collection deletes: those no kept manifest or pin
/// references (`referenced`), that no transaction of this process held
/// (`held`), and that were last written before `cutoff` (the collection's
/// start minus the grace period).
pub fn garbage(
    objects: &[BlobMeta],
    referenced: &HashSet<String>,
    held: &HashSet<String>,
    cutoff: SystemTime,
) -> Vec<String> {
    objects
        .iter()
        .filter(|o| !referenced.contains(&o.key) && !held.contains(&o.key))
        .filter(|o| o.modified <= cutoff)
        .map(|o| o.key.clone())
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
    use std::time::Duration;

    fn ids(v: &[u64]) -> Vec<CheckpointId> {
        v.iter().map(|&i| CheckpointId(i)).collect()
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
    fn gc_deletes_exactly_the_old_unreferenced_unheld_objects() {
        let now = SystemTime::now();
        let obj = |key: &str, age: u64| BlobMeta {
            key: key.into(),
            size: 1,
            modified: now - Duration::from_secs(age),
        };
        let objects = [
            obj("segments/a", 100),
            obj("segments/b", 100),
            obj("segments/c", 100),
            obj("segments/young", 5),
            obj("chunks/ab/old", 100),
        ];
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let cutoff = now - Duration::from_secs(10);
        assert_eq!(
            garbage(
                &objects,
                &set(&["segments/a"]),
                &set(&["segments/b"]),
                cutoff
            ),
            vec!["segments/c", "chunks/ab/old"],
            "referenced, held and young objects stay"
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
