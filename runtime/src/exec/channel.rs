//! Channels between subtasks and the partitioners that route events onto
//! them. Every channel is bounded, so a slow consumer slows its producers
//! (backpressure) instead of growing memory.

use super::ExecError;
use super::load::Link;
use crate::batch::{Batch, EventRef};
use crate::job::Partition;
use crate::state::{key_group_of, subtask_for_key_group};

/// How many batches a subtask's input channel holds before senders block.
pub const CHANNEL_BATCHES: usize = 16;

/// A partial batch is sent once it holds this many bytes of keys and
/// values, whatever its event count, so large events do not make batches
/// of many megabytes.
pub const BATCH_BYTES: usize = 4 << 20;

/// What travels on a channel.
pub enum Payload {
    /// A batch of events.
    Batch(Batch),
    /// A checkpoint barrier: everything before it belongs to its
    /// checkpoint, everything after to later ones.
    Barrier(Barrier),
    /// How far event time has progressed on this channel.
    Watermark(super::watermark::Watermark),
    /// The sender has no more events.
    End,
}

/// A checkpoint barrier as it travels from the sources to the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The checkpoint.
    pub id: u64,
    /// Store every key group whole: the previous checkpoint did not
    /// complete, so there is nothing to write a delta against.
    pub full: bool,
    /// The job stops at this barrier (stop with a savepoint): nothing is
    /// processed after it.
    pub stop: Option<super::StopMode>,
    /// The job's final checkpoint: every source has reached the end of its
    /// input. Operators close before they snapshot (their final output
    /// belongs to it), and every subtask ends after it; sinks make the
    /// tail visible only once its manifest is committed.
    pub end: bool,
}

impl Barrier {
    /// Whether the job ends at this barrier (a stop, or the end of input):
    /// nothing comes after it on any channel.
    pub fn ends_job(&self) -> bool {
        self.stop.is_some() || self.end
    }

    /// Whether operators close (emitting their final output) before they
    /// snapshot at this barrier.
    pub fn closes_operators(&self) -> bool {
        self.end || self.drains()
    }

    /// Whether it stops the job with `--drain`: as at the end of input,
    /// sources send the end of event time before it, so every event-time
    /// timer fires and every window closes (Flink's `stop --drain`).
    pub fn drains(&self) -> bool {
        self.stop == Some(super::StopMode::Drain)
    }
}

/// A payload tagged with the input channel it arrived on (one channel per
/// upstream subtask and edge), so a subtask can tell its inputs apart.
pub struct Message {
    /// Index of the input channel at the receiver.
    pub channel: u32,
    /// The payload.
    pub payload: Payload,
}

struct Target {
    tx: Link,
    channel: u32,
    buf: Batch,
}

/// One out-edge of a subtask: a batch buffer per downstream subtask,
/// sent when it reaches the batch size (or [`BATCH_BYTES`]), on
/// [`flush`](Output::flush), and at the end. Routing copies each event's
/// bytes into its target's buffer: no allocation per event.
pub struct Output {
    partition: Partition,
    targets: Vec<Target>,
    next: usize,
    max_parallelism: u32,
    batch_size: usize,
    edge: String,
}

impl Output {
    /// An out-edge over `targets`: (sender, channel index at the receiver)
    /// per downstream subtask, in subtask order. A `forward` edge has one.
    pub fn new(
        partition: Partition,
        targets: Vec<(Link, u32)>,
        max_parallelism: u32,
        batch_size: usize,
        edge: String,
        start: usize,
    ) -> Output {
        let n = targets.len().max(1);
        let batch_size = batch_size.max(1);
        Output {
            partition,
            targets: targets
                .into_iter()
                .map(|(tx, channel)| Target {
                    tx,
                    channel,
                    buf: Batch::with_capacity(batch_size, 0),
                })
                .collect(),
            next: start % n,
            max_parallelism,
            batch_size,
            edge,
        }
    }

