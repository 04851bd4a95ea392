//! The host's batch: many events in two flat buffers, the unit that moves
//! through a job.
//!
//! A [`Batch`] holds every event's key and value bytes back to back in one
//! byte buffer and, per event, one fixed-size [`Row`] (where its bytes are,
//! whether it has a key and a timestamp). Pushing an event copies its bytes
//! into the buffer: once a batch's buffers have grown to their working size
//! (batches are reused), no event allocates anything. Partitioners copy rows
//! from one batch into per-target batches; the sandbox lowers a batch into a
//! guest's `list<event>` and lifts the guest's output straight into another.
//!
//! A batch also carries when its oldest event entered the job (`born`), so
//! a sink can tell how long events took from source to sink.

use std::time::Instant;

/// Where one event's bytes are in its batch.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Offset of the key (then the value) in the byte buffer.
    start: usize,
    /// Key length; the value follows the key.
    key_len: usize,
    /// Value length.
    value_len: usize,
    /// The timestamp, when `HAS_TS`.
    ts: i64,
    flags: u8,
}

const HAS_KEY: u8 = 1;
const HAS_TS: u8 = 2;

/// One event of a batch, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// The event time, if any (milliseconds).
    pub timestamp: Option<i64>,
}

/// Events in flat buffers. See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    bytes: Vec<u8>,
    rows: Vec<Row>,
    born: Option<Instant>,
}

impl Batch {
    /// An empty batch with room for `events` events of `bytes` bytes.
    pub fn with_capacity(events: usize, bytes: usize) -> Batch {
        Batch {
            bytes: Vec::with_capacity(bytes),
            rows: Vec::with_capacity(events),
            born: None,
        }
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
        self.born = None;
    }

    /// When its oldest event entered the job, if known.
    pub fn born(&self) -> Option<Instant> {
        self.born
    }

    /// Records that events born at `at` are in the batch: keeps the oldest.
    pub fn mark_born(&mut self, at: Option<Instant>) {
        self.born = match (self.born, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Appends an event, copying its bytes.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        let start = self.bytes.len();
        let mut flags = 0;
        let key_len = match key {
            Some(k) => {
                flags |= HAS_KEY;
                self.bytes.extend_from_slice(k);
                k.len()
            }
            None => 0,
        };
        self.bytes.extend_from_slice(value);
        if timestamp.is_some() {
            flags |= HAS_TS;
        }
        self.rows.push(Row {
            start,
            key_len,
            value_len: value.len(),
            ts: timestamp.unwrap_or(0),
            flags,
        });
    }

    /// Appends an event.
    pub fn push_ref(&mut self, e: EventRef<'_>) {
        self.push(e.key, e.value, e.timestamp);
    }

    /// Appends an event whose key and value are written in place: `write`
    /// appends the key's bytes to the buffer it is given and returns how
    /// many it wrote (`None`: no key), then `value` appends the value's.
    /// Sources use it to build events without a scratch buffer.
    pub fn push_with(
        &mut self,
        timestamp: Option<i64>,
        key: impl FnOnce(&mut Vec<u8>) -> bool,
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        let mut flags = 0;
        if key(&mut self.bytes) {
            flags |= HAS_KEY;
        }
        let key_len = self.bytes.len() - start;
        value(&mut self.bytes);
        let value_len = self.bytes.len() - start - key_len;
        if timestamp.is_some() {
            flags |= HAS_TS;
        }
        self.rows.push(Row {
            start,
            key_len,
            value_len,
            ts: timestamp.unwrap_or(0),
            flags,
        });
    }

    /// Event `i`. Panics when `i >= len()`, like indexing.
    pub fn get(&self, i: usize) -> EventRef<'_> {
        let r = self.rows[i];
        let key_end = r.start + r.key_len;
        EventRef {
            key: (r.flags & HAS_KEY != 0).then(|| &self.bytes[r.start..key_end]),
            value: &self.bytes[key_end..key_end + r.value_len],
            timestamp: (r.flags & HAS_TS != 0).then_some(r.ts),
        }
    }

    /// Every event, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + '_ {
        (0..self.rows.len()).map(move |i| self.get(i))
    }

    /// Appends every event of `other` (and its birth time).
    pub fn extend_from(&mut self, other: &Batch) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.rows.extend(other.rows.iter().map(|r| Row {
            start: r.start + base,
            ..*r
        }));
        self.mark_born(other.born);
    }

    /// Takes the batch out, leaving an empty one with room for as many
    /// events and bytes (so the next batch starts at the size this one
    /// reached).
    pub fn take(&mut self) -> Batch {
        let fresh = Batch::with_capacity(self.rows.len(), self.bytes.len());
        std::mem::replace(self, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_and_without_keys_and_times() {
        let mut b = Batch::default();
        b.push(Some(b"k1"), b"v1", Some(7));
        b.push(None, b"", None);
        b.push(Some(b""), b"value", None);
        b.push_with(
            Some(-1),
            |buf| {
                buf.extend_from_slice(b"key-9");
                true
            },
            |buf| buf.extend_from_slice(b"42"),
        );
        let got: Vec<_> = b.iter().collect();
        assert_eq!(
            got,
            vec![
                EventRef {
                    key: Some(b"k1"),
                    value: b"v1",
                    timestamp: Some(7)
                },
                EventRef {
                    key: None,
                    value: b"",
                    timestamp: None
                },
                EventRef {
                    key: Some(b""),
                    value: b"value",
                    timestamp: None
                },
                EventRef {
                    key: Some(b"key-9"),
                    value: b"42",
                    timestamp: Some(-1)
                },
            ]
        );
        let mut c = Batch::default();
        c.push(Some(b"x"), b"y", None);
        c.extend_from(&b);
        assert_eq!(c.len(), 5);
        assert_eq!(c.get(4).key, Some(&b"key-9"[..]));
        assert_eq!(c.get(1), b.get(0));
        c.clear();
        assert!(c.is_empty() && c.byte_len() == 0);
    }

    #[test]
    fn born_keeps_the_oldest() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(5);
        let mut b = Batch::default();
        b.mark_born(Some(t1));
        b.mark_born(None);
        b.mark_born(Some(t0));
        assert_eq!(b.born(), Some(t0));
        b.clear();
        assert_eq!(b.born(), None);
    }
}
