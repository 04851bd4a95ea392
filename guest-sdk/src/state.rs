//! Typed keyed state over the host's `wrun:operator/state` interface.
//!
//! Each handle caches its state for the current batch only: the first read
//! in a batch fetches the values of *all* the batch's keys with one host
//! call, reads and writes then hit the cache, and the batch ends with one
//! write-back call for whatever changed. Blind writes (`set` without `get`)
//! never fetch.

use crate::bindings::wrun::operator::types;
use crate::codec::{decode, encode, encode_into};
use crate::runtime::{self, Flush};
use crate::{Error, host};
use rustc_hash::FxHashMap;
use serde::{Serialize, de::DeserializeOwned};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

/// A time to live for a keyed state (Flink's `StateTtlConfig`): an entry
/// (one key's value, list or map) that was not refreshed for the duration
/// is expired. The host never returns an expired entry, removes it (when
/// it is read, and by a cleanup that visits all state bit by bit), and no
/// checkpoint or savepoint taken after it expired holds it.
///
/// ```
/// # use wrun_guest::{StateTtl, ValueState};
/// # use std::time::Duration;
/// // Forget a user a day after their last event.
/// let last_seen: ValueState<i64> = ValueState::new("last-seen")
///     .with_ttl(StateTtl::processing_time(Duration::from_secs(86_400)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTtl {
    millis: u64,
    domain: crate::TimeDomain,
    refresh_on_read: bool,
}

impl StateTtl {
    /// Entries expire `ttl` after their last write, by the job's clock.
    pub fn processing_time(ttl: std::time::Duration) -> StateTtl {
        StateTtl {
            millis: (ttl.as_millis() as u64).max(1),
            domain: crate::TimeDomain::ProcessingTime,
            refresh_on_read: false,
        }
    }

    /// Entries expire once the watermark is `ttl` past the watermark at
    /// their last write (writes before the subtask's first watermark count
    /// from it).
    pub fn event_time(ttl: std::time::Duration) -> StateTtl {
        StateTtl {
            domain: crate::TimeDomain::EventTime,
            ..StateTtl::processing_time(ttl)
        }
    }

    /// Reads refresh entries too (Flink's `OnReadAndWrite`), not only
    /// writes.
    pub fn refresh_on_read(self) -> StateTtl {
        StateTtl {
            refresh_on_read: true,
            ..self
        }
    }

    /// Sets this time to live on state `name` with the host.
    fn set(self, name: &str) {
        host::set_ttl(
            name,
            Some(types::StateTtl {
                millis: self.millis,
                domain: match self.domain {
                    crate::TimeDomain::EventTime => types::TimeDomain::EventTime,
                    crate::TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
                },
                refresh: if self.refresh_on_read {
                    types::TtlRefresh::OnReadAndWrite
                } else {
                    types::TtlRefresh::OnWrite
                },
            }),
        )
    }
}

enum Slot<T> {
    /// Not read yet in this batch.
    Unknown,
    /// Fetched (item `idx` of the cache's `fetched`) but not decoded yet.
    Fetched,
    /// Decoded or written.
    Value(Option<T>),
}

struct ValueCache<T> {
    epoch: u64,
    loaded: bool,
    /// Per batch key: the slot and whether it was written.
    slots: Vec<(Slot<T>, bool)>,
    /// What `value-get-many` returned for the batch's keys.
    fetched: types::PackedOptions,
}

struct ValueInner<T> {
    name: String,
    cache: RefCell<ValueCache<T>>,
}

/// One value of type `T` per key (Flink's `ValueState`).
pub struct ValueState<T> {
    inner: Rc<ValueInner<T>>,
}