    fn send(&mut self, t: usize) -> Result<(), ExecError> {
        let target = &mut self.targets[t];
        if target.buf.is_empty() {
            return Ok(());
        }
        let batch = target.buf.take();
        target
            .tx
            .send(Message {
                channel: target.channel,
                payload: Payload::Batch(batch),
            })
            .map_err(|_| ExecError::Disconnected)
    }

    fn push_to(
        &mut self,
        t: usize,
        e: EventRef<'_>,
        born: Option<std::time::Instant>,
    ) -> Result<(), ExecError> {
        let buf = &mut self.targets[t].buf;
        buf.mark_born(born);
        buf.push_ref(e);
        if buf.len() >= self.batch_size || buf.byte_len() >= BATCH_BYTES {
            self.send(t)?;
        }
        Ok(())
    }

    fn target_of(&mut self, e: EventRef<'_>) -> Result<usize, ExecError> {
        Ok(match self.partition {
            Partition::Forward | Partition::Broadcast => 0,
            Partition::Rebalance => {
                let t = self.next;
                self.next = (self.next + 1) % self.targets.len();
                t
            }
            Partition::Hash => {
                let Some(key) = e.key else {
                    return Err(ExecError::Routing { edge: self.edge.clone(), detail: "an event without a key reached a `hash` edge; every event on it needs a key (an operator sets one on what it emits; a file or stdin source has keys only with format = \"json\" and `key`)".into() });
                };
                let kg = key_group_of(key, self.max_parallelism);
                subtask_for_key_group(kg, self.max_parallelism, self.targets.len() as u32) as usize
            }
        })
    }

    /// Routes every event of `batch` (copying its bytes).
    pub fn route(&mut self, batch: &Batch) -> Result<(), ExecError> {
        let born = batch.born();
        if self.partition == Partition::Broadcast {
            for t in 0..self.targets.len() {
                for e in batch.iter() {
                    self.push_to(t, e, born)?;
                }
            }
            return Ok(());
        }
        for e in batch.iter() {
            let t = self.target_of(e)?;
            self.push_to(t, e, born)?;
        }
        Ok(())
    }

    /// Routes `batch`, handing it on whole where it can: on a `forward`
    /// edge, a batch that finds its target's buffer empty is sent as it is,
    /// without copying an event.
    pub fn route_owned(&mut self, batch: Batch) -> Result<(), ExecError> {
        if self.partition == Partition::Forward && self.targets[0].buf.is_empty() {
            if batch.len() >= self.batch_size || batch.byte_len() >= BATCH_BYTES {
                let target = &self.targets[0];
                return target
                    .tx
                    .send(Message {
                        channel: target.channel,
                        payload: Payload::Batch(batch),
                    })
                    .map_err(|_| ExecError::Disconnected);
            }
            self.targets[0].buf = batch;
            return Ok(());
        }
        self.route(&batch)
    }

    /// Whether a partial buffer waits to be sent.
    pub fn holds_events(&self) -> bool {
        self.targets.iter().any(|t| !t.buf.is_empty())
    }

    /// Sends every partial buffer.
    pub fn flush(&mut self) -> Result<(), ExecError> {
        for t in 0..self.targets.len() {
            self.send(t)?;
        }
        Ok(())
    }

    /// Flushes, then sends a checkpoint barrier to every downstream subtask.
    pub fn barrier(&mut self, b: Barrier) -> Result<(), ExecError> {
        self.flush()?;
        for t in &self.targets {
            t.tx.send(Message {
                channel: t.channel,
                payload: Payload::Barrier(b),
            })
            .map_err(|_| ExecError::Disconnected)?;
        }
        Ok(())
    }

