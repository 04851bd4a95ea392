//! The in-memory keyed state of one subtask, partitioned by key group so
//! that each key group can be snapshotted and restored on its own.

use super::keygroup::{KeyGroup, KeyGroupRange, key_group_of};

mod keymap;
mod ttl;
pub use keymap::KeyMap;
use std::collections::HashMap;
use std::sync::Arc;
pub use ttl::{Refresh, TTL_PREFIX, Ttl};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Bytes kept inline, without a heap allocation, when they are short, as
/// most keys and values of value state are (an ID, a counter, a sum): the
/// table's entry then holds them, so a lookup touches no other memory.
pub type InlineBytes = smallvec::SmallVec<[u8; 16]>;

fn inline(v: Vec<u8>) -> InlineBytes {
    if v.len() <= 16 {
        InlineBytes::from_slice(&v)
    } else {
        InlineBytes::from_vec(v)
    }
}

/// A table entry: one key's state, and the epoch in which it was last
/// written. A subtask's epoch is the number of its next snapshot, so the
/// entries a snapshot stamped with its own epoch are exactly those written
/// since the previous snapshot: that is its delta, found in one pass over
/// the table without looking at the previous snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<V> {
    /// The state.
    pub value: V,
    /// The epoch of the last write.
    pub(super) at: u64,
}

/// (state id, key) of keys removed in one key group since a snapshot.
pub(super) type Removed = Vec<(usize, Vec<u8>)>;

/// (map key, value) pairs of one key's map state.
pub type MapEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The kind of a named state; fixed by its first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A list per key.
    List,
    /// A map per key.
    Map,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
        })
    }
}

/// Size limits on what a guest may store.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    /// Largest key (event key or map key), in bytes.
    pub max_key_bytes: usize,
    /// Largest single value, in bytes.
    pub max_value_bytes: usize,
    /// Most distinct state names per operator.
    pub max_states: usize,
    /// Most pending timers per subtask.
    pub max_timers: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_key_bytes: 64 * 1024,
            max_value_bytes: 16 * 1024 * 1024,
            max_states: 256,
            max_timers: 10_000_000,
        }
    }
}

/// A misuse of keyed state by an operator.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The key does not hash into this subtask's key groups.
    #[error(
        "state '{name}': the key belongs to key group {kg}, which this subtask does not own (it owns {start}..{end}); keyed state needs the operator's input to arrive over a `hash` edge"
    )]
    KeyNotOwned {
        /// The state name.
        name: String,
        /// The key's group.
        kg: u16,
        /// Owned range start.
        start: u16,
        /// Owned range end.
        end: u16,
    },
    /// A state name used as two kinds.
    #[error("state '{name}' is {existing} state but was used as {requested} state")]
    KindMismatch {
        /// The state name.
        name: String,
        /// Its kind.
        existing: StateKind,
        /// The kind the call wanted.
        requested: StateKind,
    },
    /// A key or value over the limit.
    #[error("state '{name}': a {what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The state name.
        name: String,
        /// "key", "map key" or "value".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A batched call whose arguments do not fit together.
    #[error("state '{name}': malformed call: {detail}")]
    Malformed {
        /// The state name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A read whose answer could never fit in the guest's memory.
    #[error(
        "state '{name}': one call asked for more than {limit} bytes of state, more than the operator's memory limit could ever hold; read fewer keys per call (or raise `limits.memory-mb`)"
    )]
    ReplyTooLarge {
        /// The state name.
        name: String,
        /// The limit: the guest's memory limit.
        limit: usize,
    },
    /// A state name of the host's own.
    #[error(
        "state '{name}': names starting with 'wrun:' are reserved for the runtime's own state (timers, times to live); choose another name"
    )]
    Reserved {
        /// The state name.
        name: String,
    },
    /// Too many pending timers.
    #[error(
        "the operator has {pending} pending timers, the most one subtask may hold (`limits.max-timers`); delete timers it no longer needs, or raise the limit"
    )]
    TooManyTimers {
        /// How many are pending.
        pending: usize,
    },
    /// Too many state names.
    #[error("the operator declared more than {limit} state names (at '{name}')")]
    TooManyStates {
        /// The name that went over.
        name: String,
        /// The limit.
        limit: usize,
    },
}

