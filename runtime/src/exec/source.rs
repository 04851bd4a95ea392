//! A source subtask's loop: polls its connector's reader
//! ([`crate::connect::SourceReader`]) into batches and sends them onto the
//! out-edges, with checkpoint barriers between batches.
//!
//! A source never waits on data alone: a reader waits at most until the
//! partial batch's linger ends or [`CANCEL_POLL`] passes, and a paced reader
//! (the generator) says when its next event is due, which the loop waits
//! for on its control channel (checkpoint barriers). So barriers, cancel and
//! failure reach a source within a bounded time whatever its rate, and a
//! partial batch is sent once it has lingered `linger-ms`.

use super::channel::{Barrier, Outputs};
use super::clock::Clock;
use super::coordinator::{Ack, AckData, Acks};
use super::watermark::{END_OF_TIME, SourceWatermarks, Watermark};
use super::{ExecError, Shared};
use crate::batch::Batch;
use crate::checkpoint::{SourcePosition, SplitState};
use crate::connect::{self, Poll, Position, SourceAssignment, SourceReader, SplitPosition};
use crate::job::SourceKind;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// The longest a source waits in real time without looking at the cancel
/// flag: cancel and job failure reach a waiting source within this.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A source subtask's link to the checkpoint coordinator and the job's
/// clock, and where to start when restored.
pub(super) struct SourceCtl<'a> {
    /// Checkpoint barriers from the coordinator: the control channel a
    /// source waits on between events.
    pub(super) trigger: Option<Receiver<Barrier>>,
    pub(super) ack: Option<Acks>,
    /// Where a restored checkpoint says to start: this subtask's offset
    /// and every split position of the source.
    pub(super) start: Option<Restored>,
    /// The job's clock: pacing and linger deadlines are on it.
    pub(super) clock: &'a dyn Clock,
    /// How long a partial batch may wait before it is sent (`linger-ms`).
    pub(super) linger: Duration,
    /// Events per batch (`batch.size`).
    pub(super) batch_size: usize,
    /// The source vertex's metrics (bytes read, lag).
    pub(super) metrics: &'a super::metrics::VertexMetrics,
    /// Completed checkpoints, from the coordinator.
    pub(super) committed: Option<Receiver<u64>>,
    /// The positions recorded at recent barriers, for
    /// [`SourceReader::checkpoint_complete`].
    pub(super) recorded: std::cell::RefCell<std::collections::VecDeque<(u64, Position)>>,
    /// Periodic checkpoints are on: when the whole input has ended, the
    /// job ends with a final checkpoint (the coordinator's barrier with
    /// `end`), not with end-of-input sent downstream.
    pub(super) final_checkpoint: bool,
    /// The source's watermark strategy (`None`: no watermarks before the
    /// end of its input).
    pub(super) watermark: Option<crate::job::WatermarkStrategy>,
}

/// Barriers whose positions a source keeps until their checkpoints
/// complete (older ones are dropped: their checkpoints failed).
const RECORDED: usize = 16;