    /// Flushes, then sends a watermark to every downstream subtask (after
    /// the events it covers).
    pub fn watermark(&mut self, w: super::watermark::Watermark) -> Result<(), ExecError> {
        self.flush()?;
        for t in &self.targets {
            t.tx.send(Message {
                channel: t.channel,
                payload: Payload::Watermark(w),
            })
            .map_err(|_| ExecError::Disconnected)?;
        }
        Ok(())
    }

    /// Flushes and tells every downstream subtask this sender is done.
    pub fn end(&mut self) -> Result<(), ExecError> {
        self.flush()?;
        for t in &self.targets {
            t.tx.send(Message {
                channel: t.channel,
                payload: Payload::End,
            })
            .map_err(|_| ExecError::Disconnected)?;
        }
        Ok(())
    }
}

/// All out-edges of a subtask.
pub struct Outputs(
    pub Vec<Output>,
    /// The vertex's live counters and its index there.
    pub Option<(std::sync::Arc<super::metrics::JobMetrics>, usize)>,
    /// Per out-edge, the named output of the operator it reads (`None`:
    /// the main output). Empty: every out-edge reads the main output.
    pub Vec<Option<String>>,
);

impl Outputs {
    /// Routes a batch to every out-edge of the main output.
    pub fn emit(&mut self, batch: Batch) -> Result<(), ExecError> {
        self.emit_to(None, batch)
    }