/// The size of one named state (see [`KeyedState::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStats {
    /// The state name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Keys holding it.
    pub keys: usize,
    /// Bytes of those keys and their values.
    pub bytes: u64,
}

/// One key's state, for [`KeyedState::dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpValue {
    /// A value.
    Value(Vec<u8>),
    /// A list.
    List(Vec<Vec<u8>>),
    /// A map, ordered by map key.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

/// One state name's data in one key group.
#[derive(Debug, Clone)]
pub enum Table {
    /// Value state.
    Value(Map<InlineBytes, Stamped<InlineBytes>>),
    /// List state.
    List(Map<Vec<u8>, Stamped<Vec<Vec<u8>>>>),
    /// Map state, ordered by map key.
    Map(Map<Vec<u8>, Stamped<KeyMap>>),
}

impl Table {
    fn new(kind: StateKind) -> Table {
        match kind {
            StateKind::Value => Table::Value(Map::default()),
            StateKind::List => Table::List(Map::default()),
            StateKind::Map => Table::Map(Map::default()),
        }
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        match self {
            Table::Value(m) => m.len(),
            Table::List(m) => m.len(),
            Table::Map(m) => m.len(),
        }
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One key group in a [`StateSnapshot`]: its tables (shared copy-on-write),
/// and whether it was written since the subtask's previous snapshot.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    /// The key group.
    pub key_group: KeyGroup,
    pub(super) names: Arc<Vec<(String, StateKind)>>,
    pub(super) tables: Arc<Vec<Table>>,
    /// The snapshot's epoch: entries stamped with it were written since
    /// the previous snapshot.
    pub(super) epoch: u64,
    /// (state id, key) of every key removed since the previous snapshot
    /// (a key may appear twice, or be back in the table).
    pub(super) removed: Arc<Removed>,
    /// What changed since the previous snapshot.
    pub change: Change,
}

/// What changed in a key group since the previous snapshot of its subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing was written to it.
    Unchanged,
    /// It was written to: a delta against the previous snapshot of the
    /// group ([`GroupSnapshot::delta`]) holds what changed.
    Written,
    /// No previous snapshot to compare with (the first one, or a full one
    /// was asked for): store it whole.
    Full,
}

/// A copy-on-write snapshot of a subtask's key groups.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    /// Every owned key group that holds state or changed.
    pub groups: Vec<GroupSnapshot>,
}

/// The keyed state of one subtask: every state name, for the key groups
/// the subtask owns.
#[derive(Debug)]
pub struct KeyedState {
    max_parallelism: u32,
    range: KeyGroupRange,
    limits: StateLimits,
    ids: Map<String, usize>,
    names: Vec<(String, StateKind)>,
    /// `groups[kg - range.start][state id]`. Each key group is shared
    /// copy-on-write with the snapshots taken of it: a snapshot clones the
    /// `Arc`s, and the first write to a key group after a snapshot copies
    /// that key group only.
    groups: Vec<Arc<Vec<Table>>>,
    /// `written[kg - range.start]`: whether the key group was written
    /// since the last snapshot (one store per write; which keys changed is
    /// found later, off the subtask's thread, from the entries' stamps).
    written: Vec<bool>,
    /// The epoch writes are stamped with: the number of the next snapshot.
    epoch: u64,
    /// `removed[kg - range.start]`: (state id, key) of the keys removed
    /// since the last snapshot, for its delta; `None` once there are so
    /// many that the key group will be written whole anyway. Kept only
    /// once a snapshot was taken (the first snapshot is whole).
    removed: Vec<Option<Removed>>,
    /// Whether a snapshot was taken yet.
    snapshotted: bool,
    /// Times to live of states that have one.
    ttl: ttl::Ttls,
}