impl SourceCtl<'_> {
    /// Passes barrier `b` on: records `position` (everything emitted so
    /// far), then puts the barrier after it on every out-edge. Returns
    /// `true` when the barrier stops the job: the source must emit nothing
    /// more.
    fn pass(
        &self,
        vertex: &str,
        subtask: u32,
        position: Position,
        b: Barrier,
        outputs: &mut Outputs,
    ) -> Result<bool, ExecError> {
        outputs.flush()?;
        if self.committed.is_some() {
            let mut r = self.recorded.borrow_mut();
            if r.len() >= RECORDED {
                r.pop_front();
            }
            r.push_back((b.id, position.clone()));
        }
        if let Some(ack) = &self.ack {
            let (position, splits) = match position {
                Position::Offset(n) => (n, Vec::new()),
                Position::Splits(s) => (
                    0,
                    s.into_iter()
                        .map(|s| SplitState {
                            split: s.split,
                            next: s.next,
                        })
                        .collect(),
                ),
            };
            let _ = ack.send(Ack::Done {
                id: b.id,
                data: AckData::Source(SourcePosition {
                    vertex: vertex.to_string(),
                    subtask,
                    position,
                    splits,
                }),
            });
        }
        if b.drains() {
            outputs.watermark(Watermark::At(END_OF_TIME))?;
        }
        outputs.barrier(b)?;
        Ok(b.ends_job())
    }

    /// Waits until `deadline` on the job's clock for a control message:
    /// returns the barrier that came, or `None` at the deadline. Never
    /// blocks longer than [`CANCEL_POLL`] without looking at the cancel
    /// flag, so a cancelled or failed job stops a waiting source promptly,
    /// whatever the source's rate.
    fn wait(&self, deadline: Duration, shared: &Shared) -> Result<Option<Barrier>, ExecError> {
        loop {
            shared.check_cancel()?;
            let real = self.clock.real_wait(deadline);
            if real.is_zero() {
                return Ok(None);
            }
            let slice = real.min(CANCEL_POLL);
            match &self.trigger {
                Some(rx) if self.ack.is_some() => match rx.recv_timeout(slice) {
                    Ok(b) => return Ok(Some(b)),
                    Err(RecvTimeoutError::Timeout) => {}
                    // The coordinator is gone: no more barriers, only time.
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(slice),
                },
                _ => std::thread::sleep(slice),
            }
        }
    }

    /// Checkpoint `id` completed: hands the reader the position its
    /// barrier recorded, and forgets the positions up to it.
    fn complete(&self, id: u64, reader: &mut dyn SourceReader) {
        let mut r = self.recorded.borrow_mut();
        while let Some((b, pos)) = r.front() {
            if *b > id {
                break;
            }
            if *b == id {
                reader.checkpoint_complete(id, pos);
            }
            r.pop_front();
        }
    }

    /// Tells the reader of the checkpoints that completed since it was
    /// last told, with the positions their barriers recorded.
    fn completed(&self, reader: &mut dyn SourceReader) {
        let Some(rx) = &self.committed else { return };
        while let Ok(id) = rx.try_recv() {
            self.complete(id, reader);
        }
    }

    /// Stopped at a savepoint barrier: waits (a while, best effort) for
    /// the savepoint to complete, so the reader hears of it (a Kafka
    /// source commits the stop's offsets to its group).
    fn stopped(&self, reader: &mut dyn SourceReader, shared: &Shared) {
        let (Some(rx), Some(id)) = (
            &self.committed,
            self.recorded.borrow().back().map(|(id, _)| *id),
        ) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline && shared.check_cancel().is_ok() {
            match rx.recv_timeout(CANCEL_POLL) {
                Ok(c) => {
                    self.complete(c, reader);
                    if c >= id {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// This subtask's input has ended: waits, passing every barrier on
    /// with this subtask's final position, so that checkpoints (and the
    /// exactly-once sinks' commits) go on completing while other source
    /// subtasks still read. With a final checkpoint it waits for the
    /// barrier that ends the job (the final checkpoint's, or a stop's);
    /// without, until every source subtask's input has ended, and then
    /// end-of-input goes downstream. Returns `true` when a barrier ended
    /// the job.
    fn idle_until_input_ends(
        &self,
        vertex: &str,
        subtask: u32,
        reader: &mut dyn SourceReader,
        outputs: &mut Outputs,
        shared: &Shared,
    ) -> Result<bool, ExecError> {
        outputs.flush()?;
        let (Some(trigger), Some(_)) = (&self.trigger, &self.ack) else {
            return Ok(false);
        };
        while self.final_checkpoint || shared.sources_reading() {
            shared.check_cancel()?;
            match trigger.recv_timeout(CANCEL_POLL) {
                Ok(b) => {
                    if self.pass(vertex, subtask, reader.position(), b, outputs)? {
                        return Ok(true);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(false),
            }
            self.completed(reader);
        }
        Ok(false)
    }

    fn finished(&self) {
        if let Some(ack) = &self.ack {
            let _ = ack.send(Ack::Finished);
        }
    }

    /// The last source subtask's input has ended: the coordinator takes
    /// the final checkpoint.
    fn input_ended(&self) {
        if let Some(ack) = &self.ack {
            let _ = ack.send(Ack::InputEnded);
        }
    }
}

/// What a restored checkpoint recorded of a source.
pub(super) struct Restored {
    /// This subtask's offset (lines read, events generated).
    pub(super) offset: u64,
    /// The split positions of every subtask of the source.
    pub(super) splits: Vec<SplitPosition>,
}

/// Opens subtask `index`'s reader of a source.
fn open(
    kind: &SourceKind,
    a: &SourceAssignment,
) -> Result<Box<dyn SourceReader>, connect::ConnectError> {
    Ok(match kind {
        SourceKind::File(f) => Box::new(connect::file::FileReader::open(f, a.offset)?),
        // Stdin cannot be replayed: a restored job reads on from where
        // stdin is now.
        SourceKind::Stdin(f) => Box::new(connect::file::StdinReader::open(f)?),
        SourceKind::Generator(seq) => Box::new(connect::generator::GeneratorReader::new(
            *seq,
            a.subtask,
            a.parallelism,
            a.offset,
        )),
        SourceKind::Nats(cfg) => Box::new(connect::nats::NatsReader::open(cfg, a)?),
        SourceKind::Kafka(cfg) => Box::new(connect::kafka::KafkaReader::open(cfg, a)?),
    })
}

/// Runs subtask `index` of a source until its input ends (or a barrier
/// stops the job). Returns the number of events it emitted.
pub(super) fn run(
    name: &str,
    kind: &SourceKind,
    index: u32,
    parallelism: u32,
    mut outputs: Outputs,
    shared: &Shared,
    ctl: &SourceCtl<'_>,
) -> Result<u64, ExecError> {
    let metrics = ctl.metrics;
    let err = |e: connect::ConnectError| ExecError::Source {
        vertex: name.to_string(),
        detail: e.detail,
        transient: e.transient,
    };
    let assignment = SourceAssignment {
        subtask: index,
        parallelism,
        offset: ctl.start.as_ref().map_or(0, |r| r.offset),
        splits: ctl
            .start
            .as_ref()
            .map(|r| r.splits.clone())
            .unwrap_or_default(),
        restored: ctl.start.is_some(),
    };
    let mut reader = open(kind, &assignment).map_err(err)?;
    let batch_size = ctl.batch_size.max(1);
    let mut batch = Batch::with_capacity(batch_size.min(1024), 0);
    let mut emitted = 0u64;
    // When the oldest event of the partial batch must be sent.
    let mut linger_until: Option<Duration> = None;
    // The reader has been idle since the last batch was sent: it is not
    // saturated, so what is sent goes downstream at once.
    let mut idled = false;
    let mut watermarks = ctl.watermark.map(|w| SourceWatermarks::new(w, name));
    let load = metrics.subtask(index);
    loop {
        shared.check_cancel()?;
        // A pending barrier puts the partial batch before itself, so the
        // position it records covers exactly what precedes it.
        if ctl.poll_with(name, index, reader.as_ref(), &mut batch, &mut outputs)? {
            // Stopped at a savepoint barrier: no end-of-input downstream
            // (the operators must not close), no "finished" to the
            // coordinator.
            ctl.stopped(reader.as_mut(), shared);
            return Ok(emitted);
        }
        if batch.is_empty() {
            linger_until = None;
        }
        let now = ctl.clock.now();
        let wait = linger_until
            .map_or(CANCEL_POLL, |l| ctl.clock.real_wait(l))
            .min(CANCEL_POLL);
        let before = batch.len();
        let bytes_before = batch.byte_len();
        let polled_at = std::time::Instant::now();
        let polled = reader
            .poll(&mut batch, batch_size - before, now, wait)
            .map_err(err)?;
        if batch.len() == before && matches!(polled, Poll::Idle { .. }) {
            // The system had nothing: the poll's wait was idle time.
            load.idle(polled_at.elapsed());
        }
        ctl.completed(reader.as_mut());
        let added = batch.len() - before;
        if added > 0 {
            if before == 0 {
                batch.mark_born(Some(std::time::Instant::now()));
                linger_until = Some(now.saturating_add(ctl.linger));
            }
            emitted += added as u64;
            metrics.add_bytes(batch.byte_len().saturating_sub(bytes_before));
            if let Some(w) = watermarks.as_mut() {
                w.observe(&batch, before);
            }
        }
        match polled {
            Poll::End => break,
            Poll::Ready => {}
            Poll::Idle { until } => {
                if !idled {
                    metrics.set_lag(reader.lag());
                    metrics.set_connected(index, reader.connected());
                }
                idled = true;
                if let Some(due) = until {
                    // Wait for the next event, or the end of the partial
                    // batch's linger, whichever is first; a barrier that
                    // comes meanwhile is passed at once.
                    let deadline = linger_until.map_or(due, |l| l.min(due));
                    let deadline = watermarks
                        .as_ref()
                        .map_or(deadline, |w| deadline.min(w.due()));
                    let waited = std::time::Instant::now();
                    let barrier = ctl.wait(deadline, shared)?;
                    load.idle(waited.elapsed());
                    if let Some(b) = barrier {
                        outputs.emit(batch.take())?;
                        if ctl.pass(name, index, reader.position(), b, &mut outputs)? {
                            ctl.stopped(reader.as_mut(), shared);
                            return Ok(emitted);
                        }
                        continue;
                    }
                }
            }
        }
        if let Some(w) = watermarks.as_mut() {
            let now = ctl.clock.now();
            if now >= w.due() {
                let (next, per_split) = w.next(reader.split_times(), now);
                metrics.set_split_watermarks(per_split);
                if let Some(wm) = next {
                    // After the events it covers.
                    outputs.emit(batch.take())?;
                    linger_until = None;
                    outputs.watermark(wm)?;
                    metrics.set_watermark(index, wm);
                }
            }
        }
        let full = batch.len() >= batch_size;
        let lingered = linger_until.is_some_and(|l| l <= ctl.clock.now());
        if !batch.is_empty() && (full || lingered) {
            metrics.set_lag(reader.lag());
            metrics.set_connected(index, reader.connected());
            outputs.emit(batch.take())?;
            if idled || !full {
                outputs.flush()?;
            }
            idled = false;
            linger_until = None;
        }
    }
    outputs.emit(batch)?;
    // The end of the input is the end of its event time: every event-time
    // timer downstream fires, every window closes.
    let end = Watermark::At(END_OF_TIME);
    outputs.watermark(end)?;
    metrics.set_watermark(index, end);
    let others_reading = shared.source_ended();
    let final_checkpoint = ctl.final_checkpoint && ctl.trigger.is_some() && ctl.ack.is_some();
    if final_checkpoint && !others_reading {
        ctl.input_ended();
    }
    if (others_reading || final_checkpoint)
        && ctl.idle_until_input_ends(name, index, reader.as_mut(), &mut outputs, shared)?
    {
        ctl.stopped(reader.as_mut(), shared);
        return Ok(emitted);
    }
    outputs.end()?;
    ctl.finished();
    Ok(emitted)
}

impl SourceCtl<'_> {
    /// [`SourceCtl::poll`] for a source holding a partial `batch`: when a
    /// barrier is pending, the batch goes out first, so the recorded
    /// position covers exactly what precedes the barrier.
    fn poll_with(
        &self,
        vertex: &str,
        subtask: u32,
        reader: &dyn SourceReader,
        batch: &mut Batch,
        outputs: &mut Outputs,
    ) -> Result<bool, ExecError> {
        let (Some(trigger), Some(_)) = (&self.trigger, &self.ack) else {
            return Ok(false);
        };
        while let Ok(b) = trigger.try_recv() {
            outputs.emit(batch.take())?;
            if self.pass(vertex, subtask, reader.position(), b, outputs)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
