//! Time to live of keyed state (Flink's state TTL).
//!
//! A state name may be given a [`Ttl`]. Then each of its entries (one
//! key's value, list or map) has the time it was last refreshed, kept as
//! ordinary value state of the reserved name `wrun:ttl:<name>` under the
//! same key: 8 bytes, big-endian. So refresh times are in every checkpoint
//! (incrementally), move with their keys on a rescale, and need nothing of
//! the state format. An entry is expired once `refreshed + millis <= now`,
//! where now is the job's clock (processing time) or the subtask's
//! watermark (event time).
//!
//! - An expired entry is never returned: a read finds it expired, removes
//!   it and answers as if it were absent.
//! - [`KeyedState::expire`] removes expired entries a few key groups at a
//!   time (the cleanup the host runs after batches and when idle), and all
//!   of them before a snapshot, so no checkpoint holds an expired entry
//!   and state stops growing under a stream of new keys. Per key group,
//!   the earliest time any of its entries can expire is kept, so a key
//!   group with nothing due costs nothing.
//! - Entries refreshed in event time before the subtask's first watermark
//!   are [`PENDING`]: they count as refreshed at the first watermark, when
//!   the cleanup stamps them.

use super::{KeyedState, StateError, StateKind, Table};
use crate::state::timers::Domain;

/// The prefix of the reserved state names refresh times are kept under.
pub const TTL_PREFIX: &str = "wrun:ttl:";

/// A refresh time in event time before the first watermark.
const PENDING: i64 = i64::MIN;

/// What refreshes an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Writes only.
    OnWrite,
    /// Reads and writes.
    OnReadAndWrite,
}

/// A state's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// How long an entry lives after its last refresh, in milliseconds
    /// (at least 1).
    pub millis: i64,
    /// The clock that measures it.
    pub domain: Domain,
    /// What refreshes an entry.
    pub refresh: Refresh,
}

/// A state with a time to live: its TTL and the id of its refresh times.
#[derive(Debug, Clone, Copy)]
struct Slot {
    ttl: Ttl,
    stamps: usize,
}

fn slot_index(d: Domain) -> usize {
    match d {
        Domain::EventTime => 0,
        Domain::ProcessingTime => 1,
    }
}

/// The TTL part of a [`KeyedState`].
#[derive(Debug, Default)]
pub(super) struct Ttls {
    /// TTLs set, by state name.
    by_name: Vec<(String, Ttl)>,
    /// By state id: its TTL, where it has one.
    slots: Vec<Option<Slot>>,
    /// Now, per domain ([`slot_index`]): the watermark, the clock.
    now: [Option<i64>; 2],
    /// Per owned key group, per domain: no entry expires before this.
    due: Vec<[i64; 2]>,
    /// The key group the next cleanup step starts at.
    cursor: usize,
}

impl Ttls {
    /// Whether state `id` has a time to live.
    pub(super) fn has(&self, id: usize) -> bool {
        self.slot(id).is_some()
    }

    /// Whether a time to live was set for state `name`.
    pub(super) fn declared(&self, name: &str) -> bool {
        self.by_name.iter().any(|(n, _)| n == name)
    }

    fn slot(&self, id: usize) -> Option<Slot> {
        self.slots.get(id).copied().flatten()
    }

    fn now(&self, d: Domain) -> Option<i64> {
        self.now[slot_index(d)]
    }

    /// The refresh time of a write now.
    fn stamp(&self, ttl: &Ttl) -> i64 {
        self.now(ttl.domain).unwrap_or(PENDING)
    }

    fn expired(&self, ttl: &Ttl, refreshed: i64) -> bool {
        refreshed != PENDING
            && self
                .now(ttl.domain)
                .is_some_and(|now| refreshed.saturating_add(ttl.millis) <= now)
    }

    /// Whether anything in owned key group `gi` may be due now.
    fn due_in(&self, gi: usize) -> bool {
        let due = self.due.get(gi).copied().unwrap_or([i64::MIN; 2]);
        (0..2).any(|d| self.now[d].is_some_and(|now| due[d] <= now))
    }

    fn lower_due(&mut self, gi: usize, ttl: &Ttl, refreshed: i64) {
        if let Some(due) = self.due.get_mut(gi) {
            let d = slot_index(ttl.domain);
            due[d] = due[d].min(expires_at(ttl, refreshed));
        }
    }
}

