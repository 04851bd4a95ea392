//! The byte encoding of one key group's state, for checkpoints.
//!
//! Deterministic: the same state gives the same bytes whatever the order it
//! was written in (state names and keys are sorted), so an unchanged key
//! group hashes to the same chunk and is not written again. The format is
//! documented in docs/state-format.md ("Key group snapshots").

use super::backend::{GroupSnapshot, KeyMap, KeyedState, Stamped, StateKind, StateSnapshot, Table};
use super::keygroup::KeyGroup;
use std::borrow::Borrow;

const MAGIC: &[u8; 4] = b"WRKG";
const VERSION: u8 = 1;
/// A delta: the keys written since the previous checkpoint, each with its
/// whole new state or a removal mark. Applied on top of a `WRKG` chunk.
const DELTA_MAGIC: &[u8; 4] = b"WRKD";
const DELTA_VERSION: u8 = 1;

/// A key group snapshot that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("key group {key_group} snapshot is unreadable: {detail}")]
pub struct SnapshotError {
    /// The key group.
    pub key_group: u16,
    /// What is wrong.
    pub detail: String,
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

impl StateSnapshot {
    /// Encodes every non-empty key group of the snapshot whole.
    pub fn encode(&self) -> Vec<(u16, Vec<u8>)> {
        self.groups
            .iter()
            .filter_map(|g| g.encode_full().map(|b| (g.key_group.0, b)))
            .collect()
    }
}

/// Changed keys of one state: each key with its new state, or `None` when
/// it was removed.
type Changed<'a, V> = Vec<(&'a [u8], Option<&'a V>)>;

/// One state's changed keys between two snapshots of a key group.
enum Diff<'a> {
    Value(Changed<'a, super::backend::InlineBytes>),
    List(Changed<'a, Vec<Vec<u8>>>),
    Map(Changed<'a, KeyMap>),
}

impl Diff<'_> {
    fn len(&self) -> usize {
        match self {
            Diff::Value(v) => v.len(),
            Diff::List(v) => v.len(),
            Diff::Map(v) => v.len(),
        }
    }
}

/// The keys of `table` written in `epoch` (with their state), and the
/// keys of `removed` that `table` no longer holds (removed); sorted by key.
/// `None` when there are more than `budget`.
fn changed<'a, K, V>(
    table: &'a std::collections::HashMap<K, Stamped<V>, foldhash::fast::RandomState>,
    epoch: u64,
    removed: impl Iterator<Item = &'a [u8]>,
    budget: usize,
) -> Option<Changed<'a, V>>
where
    K: Borrow<[u8]> + std::hash::Hash + Eq,
{
    let mut out = Vec::new();
    for (k, v) in table {
        if v.at == epoch {
            out.push((k.borrow(), Some(&v.value)));
            if out.len() > budget {
                return None;
            }
        }
    }
    for k in removed {
        if !table.contains_key(k) {
            out.push((k, None));
            if out.len() > budget {
                return None;
            }
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // A key removed twice in one epoch is listed twice.
    out.dedup_by(|a, b| a.0 == b.0);
    Some(out)
}

impl GroupSnapshot {
    /// Encodes the key group whole (`WRKG`), or `None` when it holds no
    /// entry.
    pub fn encode_full(&self) -> Option<Vec<u8>> {
        encode_tables(&self.names, &self.tables)
    }

    /// Encodes what changed in this key group since the subtask's
    /// previous snapshot, as a delta chunk (`WRKD`): every key written
    /// since (its entry carries this snapshot's epoch), with its new state,
    /// and every key removed since. `None` when more than half of the
    /// group's keys changed (write it whole then). One pass over the
    /// group's entries, off the subtask's thread; only meaningful for a
    /// group marked [`Change::Written`](super::backend::Change::Written),
    /// whose previous snapshot became a completed checkpoint.
    pub fn delta(&self) -> Option<Vec<u8>> {
        let held: usize = self.tables.iter().map(Table::len).sum();
        let budget = held / 2;
        let mut diffs: Vec<(&str, StateKind, Diff<'_>)> = Vec::new();
        let mut total = 0;
        for (i, (name, kind)) in self.names.iter().enumerate() {
            let Some(cur) = self.tables.get(i) else {
                continue;
            };
            let left = budget.checked_sub(total)?;
            let removed = self
                .removed
                .iter()
                .filter(|(id, _)| *id == i)
                .map(|(_, k)| k.as_slice());
            let diff = match cur {
                Table::Value(m) => Diff::Value(changed(m, self.epoch, removed, left)?),
                Table::List(m) => Diff::List(changed(m, self.epoch, removed, left)?),
                Table::Map(m) => Diff::Map(changed(m, self.epoch, removed, left)?),
            };
            total += diff.len();
            if diff.len() > 0 {
                diffs.push((name.as_str(), *kind, diff));
            }
        }
        diffs.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(DELTA_MAGIC);
        out.push(DELTA_VERSION);
        varint(&mut out, diffs.len() as u64);
        for (name, kind, diff) in diffs {
            bytes(&mut out, name.as_bytes());
            out.push(kind_byte(kind));
            varint(&mut out, diff.len() as u64);
            macro_rules! entries {
                ($v:expr, $enc:expr) => {
                    for (k, v) in $v {
                        bytes(&mut out, k);
                        match v {
                            None => out.push(0),
                            Some(v) => {
                                out.push(1);
                                $enc(&mut out, v);
                            }
                        }
                    }
                };
            }
            match diff {
                Diff::Value(v) => {
                    entries!(v, |o: &mut Vec<u8>, v: &super::backend::InlineBytes| {
                        bytes(o, v)
                    })
                }
                Diff::List(v) => entries!(v, |o: &mut Vec<u8>, v: &Vec<Vec<u8>>| encode_list(o, v)),
                Diff::Map(v) => entries!(v, |o: &mut Vec<u8>, v: &KeyMap| { encode_map(o, v) }),
            }
        }
        Some(out)
    }
}

fn kind_byte(kind: StateKind) -> u8 {
    match kind {
        StateKind::Value => 0,
        StateKind::List => 1,
        StateKind::Map => 2,
    }
}

fn encode_list(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    varint(out, items.len() as u64);
    for i in items {
        bytes(out, i);
    }
}

fn encode_map(out: &mut Vec<u8>, map: &KeyMap) {
    varint(out, map.len() as u64);
    for (mk, v) in map {
        bytes(out, mk);
        bytes(out, v);
    }
}

/// Encodes one key group's tables, or `None` when they hold no entry.
fn encode_tables(names: &[(String, StateKind)], tables: &[Table]) -> Option<Vec<u8>> {
    let mut named: Vec<(&str, StateKind, &Table)> = tables
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| (names[i].0.as_str(), names[i].1, t))
        .collect();
    if named.is_empty() {
        return None;
    }
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    varint(&mut out, named.len() as u64);
    for (name, kind, table) in named {
        bytes(&mut out, name.as_bytes());
        match table {
            Table::Value(m) => {
                out.push(0);
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                varint(&mut out, entries.len() as u64);
                for (k, v) in entries {
                    bytes(&mut out, k);
                    bytes(&mut out, &v.value);
                }
            }
            Table::List(m) => {
                out.push(1);
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                varint(&mut out, entries.len() as u64);
                for (k, items) in entries {
                    bytes(&mut out, k);
                    encode_list(&mut out, &items.value);
                }
            }
            Table::Map(m) => {
                out.push(2);
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                varint(&mut out, entries.len() as u64);
                for (k, map) in entries {
                    bytes(&mut out, k);
                    encode_map(&mut out, &map.value);
                }
            }
        }
        debug_assert!(matches!(
            (kind, table),
            (StateKind::Value, Table::Value(_))
                | (StateKind::List, Table::List(_))
                | (StateKind::Map, Table::Map(_))
        ));
    }
    Some(out)
}

impl KeyedState {
    /// Encodes one owned key group, or `None` when it holds no entry.
    pub fn encode_key_group(&self, kg: KeyGroup) -> Option<Vec<u8>> {
        encode_tables(self.names(), self.key_group(kg)?)
    }

    /// Loads one key group's snapshot into this (owned) key group, merging
    /// with what is there. Every length is checked against the input, so a
    /// corrupt snapshot is an error, never a panic or a huge allocation.
    pub fn decode_key_group(&mut self, kg: KeyGroup, data: &[u8]) -> Result<(), SnapshotError> {
        self.decode(kg, data, false)
    }

    /// Applies a delta chunk (from [`GroupSnapshot::delta`]) to a
    /// key group loaded with [`decode_key_group`](Self::decode_key_group):
    /// each key it names gets its new state or is removed.
    pub fn apply_key_group_delta(
        &mut self,
        kg: KeyGroup,
        data: &[u8],
    ) -> Result<(), SnapshotError> {
        self.decode(kg, data, true)
    }

    fn decode(&mut self, kg: KeyGroup, data: &[u8], delta: bool) -> Result<(), SnapshotError> {
        let (magic, want) = if delta {
            (DELTA_MAGIC, DELTA_VERSION)
        } else {
            (MAGIC, VERSION)
        };
        let err = |detail: String| SnapshotError {
            key_group: kg.0,
            detail,
        };
        if !self.range().contains(kg) {
            return Err(err(format!(
                "this subtask owns key groups {}..{}",
                self.range().start,
                self.range().end
            )));
        }
        let mut r = Reader { data, pos: 0 };
        if r.take(4).map_err(&err)? != magic {
            return Err(err(format!(
                "bad magic: not a wrun key group {}",
                if delta { "delta" } else { "snapshot" }
            )));
        }
        let version = r.take(1).map_err(&err)?[0];
        if version != want {
            return Err(err(format!(
                "format version {version}, but this wrun reads version {want}"
            )));
        }
        let states = r.varint().map_err(&err)?;
        for _ in 0..states {
            let name = std::str::from_utf8(r.bytes().map_err(&err)?)
                .map_err(|e| err(format!("state name is not UTF-8: {e}")))?
                .to_string();
            let kind = match r.take(1).map_err(&err)?[0] {
                0 => StateKind::Value,
                1 => StateKind::List,
                2 => StateKind::Map,
                k => return Err(err(format!("unknown state kind {k}"))),
            };
            let id = self.id(&name, kind).map_err(|e| err(e.to_string()))?;
            let n = r.varint().map_err(&err)?;
            for _ in 0..n {
                let key = r.bytes().map_err(&err)?;
                if super::key_group_of(key, self.max_parallelism()) != kg {
                    return Err(err(format!(
                        "state '{name}' holds a key that belongs to another key group"
                    )));
                }
                if delta {
                    match r.take(1).map_err(&err)?[0] {
                        0 => {
                            self.clear(id, key).map_err(|e| err(e.to_string()))?;
                            continue;
                        }
                        1 => {
                            if kind == StateKind::Map {
                                self.clear(id, key).map_err(|e| err(e.to_string()))?;
                            }
                        }
                        t => return Err(err(format!("unknown delta entry tag {t}"))),
                    }
                }
                match kind {
                    StateKind::Value => {
                        let v = r.bytes().map_err(&err)?;
                        self.value_set(id, key, Some(v))
                            .map_err(|e| err(e.to_string()))?;
                    }
                    StateKind::List => {
                        let count = r.varint().map_err(&err)?;
                        let mut items = Vec::new();
                        for _ in 0..count {
                            items.push(r.bytes().map_err(&err)?.to_vec());
                        }
                        self.list_put(id, key.to_vec(), items)
                            .map_err(|e| err(e.to_string()))?;
                    }
                    StateKind::Map => {
                        let count = r.varint().map_err(&err)?;
                        let mut map = KeyMap::new();
                        for _ in 0..count {
                            let mk = r.bytes().map_err(&err)?.to_vec();
                            let v = r.bytes().map_err(&err)?.to_vec();
                            map.insert(mk, v);
                        }
                        self.map_replace(id, key.to_vec(), map)
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
            }
        }
        if r.pos != data.len() {
            return Err(err(format!("{} trailing bytes", data.len() - r.pos)));
        }
        Ok(())
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(format!("varint too long at byte {}", self.pos))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length overflows".to_string())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Change, KeyGroupRange, StateLimits, key_group_of};
    use proptest::prelude::*;

    fn fill(order: &[u32]) -> KeyedState {
        let mut s = KeyedState::new(
            4,
            KeyGroupRange { start: 0, end: 4 },
            StateLimits::default(),
        );
        let v = s.id("count", StateKind::Value).unwrap();
        let l = s.id("seen", StateKind::List).unwrap();
        let m = s.id("by", StateKind::Map).unwrap();
        for &i in order {
            let k = format!("k{i}").into_bytes();
            s.value_put(v, k.clone(), Some(i.to_le_bytes().to_vec()))
                .unwrap();
            s.list_append(l, k.clone(), vec![i as u8]).unwrap();
            s.map_put(m, k, vec![(i % 3) as u8], Some(vec![1])).unwrap();
        }
        s
    }

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        let a = fill(&(0..50).collect::<Vec<_>>());
        let b = fill(&(0..50).rev().collect::<Vec<_>>());
        for kg in (0..4).map(KeyGroup) {
            let (ea, eb) = (a.encode_key_group(kg), b.encode_key_group(kg));
            assert_eq!(ea, eb, "insertion order does not change the bytes");
            let mut c = KeyedState::new(
                4,
                KeyGroupRange { start: 0, end: 4 },
                StateLimits::default(),
            );
            if let Some(bytes) = ea {
                c.decode_key_group(kg, &bytes).unwrap();
                assert_eq!(c.encode_key_group(kg).unwrap(), bytes);
            }
        }
        assert_eq!(a.key_count(), 150);
    }

    #[test]
    fn rescaling_moves_key_groups_between_subtasks() {
        let full = fill(&(0..50).collect::<Vec<_>>());
        let mut halves: Vec<KeyedState> = (0..2)
            .map(|i| {
                KeyedState::new(
                    4,
                    KeyGroupRange::for_subtask(4, 2, i),
                    StateLimits::default(),
                )
            })
            .collect();
        for kg in (0..4).map(KeyGroup) {
            if let Some(bytes) = full.encode_key_group(kg) {
                let owner = crate::state::subtask_for_key_group(kg, 4, 2) as usize;
                halves[owner].decode_key_group(kg, &bytes).unwrap();
                let other = 1 - owner;
                assert!(
                    halves[other].decode_key_group(kg, &bytes).is_err(),
                    "a subtask refuses a key group it does not own"
                );
            }
        }
        assert_eq!(
            halves.iter().map(KeyedState::key_count).sum::<usize>(),
            full.key_count()
        );
        let v = halves[0].id("count", StateKind::Value).unwrap();
        let key = (0..50)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| halves[0].range().contains(key_group_of(k, 4)))
            .unwrap();
        assert!(halves[0].value_ref(v, &key).unwrap().is_some());
    }

    #[test]
    fn a_snapshot_is_copy_on_write() {
        let mut s = fill(&(0..20).collect::<Vec<_>>());
        let before: Vec<_> = (0..4)
            .filter_map(|k| s.encode_key_group(KeyGroup(k)).map(|b| (k, b)))
            .collect();
        let snap = s.snapshot(true);
        let v = s.id("count", StateKind::Value).unwrap();
        for i in 0..20u32 {
            s.value_set(v, format!("k{i}").as_bytes(), Some(b"changed"))
                .unwrap();
        }
        assert_eq!(
            snap.encode(),
            before,
            "later writes do not reach the snapshot"
        );
        assert_ne!(
            s.encode_key_group(KeyGroup(before[0].0)),
            Some(before[0].1.clone())
        );
    }

    proptest! {
        #[test]
        fn corrupt_snapshots_are_errors_never_panics(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
            let s = fill(&(0..20).collect::<Vec<_>>());
            let bytes = s.encode_key_group(KeyGroup(1)).unwrap();
            let mut bad = bytes.clone();
            if flip < bad.len() { bad[flip] ^= byte | 1; }
            bad.truncate(cut.max(1).min(bad.len()));
            let mut t = KeyedState::new(4, KeyGroupRange { start: 0, end: 4 }, StateLimits::default());
            let _ = t.decode_key_group(KeyGroup(1), &bad);
        }

        #[test]
        fn corrupt_deltas_are_errors_never_panics(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
            let mut s = fill(&(0..40).collect::<Vec<_>>());
            let before = s.snapshot(true);
            let v = s.id("count", StateKind::Value).unwrap();
            for i in 0..3u32 {
                s.value_set(v, format!("k{i}").as_bytes(), Some(b"new")).unwrap();
            }
            s.value_set(v, b"k7", None).unwrap();
            let snap = s.snapshot(false);
            drop(before);
            for g in &snap.groups {
                if let Some(bytes) = g.delta() {
                    let mut bad = bytes.clone();
                    if flip < bad.len() { bad[flip] ^= byte | 1; }
                    bad.truncate(cut.max(1).min(bad.len()));
                    let mut t = fill(&(0..20).collect::<Vec<_>>());
                    let _ = t.apply_key_group_delta(g.key_group, &bad);
                }
            }
        }

        /// Any sequence of writes, removals and snapshots: each key group
        /// rebuilt from its whole chunk and the deltas after it (as a
        /// checkpoint chain) equals the state at the last snapshot.
        #[test]
        fn deltas_rebuild_every_snapshot(ops in proptest::collection::vec((0u8..9, 0u8..24, 0u8..4), 1..300)) {
            let range = KeyGroupRange { start: 0, end: 4 };
            let mut s = KeyedState::new(4, range, StateLimits::default());
            let v = s.id("v", StateKind::Value).unwrap();
            let l = s.id("l", StateKind::List).unwrap();
            let m = s.id("m", StateKind::Map).unwrap();
            let mut chains: std::collections::HashMap<u16, (Vec<u8>, Vec<Vec<u8>>)> =
                std::collections::HashMap::new();
            for (op, k, x) in ops {
                let key = format!("k{k}").into_bytes();
                match op {
                    0 | 1 => s.value_set(v, &key, Some(&[x])).unwrap(),
                    2 => s.value_set(v, &key, None).unwrap(),
                    3 => s.list_append(l, key, vec![x]).unwrap(),
                    4 => s.list_put(l, key, Vec::new()).unwrap(),
                    5 => s.map_put(m, key, vec![x], Some(vec![k])).unwrap(),
                    6 => s.map_put(m, key, vec![x], None).unwrap(),
                    7 => s.clear(usize::from(x % 3), &key).unwrap(),
                    _ => {
                        let snap = s.snapshot(false);
                        let mut next = std::collections::HashMap::new();
                        for g in &snap.groups {
                            let kg = g.key_group.0;
                            let kept = match (g.change, chains.remove(&kg)) {
                                (Change::Unchanged, Some(c)) => Some(c),
                                (Change::Written, Some((base, mut ds))) => g.delta().map(|d| {
                                    ds.push(d);
                                    (base, ds)
                                }),
                                _ => None,
                            };
                            if let Some(c) = kept.or_else(|| g.encode_full().map(|b| (b, Vec::new()))) {
                                next.insert(kg, c);
                            }
                        }
                        chains = next;
                        for kg in (0..4).map(KeyGroup) {
                            let mut r = KeyedState::new(4, range, StateLimits::default());
                            if let Some((base, ds)) = chains.get(&kg.0) {
                                r.decode_key_group(kg, base).unwrap();
                                for d in ds {
                                    r.apply_key_group_delta(kg, d).unwrap();
                                }
                            }
                            let want = snap.groups.iter().find(|g| g.key_group == kg).and_then(|g| g.encode_full());
                            prop_assert_eq!(r.encode_key_group(kg), want, "key group {}", kg.0);
                        }
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_are_errors_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut t = KeyedState::new(4, KeyGroupRange { start: 0, end: 4 }, StateLimits::default());
            let mut input = b"WRKG\x01".to_vec();
            input.extend(data);
            let _ = t.decode_key_group(KeyGroup(0), &input);
        }
    }
}
