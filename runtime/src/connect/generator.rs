//! The generator source (a deterministic sequence of events, for tests,
//! examples and benchmarks) and the discard sink (counts and drops).

use crate::batch::Batch;
use crate::connect::config::{FieldError, Fields, Section, at_least, field_names};
use crate::connect::{ConnectError, Poll, Position, Prepared, SinkWriter, SourceReader};
use std::time::Duration;
use toml::Spanned;

/// What a generator source produces.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sequence {
    /// Events in all, over every subtask.
    pub count: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Events per second in all, or unlimited.
    pub rate: Option<f64>,
    /// Seed of the key sequence.
    pub seed: u64,
    /// The events' event times, if they have any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_time: Option<GeneratedTime>,
}

/// The event time of generated events: event `seq` is at
/// `floor(seq * 1000 / events_per_second) - (seq * 40503 mod
/// (out_of_orderness_ms + 1))` ms, so event time advances one second per
/// `events_per_second` events and events come up to `out_of_orderness_ms`
/// out of order (the stream the Flink window benchmark generates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GeneratedTime {
    /// Events per second of event time.
    pub events_per_second: u64,
    /// How far out of order event times are, at most (ms).
    pub out_of_orderness_ms: u64,
}

impl GeneratedTime {
    /// The event time of event `seq`.
    pub fn of(&self, seq: u64) -> i64 {
        let on_time = u128::from(seq) * 1000 / u128::from(self.events_per_second.max(1));
        let late = u128::from(seq) * 40503 % (u128::from(self.out_of_orderness_ms) + 1);
        i64::try_from(on_time).unwrap_or(i64::MAX) - i64::try_from(late).unwrap_or(0)
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SequenceConfig {
    count: Option<Spanned<u64>>,
    keys: Option<Spanned<u64>>,
    rate: Option<Spanned<f64>>,
    seed: Option<Spanned<u64>>,
    events_per_second: Option<Spanned<u64>>,
    out_of_orderness_ms: Option<Spanned<u64>>,
}

/// A generator source from its `kind = "generator"` section of `job.toml`.
pub fn config(fields: &Fields, s: &Section) -> Result<Sequence, FieldError> {
    s.only(fields, &[field_names::<SequenceConfig>()])?;
    let c: SequenceConfig = s.read(fields)?;
    let count = match &c.count {
        Some(n) => *n.get_ref(),
        None => return Err(s.needs("`count` (how many events)")),
    };
    let keys = match &c.keys {
        Some(k) => at_least(k, "keys", 1)?,
        None => 1,
    };
    let rate = match &c.rate {
        Some(r) if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) => {
            return Err(s.err(
                r.span(),
                "`rate` must be a positive number of events per second",
            ));
        }
        Some(r) => Some(*r.get_ref()),
        None => None,
    };
    let event_time = match (&c.events_per_second, &c.out_of_orderness_ms) {
        (Some(e), o) => Some(GeneratedTime {
            events_per_second: at_least(e, "events-per-second", 1)?,
            out_of_orderness_ms: o.as_ref().map(|o| *o.get_ref()).unwrap_or(0),
        }),
        (None, Some(o)) => {
            return Err(s.err(
                o.span(),
                "`out-of-orderness-ms` needs `events-per-second` (event time is generated only with it)",
            ));
        }
        (None, None) => None,
    };
    Ok(Sequence {
        count,
        keys,
        rate,
        seed: c.seed.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
        event_time,
    })
}

/// One subtask's share of a generator: event `i` of subtask `index` is
/// sequence number `index + i * parallelism`. Its position is the number
/// of events it produced.
pub struct GeneratorReader {
    s: Sequence,
    step: u64,
    /// The next sequence number.
    seq: u64,
    /// Events produced, counting those a restored checkpoint covers.
    produced: u64,
    /// Events produced by this run (pacing counts from its start).
    emitted: u64,
    /// This subtask's share of the rate.
    per_sec: Option<f64>,
    /// The job-clock time of the first poll.
    started: Option<Duration>,
}

impl GeneratorReader {
    /// Subtask `index` of `parallelism`, after the `skip` events a restored
    /// checkpoint covers.
    pub fn new(s: Sequence, index: u32, parallelism: u32, skip: u64) -> GeneratorReader {
        let step = u64::from(parallelism.max(1));
        GeneratorReader {
            s,
            step,
            seq: u64::from(index).saturating_add(skip.saturating_mul(step)),
            produced: skip,
            emitted: 0,
            per_sec: s.rate.map(|r| r / f64::from(parallelism.max(1))),
            started: None,
        }
    }