/// When an entry refreshed at `refreshed` expires; a pending one (no
/// watermark yet) is due at once, so the cleanup stamps it.
fn expires_at(ttl: &Ttl, refreshed: i64) -> i64 {
    if refreshed == PENDING {
        i64::MIN
    } else {
        refreshed.saturating_add(ttl.millis)
    }
}

fn decode_stamp(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_be_bytes).unwrap_or(PENDING)
}

impl KeyedState {
    /// Gives state `name` a time to live (or, with `None`, takes it away).
    /// Entries it already holds without a refresh time count as refreshed
    /// now; restored entries that have expired go at the next
    /// [`expire`](Self::expire).
    pub fn set_ttl(&mut self, name: &str, ttl: Option<Ttl>) -> Result<(), StateError> {
        if let Some(t) = &ttl
            && t.millis < 1
        {
            return Err(StateError::Malformed {
                name: name.to_string(),
                detail: format!("a time to live of {} ms; it must be at least 1", t.millis),
            });
        }
        self.ttl.by_name.retain(|(n, _)| n != name);
        if let Some(t) = ttl {
            self.ttl.by_name.push((name.to_string(), t));
        }
        if let Some(&id) = self.ids.get(name) {
            self.apply_ttl(id)?;
        }
        Ok(())
    }

