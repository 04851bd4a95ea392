//! Where each subtask's time goes, as Flink reports it: **idle** (waiting
//! for input: an empty input queue, a source whose system has nothing),
//! **backpressured** (waiting to hand a batch to a downstream subtask whose
//! input queue is full) and **busy** (the rest: processing). Also how full
//! each subtask's input queue is, and its output's: the fullest input
//! queue of the subtasks it sends to (every subtask has one input queue,
//! which all its senders share).
//!
//! Only waits are timed, and only when they happen: a send that finds room
//! and a receive that finds a message cost one atomic add, no clock read.
//! A reader turns the cumulative totals into shares of a time window
//! ([`LoadTotals::shares_since`]).

use super::channel::Message;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SendError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One subtask's counters.
#[derive(Debug, Default)]
pub struct SubtaskLoad {
    idle_ns: AtomicU64,
    backpressured_ns: AtomicU64,
    /// Batches and control messages in its input queue.
    queued: AtomicI64,
    /// Its input queue's capacity (0: it has no input).
    capacity: AtomicU64,
    /// The loads of the subtasks it sends to: their input queues are its
    /// output. Registered when a link is made, never on a send.
    downstream: Mutex<Vec<Arc<SubtaskLoad>>>,
}

/// A subtask's cumulative counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadTotals {
    /// Time spent waiting for input, in ns.
    pub idle_ns: u64,
    /// Time spent waiting on a full downstream queue, in ns.
    pub backpressured_ns: u64,
    /// Messages in its input queue.
    pub queued: u64,
    /// Its input queue's capacity.
    pub capacity: u64,
    /// The fullest queue it sends to, 0..=1 (0 for a sink).
    pub output_fill: f64,
}

/// Shares of a time window, each in 0..=1, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Shares {
    /// Processing.
    pub busy: f64,
    /// Waiting for input.
    pub idle: f64,
    /// Waiting on a full downstream queue.
    pub backpressured: f64,
}

impl LoadTotals {
    /// The shares of the `window` that ended now, given the totals
    /// `before` it began.
    pub fn shares_since(&self, before: &LoadTotals, window: Duration) -> Shares {
        let w = window.as_nanos().max(1) as f64;
        let idle = (self.idle_ns.saturating_sub(before.idle_ns) as f64 / w).clamp(0.0, 1.0);
        let bp = (self
            .backpressured_ns
            .saturating_sub(before.backpressured_ns) as f64
            / w)
            .clamp(0.0, 1.0 - idle);
        Shares {
            busy: 1.0 - idle - bp,
            idle,
            backpressured: bp,
        }
    }

    /// How full its input queue is, 0..=1 (0 without an input).
    pub fn queue_fill(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            (self.queued as f64 / self.capacity as f64).min(1.0)
        }
    }
}

impl SubtaskLoad {
    /// Waited `d` for input.
    pub fn idle(&self, d: Duration) {
        self.idle_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Waited `d` on a full downstream queue.
    pub fn backpressured(&self, d: Duration) {
        self.backpressured_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// A new input queue of `capacity` messages (a new attempt's).
    pub fn reset_queue(&self, capacity: usize) {
        self.queued.store(0, Relaxed);
        self.capacity.store(capacity as u64, Relaxed);
    }

    /// A message left its input queue.
    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Relaxed);
    }

    /// Sends to the subtask whose load is `to` (once per pair).
    fn sends_to(&self, to: &Arc<SubtaskLoad>) {
        let mut d = self.downstream.lock().unwrap_or_else(|p| p.into_inner());
        if !d.iter().any(|t| Arc::ptr_eq(t, to)) {
            d.push(to.clone());
        }
    }

    /// Its input queue's fill alone.
    fn input_totals(&self) -> LoadTotals {
        LoadTotals {
            idle_ns: self.idle_ns.load(Relaxed),
            backpressured_ns: self.backpressured_ns.load(Relaxed),
            queued: self.queued.load(Relaxed).max(0) as u64,
            capacity: self.capacity.load(Relaxed),
            output_fill: 0.0,
        }
    }

