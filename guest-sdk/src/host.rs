//! The host calls the SDK makes. On wasm32 they are the `wrun:operator`
//! imports; elsewhere (native unit tests of operators) an in-memory host
//! with the same semantics stands in, and counts calls so tests can check
//! that a batch costs O(1) crossings.

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

pub(crate) use imp::*;

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::LogLevel;
    use crate::bindings::wrun::operator::{log as wlog, state, timers, types};

    pub(crate) fn register_timers(t: &types::Timers) {
        timers::register_many(t)
    }
    pub(crate) fn delete_timers(t: &types::Timers) {
        timers::delete_many(t)
    }
    pub(crate) fn current_watermark() -> Option<i64> {
        timers::current_watermark()
    }
    pub(crate) fn processing_time() -> i64 {
        timers::processing_time()
    }

    pub(crate) fn set_ttl(name: &str, ttl: Option<types::StateTtl>) {
        state::set_ttl(name, ttl)
    }
    pub(crate) fn value_get_many(name: &str, keys: &types::Packed) -> types::PackedOptions {
        state::value_get_many(name, keys)
    }
    pub(crate) fn value_put_many(name: &str, keys: &types::Packed, values: &types::PackedOptions) {
        state::value_put_many(name, keys, values)
    }
    pub(crate) fn list_get_many(name: &str, keys: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
        state::list_get_many(name, keys)
    }
    pub(crate) fn list_append_many(name: &str, items: &[(Vec<u8>, Vec<u8>)]) {
        state::list_append_many(name, items)
    }
    pub(crate) fn list_put_many(name: &str, lists: &[(Vec<u8>, Vec<Vec<u8>>)]) {
        state::list_put_many(name, lists)
    }
    pub(crate) fn map_get_many(name: &str, keys: &[(Vec<u8>, Vec<u8>)]) -> Vec<Option<Vec<u8>>> {
        state::map_get_many(name, keys)
    }
    pub(crate) fn map_put_many(name: &str, entries: &[types::MapEntry]) {
        state::map_put_many(name, entries)
    }
    pub(crate) fn map_entries(name: &str, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        state::map_entries(name, key)
    }
    pub(crate) fn log(level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => wlog::Level::Trace,
            LogLevel::Debug => wlog::Level::Debug,
            LogLevel::Info => wlog::Level::Info,
            LogLevel::Warn => wlog::Level::Warn,
            LogLevel::Error => wlog::Level::Error,
        };
        wlog::log(level, message)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::LogLevel;
    use crate::bindings::wrun::operator::types;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    type Key = (String, Vec<u8>);

    /// A pending timer in the in-memory host: (time, key, tag) per domain.
    pub(crate) type FakeTimer = (i64, Vec<u8>, u32);

    /// The in-memory host of native builds.
    #[derive(Default)]
    pub(crate) struct FakeHost {
        pub(crate) values: HashMap<Key, Vec<u8>>,
        pub(crate) lists: HashMap<Key, Vec<Vec<u8>>>,
        pub(crate) maps: HashMap<Key, BTreeMap<Vec<u8>, Vec<u8>>>,
        /// Pending event-time and processing-time timers.
        pub(crate) event_timers: BTreeSet<FakeTimer>,
        pub(crate) processing_timers: BTreeSet<FakeTimer>,
        pub(crate) watermark: Option<i64>,
        pub(crate) now: i64,
        pub(crate) calls: u64,
        /// Times to live by state name, and each entry's last refresh.
        pub(crate) ttls: HashMap<String, types::StateTtl>,
        pub(crate) refreshed: HashMap<Key, i64>,
    }

    impl FakeHost {
        /// The host's semantics of a time to live, simply: before a read
        /// or a write of `key`, whether its entry expired (it is dropped
        /// then); after, the refresh.
        fn touch(&mut self, name: &str, key: &[u8], write: bool) {
            let Some(ttl) = self.ttls.get(name).copied() else {
                return;
            };
            let now = match ttl.domain {
                types::TimeDomain::EventTime => self.watermark,
                types::TimeDomain::ProcessingTime => Some(self.now),
            };
            let key = k(name, key);
            // Refreshed before the first watermark: counts from it.
            if let (Some(now), Some(&i64::MIN)) = (now, self.refreshed.get(&key)) {
                self.refreshed.insert(key.clone(), now);
            }
            if let (Some(now), Some(at)) = (now, self.refreshed.get(&key))
                && at.saturating_add(ttl.millis as i64) <= now
            {
                self.values.remove(&key);
                self.lists.remove(&key);
                self.maps.remove(&key);
                self.refreshed.remove(&key);
            }
            let held = self.values.contains_key(&key)
                || self.lists.contains_key(&key)
                || self.maps.contains_key(&key);
            if held && (write || ttl.refresh == types::TtlRefresh::OnReadAndWrite) {
                self.refreshed.insert(key, now.unwrap_or(i64::MIN));
            }
        }
    }

    fn timers_of(t: &types::Timers) -> Vec<(types::TimeDomain, FakeTimer)> {
        (0..t.keys.ends.len())
            .map(|i| {
                (
                    t.domains[i],
                    (
                        t.times[i],
                        crate::runtime::item(&t.keys, i).to_vec(),
                        t.tags[i],
                    ),
                )
            })
            .collect()
    }

    pub(crate) fn register_timers(t: &types::Timers) {
        with(|h| {
            for (d, timer) in timers_of(t) {
                match d {
                    types::TimeDomain::EventTime => h.event_timers.insert(timer),
                    types::TimeDomain::ProcessingTime => h.processing_timers.insert(timer),
                };
            }
        })
    }
    pub(crate) fn delete_timers(t: &types::Timers) {
        with(|h| {
            for (d, timer) in timers_of(t) {
                match d {
                    types::TimeDomain::EventTime => h.event_timers.remove(&timer),
                    types::TimeDomain::ProcessingTime => h.processing_timers.remove(&timer),
                };
            }
        })
    }
    pub(crate) fn current_watermark() -> Option<i64> {
        with(|h| h.watermark)
    }
    pub(crate) fn processing_time() -> i64 {
        with(|h| h.now)
    }

    thread_local! {
        pub(crate) static HOST: RefCell<FakeHost> = RefCell::new(FakeHost::default());
    }

    fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
        HOST.with(|h| {
            let mut h = h.borrow_mut();
            h.calls += 1;
            f(&mut h)
        })
    }

    fn k(name: &str, key: &[u8]) -> Key {
        (name.to_string(), key.to_vec())
    }

    pub(crate) fn set_ttl(name: &str, ttl: Option<types::StateTtl>) {
        with(|h| match ttl {
            Some(t) => {
                h.ttls.insert(name.to_string(), t);
            }
            None => {
                h.ttls.remove(name);
            }
        })
    }

    pub(crate) fn value_get_many(name: &str, keys: &types::Packed) -> types::PackedOptions {
        with(|h| {
            let mut out = types::PackedOptions {
                data: Vec::new(),
                ends: Vec::new(),
                present: Vec::new(),
            };
            for i in 0..keys.ends.len() {
                h.touch(name, crate::runtime::item(keys, i), false);
                let v = h.values.get(&k(name, crate::runtime::item(keys, i)));
                if let Some(v) = v {
                    out.data.extend_from_slice(v);
                }
                out.present.push(v.is_some());
                out.ends.push(out.data.len() as u32);
            }
            out
        })
    }
    pub(crate) fn value_put_many(name: &str, keys: &types::Packed, values: &types::PackedOptions) {
        with(|h| {
            for i in 0..keys.ends.len() {
                let key = k(name, crate::runtime::item(keys, i));
                if values.present[i] {
                    h.values
                        .insert(key, crate::runtime::item_opt(values, i).to_vec());
                } else {
                    h.values.remove(&key);
                }
                h.touch(name, crate::runtime::item(keys, i), true);
            }
        })
    }
    pub(crate) fn list_get_many(name: &str, keys: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
        with(|h| {
            keys.iter()
                .map(|key| {
                    h.touch(name, key, false);
                    h.lists.get(&k(name, key)).cloned().unwrap_or_default()
                })
                .collect()
        })
    }
    pub(crate) fn list_append_many(name: &str, items: &[(Vec<u8>, Vec<u8>)]) {
        with(|h| {
            for (key, item) in items {
                h.touch(name, key, false);
                h.lists.entry(k(name, key)).or_default().push(item.clone());
                h.touch(name, key, true);
            }
        })
    }
    pub(crate) fn list_put_many(name: &str, lists: &[(Vec<u8>, Vec<Vec<u8>>)]) {
        with(|h| {
            for (key, list) in lists {
                if list.is_empty() {
                    h.lists.remove(&k(name, key));
                } else {
                    h.lists.insert(k(name, key), list.clone());
                }
                h.touch(name, key, true);
            }
        })
    }
    pub(crate) fn map_get_many(name: &str, keys: &[(Vec<u8>, Vec<u8>)]) -> Vec<Option<Vec<u8>>> {
        with(|h| {
            keys.iter()
                .map(|(key, mk)| {
                    h.touch(name, key, false);
                    h.maps.get(&k(name, key)).and_then(|m| m.get(mk)).cloned()
                })
                .collect()
        })
    }
    pub(crate) fn map_put_many(name: &str, entries: &[types::MapEntry]) {
        with(|h| {
            for e in entries {
                h.touch(name, &e.key, false);
                let map = h.maps.entry(k(name, &e.key)).or_default();
                match &e.value {
                    Some(v) => map.insert(e.map_key.clone(), v.clone()),
                    None => map.remove(&e.map_key),
                };
                if map.is_empty() {
                    h.maps.remove(&k(name, &e.key));
                }
                h.touch(name, &e.key, true);
            }
        })
    }
    pub(crate) fn map_entries(name: &str, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        with(|h| {
            h.touch(name, key, false);
            h.maps
                .get(&k(name, key))
                .map(|m| m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                .unwrap_or_default()
        })
    }
    pub(crate) fn log(level: LogLevel, message: &str) {
        eprintln!("[{level:?}] {message}");
    }
}