    /// Sets up the TTL of state `id` from `by_name` (on first use of its
    /// name, or when it is set).
    pub(super) fn apply_ttl(&mut self, id: usize) -> Result<(), StateError> {
        let name = self.names[id].0.clone();
        let ttl = self
            .ttl
            .by_name
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t);
        if self.ttl.slots.len() <= id {
            self.ttl.slots.resize(id + 1, None);
        }
        let Some(ttl) = ttl else {
            self.ttl.slots[id] = None;
            return Ok(());
        };
        let stamps = self.id(&format!("{TTL_PREFIX}{name}"), StateKind::Value)?;
        if self.ttl.slots.len() <= stamps {
            self.ttl.slots.resize(stamps + 1, None);
        }
        self.ttl.slots[id] = Some(Slot { ttl, stamps });
        self.ttl.due = vec![[i64::MIN; 2]; self.range.len()];
        // Entries without a refresh time count as refreshed now.
        let stamp = self.ttl.stamp(&ttl).to_be_bytes();
        for gi in 0..self.groups.len() {
            let missing: Vec<Vec<u8>> = match self.groups[gi].get(id) {
                Some(t) => {
                    let has = |k: &[u8]| match self.groups[gi].get(stamps) {
                        Some(Table::Value(m)) => m.contains_key(k),
                        _ => false,
                    };
                    table_keys(t).into_iter().filter(|k| !has(k)).collect()
                }
                None => continue,
            };
            for k in missing {
                self.value_set(stamps, &k, Some(&stamp))?;
            }
        }
        Ok(())
    }

    /// Tells the state what time it is: the subtask's watermark (event
    /// time) and the job's clock (processing time, Unix milliseconds).
    pub fn set_clock(&mut self, watermark: Option<i64>, now_ms: i64) {
        self.ttl.now = [watermark, Some(now_ms)];
    }

    /// Whether any state has a time to live.
    pub fn has_ttl(&self) -> bool {
        self.ttl.slots.iter().any(Option::is_some)
    }

    /// Before a read of state `id` of `key`: whether the entry has expired
    /// (it is removed then, and the read answers as if it were absent);
    /// refreshes it when reads refresh.
    pub(super) fn ttl_read(&mut self, id: usize, key: &[u8]) -> Result<bool, StateError> {
        let Some(slot) = self.ttl.slot(id) else {
            return Ok(false);
        };
        let Some(refreshed) = self.value_ref(slot.stamps, key)?.map(decode_stamp) else {
            return Ok(false);
        };
        if self.ttl.expired(&slot.ttl, refreshed) {
            self.clear_entry(id, key)?;
            return Ok(true);
        }
        if slot.ttl.refresh == Refresh::OnReadAndWrite {
            self.stamp_now(slot, key)?;
        }
        Ok(false)
    }

    /// After a write of state `id` of `key`: refreshes the entry, or drops
    /// its refresh time when the write removed it.
    pub(super) fn ttl_written(&mut self, id: usize, key: &[u8]) -> Result<(), StateError> {
        let Some(slot) = self.ttl.slot(id) else {
            return Ok(());
        };
        let held = self.table(id, key)?.is_some_and(|t| table_has(t, key));
        if held {
            self.stamp_now(slot, key)
        } else {
            self.value_set(slot.stamps, key, None)
        }
    }

    fn stamp_now(&mut self, slot: Slot, key: &[u8]) -> Result<(), StateError> {
        let stamp = self.ttl.stamp(&slot.ttl);
        self.value_set(slot.stamps, key, Some(&stamp.to_be_bytes()))?;
        let gi = self.group_index(slot.stamps, key)?;
        self.ttl.lower_due(gi, &slot.ttl, stamp);
        Ok(())
    }

    /// Removes an entry of state `id` and its refresh time.
    fn clear_entry(&mut self, id: usize, key: &[u8]) -> Result<(), StateError> {
        self.clear_raw(id, key)?;
        if let Some(slot) = self.ttl.slot(id) {
            self.clear_raw(slot.stamps, key)?;
        }
        Ok(())
    }

    /// Removes expired entries, visiting key groups from where the last
    /// call stopped until about `budget` refresh times were looked at (at
    /// least one key group), or every key group with `None`. Stamps the
    /// event-time entries refreshed before the first watermark. Returns
    /// how many entries it removed.
    pub fn expire(&mut self, budget: Option<usize>) -> Result<usize, StateError> {
        let slots: Vec<(usize, Slot)> = (0..self.ttl.slots.len())
            .filter_map(|id| self.ttl.slot(id).map(|s| (id, s)))
            .collect();
        let groups = self.groups.len();
        if slots.is_empty() || groups == 0 {
            return Ok(0);
        }
        let (mut looked, mut removed) = (0usize, 0usize);
        let start = self.ttl.cursor;
        for step in 0..groups {
            if budget.is_some_and(|b| step > 0 && looked >= b) {
                break;
            }
            let gi = (start + step) % groups;
            self.ttl.cursor = (gi + 1) % groups;
            if !self.ttl.due_in(gi) {
                continue;
            }
            let mut due = [i64::MAX; 2];
            for &(id, slot) in &slots {
                let mut expired = Vec::new();
                let mut pending = Vec::new();
                if let Some(Table::Value(m)) = self.groups[gi].get(slot.stamps) {
                    looked += m.len();
                    for (k, v) in m.iter() {
                        let refreshed = decode_stamp(&v.value);
                        if self.ttl.expired(&slot.ttl, refreshed) {
                            expired.push(k.to_vec());
                        } else if refreshed == PENDING && self.ttl.now(slot.ttl.domain).is_some() {
                            pending.push(k.to_vec());
                        } else {
                            let d = slot_index(slot.ttl.domain);
                            due[d] = due[d].min(expires_at(&slot.ttl, refreshed));
                        }
                    }
                }
                removed += expired.len();
                for k in expired {
                    self.clear_entry(id, &k)?;
                }
                if let Some(now) = self.ttl.now(slot.ttl.domain) {
                    let d = slot_index(slot.ttl.domain);
                    for k in pending {
                        self.value_set(slot.stamps, &k, Some(&now.to_be_bytes()))?;
                        due[d] = due[d].min(now.saturating_add(slot.ttl.millis));
                    }
                }
            }
            if let Some(d) = self.ttl.due.get_mut(gi) {
                *d = due;
            }
        }
        Ok(removed)
    }

    /// Drops the refresh times of states that no longer have a time to
    /// live (the module that set it was swapped for one that does not):
    /// their entries live forever now. Call it after `open`.
    pub fn drop_stale_ttl(&mut self) -> Result<(), StateError> {
        let stale: Vec<usize> = self
            .names
            .iter()
            .enumerate()
            .filter(|(id, (name, _))| {
                name.starts_with(TTL_PREFIX)
                    && !self.ttl.slots.iter().flatten().any(|s| s.stamps == *id)
            })
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            for gi in 0..self.groups.len() {
                let keys = match self.groups[gi].get(id) {
                    Some(t) => table_keys(t),
                    None => continue,
                };
                for k in keys {
                    self.clear_raw(id, &k)?;
                }
            }
        }
        Ok(())
    }
}

