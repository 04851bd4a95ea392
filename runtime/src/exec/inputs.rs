//! A subtask's inputs with barrier alignment (Chandy–Lamport, as in
//! Flink's aligned checkpoints): when barrier `n` arrives on one input
//! channel, that channel's later messages wait until barrier `n` has
//! arrived on every other live channel; then the subtask snapshots and
//! goes on with what waited.

use super::ExecError;
use super::channel::{Barrier, Message, Payload};
use super::load::SubtaskLoad;
use super::watermark::{InputWatermarks, Watermark};
use crate::batch::Batch;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

/// What a subtask does next.
pub(super) enum Next {
    /// Process these events.
    Batch(Batch),
    /// Every live input delivered barrier `n`: snapshot, then forward it.
    Aligned(Barrier),
    /// The subtask's watermark changed: pass it on.
    Watermark(Watermark),
    /// Nothing arrived within the timeout.
    Idle,
    /// Every input has ended.
    End,
}

pub(super) struct Inputs {
    rx: Receiver<Message>,
    /// The subtask's load: time waiting for input, messages taken.
    load: Arc<SubtaskLoad>,
    ended: Vec<bool>,
    blocked: Vec<bool>,
    aligning: Option<Barrier>,
    waiting: VecDeque<Message>,
    /// When the first barrier of the alignment in progress arrived.
    align_started: Option<std::time::Instant>,
    /// How long the last alignment took.
    last_alignment: Duration,
    /// The subtask's watermark from its channels'.
    watermarks: InputWatermarks,
    /// A watermark change to pass on before anything else.
    pending: Option<Watermark>,
    /// Every input has ended, and the caller has not been told yet.
    ending: bool,
}

impl Inputs {
    pub(super) fn new(rx: Receiver<Message>, channels: usize, load: Arc<SubtaskLoad>) -> Inputs {
        Inputs {
            rx,
            load,
            ended: vec![false; channels],
            blocked: vec![false; channels],
            aligning: None,
            waiting: VecDeque::new(),
            align_started: None,
            last_alignment: Duration::ZERO,
            watermarks: InputWatermarks::new(channels),
            pending: None,
            ending: false,
        }
    }

    /// The subtask's watermark, as last passed on.
    #[cfg(test)]
    pub(super) fn watermark(&self) -> Option<i64> {
        self.watermarks.current()
    }

    fn aligned(&self) -> bool {
        self.blocked.iter().zip(&self.ended).all(|(b, e)| *b || *e)
    }

    /// The next thing to do, waiting at most `timeout` for input.
    pub(super) fn next(&mut self, timeout: Duration) -> Result<Next, ExecError> {
        if let Some(w) = self.pending.take() {
            return Ok(Next::Watermark(w));
        }
        if self.ending {
            return Ok(Next::End);
        }
        loop {
            let msg = match (self.aligning, self.waiting.pop_front()) {
                (None, Some(m)) => Some(m),
                (Some(_), Some(m)) => {
                    // Still aligning: what waits stays waiting.
                    self.waiting.push_front(m);
                    self.recv(timeout)?
                }
                (_, None) => self.recv(timeout)?,
            };
            let Some(Message { channel, payload }) = msg else {
                return Ok(Next::Idle);
            };
            let c = channel as usize;
            if c >= self.ended.len() {
                return Err(ExecError::Panicked(
                    "input".into(),
                    format!("message on unknown input channel {c}"),
                ));
            }
            if self.aligning.is_some() && self.blocked[c] {
                self.waiting.push_back(Message { channel, payload });
                continue;
            }
            match payload {
                Payload::Batch(b) => return Ok(Next::Batch(b)),
                Payload::Barrier(b) => {
                    self.blocked[c] = true;
                    if self.aligning.is_none() {
                        self.align_started = Some(std::time::Instant::now());
                    }
                    self.aligning = Some(b);
                }
                Payload::Watermark(w) => {
                    if let Some(w) = self.watermarks.on(c, w, &self.ended) {
                        return Ok(Next::Watermark(w));
                    }
                }
                Payload::End => {
                    self.ended[c] = true;
                    // Passed on by the next call: an alignment or the end
                    // of every input may be complete now.
                    self.pending = self.watermarks.on_end(&self.ended).or(self.pending);
                }
            }
            if let Some(id) = self.aligning
                && self.aligned()
            {
                self.aligning = None;
                self.last_alignment = self
                    .align_started
                    .take()
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                self.blocked.iter_mut().for_each(|b| *b = false);
                return Ok(Next::Aligned(id));
            }
            if self.aligning.is_none() && self.waiting.is_empty() && self.ended.iter().all(|e| *e) {
                if let Some(w) = self.pending.take() {
                    self.ending = true;
                    return Ok(Next::Watermark(w));
                }
                return Ok(Next::End);
            }
        }
    }