impl<T: Serialize + DeserializeOwned + Clone + 'static> ValueState<T> {
    /// A handle on the value state called `name`. Create handles in
    /// [`Operator::open`](crate::Operator::open); the name is what
    /// checkpoints, savepoints and `wrun savepoint inspect` know it by.
    pub fn new(name: impl Into<String>) -> ValueState<T> {
        runtime::declare_state();
        ValueState {
            inner: Rc::new(ValueInner {
                name: name.into(),
                cache: RefCell::new(ValueCache {
                    epoch: 0,
                    loaded: false,
                    slots: Vec::new(),
                    fetched: types::PackedOptions {
                        data: Vec::new(),
                        ends: Vec::new(),
                        present: Vec::new(),
                    },
                }),
            }),
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Gives the state a time to live ([`StateTtl`]). Call it where the
    /// handle is made, in [`Operator::open`](crate::Operator::open): the
    /// host applies it to restored entries at once.
    pub fn with_ttl(self, ttl: StateTtl) -> Self {
        ttl.set(&self.inner.name);
        self
    }

    /// Resets the cache when a new batch started; returns the key index.
    fn enter(&self) -> Result<usize, Error> {
        let (epoch, idx, nkeys) = runtime::current(&self.inner.name)?;
        let fresh = {
            let mut c = self.inner.cache.borrow_mut();
            if c.epoch != epoch {
                c.epoch = epoch;
                c.loaded = false;
                c.slots.clear();
                c.slots.resize_with(nkeys, || (Slot::Unknown, false));
                true
            } else {
                false
            }
        };
        if fresh {
            runtime::touch(self.inner.clone());
        }
        Ok(idx as usize)
    }

    /// The current key's value, `None` when it has none.
    pub fn get(&self) -> Result<Option<T>, Error> {
        let idx = self.enter()?;
        let mut guard = self.inner.cache.borrow_mut();
        let c = &mut *guard;
        if matches!(c.slots[idx].0, Slot::Unknown) && !c.loaded {
            c.fetched = runtime::with_keys(|keys| host::value_get_many(&self.inner.name, keys));
            if c.fetched.ends.len() != c.slots.len() || c.fetched.present.len() != c.slots.len() {
                return Err(Error::new(format!(
                    "value state '{}': the host returned {} values for {} keys",
                    self.inner.name,
                    c.fetched.ends.len(),
                    c.slots.len()
                )));
            }
            for (slot, _) in c.slots.iter_mut() {
                if matches!(slot, Slot::Unknown) {
                    *slot = Slot::Fetched;
                }
            }
            c.loaded = true;
        }
        if matches!(c.slots[idx].0, Slot::Fetched) {
            let value =
                if c.fetched.present[idx] {
                    let bytes = runtime::item_opt(&c.fetched, idx);
                    Some(decode::<T>(bytes).map_err(|e| {
                        Error::new(format!("value state '{}': {e}", self.inner.name))
                    })?)
                } else {
                    None
                };
            c.slots[idx].0 = Slot::Value(value);
        }
        match &c.slots[idx].0 {
            Slot::Value(v) => Ok(v.clone()),
            Slot::Unknown | Slot::Fetched => Err(Error::new(format!(
                "value state '{}': internal cache error",
                self.inner.name
            ))),
        }
    }

    /// Changes the current key's value in place (`None`: it has none;
    /// leave `None` to delete it): no copy of the value, unlike a `get`
    /// then a `set`. Returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> Result<R, Error> {
        let idx = self.enter()?;
        let loaded = matches!(
            self.inner.cache.borrow().slots.get(idx),
            Some((Slot::Value(_), _))
        );
        if !loaded {
            // Loads the slot (a batched read on the batch's first access).
            self.get()?;
        }
        let mut c = self.inner.cache.borrow_mut();
        let slot = &mut c.slots[idx];
        slot.1 = true;
        match &mut slot.0 {
            Slot::Value(v) => Ok(f(v)),
            Slot::Unknown | Slot::Fetched => Err(Error::new(format!(
                "value state '{}': internal cache error",
                self.inner.name
            ))),
        }
    }

    /// Sets the current key's value.
    pub fn set(&self, value: &T) -> Result<(), Error> {
        self.write(Some(value.clone()))
    }

    /// Deletes the current key's value.
    pub fn clear(&self) -> Result<(), Error> {
        self.write(None)
    }

    fn write(&self, value: Option<T>) -> Result<(), Error> {
        let idx = self.enter()?;
        self.inner.cache.borrow_mut().slots[idx] = (Slot::Value(value), true);
        Ok(())
    }
}

