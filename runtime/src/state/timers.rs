//! Keyed timers: kept as keyed state, fired from a queue in memory.
//!
//! A timer is (event key, time, domain, tag). It is stored in the subtask's
//! [`KeyedState`] as map state of the reserved name [`TIMERS_STATE`]: under
//! its event key, the map key is [`encode`]d (domain, time, tag) and the
//! value is empty. So timers are deduplicated by construction, are in every
//! checkpoint and savepoint (incrementally, like any keyed state), move with
//! their key groups when parallelism changes, and survive a module swap.
//!
//! [`TimerQueue`] orders the pending timers of each domain by time, for
//! firing; it is rebuilt from the state when a subtask starts.

use super::{KeyedState, StateError, StateKind};
use std::collections::BTreeSet;

/// The state name timers are kept under. Guests cannot use it: names
/// starting with [`RESERVED_PREFIX`] are the host's.
pub const TIMERS_STATE: &str = "wrun:timers";

/// State names starting with this belong to the host.
pub const RESERVED_PREFIX: &str = "wrun:";

/// Whether a state name is the host's own.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// Fires when the watermark reaches its time.
    EventTime,
    /// Fires when the job's clock reaches its time.
    ProcessingTime,
}

/// One timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// The event key it belongs to.
    pub key: Vec<u8>,
    /// When it fires, in milliseconds.
    pub time: i64,
    /// Its clock.
    pub domain: Domain,
    /// The operator's tag.
    pub tag: u32,
}

/// The map key a timer is stored under: domain (1 byte), time (8 bytes,
/// big-endian with the sign bit flipped, so byte order is time order), tag
/// (4 bytes, big-endian).
pub fn encode(domain: Domain, time: i64, tag: u32) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[0] = match domain {
        Domain::EventTime => 0,
        Domain::ProcessingTime => 1,
    };
    out[1..9].copy_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    out[9..].copy_from_slice(&tag.to_be_bytes());
    out
}

/// The inverse of [`encode`]; `None` for bytes it did not write.
pub fn decode(bytes: &[u8]) -> Option<(Domain, i64, u32)> {
    if bytes.len() != 13 {
        return None;
    }
    let domain = match bytes[0] {
        0 => Domain::EventTime,
        1 => Domain::ProcessingTime,
        _ => return None,
    };
    let time = (u64::from_be_bytes(bytes[1..9].try_into().ok()?) ^ (1 << 63)) as i64;
    let tag = u32::from_be_bytes(bytes[9..].try_into().ok()?);
    Some((domain, time, tag))
}

/// Pending timers of one domain, ordered by (time, key, tag).
type Queue = BTreeSet<(i64, Vec<u8>, u32)>;

/// A subtask's pending timers, in time order per domain. Every change goes
/// to the keyed state too, which is what checkpoints see.
#[derive(Debug, Default)]
pub struct TimerQueue {
    event: Queue,
    processing: Queue,
    /// Most pending timers the subtask may hold.
    limit: usize,
}

impl TimerQueue {
    /// The queue of the timers in `state` (a restored subtask's), holding
    /// at most `limit`.
    pub fn restore(state: &KeyedState, limit: usize) -> Result<TimerQueue, StateError> {
        let malformed = |detail: String| StateError::Malformed {
            name: TIMERS_STATE.into(),
            detail,
        };
        let (mut event, mut processing) = (Vec::new(), Vec::new());
        for (key, map) in state.maps(TIMERS_STATE).map_err(malformed)? {
            for mk in map.keys() {
                let (domain, time, tag) = decode(mk).ok_or_else(|| {
                    malformed(format!("a restored timer entry of {} bytes", mk.len()))
                })?;
                match domain {
                    Domain::EventTime => event.push((time, key.to_vec(), tag)),
                    Domain::ProcessingTime => processing.push((time, key.to_vec(), tag)),
                }
            }
        }
        // Collecting a sorted vector builds the tree in bulk, far faster
        // than a million inserts.
        event.sort_unstable();
        processing.sort_unstable();
        Ok(TimerQueue {
            event: event.into_iter().collect(),
            processing: processing.into_iter().collect(),
            limit,
        })
    }

    fn queue(&mut self, domain: Domain) -> &mut Queue {
        match domain {
            Domain::EventTime => &mut self.event,
            Domain::ProcessingTime => &mut self.processing,
        }
    }

