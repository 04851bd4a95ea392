//! Keyed state in checkpoints: which key groups to write whole, which as
//! a delta on the previous checkpoint's chain, which to point at unchanged;
//! and reading a key group back from its chain.

use super::{CheckpointStore, KeyGroupRef, StoreError, Txn};
use crate::state::{Change, GroupSnapshot, KeyGroup, KeyedState, StateSnapshot};

/// Longest chain of deltas on one whole snapshot before the key group is
/// written whole again, so that a restore reads a bounded number of chunks.
pub const MAX_DELTAS: usize = 8;

/// Writes one subtask's keyed state snapshot: key groups nobody wrote to
/// point at the previous checkpoint's chunks, written ones get a delta
/// chunk (the keys written or removed since the previous checkpoint's
/// snapshot, [`GroupSnapshot::delta`]) on their previous chain, and the
/// rest are written whole: the first time, after a full barrier, when more
/// than half of a group's keys changed, or when a chain would grow past
/// [`MAX_DELTAS`] or past the size of its base. `previous` gives, per key
/// group, the previous checkpoint's ref. Returns the refs, the bytes they
/// cover and the bytes newly written.
///
/// Key groups are independent: they are encoded and hashed on up to
/// [`encode_threads`] threads at once, each taking a contiguous share and
/// writing it as one segment (so a checkpoint is a few large writes, in
/// parallel), and the refs come back in key-group order.
pub fn write_key_groups(
    txn: &Txn<'_>,
    previous: &(dyn Fn(u16) -> Option<KeyGroupRef> + Sync),
    snap: &StateSnapshot,
) -> Result<(Vec<KeyGroupRef>, u64, u64), StoreError> {
    let threads = encode_threads(snap.groups.len());
    if threads <= 1 {
        return write_some(txn, previous, &snap.groups);
    }
    let share = snap.groups.len().div_ceil(threads);
    let parts: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = snap
            .groups
            .chunks(share)
            .map(|part| s.spawn(move || write_some(txn, previous, part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let (mut refs, mut full, mut new) = (Vec::new(), 0u64, 0u64);
    for part in parts {
        let (r, f, n) = part?;
        refs.extend(r);
        full += f;
        new += n;
    }
    Ok((refs, full, new))
}

/// How many threads encode or decode `groups` key groups: one per core,
/// but no more than one per 8 key groups (a thread costs more than a few
/// small groups).
pub fn encode_threads(groups: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(groups / 8).max(1)
}

/// [`write_key_groups`] for a share of the key groups, on one thread.
fn write_some(
    txn: &Txn<'_>,
    previous: &(dyn Fn(u16) -> Option<KeyGroupRef> + Sync),
    groups: &[GroupSnapshot],
) -> Result<(Vec<KeyGroupRef>, u64, u64), StoreError> {
    let (mut refs, mut full, mut new) = (Vec::new(), 0u64, 0u64);
    let mut segment = txn.segment();
    for g in groups {
        let kg = g.key_group.0;
        let base = previous(kg);
        let reused = match (g.change, base) {
            (Change::Unchanged, Some(base)) => Some(base),
            (Change::Written, Some(mut base)) if base.deltas.len() < MAX_DELTAS => g
                .delta()
                .filter(|d| {
                    let chain: u64 = base.deltas.iter().map(|d| d.bytes).sum();
                    chain + d.len() as u64 <= base.bytes
                })
                .map(|d| {
                    let (r, written) = segment.put(&d);
                    new += written;
                    base.deltas.push(r);
                    base
                }),
            _ => None,
        };
        let r = match reused {
            Some(r) => {
                // Its earlier chunks are referenced again: hold them.
                txn.reuse(r.loc());
                r.deltas.iter().for_each(|d| txn.reuse(d.loc()));
                r
            }
            None => {
                let Some(bytes) = g.encode_full() else {
                    continue;
                };
                let (r, written) = segment.put(&bytes);
                new += written;
                KeyGroupRef::whole(kg, r)
            }
        };
        full += r.total_bytes();
        refs.push(r);
        // Bounded in memory: a full segment goes up, the next one starts.
        if segment.len() >= super::store::SEGMENT_MAX {
            txn.finished(std::mem::replace(&mut segment, txn.segment()))?;
        }
    }
    txn.finished(segment)?;
    Ok((refs, full, new))
}

/// Loads one key group from its whole snapshot and deltas into `state`,
/// verifying every chunk. The error says which chunk failed and why.
pub fn read_key_group(
    store: &CheckpointStore,
    r: &KeyGroupRef,
    state: &mut KeyedState,
) -> Result<(), String> {
    read_share(store, &[r], state)
}

/// Loads key groups `refs` into `state`, their chunks read a segment at a
/// time ([`CheckpointStore::get_chunks`]).
fn read_share(
    store: &CheckpointStore,
    refs: &[&KeyGroupRef],
    state: &mut KeyedState,
) -> Result<(), String> {
    let locs: Vec<_> = refs
        .iter()
        .flat_map(|r| std::iter::once(r.loc()).chain(r.deltas.iter().map(|d| d.loc())))
        .collect();
    // The store's errors keep their cause (the I/O error) as a source; this
    // function's one string carries both.
    let chunks = store
        .get_chunks(&locs)
        .map_err(|e| crate::report::chain(&e))?;
    let mut chunks = chunks.into_iter();
    for r in refs {
        let kg = KeyGroup(r.key_group);
        let base = chunks.next().ok_or("a chunk was not read")?;
        state
            .decode_key_group(kg, &base)
            .map_err(|e| e.to_string())?;
        for d in &r.deltas {
            let bytes = chunks.next().ok_or("a chunk was not read")?;
            state
                .apply_key_group_delta(kg, &bytes)
                .map_err(|e| format!("{e} (delta chunk {})", d.chunk.hex()))?;
        }
    }
    Ok(())
}

/// Loads key groups `refs` into `state` (see [`read_key_group`]), on up
/// to [`encode_threads`] threads, each decoding a contiguous share into a
/// state of its own that is then moved into `state`.
pub fn read_key_groups(
    store: &CheckpointStore,
    refs: &[&KeyGroupRef],
    state: &mut KeyedState,
) -> Result<(), String> {
    let threads = encode_threads(refs.len());
    if threads <= 1 {
        return read_share(store, refs, state);
    }
    let share = refs.len().div_ceil(threads);
    let parts: Vec<Result<KeyedState, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = refs
            .chunks(share)
            .map(|part| {
                let mut mine = state.empty_like();
                s.spawn(move || read_share(store, part, &mut mine).map(|()| mine))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for part in parts {
        state.absorb(part?).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointStore as MemStore;
    use crate::state::{KeyGroupRange, StateKind, StateLimits};
    use std::collections::HashMap;

    const GROUPS: u16 = 128;

    fn state() -> KeyedState {
        KeyedState::new(
            u32::from(GROUPS),
            KeyGroupRange {
                start: 0,
                end: GROUPS,
            },
            StateLimits::default(),
        )
    }

    /// Writes a checkpoint of `s` on top of `last`, returning (full, new).
    fn checkpoint(
        store: &MemStore,
        s: &mut KeyedState,
        last: &mut HashMap<u16, KeyGroupRef>,
    ) -> (u64, u64) {
        let snap = s.snapshot(last.is_empty());
        let previous = |kg: u16| last.get(&kg).cloned();
        let (refs, full, new) =
            write_key_groups(&crate::checkpoint::begin(store), &previous, &snap).unwrap();
        *last = refs.into_iter().map(|r| (r.key_group, r)).collect();
        (full, new)
    }

    /// Restores every key group from `last` and checks it equals `s`.
    fn assert_restores(store: &MemStore, s: &KeyedState, last: &HashMap<u16, KeyGroupRef>) {
        let mut restored = state();
        for r in last.values() {
            read_key_group(store, r, &mut restored).unwrap();
        }
        // The same on many threads, into a state whose names were
        // registered in another order (ids are matched by name).
        let mut parallel = state();
        parallel.id("registered-first", StateKind::Value).unwrap();
        let refs: Vec<&KeyGroupRef> = last.values().collect();
        read_key_groups(store, &refs, &mut parallel).unwrap();
        for kg in (0..GROUPS).map(KeyGroup) {
            assert_eq!(
                restored.encode_key_group(kg),
                s.encode_key_group(kg),
                "key group {}",
                kg.0
            );
            assert_eq!(
                parallel.encode_key_group(kg),
                s.encode_key_group(kg),
                "key group {} (parallel restore)",
                kg.0
            );
        }
    }

    #[test]
    fn one_percent_of_keys_changed_writes_under_five_percent() {
        let store = MemStore::in_memory();
        let mut s = state();
        let v = s.id("count", StateKind::Value).unwrap();
        for k in 0..100_000u64 {
            s.value_set(v, format!("key-{k}").as_bytes(), Some(&k.to_le_bytes()))
                .unwrap();
        }
        let mut last = HashMap::new();
        let (full, new) = checkpoint(&store, &mut s, &mut last);
        assert_eq!(full, new, "the first checkpoint writes everything");
        for k in (0..100_000u64).step_by(100) {
            s.value_set(
                v,
                format!("key-{k}").as_bytes(),
                Some(&(k + 1).to_le_bytes()),
            )
            .unwrap();
        }
        let (_, new) = checkpoint(&store, &mut s, &mut last);
        assert!(
            new * 20 <= full,
            "after 1% of keys changed, {new} bytes written of a full {full}"
        );
        assert!(new > 0);
        assert_restores(&store, &s, &last);
        let (_, new) = checkpoint(&store, &mut s, &mut last);
        assert_eq!(new, 0, "nothing changed, nothing written");
    }

    #[test]
    fn deltas_carry_every_kind_of_change_and_chains_are_compacted() {
        let store = MemStore::in_memory();
        let mut s = state();
        let (v, l, m) = (
            s.id("v", StateKind::Value).unwrap(),
            s.id("l", StateKind::List).unwrap(),
            s.id("m", StateKind::Map).unwrap(),
        );
        for k in 0..2_000u32 {
            let key = format!("k{k}").into_bytes();
            s.value_set(v, &key, Some(&k.to_le_bytes())).unwrap();
            s.list_append(l, key.clone(), vec![1]).unwrap();
            s.map_put(m, key, vec![1], Some(vec![1])).unwrap();
        }
        let mut last = HashMap::new();
        checkpoint(&store, &mut s, &mut last);
        let mut longest = 0;
        for round in 0..(MAX_DELTAS as u32 * 2) {
            let key = |k: u32| format!("k{}", k * 37 + round).into_bytes();
            for k in 0..5 {
                s.value_set(v, &key(k), None).unwrap();
                s.list_append(l, key(k), vec![round as u8]).unwrap();
                s.map_put(m, key(k), vec![1], None).unwrap();
                s.map_put(m, key(k), vec![2], Some(vec![round as u8]))
                    .unwrap();
                s.clear(l, &key(k + 10)).unwrap();
            }
            checkpoint(&store, &mut s, &mut last);
            assert_restores(&store, &s, &last);
            longest = longest.max(last.values().map(|r| r.deltas.len()).max().unwrap());
        }
        assert!(longest > 0, "small changes are written as deltas");
        assert!(longest <= MAX_DELTAS, "chains stay bounded: {longest}");
    }

    #[test]
    fn a_full_snapshot_ignores_the_previous_chain() {
        let store = MemStore::in_memory();
        let mut s = state();
        let v = s.id("v", StateKind::Value).unwrap();
        for k in 0..1_000u32 {
            s.value_set(v, format!("k{k}").as_bytes(), Some(b"x"))
                .unwrap();
        }
        let mut last = HashMap::new();
        checkpoint(&store, &mut s, &mut last);
        s.value_set(v, b"k1", Some(b"y")).unwrap();
        // As after a checkpoint that did not complete: write whole.
        let snap = s.snapshot(true);
        let previous = |kg: u16| last.get(&kg).cloned();
        let (refs, _, _) =
            write_key_groups(&crate::checkpoint::begin(&store), &previous, &snap).unwrap();
        assert!(refs.iter().all(|r| r.deltas.is_empty()));
    }
}
