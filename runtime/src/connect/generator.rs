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
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SequenceConfig {
    count: Option<Spanned<u64>>,
    keys: Option<Spanned<u64>>,
    rate: Option<Spanned<f64>>,
    seed: Option<Spanned<u64>>,
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
    Ok(Sequence {
        count,
        keys,
        rate,
        seed: c.seed.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
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
            generated(self.seq, self.s.keys, self.s.seed, batch);
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
    let k = splitmix64(seq ^ seed.rotate_left(17)) % keys.max(1);
    let mut digits = itoa::Buffer::new();
    batch.push_with(
        None,
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
    fn a_paced_generator_says_when_the_next_event_is_due() {
        let s = Sequence {
            count: 10,
            keys: 1,
            seed: 0,
            rate: Some(2.0),
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