impl<T: Serialize> Flush for ValueInner<T> {
    fn flush(&self, keys: &types::Packed) {
        let c = self.cache.borrow();
        let mut out_keys = types::Packed {
            data: Vec::new(),
            ends: Vec::new(),
        };
        let mut values = types::PackedOptions {
            data: Vec::new(),
            ends: Vec::new(),
            present: Vec::new(),
        };
        for (i, (slot, dirty)) in c.slots.iter().enumerate() {
            // Only written slots are dirty, and a written slot holds a value.
            let (true, Slot::Value(v)) = (*dirty, slot) else {
                continue;
            };
            out_keys.data.extend_from_slice(runtime::item(keys, i));
            out_keys.ends.push(out_keys.data.len() as u32);
            if let Some(v) = v {
                values.data = encode_into(v, std::mem::take(&mut values.data));
            }
            values.present.push(v.is_some());
            values.ends.push(values.data.len() as u32);
        }
        if !out_keys.ends.is_empty() {
            host::value_put_many(&self.name, &out_keys, &values);
        }
    }
}

enum ListSlot<T> {
    /// Not read in this batch; holds elements appended blind.
    Unknown(Vec<T>),
    /// The whole list, and whether it must be written back whole.
    Loaded(Vec<T>, bool),
}

struct ListCache<T> {
    epoch: u64,
    slots: Vec<ListSlot<T>>,
}

struct ListInner<T> {
    name: String,
    cache: RefCell<ListCache<T>>,
}

/// A list of `T` per key (Flink's `ListState`). `add` without a read is a
/// cheap append; `get` fetches the lists of the whole batch in one call.
pub struct ListState<T> {
    inner: Rc<ListInner<T>>,
}

impl<T: Serialize + DeserializeOwned + Clone + 'static> ListState<T> {
    /// A handle on the list state called `name`.
    pub fn new(name: impl Into<String>) -> ListState<T> {
        runtime::declare_state();
        ListState {
            inner: Rc::new(ListInner {
                name: name.into(),
                cache: RefCell::new(ListCache {
                    epoch: 0,
                    slots: Vec::new(),
                }),
            }),
        }
    }

    /// Gives the state a time to live ([`StateTtl`]). Call it where the
    /// handle is made, in [`Operator::open`](crate::Operator::open): the
    /// host applies it to restored entries at once.
    pub fn with_ttl(self, ttl: StateTtl) -> Self {
        ttl.set(&self.inner.name);
        self
    }

    fn enter(&self) -> Result<usize, Error> {
        let (epoch, idx, nkeys) = runtime::current(&self.inner.name)?;
        let fresh = {
            let mut c = self.inner.cache.borrow_mut();
            if c.epoch != epoch {
                c.epoch = epoch;
                c.slots.clear();
                c.slots.resize_with(nkeys, || ListSlot::Unknown(Vec::new()));
                true
            } else {
                false
            }
        };
        if fresh {
            runtime::touch(self.inner.clone());
        }
        Ok(idx as usize)
    }

    fn load(&self) -> Result<(), Error> {
        let mut c = self.inner.cache.borrow_mut();
        if !c.slots.iter().any(|s| matches!(s, ListSlot::Unknown(_))) {
            return Ok(());
        }
        let fetched = runtime::with_keys(|keys| {
            host::list_get_many(&self.inner.name, &runtime::unpack(keys))
        });
        for (slot, items) in c.slots.iter_mut().zip(fetched) {
            if let ListSlot::Unknown(appended) = slot {
                let mut list = items
                    .iter()
                    .map(|b| decode::<T>(b))
                    .collect::<Result<Vec<T>, _>>()
                    .map_err(|e| Error::new(format!("list state '{}': {e}", self.inner.name)))?;
                let dirty = !appended.is_empty();
                list.append(appended);
                *slot = ListSlot::Loaded(list, dirty);
            }
        }
        Ok(())
    }

    /// The current key's list (empty when it has none).
    pub fn get(&self) -> Result<Vec<T>, Error> {
        let idx = self.enter()?;
        self.load()?;
        match &self.inner.cache.borrow().slots[idx] {
            ListSlot::Loaded(list, _) => Ok(list.clone()),
            ListSlot::Unknown(_) => Err(Error::new(format!(
                "list state '{}': internal cache error",
                self.inner.name
            ))),
        }
    }

    /// Appends an element to the current key's list.
    pub fn add(&self, value: T) -> Result<(), Error> {
        let idx = self.enter()?;
        match &mut self.inner.cache.borrow_mut().slots[idx] {
            ListSlot::Unknown(appended) => appended.push(value),
            ListSlot::Loaded(list, dirty) => {
                list.push(value);
                *dirty = true;
            }
        }
        Ok(())
    }

    /// Replaces the current key's list.
    pub fn update(&self, values: Vec<T>) -> Result<(), Error> {
        let idx = self.enter()?;
        self.inner.cache.borrow_mut().slots[idx] = ListSlot::Loaded(values, true);
        Ok(())
    }

    /// Empties the current key's list.
    pub fn clear(&self) -> Result<(), Error> {
        self.update(Vec::new())
    }
}