    /// The counters now.
    pub fn totals(&self) -> LoadTotals {
        let output_fill = self
            .downstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|t| t.input_totals().queue_fill())
            .fold(0.0, f64::max);
        LoadTotals {
            output_fill,
            ..self.input_totals()
        }
    }
}

/// The sending end of a data channel: counts what it queues at the
/// receiver and times how long the sender waits for room.
#[derive(Debug, Clone)]
pub struct Link {
    tx: SyncSender<Message>,
    /// The receiving subtask's load.
    to: Arc<SubtaskLoad>,
    /// The sending subtask's load.
    from: Arc<SubtaskLoad>,
}

impl Link {
    /// `tx`, feeding the subtask whose load is `to`, sent on by the one
    /// whose load is `from`.
    pub fn new(tx: SyncSender<Message>, to: Arc<SubtaskLoad>, from: Arc<SubtaskLoad>) -> Link {
        from.sends_to(&to);
        Link { tx, to, from }
    }

    /// A link whose counts nobody reads (tests).
    pub fn unmetered(tx: SyncSender<Message>) -> Link {
        Link::new(tx, Arc::default(), Arc::default())
    }

    /// Sends `m`, waiting for room if the queue is full (that wait is
    /// backpressure).
    pub fn send(&self, m: Message) -> Result<(), SendError<Message>> {
        // Counted before it can be received, so the count never dips.
        self.to.queued.fetch_add(1, Relaxed);
        let sent = match self.tx.try_send(m) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m)) => {
                let t = Instant::now();
                let r = self.tx.send(m);
                self.from.backpressured(t.elapsed());
                r
            }
            Err(TrySendError::Disconnected(m)) => Err(SendError(m)),
        };
        if sent.is_err() {
            self.to.dequeued();
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::channel::Payload;
    use std::sync::mpsc::sync_channel;

    fn msg() -> Message {
        Message {
            channel: 0,
            payload: Payload::End,
        }
    }

    #[test]
    fn sends_count_at_the_receiver_as_the_senders_output_and_a_failed_one_does_not() {
        let (tx, rx) = sync_channel(2);
        let to = Arc::new(SubtaskLoad::default());
        to.reset_queue(2);
        let from = Arc::new(SubtaskLoad::default());
        let link = Link::new(tx, to.clone(), from.clone());
        // Its fullest downstream queue is the sender's output fill.
        let (tx2, _rx2) = sync_channel(4);
        let other = Arc::new(SubtaskLoad::default());
        other.reset_queue(4);
        Link::new(tx2, other.clone(), from.clone())
            .send(msg())
            .unwrap();
        assert_eq!(from.totals().output_fill, 0.25);
        link.send(msg()).unwrap();
        assert_eq!(to.totals().queue_fill(), 0.5);
        assert_eq!(from.totals().output_fill, 0.5);
        link.send(msg()).unwrap();
        assert_eq!(to.totals().queue_fill(), 1.0);
        assert_eq!(from.totals().output_fill, 1.0);
        assert_eq!(to.totals().output_fill, 0.0, "a receiver sending nowhere");
        rx.recv().unwrap();
        to.dequeued();
        assert_eq!(to.totals().queued, 1);
        drop(rx);
        assert!(link.send(msg()).is_err());
        assert_eq!(to.totals().queued, 1, "a message not sent is not queued");
    }

    #[test]
    fn shares_split_a_window() {
        let before = LoadTotals::default();
        let now = LoadTotals {
            idle_ns: 250_000_000,
            backpressured_ns: 500_000_000,
            ..before
        };
        let s = now.shares_since(&before, Duration::from_secs(1));
        assert_eq!((s.busy, s.idle, s.backpressured), (0.25, 0.25, 0.5));
        // Counters a little ahead of the window are clamped, never negative.
        let over = LoadTotals {
            idle_ns: 2_000_000_000,
            ..before
        };
        let s = over.shares_since(&before, Duration::from_secs(1));
        assert_eq!((s.busy, s.idle, s.backpressured), (0.0, 1.0, 0.0));
    }
}
