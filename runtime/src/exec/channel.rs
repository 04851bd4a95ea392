//! Channels between subtasks and the partitioners that route events onto
//! them. Every channel is bounded, so a slow consumer slows its producers
//! (backpressure) instead of growing memory.

use super::ExecError;
use crate::job::Partition;
use crate::sandbox::Event;
use crate::state::{key_group_of, subtask_for_key_group};
use std::sync::mpsc::SyncSender;

/// How many batches a subtask's input channel holds before senders block.
pub const CHANNEL_BATCHES: usize = 16;

/// What travels on a channel.
pub enum Payload {
    /// A batch of events.
    Batch(Vec<Event>),
    /// A checkpoint barrier: everything before it belongs to its
    /// checkpoint, everything after to later ones.
    Barrier(Barrier),
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
    tx: SyncSender<Message>,
    channel: u32,
    buf: Vec<Event>,
}

/// One out-edge of a subtask: buffers per downstream subtask, flushed when
/// a buffer reaches the batch size, on linger, and at the end.
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
        targets: Vec<(SyncSender<Message>, u32)>,
        max_parallelism: u32,
        batch_size: usize,
        edge: String,
        start: usize,
    ) -> Output {
        let n = targets.len().max(1);
        Output {
            partition,
            targets: targets
                .into_iter()
                .map(|(tx, channel)| Target {
                    tx,
                    channel,
                    buf: Vec::with_capacity(batch_size),
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
        let batch = std::mem::replace(&mut target.buf, Vec::with_capacity(self.batch_size));
        target
            .tx
            .send(Message {
                channel: target.channel,
                payload: Payload::Batch(batch),
            })
            .map_err(|_| ExecError::Disconnected)
    }

    fn push_to(&mut self, t: usize, e: Event) -> Result<(), ExecError> {
        self.targets[t].buf.push(e);
        if self.targets[t].buf.len() >= self.batch_size {
            self.send(t)?;
        }
        Ok(())
    }

    /// Routes one event.
    pub fn push(&mut self, e: Event) -> Result<(), ExecError> {
        match self.partition {
            Partition::Forward => self.push_to(0, e),
            Partition::Rebalance => {
                let t = self.next;
                self.next = (self.next + 1) % self.targets.len();
                self.push_to(t, e)
            }
            Partition::Hash => {
                let Some(key) = e.key.as_deref() else {
                    return Err(ExecError::Routing { edge: self.edge.clone(), detail: "an event without a key reached a `hash` edge; every event on it needs a key (an operator sets one on what it emits; a file or stdin source has keys only with format = \"json\" and `key`)".into() });
                };
                let kg = key_group_of(key, self.max_parallelism);
                let t = subtask_for_key_group(kg, self.max_parallelism, self.targets.len() as u32)
                    as usize;
                self.push_to(t, e)
            }
            Partition::Broadcast => {
                let last = self.targets.len() - 1;
                for t in 0..last {
                    self.push_to(t, e.clone())?;
                }
                self.push_to(last, e)
            }
        }
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
);

impl Outputs {
    /// Routes events to every out-edge.
    pub fn emit(&mut self, events: Vec<Event>) -> Result<(), ExecError> {
        if let Some((m, v)) = &self.1 {
            m.vertex(*v).add_out(events.len());
        }
        match self.0.len() {
            0 => Ok(()),
            1 => events.into_iter().try_for_each(|e| self.0[0].push(e)),
            n => {
                for e in events {
                    for o in &mut self.0[..n - 1] {
                        o.push(e.clone())?;
                    }
                    self.0[n - 1].push(e)?;
                }
                Ok(())
            }
        }
    }

    /// Flushes every out-edge.
    pub fn flush(&mut self) -> Result<(), ExecError> {
        self.0.iter_mut().try_for_each(Output::flush)
    }

    /// Sends a checkpoint barrier on every out-edge.
    pub fn barrier(&mut self, b: Barrier) -> Result<(), ExecError> {
        self.0.iter_mut().try_for_each(|o| o.barrier(b))
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

    fn ev(k: &str) -> Event {
        Event {
            key: Some(k.as_bytes().to_vec()),
            value: Vec::new(),
            timestamp: None,
        }
    }

    fn drain(rx: &Receiver<Message>) -> (Vec<Event>, usize) {
        let (mut evs, mut ends) = (Vec::new(), 0);
        while let Ok(m) = rx.try_recv() {
            match m.payload {
                Payload::Batch(b) => evs.extend(b),
                Payload::End => ends += 1,
                Payload::Barrier(_) => {}
            }
        }
        (evs, ends)
    }

    fn setup(p: Partition, n: usize) -> (Output, Vec<Receiver<Message>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| sync_channel(1000)).unzip();
        (
            Output::new(
                p,
                txs.into_iter().map(|t| (t, 0)).collect(),
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
            o.push(ev(&format!("k{}", i % 30))).unwrap();
        }
        o.end().unwrap();
        let mut owner = std::collections::HashMap::new();
        for (i, rx) in rxs.iter().enumerate() {
            let (evs, ends) = drain(rx);
            assert_eq!(ends, 1);
            for e in evs {
                let kg = key_group_of(e.key.as_deref().unwrap(), 128);
                assert_eq!(subtask_for_key_group(kg, 128, 3) as usize, i);
                assert_eq!(*owner.entry(e.key.clone()).or_insert(i), i);
            }
        }
        assert_eq!(owner.len(), 30);
    }

    #[test]
    fn rebalance_spreads_evenly_and_broadcast_copies() {
        let (mut o, rxs) = setup(Partition::Rebalance, 3);
        (0..9).for_each(|_| o.push(ev("x")).unwrap());
        o.end().unwrap();
        assert!(rxs.iter().all(|rx| drain(rx).0.len() == 3));
        let (mut o, rxs) = setup(Partition::Broadcast, 3);
        (0..5).for_each(|_| o.push(ev("x")).unwrap());
        o.end().unwrap();
        assert!(rxs.iter().all(|rx| drain(rx).0.len() == 5));
    }

    #[test]
    fn forward_and_unkeyed_hash() {
        let (mut o, rxs) = setup(Partition::Forward, 1);
        (0..5).for_each(|_| o.push(ev("x")).unwrap());
        o.end().unwrap();
        assert_eq!(drain(&rxs[0]).0.len(), 5);
        let (mut o, _rxs) = setup(Partition::Hash, 2);
        let err = o
            .push(Event {
                key: None,
                value: vec![],
                timestamp: None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("without a key"), "{err}");
    }
}