    /// Routes a batch to every out-edge of output `name` (`None`: main).
    pub fn emit_to(&mut self, name: Option<&str>, batch: Batch) -> Result<(), ExecError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some((m, v)) = &self.1 {
            let m = m.vertex(*v);
            m.add_out(batch.len());
            if let Some(name) = name {
                m.add_named_out(name, batch.len());
            }
        }
        let names = &self.2;
        let reads = |i: usize| {
            names
                .get(i)
                .map_or(name.is_none(), |n| n.as_deref() == name)
        };
        let Some(last) = (0..self.0.len()).rev().find(|&i| reads(i)) else {
            return Ok(());
        };
        for i in 0..last {
            if reads(i) {
                self.0[i].route(&batch)?;
            }
        }
        self.0[last].route_owned(batch)
    }

    /// Whether a partial buffer waits to be sent on some out-edge.
    pub fn holds_events(&self) -> bool {
        self.0.iter().any(Output::holds_events)
    }

    /// Flushes every out-edge.
    pub fn flush(&mut self) -> Result<(), ExecError> {
        self.0.iter_mut().try_for_each(Output::flush)
    }

    /// Sends a checkpoint barrier on every out-edge.
    pub fn barrier(&mut self, b: Barrier) -> Result<(), ExecError> {
        self.0.iter_mut().try_for_each(|o| o.barrier(b))
    }

    /// Sends a watermark on every out-edge.
    pub fn watermark(&mut self, w: super::watermark::Watermark) -> Result<(), ExecError> {
        self.0.iter_mut().try_for_each(|o| o.watermark(w))
    }

    /// Ends every out-edge.
    pub fn end(&mut self) -> Result<(), ExecError> {
        self.0.iter_mut().try_for_each(Output::end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, sync_channel};

    fn ev(k: &str) -> EventRef<'_> {
        EventRef {
            key: Some(k.as_bytes()),
            value: b"",
            timestamp: None,
        }
    }

    /// Routes one event.
    fn push(o: &mut Output, e: EventRef<'_>) -> Result<(), ExecError> {
        let mut b = Batch::default();
        b.push_ref(e);
        o.route(&b)
    }

    fn drain(rx: &Receiver<Message>) -> (Vec<Option<Vec<u8>>>, usize) {
        let (mut evs, mut ends) = (Vec::new(), 0);
        while let Ok(m) = rx.try_recv() {
            match m.payload {
                Payload::Batch(b) => evs.extend(b.iter().map(|e| e.key.map(<[u8]>::to_vec))),
                Payload::End => ends += 1,
                Payload::Barrier(_) | Payload::Watermark(_) => {}
            }
        }
        (evs, ends)
    }

    fn setup(p: Partition, n: usize) -> (Output, Vec<Receiver<Message>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| sync_channel(1000)).unzip();
        (
            Output::new(
                p,
                txs.into_iter().map(|t| (Link::unmetered(t), 0)).collect(),
                128,
                4,
                "a -> b".into(),
                0,
            ),
            rxs,
        )
    }

    #[test]
    fn hash_sends_a_key_to_one_subtask_always() {
        let (mut o, rxs) = setup(Partition::Hash, 3);
        for i in 0..300 {
            push(&mut o, ev(&format!("k{}", i % 30))).unwrap();
        }
        o.end().unwrap();
        let mut owner = std::collections::HashMap::new();
        for (i, rx) in rxs.iter().enumerate() {
            let (evs, ends) = drain(rx);
            assert_eq!(ends, 1);
            for key in evs {
                let kg = key_group_of(key.as_deref().unwrap(), 128);
                assert_eq!(subtask_for_key_group(kg, 128, 3) as usize, i);
                assert_eq!(*owner.entry(key).or_insert(i), i);
            }
        }
        assert_eq!(owner.len(), 30);
    }

    #[test]
    fn rebalance_spreads_evenly_and_broadcast_copies() {
        let (mut o, rxs) = setup(Partition::Rebalance, 3);
        (0..9).for_each(|_| push(&mut o, ev("x")).unwrap());
        o.end().unwrap();
        assert!(rxs.iter().all(|rx| drain(rx).0.len() == 3));
        let (mut o, rxs) = setup(Partition::Broadcast, 3);
        (0..5).for_each(|_| push(&mut o, ev("x")).unwrap());
        o.end().unwrap();
        assert!(rxs.iter().all(|rx| drain(rx).0.len() == 5));
    }

    #[test]
    fn forward_hands_full_batches_on_whole_and_keeps_the_oldest_birth() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..1).map(|_| sync_channel(1000)).unzip();
        let mut o = Output::new(
            Partition::Forward,
            txs.into_iter().map(|t| (Link::unmetered(t), 0)).collect(),
            128,
            4,
            "a -> b".into(),
            0,
        );
        let t0 = std::time::Instant::now();
        let mut full = Batch::default();
        full.mark_born(Some(t0 + std::time::Duration::from_millis(3)));
        (0..4).for_each(|i| full.push(None, &[i], None));
        o.route_owned(full).unwrap();
        let Payload::Batch(b) = rxs[0].try_recv().unwrap().payload else {
            panic!("a full batch is sent at once");
        };
        assert_eq!(b.len(), 4);
        // Two partial batches merge into one buffer, born at the older.
        let mut a = Batch::default();
        a.mark_born(Some(t0 + std::time::Duration::from_millis(9)));
        a.push(None, b"x", None);
        let mut c = Batch::default();
        c.mark_born(Some(t0));
        c.push(None, b"y", Some(1));
        o.route_owned(a).unwrap();
        o.route_owned(c).unwrap();
        assert!(o.holds_events());
        o.flush().unwrap();
        let Payload::Batch(b) = rxs[0].try_recv().unwrap().payload else {
            panic!("flush sends the partial buffer");
        };
        assert_eq!(b.len(), 2);
        assert_eq!(b.born(), Some(t0));
        assert_eq!(b.get(1).timestamp, Some(1));
        assert!(!o.holds_events());
    }

    #[test]
    fn forward_and_unkeyed_hash() {
        let (mut o, rxs) = setup(Partition::Forward, 1);
        (0..5).for_each(|_| push(&mut o, ev("x")).unwrap());
        o.end().unwrap();
        assert_eq!(drain(&rxs[0]).0.len(), 5);
        let (mut o, _rxs) = setup(Partition::Hash, 2);
        let err = push(
            &mut o,
            EventRef {
                key: None,
                value: b"",
                timestamp: None,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("without a key"), "{err}");
    }
}