    /// When event `i` of this run is due: `i / per_sec` after the start.
    fn due(&self, started: Duration, i: u64, per_sec: f64) -> Duration {
        started.saturating_add(
            Duration::try_from_secs_f64(i as f64 / per_sec).unwrap_or(Duration::MAX),
        )
    }
}

impl SourceReader for GeneratorReader {
    fn poll(
        &mut self,
        batch: &mut Batch,
        room: usize,
        now: Duration,
        _wait: Duration,
    ) -> Result<Poll, ConnectError> {
        if self.seq >= self.s.count {
            return Ok(Poll::End);
        }
        let started = *self.started.get_or_insert(now);
        let mut added = 0;
        while self.seq < self.s.count
            && added < room
            && self
                .per_sec
                .is_none_or(|r| self.due(started, self.emitted, r) <= now)
        {
            let ts = self.s.event_time.map(|t| t.of(self.seq));
            generated_at(self.seq, self.s.keys, self.s.seed, ts, batch);
            self.seq = self.seq.saturating_add(self.step);
            self.produced += 1;
            self.emitted += 1;
            added += 1;
        }
        Ok(match (added, self.per_sec) {
            (0, Some(r)) => Poll::Idle {
                until: Some(self.due(started, self.emitted, r)),
            },
            (0, None) => Poll::End,
            _ => Poll::Ready,
        })
    }

    fn position(&self) -> Position {
        Position::Offset(self.produced)
    }
}

/// Appends event `seq` of a generator to `batch`: key `key-<k>` with `k` a
/// seeded mix of `seq` modulo the key count, value `seq % 1000` as decimal
/// text.
pub fn generated(seq: u64, keys: u64, seed: u64, batch: &mut Batch) {
    generated_at(seq, keys, seed, None, batch)
}

/// [`generated`], at event time `ts`.
pub fn generated_at(seq: u64, keys: u64, seed: u64, ts: Option<i64>, batch: &mut Batch) {
    let k = splitmix64(seq ^ seed.rotate_left(17)) % keys.max(1);
    let mut digits = itoa::Buffer::new();
    batch.push_with(
        ts,
        |buf| {
            buf.extend_from_slice(b"key-");
            buf.extend_from_slice(digits.format(k).as_bytes());
            true
        },
        |buf| buf.extend_from_slice(itoa::Buffer::new().format(seq % 1000).as_bytes()),
    );
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// Drops every event (the runtime counts them).
pub struct DiscardSink;

impl SinkWriter for DiscardSink {
    fn write(&mut self, _batch: &Batch) -> Result<(), ConnectError> {
        Ok(())
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Prepared, ConnectError> {
        Ok(Prepared::default())
    }

    fn commit(&mut self, _checkpoint: u64) -> Result<(), ConnectError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_covers_keys() {
        let (mut a, mut b) = (Batch::default(), Batch::default());
        (0..1000).for_each(|s| generated(s, 10, 7, &mut a));
        (0..1000).for_each(|s| generated(s, 10, 7, &mut b));
        assert!(a.iter().eq(b.iter()));
        let keys: std::collections::HashSet<_> = a.iter().map(|e| e.key).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(a.get(7).value, b"7");
    }

    #[test]
    fn generated_event_times_match_the_flink_window_benchmark() {
        // WindowCount.java: floor(i * 1000 / eps) - (i * 40503 mod (ooo + 1)).
        let t = GeneratedTime {
            events_per_second: 1_000_000,
            out_of_orderness_ms: 200,
        };
        for i in [0_u64, 1, 999_999, 1_000_000, 9_999_999, 123_456_789] {
            let want = (i * 1000 / 1_000_000) as i64 - (i * 40503 % 201) as i64;
            assert_eq!(t.of(i), want, "event {i}");
        }
        let mut b = Batch::default();
        let s = Sequence {
            count: 3,
            keys: 1,
            seed: 0,
            rate: None,
            event_time: Some(t),
        };
        let z = Duration::ZERO;
        let mut g = GeneratorReader::new(s, 0, 1, 0);
        g.poll(&mut b, 10, z, z).unwrap();
        let ts: Vec<_> = b.iter().map(|e| e.timestamp).collect();
        assert_eq!(ts, vec![Some(t.of(0)), Some(t.of(1)), Some(t.of(2))]);
    }

    #[test]
    fn a_paced_generator_says_when_the_next_event_is_due() {
        let s = Sequence {
            count: 10,
            keys: 1,
            seed: 0,
            rate: Some(2.0),
            event_time: None,
        };
        let mut g = GeneratorReader::new(s, 0, 1, 0);
        let mut b = Batch::default();
        let z = Duration::ZERO;
        assert_eq!(g.poll(&mut b, 100, z, z).unwrap(), Poll::Ready);
        assert_eq!(b.len(), 1);
        assert_eq!(
            g.poll(&mut b, 100, z, z).unwrap(),
            Poll::Idle {
                until: Some(Duration::from_millis(500))
            }
        );
        let t = Duration::from_secs(10);
        assert_eq!(g.poll(&mut b, 100, t, z).unwrap(), Poll::Ready);
        assert_eq!(b.len(), 10);
        assert_eq!(g.poll(&mut b, 100, t, z).unwrap(), Poll::End);
        assert_eq!(g.position(), Position::Offset(10));
    }
}
