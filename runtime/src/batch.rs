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

/// A batch as the flat lists of `wrun:operator@0.2.0`'s `events` record,
/// besides the bytes (which are the batch's own buffer, [`Batch::bytes`]):
/// per event, the end offsets of its key and of its value, its flags (bit 0:
/// has a key, bit 1: has a timestamp) and its timestamp (0 when absent).
/// Kept and refilled by the caller, so lowering a batch allocates nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PackedLists {
    /// End of each event's key in the bytes.
    pub key_ends: Vec<u32>,
    /// End of each event's value in the bytes.
    pub value_ends: Vec<u32>,
    /// Each event's flags.
    pub flags: Vec<u8>,
    /// Each event's timestamp.
    pub timestamps: Vec<i64>,
}

/// Flag bit of [`PackedLists::flags`]: the event has a key.
pub const PACKED_HAS_KEY: u8 = 1;
/// Flag bit of [`PackedLists::flags`]: the event has a timestamp.
pub const PACKED_HAS_TIMESTAMP: u8 = 2;

/// Packed events that break the rules of the `events` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackedError {
    /// The lists have different lengths.
    #[error(
        "the packed lists differ in length: {key_ends} key ends, {value_ends} value ends, {flags} flags, {timestamps} timestamps"
    )]
    Lengths {
        /// `key-ends`.
        key_ends: usize,
        /// `value-ends`.
        value_ends: usize,
        /// `flags`.
        flags: usize,
        /// `timestamps`.
        timestamps: usize,
    },
    /// An offset out of order or past the data.
    #[error("event {index}: end offset {end} comes before {start} or past the {len} bytes of data")]
    Offset {
        /// The event.
        index: usize,
        /// Where it starts.
        start: u32,
        /// The offending end.
        end: u32,
        /// Bytes of data.
        len: usize,
    },
    /// Unknown flag bits.
    #[error("event {index}: flags {flags:#04x} set bits other than 1 (key) and 2 (timestamp)")]
    Flags {
        /// The event.
        index: usize,
        /// Its flags.
        flags: u8,
    },
    /// The bytes of one batch do not fit 32-bit offsets.
    #[error("a batch of {0} bytes does not fit the 32-bit offsets of a packed batch")]
    TooLarge(usize),
}

impl Batch {
    /// Every event's key then value bytes, back to back in event order:
    /// the `data` of a packed batch ([`PackedLists`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the batch's offsets, flags and timestamps into `out`
    /// (cleared first). With [`Batch::bytes`] that is the whole batch.
    pub fn write_packed(&self, out: &mut PackedLists) -> Result<(), PackedError> {
        if u32::try_from(self.bytes.len()).is_err() {
            return Err(PackedError::TooLarge(self.bytes.len()));
        }
        out.key_ends.clear();
        out.value_ends.clear();
        out.flags.clear();
        out.timestamps.clear();
        for r in &self.rows {
            let key_end = r.start + r.key_len;
            out.key_ends.push(key_end as u32);
            out.value_ends.push((key_end + r.value_len) as u32);
            out.flags.push(r.flags);
            out.timestamps.push(r.ts);
        }
        Ok(())
    }

    /// A batch from packed lists, taking `data` as its buffer; refuses
    /// lists that break the rules (a guest wrote them).
    pub fn from_packed(data: Vec<u8>, lists: &PackedLists) -> Result<Batch, PackedError> {
        let rows = packed_rows(&data, lists)?;
        Ok(Batch {
            bytes: data,
            rows,
            born: None,
        })
    }

    /// Events from packed lists, each pushed into `batches[outputs[i]]`
    /// (the caller checked every output index).
    pub fn split_packed(
        data: &[u8],
        lists: &PackedLists,
        outputs: &[u8],
        batches: &mut [Batch],
    ) -> Result<(), PackedError> {
        let rows = packed_rows(data, lists)?;
        for (r, &o) in rows.iter().zip(outputs) {
            let key_end = r.start + r.key_len;
            batches[o as usize].push(
                (r.flags & HAS_KEY != 0).then(|| &data[r.start..key_end]),
                &data[key_end..key_end + r.value_len],
                (r.flags & HAS_TS != 0).then_some(r.ts),
            );
        }
        Ok(())
    }
}

/// The rows of packed lists over `data`, checked.
fn packed_rows(data: &[u8], l: &PackedLists) -> Result<Vec<Row>, PackedError> {
    let n = l.key_ends.len();
    if l.value_ends.len() != n || l.flags.len() != n || l.timestamps.len() != n {
        return Err(PackedError::Lengths {
            key_ends: n,
            value_ends: l.value_ends.len(),
            flags: l.flags.len(),
            timestamps: l.timestamps.len(),
        });
    }
    let mut rows = Vec::with_capacity(n);
    let mut start = 0u32;
    for i in 0..n {
        let (ke, ve, flags) = (l.key_ends[i], l.value_ends[i], l.flags[i]);
        for (from, end) in [(start, ke), (ke, ve)] {
            if end < from || end as usize > data.len() {
                return Err(PackedError::Offset {
                    index: i,
                    start: from,
                    end,
                    len: data.len(),
                });
            }
        }
        if flags & !(HAS_KEY | HAS_TS) != 0 {
            return Err(PackedError::Flags { index: i, flags });
        }
        rows.push(Row {
            start: start as usize,
            key_len: (ke - start) as usize,
            value_len: (ve - ke) as usize,
            ts: if flags & HAS_TS != 0 {
                l.timestamps[i]
            } else {
                0
            },
            flags,
        });
        start = ve;
    }
    Ok(rows)
}

const _: () = assert!(HAS_KEY == PACKED_HAS_KEY && HAS_TS == PACKED_HAS_TIMESTAMP);

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
    fn packed_lists_round_trip_and_bad_ones_are_refused() {
        let mut b = Batch::default();
        b.push(Some(b"k1"), b"v1", Some(7));
        b.push(None, b"xyz", None);
        b.push(Some(b""), b"", Some(i64::MIN));
        let mut l = PackedLists::default();
        b.write_packed(&mut l).unwrap();
        assert_eq!(l.key_ends, vec![2, 4, 7]);
        assert_eq!(l.value_ends, vec![4, 7, 7]);
        let back = Batch::from_packed(b.bytes().to_vec(), &l).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            b.iter().collect::<Vec<_>>()
        );
        let mut outs = vec![Batch::default(), Batch::default()];
        Batch::split_packed(b.bytes(), &l, &[1, 0, 1], &mut outs).unwrap();
        assert_eq!(outs[0].get(0), b.get(1));
        assert_eq!(outs[1].iter().collect::<Vec<_>>(), vec![b.get(0), b.get(2)]);

        let bad = |f: &dyn Fn(&mut PackedLists)| {
            let mut m = l.clone();
            f(&mut m);
            Batch::from_packed(b.bytes().to_vec(), &m).unwrap_err()
        };
        assert!(matches!(
            bad(&|m| m.flags.pop().map(drop).unwrap_or(())),
            PackedError::Lengths { .. }
        ));
        assert!(matches!(
            bad(&|m| m.value_ends[2] = 99),
            PackedError::Offset { index: 2, .. }
        ));
        assert!(matches!(
            bad(&|m| m.key_ends[1] = 1),
            PackedError::Offset { index: 1, .. }
        ));
        assert!(matches!(
            bad(&|m| m.flags[0] = 4),
            PackedError::Flags { index: 0, flags: 4 }
        ));
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