impl KeyedState {
    /// Empty state for the key groups in `range`.
    pub fn new(max_parallelism: u32, range: KeyGroupRange, limits: StateLimits) -> KeyedState {
        KeyedState {
            max_parallelism,
            range,
            limits,
            ids: Map::default(),
            names: Vec::new(),
            groups: (0..range.len()).map(|_| Arc::new(Vec::new())).collect(),
            written: vec![false; range.len()],
            epoch: 1,
            removed: vec![Some(Vec::new()); range.len()],
            snapshotted: false,
            ttl: ttl::Ttls::default(),
        }
    }

    /// Empty state for the same key groups, with the same limits.
    pub fn empty_like(&self) -> KeyedState {
        KeyedState::new(self.max_parallelism, self.range, self.limits)
    }

    /// Moves every key group `other` holds into this state (both cover the
    /// same key groups; `other` typically decoded a share of a restore on
    /// another thread). State names are matched by name; a key group both
    /// hold is merged key by key, `other` winning.
    pub fn absorb(&mut self, other: KeyedState) -> Result<(), StateError> {
        let ids: Vec<usize> = other
            .names
            .iter()
            .map(|(name, kind)| self.id(name, *kind))
            .collect::<Result<_, _>>()?;
        for (gi, (tables, written)) in other.groups.into_iter().zip(other.written).enumerate() {
            if tables.iter().all(Table::is_empty) {
                continue;
            }
            self.written[gi] |= written;
            let tables = Arc::try_unwrap(tables).unwrap_or_else(|shared| (*shared).clone());
            for (j, table) in tables.into_iter().enumerate() {
                let mine = self.group_table(gi, ids[j]);
                if mine.is_empty() {
                    *mine = table;
                    continue;
                }
                match (mine, table) {
                    (Table::Value(a), Table::Value(b)) => a.extend(b),
                    (Table::List(a), Table::List(b)) => a.extend(b),
                    (Table::Map(a), Table::Map(b)) => a.extend(b),
                    // `id` refused a kind mismatch above.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Its size limits.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// The job's number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The owned key groups.
    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// The state names and kinds, in first-use order.
    pub fn names(&self) -> &[(String, StateKind)] {
        &self.names
    }

    /// A key group's tables, indexed like [`names`](Self::names).
    pub fn key_group(&self, kg: KeyGroup) -> Option<&[Table]> {
        kg.0.checked_sub(self.range.start)
            .and_then(|i| self.groups.get(usize::from(i)))
            .map(|g| g.as_slice())
    }

    /// A snapshot of every owned key group: O(key groups), whatever the
    /// amount of state, so the subtask's pause at a barrier stays short.
    /// Encode it off the subtask's thread with [`GroupSnapshot::encode_full`]
    /// and [`GroupSnapshot::delta`].
    ///
    /// With `full`, every key group is marked [`Change::Full`]; otherwise
    /// each says whether it was written since the previous snapshot, which
    /// is what a delta is relative to. The caller asks for `full` whenever
    /// the previous snapshot did not become a completed checkpoint.
    pub fn snapshot(&mut self, full: bool) -> StateSnapshot {
        let full = full || !self.snapshotted;
        self.snapshotted = true;
        let epoch = self.epoch;
        self.epoch += 1;
        let names = Arc::new(self.names.clone());
        let mut groups = Vec::new();
        let owned = self.range.iter().zip(&self.groups);
        for ((kg, tables), (written, removed)) in
            owned.zip(self.written.iter_mut().zip(&mut self.removed))
        {
            let removed = removed.replace(Vec::new());
            let held = tables.iter().any(|t| !t.is_empty());
            if !held && !*written {
                continue;
            }
            let change = if full || removed.is_none() {
                Change::Full
            } else if *written {
                Change::Written
            } else {
                Change::Unchanged
            };
            *written = false;
            groups.push(GroupSnapshot {
                key_group: kg,
                names: Arc::clone(&names),
                tables: Arc::clone(tables),
                epoch,
                removed: Arc::new(removed.unwrap_or_default()),
                change,
            });
        }
        StateSnapshot { groups }
    }

    /// Resolves a name to its id, registering it on first use.
    pub fn id(&mut self, name: &str, kind: StateKind) -> Result<usize, StateError> {
        if let Some(&id) = self.ids.get(name) {
            let existing = self.names[id].1;
            if existing != kind {
                return Err(StateError::KindMismatch {
                    name: name.to_string(),
                    existing,
                    requested: kind,
                });
            }
            return Ok(id);
        }
        if self.names.len() >= self.limits.max_states {
            return Err(StateError::TooManyStates {
                name: name.to_string(),
                limit: self.limits.max_states,
            });
        }
        if name.len() > 1024 {
            return Err(StateError::TooLarge {
                name: name.chars().take(64).collect(),
                what: "state name",
                len: name.len(),
                limit: 1024,
            });
        }
        let id = self.names.len();
        self.names.push((name.to_string(), kind));
        self.ids.insert(name.to_string(), id);
        if self.ttl.declared(name) {
            self.apply_ttl(id)?;
        }
        Ok(id)
    }

    fn check_key(&self, id: usize, key: &[u8], what: &'static str) -> Result<(), StateError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(StateError::TooLarge {
                name: self.names[id].0.clone(),
                what,
                len: key.len(),
                limit: self.limits.max_key_bytes,
            });
        }
        Ok(())
    }

    fn check_value(&self, id: usize, value: &[u8]) -> Result<(), StateError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(StateError::TooLarge {
                name: self.names[id].0.clone(),
                what: "value",
                len: value.len(),
                limit: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    /// The index among the owned key groups of `key`'s key group.
    fn group_index(&self, id: usize, key: &[u8]) -> Result<usize, StateError> {
        self.check_key(id, key, "key")?;
        let kg = key_group_of(key, self.max_parallelism);
        if !self.range.contains(kg) {
            return Err(StateError::KeyNotOwned {
                name: self.names[id].0.clone(),
                kg: kg.0,
                start: self.range.start,
                end: self.range.end,
            });
        }
        Ok(usize::from(kg.0 - self.range.start))
    }

    /// The table of state `id` in owned key group index `gi`, created on
    /// demand.
    fn group_table(&mut self, gi: usize, id: usize) -> &mut Table {
        let tables = Arc::make_mut(&mut self.groups[gi]);
        while tables.len() <= id {
            tables.push(Table::new(self.names[tables.len()].1));
        }
        &mut tables[id]
    }

    /// The table of state `id` in `key`'s key group, for reading: never
    /// copies a key group shared with a snapshot.
    fn table(&self, id: usize, key: &[u8]) -> Result<Option<&Table>, StateError> {
        let gi = self.group_index(id, key)?;
        Ok(self.groups[gi].get(id))
    }

    /// The table of state `id` in `key`'s key group, for writing `key`.
    fn table_for_write(&mut self, id: usize, key: &[u8]) -> Result<&mut Table, StateError> {
        let gi = self.group_index(id, key)?;
        self.written[gi] = true;
        Ok(self.group_table(gi, id))
    }

    /// Records that `key` (of an owned key group, already checked) lost
    /// its state `id`, for the next snapshot's delta. More removals than
    /// half the group's keys mean the group is written whole: the list is
    /// dropped then, so it never outgrows the state.
    fn note_removed(&mut self, id: usize, key: &[u8]) {
        if !self.snapshotted {
            return;
        }
        let gi = usize::from(key_group_of(key, self.max_parallelism).0 - self.range.start);
        let held: usize = self.groups[gi].iter().map(Table::len).sum();
        let slot = &mut self.removed[gi];
        if let Some(keys) = slot {
            if keys.len() > held / 2 {
                *slot = None;
            } else {
                keys.push((id, key.to_vec()));
            }
        }
    }

    /// A value state's value.
    pub fn value_get(&mut self, id: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if self.ttl_read(id, key)? {
            return Ok(None);
        }
        match self.table(id, key)? {
            Some(Table::Value(m)) => Ok(m.get(key).map(|v| v.value.to_vec())),
            _ => Ok(None),
        }
    }

    /// A value state's value, borrowed.
    pub fn value_ref(&mut self, id: usize, key: &[u8]) -> Result<Option<&[u8]>, StateError> {
        if self.ttl_read(id, key)? {
            return Ok(None);
        }
        match self.table(id, key)? {
            Some(Table::Value(m)) => Ok(m.get(key).map(|v| v.value.as_slice())),
            _ => Ok(None),
        }
    }

    /// Sets or (with `None`) deletes a value from borrowed bytes; updating
    /// an existing key reuses its allocation.
    fn value_set_raw(
        &mut self,
        id: usize,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StateError> {
        if let Some(v) = value {
            self.check_value(id, v)?;
        }
        let at = self.epoch;
        let mut removed = false;
        if let Table::Value(m) = self.table_for_write(id, key)? {
            match (value, m.get_mut(key)) {
                (Some(v), Some(existing)) => {
                    existing.value.clear();
                    existing.value.extend_from_slice(v);
                    existing.at = at;
                }
                (Some(v), None) => {
                    let value = InlineBytes::from_slice(v);
                    m.insert(InlineBytes::from_slice(key), Stamped { value, at });
                }
                (None, _) => removed = m.remove(key).is_some(),
            }
        }
        if removed {
            self.note_removed(id, key);
        }
        Ok(())
    }

    /// Sets or (with `None`) deletes a value.
    fn value_put_raw(
        &mut self,
        id: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        if let Some(v) = &value {
            self.check_value(id, v)?;
        }
        let at = self.epoch;
        let mut removed = false;
        if let Table::Value(m) = self.table_for_write(id, &key)? {
            match value {
                Some(v) => {
                    let value = inline(v);
                    m.insert(inline(key), Stamped { value, at });
                    return Ok(());
                }
                None => removed = m.remove(key.as_slice()).is_some(),
            }
        }
        if removed {
            self.note_removed(id, &key);
        }
        Ok(())
    }

    /// A list state's list.
    pub fn list_get(&mut self, id: usize, key: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        if self.ttl_read(id, key)? {
            return Ok(Vec::new());
        }
        match self.table(id, key)? {
            Some(Table::List(m)) => Ok(m.get(key).map(|e| e.value.clone()).unwrap_or_default()),
            _ => Ok(Vec::new()),
        }
    }

    /// Appends to a list.
    fn list_append_raw(
        &mut self,
        id: usize,
        key: Vec<u8>,
        item: Vec<u8>,
    ) -> Result<(), StateError> {
        self.check_value(id, &item)?;
        let at = self.epoch;
        if let Table::List(m) = self.table_for_write(id, &key)? {
            let e = m.entry(key).or_insert_with(|| Stamped {
                value: Vec::new(),
                at,
            });
            e.value.push(item);
            e.at = at;
        }
        Ok(())
    }

    /// Replaces a list; an empty list deletes it.
    fn list_put_raw(
        &mut self,
        id: usize,
        key: Vec<u8>,
        items: Vec<Vec<u8>>,
    ) -> Result<(), StateError> {
        for i in &items {
            self.check_value(id, i)?;
        }
        let at = self.epoch;
        let mut removed = false;
        if let Table::List(m) = self.table_for_write(id, &key)? {
            if items.is_empty() {
                removed = m.remove(&key).is_some();
            } else {
                m.insert(key, Stamped { value: items, at });
                return Ok(());
            }
        }
        if removed {
            self.note_removed(id, &key);
        }
        Ok(())
    }

    /// A map state's entry.
    pub fn map_get(
        &mut self,
        id: usize,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.check_key(id, map_key, "map key")?;
        if self.ttl_read(id, key)? {
            return Ok(None);
        }
        match self.table(id, key)? {
            Some(Table::Map(m)) => Ok(m.get(key).and_then(|e| e.value.get(map_key)).cloned()),
            _ => Ok(None),
        }
    }

    /// Sets or removes a map entry.
    fn map_put_raw(
        &mut self,
        id: usize,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.check_key(id, &map_key, "map key")?;
        if let Some(v) = &value {
            self.check_value(id, v)?;
        }
        let at = self.epoch;
        let mut removed = false;
        if let Table::Map(m) = self.table_for_write(id, &key)? {
            match value {
                Some(v) => {
                    let e = m.entry(key).or_insert_with(|| Stamped {
                        value: KeyMap::new(),
                        at,
                    });
                    e.value.insert(map_key, v);
                    e.at = at;
                    return Ok(());
                }
                None => {
                    if let Some(e) = m.get_mut(&key) {
                        if e.value.remove(&map_key).is_some() {
                            e.at = at;
                        }
                        if e.value.is_empty() {
                            removed = m.remove(&key).is_some();
                        }
                    }
                }
            }
        }
        if removed {
            self.note_removed(id, &key);
        }
        Ok(())
    }

    /// Replaces one key's whole map (restores use it); an empty map
    /// deletes it.
    pub fn map_replace(&mut self, id: usize, key: Vec<u8>, map: KeyMap) -> Result<(), StateError> {
        for (mk, v) in &map {
            self.check_key(id, mk, "map key")?;
            self.check_value(id, v)?;
        }
        if map.is_empty() {
            return self.clear(id, &key);
        }
        let at = self.epoch;
        let ttl = self.ttl.has(id).then(|| key.clone());
        if let Table::Map(m) = self.table_for_write(id, &key)? {
            m.insert(key, Stamped { value: map, at });
        }
        match ttl {
            Some(key) => self.ttl_written(id, &key),
            None => Ok(()),
        }
    }

    /// Every entry of one key's map, ordered by map key.
    pub fn map_entries(&mut self, id: usize, key: &[u8]) -> Result<MapEntries, StateError> {
        if self.ttl_read(id, key)? {
            return Ok(Vec::new());
        }
        match self.table(id, key)? {
            Some(Table::Map(m)) => Ok(m
                .get(key)
                .map(|e| {
                    e.value
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()),
            _ => Ok(Vec::new()),
        }
    }

    /// Removes a key's state of one name, whatever its kind.
    fn clear_raw(&mut self, id: usize, key: &[u8]) -> Result<(), StateError> {
        let removed = match self.table_for_write(id, key)? {
            Table::Value(m) => m.remove(key).is_some(),
            Table::List(m) => m.remove(key).is_some(),
            Table::Map(m) => m.remove(key).is_some(),
        };
        if removed {
            self.note_removed(id, key);
        }
        Ok(())
    }

    /// Sets or (with `None`) deletes a value from borrowed bytes; updating
    /// an existing key reuses its allocation.
    pub fn value_set(
        &mut self,
        id: usize,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StateError> {
        self.value_set_raw(id, key, value)?;
        self.ttl_written(id, key)
    }

    /// Sets or (with `None`) deletes a value.
    pub fn value_put(
        &mut self,
        id: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.write_owned(id, key, false, |s, key| s.value_put_raw(id, key, value))
    }

    /// Appends to a list.
    pub fn list_append(
        &mut self,
        id: usize,
        key: Vec<u8>,
        item: Vec<u8>,
    ) -> Result<(), StateError> {
        // Appending to an expired list starts a new one.
        self.write_owned(id, key, true, |s, key| s.list_append_raw(id, key, item))
    }

    /// Replaces a list; an empty list deletes it.
    pub fn list_put(
        &mut self,
        id: usize,
        key: Vec<u8>,
        items: Vec<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.write_owned(id, key, false, |s, key| s.list_put_raw(id, key, items))
    }

    /// Sets or removes a map entry.
    pub fn map_put(
        &mut self,
        id: usize,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        // A write to an expired map starts a new one.
        self.write_owned(id, key, true, |s, key| {
            s.map_put_raw(id, key, map_key, value)
        })
    }

    /// A write of state `id` that takes `key` by value: with no time to
    /// live just `write`; with one, an expired entry is dropped first
    /// (`drop_expired`, for writes that add to what is there) and the
    /// entry refreshed after (the key is cloned only then).
    fn write_owned(
        &mut self,
        id: usize,
        key: Vec<u8>,
        drop_expired: bool,
        write: impl FnOnce(&mut Self, Vec<u8>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        if !self.ttl.has(id) {
            return write(self, key);
        }
        if drop_expired {
            self.ttl_read(id, &key)?;
        }
        write(self, key.clone())?;
        self.ttl_written(id, &key)
    }

    /// Removes a key's state of one name, whatever its kind.
    pub fn clear(&mut self, id: usize, key: &[u8]) -> Result<(), StateError> {
        self.clear_raw(id, key)?;
        self.ttl_written(id, key)
    }

    /// Per state name, in first-use order: its kind, how many keys hold
    /// it, and the bytes of those keys and their values.
    pub fn stats(&self) -> Vec<StateStats> {
        self.names
            .iter()
            .enumerate()
            .map(|(id, (name, kind))| {
                let (mut keys, mut bytes) = (0usize, 0u64);
                for t in self.groups.iter().filter_map(|g| g.get(id)) {
                    keys += t.len();
                    bytes += match t {
                        Table::Value(m) => m
                            .iter()
                            .map(|(k, v)| k.len() + v.value.len())
                            .sum::<usize>(),
                        Table::List(m) => m
                            .iter()
                            .map(|(k, l)| k.len() + l.value.iter().map(Vec::len).sum::<usize>())
                            .sum(),
                        Table::Map(m) => m
                            .iter()
                            .map(|(k, e)| {
                                k.len()
                                    + e.value
                                        .iter()
                                        .map(|(a, b)| a.len() + b.len())
                                        .sum::<usize>()
                            })
                            .sum(),
                    } as u64;
                }
                StateStats {
                    name: name.clone(),
                    kind: *kind,
                    keys,
                    bytes,
                }
            })
            .collect()
    }

    /// Every entry of state `name`, sorted by key; `None` for an unknown
    /// name.
    pub fn dump(&self, name: &str) -> Option<Vec<(Vec<u8>, DumpValue)>> {
        let id = *self.ids.get(name)?;
        let mut out = Vec::new();
        for t in self.groups.iter().filter_map(|g| g.get(id)) {
            match t {
                Table::Value(m) => out.extend(
                    m.iter()
                        .map(|(k, v)| (k.to_vec(), DumpValue::Value(v.value.to_vec()))),
                ),
                Table::List(m) => out.extend(
                    m.iter()
                        .map(|(k, l)| (k.clone(), DumpValue::List(l.value.clone()))),
                ),
                Table::Map(m) => out.extend(m.iter().map(|(k, e)| {
                    (
                        k.clone(),
                        DumpValue::Map(
                            e.value
                                .iter()
                                .map(|(a, b)| (a.clone(), b.clone()))
                                .collect(),
                        ),
                    )
                })),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// Every (key, map) of map state `name`, unordered, borrowed; none
    /// for a name never used, an error for a name of another kind.
    pub fn maps<'a>(
        &'a self,
        name: &str,
    ) -> Result<impl Iterator<Item = (&'a [u8], &'a KeyMap)> + 'a, String> {
        let id = self.ids.get(name).copied();
        if let Some(id) = id
            && self.names[id].1 != StateKind::Map
        {
            return Err(format!(
                "restored '{name}' is {} state, not map state",
                self.names[id].1
            ));
        }
        Ok(self
            .groups
            .iter()
            .filter_map(move |g| id.and_then(|id| g.get(id)))
            .flat_map(|t| match t {
                Table::Map(m) => Some(m.iter().map(|(k, e)| (k.as_slice(), &e.value))),
                _ => None,
            })
            .flatten())
    }

    /// Total number of (state, key) entries held.
    pub fn key_count(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|g| g.iter())
            .map(Table::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> KeyedState {
        KeyedState::new(
            16,
            KeyGroupRange { start: 0, end: 16 },
            StateLimits::default(),
        )
    }

    #[test]
    fn value_list_and_map_round_trip() {
        let mut s = full();
        let v = s.id("v", StateKind::Value).unwrap();
        let l = s.id("l", StateKind::List).unwrap();
        let m = s.id("m", StateKind::Map).unwrap();
        s.value_put(v, b"k".to_vec(), Some(b"1".to_vec())).unwrap();
        assert_eq!(s.value_get(v, b"k").unwrap(), Some(b"1".to_vec()));
        s.value_put(v, b"k".to_vec(), None).unwrap();
        assert_eq!(s.value_get(v, b"k").unwrap(), None);
        s.list_append(l, b"k".to_vec(), b"a".to_vec()).unwrap();
        s.list_append(l, b"k".to_vec(), b"b".to_vec()).unwrap();
        assert_eq!(
            s.list_get(l, b"k").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        s.map_put(m, b"k".to_vec(), b"z".to_vec(), Some(b"1".to_vec()))
            .unwrap();
        s.map_put(m, b"k".to_vec(), b"a".to_vec(), Some(b"2".to_vec()))
            .unwrap();
        assert_eq!(s.map_entries(m, b"k").unwrap()[0].0, b"a");
        s.map_put(m, b"k".to_vec(), b"a".to_vec(), None).unwrap();
        assert_eq!(s.map_get(m, b"k", b"a").unwrap(), None);
        assert_eq!(s.key_count(), 2);
    }

    #[test]
    fn kinds_are_fixed_by_first_use() {
        let mut s = full();
        s.id("x", StateKind::Value).unwrap();
        let err = s.id("x", StateKind::List).unwrap_err();
        assert!(
            err.to_string()
                .contains("'x' is value state but was used as list"),
            "{err}"
        );
    }

    #[test]
    fn keys_outside_the_range_are_refused() {
        let mut s = KeyedState::new(
            128,
            KeyGroupRange { start: 0, end: 1 },
            StateLimits::default(),
        );
        let v = s.id("v", StateKind::Value).unwrap();
        let foreign = (0..1000u32)
            .map(|i| i.to_string().into_bytes())
            .find(|k| key_group_of(k, 128).0 != 0)
            .unwrap();
        let err = s.value_put(v, foreign, Some(vec![1])).unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let mut s = KeyedState::new(
            1,
            KeyGroupRange { start: 0, end: 1 },
            StateLimits {
                max_key_bytes: 4,
                max_value_bytes: 8,
                max_states: 2,
                max_timers: 0,
            },
        );
        let v = s.id("v", StateKind::Value).unwrap();
        assert!(matches!(
            s.value_put(v, vec![0; 5], None),
            Err(StateError::TooLarge { what: "key", .. })
        ));
        assert!(matches!(
            s.value_put(v, vec![0; 4], Some(vec![0; 9])),
            Err(StateError::TooLarge { what: "value", .. })
        ));
        s.id("w", StateKind::Value).unwrap();
        assert!(matches!(
            s.id("x", StateKind::Value),
            Err(StateError::TooManyStates { .. })
        ));
    }
}