impl<T: Serialize> Flush for ListInner<T> {
    fn flush(&self, keys: &types::Packed) {
        let keys = runtime::unpack(keys);
        let c = self.cache.borrow();
        let mut appends = Vec::new();
        let mut puts = Vec::new();
        for (slot, key) in c.slots.iter().zip(keys) {
            match slot {
                ListSlot::Unknown(appended) => {
                    appends.extend(appended.iter().map(|v| (key.clone(), encode(v))))
                }
                ListSlot::Loaded(list, true) => {
                    puts.push((key.clone(), list.iter().map(encode).collect::<Vec<_>>()))
                }
                ListSlot::Loaded(_, false) => {}
            }
        }
        if !appends.is_empty() {
            host::list_append_many(&self.name, &appends);
        }
        if !puts.is_empty() {
            host::list_put_many(&self.name, &puts);
        }
    }
}

struct MapCache<V> {
    epoch: u64,
    /// (key index, encoded map key) → (value, dirty).
    entries: FxHashMap<(u32, Vec<u8>), (Option<V>, bool)>,
}

struct MapInner<V> {
    name: String,
    cache: RefCell<MapCache<V>>,
}

/// A map from `K` to `V` per key (Flink's `MapState`). Reads are point
/// lookups cached for the batch; writes are sent in one call per batch.
pub struct MapState<K, V> {
    inner: Rc<MapInner<V>>,
    _key: PhantomData<K>,
}