    /// Pending timers of both domains.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// Pending timers of one domain.
    pub fn count(&self, domain: Domain) -> usize {
        match domain {
            Domain::EventTime => self.event.len(),
            Domain::ProcessingTime => self.processing.len(),
        }
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest pending time of a domain.
    pub fn next_time(&self, domain: Domain) -> Option<i64> {
        match domain {
            Domain::EventTime => self.event.first(),
            Domain::ProcessingTime => self.processing.first(),
        }
        .map(|t| t.0)
    }

    /// Registers a timer (again: nothing changes). The key must be one
    /// the subtask owns.
    pub fn register(&mut self, state: &mut KeyedState, t: &Timer) -> Result<(), StateError> {
        let entry = (t.time, t.key.clone(), t.tag);
        if self.queue(t.domain).contains(&entry) {
            return Ok(());
        }
        if self.len() >= self.limit {
            return Err(StateError::TooManyTimers {
                pending: self.len(),
            });
        }
        let id = state.id(TIMERS_STATE, StateKind::Map)?;
        state.map_put(
            id,
            t.key.clone(),
            encode(t.domain, t.time, t.tag).to_vec(),
            Some(Vec::new()),
        )?;
        self.queue(t.domain).insert(entry);
        Ok(())
    }

    /// Deletes a timer, if it is pending.
    pub fn delete(&mut self, state: &mut KeyedState, t: &Timer) -> Result<(), StateError> {
        let entry = (t.time, t.key.clone(), t.tag);
        if !self.queue(t.domain).remove(&entry) {
            return Ok(());
        }
        let id = state.id(TIMERS_STATE, StateKind::Map)?;
        state.map_put(
            id,
            t.key.clone(),
            encode(t.domain, t.time, t.tag).to_vec(),
            None,
        )?;
        Ok(())
    }

    /// Takes up to `max` timers of `domain` whose time is at most `upto`,
    /// in time order, out of the queue and the state, into `out`.
    pub fn pop_due(
        &mut self,
        state: &mut KeyedState,
        domain: Domain,
        upto: i64,
        max: usize,
        out: &mut Vec<Timer>,
    ) -> Result<(), StateError> {
        let mut id = None;
        while out.len() < max {
            let q = self.queue(domain);
            match q.first() {
                Some((time, _, _)) if *time <= upto => {}
                _ => break,
            }
            let Some((time, key, tag)) = q.pop_first() else {
                break;
            };
            let sid = match id {
                Some(i) => i,
                None => *id.insert(state.id(TIMERS_STATE, StateKind::Map)?),
            };
            state.map_put(sid, key.clone(), encode(domain, time, tag).to_vec(), None)?;
            out.push(Timer {
                key,
                time,
                domain,
                tag,
            });
        }
        Ok(())
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

    fn timer(key: &str, time: i64, domain: Domain, tag: u32) -> Timer {
        Timer {
            key: key.as_bytes().to_vec(),
            time,
            domain,
            tag,
        }
    }

    #[test]
    fn encoding_orders_by_time_and_round_trips_the_extremes() {
        let times = [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let enc: Vec<_> = times
            .iter()
            .map(|&t| encode(Domain::EventTime, t, 7))
            .collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        for (&t, e) in times.iter().zip(&enc) {
            assert_eq!(decode(e), Some((Domain::EventTime, t, 7)));
        }
        assert_eq!(
            decode(&encode(Domain::ProcessingTime, -5, u32::MAX)),
            Some((Domain::ProcessingTime, -5, u32::MAX))
        );
        assert_eq!(decode(&[9; 13]), None);
        assert_eq!(decode(b"short"), None);
    }

    #[test]
    fn timers_fire_in_time_order_once_and_survive_a_restore() {
        let mut s = state();
        let mut q = TimerQueue::restore(&s, 100).unwrap();
        for t in [
            timer("b", 30, Domain::EventTime, 0),
            timer("a", 10, Domain::EventTime, 0),
            timer("a", 10, Domain::EventTime, 0), // a duplicate
            timer("a", 10, Domain::EventTime, 1), // another tag
            timer("c", 20, Domain::ProcessingTime, 0),
            timer("d", i64::MAX, Domain::EventTime, 0),
        ] {
            q.register(&mut s, &t).unwrap();
        }
        assert_eq!(q.len(), 5);
        q.delete(&mut s, &timer("b", 30, Domain::EventTime, 0))
            .unwrap();
        q.delete(&mut s, &timer("zz", 1, Domain::EventTime, 0))
            .unwrap();
        // What a restore sees is what the state holds.
        let mut r = TimerQueue::restore(&s, 100).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r.next_time(Domain::EventTime), Some(10));
        assert_eq!(r.next_time(Domain::ProcessingTime), Some(20));
        let mut out = Vec::new();
        r.pop_due(&mut s, Domain::EventTime, 29, 10, &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![
                timer("a", 10, Domain::EventTime, 0),
                timer("a", 10, Domain::EventTime, 1)
            ]
        );
        out.clear();
        r.pop_due(&mut s, Domain::EventTime, i64::MAX, 10, &mut out)
            .unwrap();
        assert_eq!(out, vec![timer("d", i64::MAX, Domain::EventTime, 0)]);
        // Fired timers are gone from the state too.
        let again = TimerQueue::restore(&s, 100).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.next_time(Domain::EventTime), None);
    }

    #[test]
    fn the_limit_refuses_new_timers_but_not_known_ones() {
        let mut s = state();
        let mut q = TimerQueue::restore(&s, 2).unwrap();
        q.register(&mut s, &timer("a", 1, Domain::EventTime, 0))
            .unwrap();
        q.register(&mut s, &timer("a", 2, Domain::EventTime, 0))
            .unwrap();
        q.register(&mut s, &timer("a", 2, Domain::EventTime, 0))
            .unwrap();
        let e = q
            .register(&mut s, &timer("a", 3, Domain::EventTime, 0))
            .unwrap_err();
        assert!(e.to_string().contains("limits.max-timers"), "{e}");
    }

    #[test]
    fn keys_of_other_subtasks_are_refused() {
        let mut s = KeyedState::new(
            16,
            KeyGroupRange { start: 0, end: 1 },
            StateLimits::default(),
        );
        let mut q = TimerQueue::restore(&s, 10).unwrap();
        let foreign = (0..100)
            .map(|i| format!("k{i}"))
            .find(|k| super::super::key_group_of(k.as_bytes(), 16).0 != 0)
            .unwrap();
        let e = q
            .register(&mut s, &timer(&foreign, 1, Domain::EventTime, 0))
            .unwrap_err();
        assert!(e.to_string().contains("does not own"), "{e}");
        assert!(q.is_empty());
    }
}