/// Every key of a table.
fn table_keys(t: &Table) -> Vec<Vec<u8>> {
    match t {
        Table::Value(m) => m.keys().map(|k| k.to_vec()).collect(),
        Table::List(m) => m.keys().cloned().collect(),
        Table::Map(m) => m.keys().cloned().collect(),
    }
}

fn table_has(t: &Table, key: &[u8]) -> bool {
    match t {
        Table::Value(m) => m.contains_key(key),
        Table::List(m) => m.contains_key(key),
        Table::Map(m) => m.contains_key(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KeyGroupRange, StateLimits};

    fn state() -> KeyedState {
        KeyedState::new(
            16,
            KeyGroupRange { start: 0, end: 16 },
            StateLimits::default(),
        )
    }

    fn ttl(millis: i64, domain: Domain, refresh: Refresh) -> Option<Ttl> {
        Some(Ttl {
            millis,
            domain,
            refresh,
        })
    }

    const PROC: Domain = Domain::ProcessingTime;

    #[test]
    fn an_expired_value_is_never_returned_and_is_removed() {
        let mut s = state();
        s.set_clock(None, 0);
        s.set_ttl("v", ttl(100, PROC, Refresh::OnWrite)).unwrap();
        let v = s.id("v", StateKind::Value).unwrap();
        s.value_put(v, b"a".to_vec(), Some(b"1".to_vec())).unwrap();
        s.set_clock(None, 99);
        assert_eq!(s.value_get(v, b"a").unwrap(), Some(b"1".to_vec()));
        // Reads do not refresh: it expires 100 ms after the write.
        s.set_clock(None, 100);
        assert_eq!(s.value_get(v, b"a").unwrap(), None);
        assert_eq!(s.key_count(), 0, "the value and its refresh time are gone");
        // A write after expiry starts afresh.
        s.value_put(v, b"a".to_vec(), Some(b"2".to_vec())).unwrap();
        s.set_clock(None, 150);
        assert_eq!(s.value_get(v, b"a").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn reads_refresh_when_asked_to() {
        let mut s = state();
        s.set_clock(None, 0);
        s.set_ttl("l", ttl(100, PROC, Refresh::OnReadAndWrite))
            .unwrap();
        let l = s.id("l", StateKind::List).unwrap();
        s.list_append(l, b"a".to_vec(), b"x".to_vec()).unwrap();
        for now in [90, 180, 270] {
            s.set_clock(None, now);
            assert_eq!(s.list_get(l, b"a").unwrap(), vec![b"x".to_vec()]);
        }
        s.set_clock(None, 370);
        assert!(s.list_get(l, b"a").unwrap().is_empty());
        // Appending to an expired list starts a new one.
        s.list_append(l, b"a".to_vec(), b"x".to_vec()).unwrap();
        s.set_clock(None, 500);
        s.list_append(l, b"a".to_vec(), b"y".to_vec()).unwrap();
        assert_eq!(s.list_get(l, b"a").unwrap(), vec![b"y".to_vec()]);
    }

    #[test]
    fn a_map_expires_as_a_whole_and_writes_refresh_it() {
        let mut s = state();
        s.set_clock(None, 0);
        s.set_ttl("m", ttl(10, PROC, Refresh::OnWrite)).unwrap();
        let m = s.id("m", StateKind::Map).unwrap();
        s.map_put(m, b"k".to_vec(), b"1".to_vec(), Some(b"a".to_vec()))
            .unwrap();
        s.set_clock(None, 5);
        s.map_put(m, b"k".to_vec(), b"2".to_vec(), Some(b"b".to_vec()))
            .unwrap();
        s.set_clock(None, 14);
        assert_eq!(s.map_entries(m, b"k").unwrap().len(), 2);
        s.set_clock(None, 15);
        assert_eq!(s.map_get(m, b"k", b"1").unwrap(), None);
        assert!(s.map_entries(m, b"k").unwrap().is_empty());
    }

    #[test]
    fn event_time_counts_from_the_first_watermark() {
        let mut s = state();
        s.set_ttl("v", ttl(100, Domain::EventTime, Refresh::OnWrite))
            .unwrap();
        let v = s.id("v", StateKind::Value).unwrap();
        s.set_clock(None, 1_000_000);
        s.value_put(v, b"a".to_vec(), Some(vec![1])).unwrap();
        assert_eq!(s.expire(None).unwrap(), 0, "no watermark: nothing expires");
        s.set_clock(Some(5_000), 1_000_000);
        // The cleanup stamps it with the first watermark ...
        assert_eq!(s.expire(None).unwrap(), 0);
        s.set_clock(Some(5_099), 1_000_000);
        assert_eq!(s.value_get(v, b"a").unwrap(), Some(vec![1]));
        // ... and it expires 100 ms of event time later.
        s.set_clock(Some(5_100), 1_000_000);
        assert_eq!(s.value_get(v, b"a").unwrap(), None);
    }

    #[test]
    fn cleanup_keeps_state_from_growing_under_new_keys() {
        let mut s = state();
        s.set_clock(None, 0);
        s.set_ttl("v", ttl(1_000, PROC, Refresh::OnWrite)).unwrap();
        let v = s.id("v", StateKind::Value).unwrap();
        let mut most = 0;
        // A new key every millisecond for 20 s, never read again; cleanup
        // after every batch of 100 keys, as the host does.
        for t in 0..20_000i64 {
            s.set_clock(None, t);
            s.value_put(v, t.to_be_bytes().to_vec(), Some(vec![0; 8]))
                .unwrap();
            if t % 100 == 99 {
                s.expire(Some(4096)).unwrap();
                most = most.max(s.key_count());
            }
        }
        // 1,000 live keys and their refresh times, plus what one sweep of
        // the key groups leaves behind.
        assert!(most <= 2 * 1_200, "state grew to {most} entries");
    }

    #[test]
    fn a_snapshot_holds_no_expired_entry() {
        let mut s = state();
        s.set_clock(None, 0);
        s.set_ttl("v", ttl(10, PROC, Refresh::OnWrite)).unwrap();
        let v = s.id("v", StateKind::Value).unwrap();
        for k in 0..100u32 {
            s.value_put(v, k.to_be_bytes().to_vec(), Some(vec![1]))
                .unwrap();
        }
        s.snapshot(true);
        s.set_clock(None, 5);
        s.value_put(v, b"late".to_vec(), Some(vec![2])).unwrap();
        s.set_clock(None, 10);
        // What the host does before every snapshot.
        let n = s.expire(None).unwrap();
        assert_eq!((n, s.key_count()), (100, 2));
        let snap = s.snapshot(false);
        let held: usize = snap
            .groups
            .iter()
            .map(|g| g.tables.iter().map(Table::len).sum::<usize>())
            .sum();
        assert_eq!(held, 2, "only `late` and its refresh time are left");
        // Each key group's delta removes its expired keys, or it is
        // written whole.
        assert!(snap.groups.len() > 1);
        for g in &snap.groups {
            assert!(
                g.change == super::super::Change::Full || !g.removed.is_empty(),
                "{:?}",
                g.change
            );
        }
    }

    #[test]
    fn entries_without_refresh_times_count_from_when_the_ttl_is_set() {
        let mut s = state();
        s.set_clock(None, 0);
        let v = s.id("v", StateKind::Value).unwrap();
        s.value_put(v, b"old".to_vec(), Some(vec![1])).unwrap();
        s.set_clock(None, 1_000);
        s.set_ttl("v", ttl(10, PROC, Refresh::OnWrite)).unwrap();
        s.set_clock(None, 1_009);
        assert_eq!(s.value_get(v, b"old").unwrap(), Some(vec![1]));
        s.set_clock(None, 1_010);
        assert_eq!(s.value_get(v, b"old").unwrap(), None);
        // Taking the TTL away keeps the entries forever and drops their
        // refresh times.
        s.value_put(v, b"new".to_vec(), Some(vec![1])).unwrap();
        s.set_ttl("v", None).unwrap();
        s.drop_stale_ttl().unwrap();
        s.set_clock(None, 1_000_000);
        assert_eq!(s.value_get(v, b"new").unwrap(), Some(vec![1]));
        assert_eq!(s.key_count(), 1);
        assert!(s.set_ttl("v", ttl(0, PROC, Refresh::OnWrite)).is_err());
    }
}