impl<K, V> MapState<K, V>
where
    K: Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + Clone + 'static,
{
    /// A handle on the map state called `name`.
    pub fn new(name: impl Into<String>) -> MapState<K, V> {
        runtime::declare_state();
        MapState {
            inner: Rc::new(MapInner {
                name: name.into(),
                cache: RefCell::new(MapCache {
                    epoch: 0,
                    entries: FxHashMap::default(),
                }),
            }),
            _key: PhantomData,
        }
    }

    /// Gives the state a time to live ([`StateTtl`]). Call it where the
    /// handle is made, in [`Operator::open`](crate::Operator::open): the
    /// host applies it to restored entries at once.
    pub fn with_ttl(self, ttl: StateTtl) -> Self {
        ttl.set(&self.inner.name);
        self
    }

    fn enter(&self) -> Result<u32, Error> {
        let (epoch, idx, _) = runtime::current(&self.inner.name)?;
        let fresh = {
            let mut c = self.inner.cache.borrow_mut();
            if c.epoch != epoch {
                c.epoch = epoch;
                c.entries.clear();
                true
            } else {
                false
            }
        };
        if fresh {
            runtime::touch(self.inner.clone());
        }
        Ok(idx)
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V, Error> {
        decode::<V>(bytes).map_err(|e| Error::new(format!("map state '{}': {e}", self.inner.name)))
    }

    /// The value under `map_key` for the current key.
    pub fn get(&self, map_key: &K) -> Result<Option<V>, Error> {
        let idx = self.enter()?;
        let mk = encode(map_key);
        if let Some((v, _)) = self.inner.cache.borrow().entries.get(&(idx, mk.clone())) {
            return Ok(v.clone());
        }
        let key = runtime::with_keys(|keys| runtime::item(keys, idx as usize).to_vec());
        let fetched = host::map_get_many(&self.inner.name, &[(key, mk.clone())])
            .into_iter()
            .next()
            .flatten();
        let value = fetched.map(|b| self.decode_value(&b)).transpose()?;
        self.inner
            .cache
            .borrow_mut()
            .entries
            .insert((idx, mk), (value.clone(), false));
        Ok(value)
    }

    /// Whether `map_key` has a value for the current key.
    pub fn contains_key(&self, map_key: &K) -> Result<bool, Error> {
        Ok(self.get(map_key)?.is_some())
    }

    /// Sets the value under `map_key` for the current key.
    pub fn insert(&self, map_key: &K, value: V) -> Result<(), Error> {
        let idx = self.enter()?;
        self.inner
            .cache
            .borrow_mut()
            .entries
            .insert((idx, encode(map_key)), (Some(value), true));
        Ok(())
    }

    /// Removes `map_key` for the current key.
    pub fn remove(&self, map_key: &K) -> Result<(), Error> {
        let idx = self.enter()?;
        self.inner
            .cache
            .borrow_mut()
            .entries
            .insert((idx, encode(map_key)), (None, true));
        Ok(())
    }

    /// All entries of the current key's map, ordered by encoded map key,
    /// including this batch's unwritten changes.
    pub fn entries(&self) -> Result<Vec<(K, V)>, Error> {
        let idx = self.enter()?;
        let key = runtime::with_keys(|keys| runtime::item(keys, idx as usize).to_vec());
        let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            host::map_entries(&self.inner.name, &key)
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
        let mut pending: Vec<(Vec<u8>, Option<V>)> = Vec::new();
        for ((i, mk), (v, dirty)) in self.inner.cache.borrow().entries.iter() {
            if *i == idx && *dirty {
                merged.remove(mk);
                pending.push((mk.clone(), v.clone()));
            }
        }
        let mut out: Vec<(Vec<u8>, V)> = Vec::with_capacity(merged.len() + pending.len());
        for (mk, v) in merged {
            if let Some(bytes) = v {
                out.push((mk, self.decode_value(&bytes)?));
            }
        }
        out.extend(pending.into_iter().filter_map(|(mk, v)| v.map(|v| (mk, v))));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter()
            .map(|(mk, v)| {
                Ok((
                    decode::<K>(&mk)
                        .map_err(|e| Error::new(format!("map state '{}': {e}", self.inner.name)))?,
                    v,
                ))
            })
            .collect()
    }
}

impl<V: Serialize> Flush for MapInner<V> {
    fn flush(&self, keys: &types::Packed) {
        let c = self.cache.borrow();
        let entries: Vec<types::MapEntry> = c
            .entries
            .iter()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|((idx, mk), (v, _))| types::MapEntry {
                key: runtime::item(keys, *idx as usize).to_vec(),
                map_key: mk.clone(),
                value: v.as_ref().map(encode),
            })
            .collect();
        if !entries.is_empty() {
            host::map_put_many(&self.name, &entries);
        }
    }
}