    /// First barrier to alignment, of the last barrier aligned.
    pub(super) fn last_alignment(&self) -> Duration {
        self.last_alignment
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Message>, ExecError> {
        // Only a wait is timed: a queued message costs no clock read.
        let got = match self.rx.try_recv() {
            Ok(m) => Ok(m),
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {
                let t = std::time::Instant::now();
                let r = self.rx.recv_timeout(timeout);
                self.load.idle(t.elapsed());
                r
            }
        };
        match got {
            Ok(m) => {
                self.load.dequeued();
                Ok(Some(m))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(ExecError::Disconnected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    fn barrier(id: u64) -> Barrier {
        Barrier {
            id,
            full: false,
            stop: None,
            end: false,
        }
    }

    fn batch(n: usize) -> Payload {
        let mut b = Batch::default();
        (0..n).for_each(|_| b.push(None, &[n as u8], None));
        Payload::Batch(b)
    }

    #[test]
    fn aligns_barriers_and_holds_back_what_follows_them() {
        let (tx, rx) = sync_channel(100);
        let send = |c: u32, p: Payload| {
            tx.send(Message {
                channel: c,
                payload: p,
            })
            .unwrap()
        };
        send(0, batch(1));
        send(0, Payload::Barrier(barrier(7)));
        send(0, batch(2)); // after the barrier on channel 0: must wait
        send(1, batch(3)); // before the barrier on channel 1: goes first
        send(1, Payload::Barrier(barrier(7)));
        send(1, Payload::End);
        send(0, Payload::End);
        let mut inputs = Inputs::new(rx, 2, Arc::default());
        let mut seen = Vec::new();
        loop {
            match inputs.next(Duration::from_millis(1)).unwrap() {
                Next::Batch(b) => seen.push(format!("b{}", b.len())),
                Next::Aligned(b) => seen.push(format!("barrier{}", b.id)),
                Next::Watermark(w) => seen.push(format!("{w:?}")),
                Next::Idle => seen.push("idle".into()),
                Next::End => break,
            }
        }
        assert_eq!(seen, ["b1", "b3", "barrier7", "b2"]);
    }

    #[test]
    fn watermarks_are_the_minimum_and_an_ended_input_releases_it() {
        use crate::exec::watermark::Watermark;
        let (tx, rx) = sync_channel(100);
        let send = |channel: u32, payload: Payload| tx.send(Message { channel, payload }).unwrap();
        send(0, Payload::Watermark(Watermark::At(10)));
        send(1, Payload::Watermark(Watermark::At(5)));
        send(0, Payload::Watermark(Watermark::At(20)));
        send(1, Payload::End);
        send(0, Payload::End);
        let mut inputs = Inputs::new(rx, 2, Arc::default());
        let mut seen = Vec::new();
        loop {
            match inputs.next(Duration::from_millis(1)).unwrap() {
                Next::Watermark(w) => seen.push(format!("{w:?}")),
                Next::End => break,
                _ => {}
            }
        }
        assert_eq!(seen, ["At(5)", "At(20)"]);
        assert_eq!(inputs.watermark(), Some(20));
    }

    #[test]
    fn an_ended_input_does_not_block_alignment() {
        let (tx, rx) = sync_channel(100);
        tx.send(Message {
            channel: 1,
            payload: Payload::End,
        })
        .unwrap();
        tx.send(Message {
            channel: 0,
            payload: Payload::Barrier(barrier(1)),
        })
        .unwrap();
        let mut inputs = Inputs::new(rx, 2, Arc::default());
        assert!(matches!(
            inputs.next(Duration::from_millis(1)).unwrap(),
            Next::Aligned(b) if b.id == 1
        ));
    }
}
