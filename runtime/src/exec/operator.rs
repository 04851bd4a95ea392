//! The operator subtask loop: receive batches, call the operator once per
//! batch (flushed on size or after the linger), route what it emits.

use super::channel::{Message, Outputs};
use super::clock::Clock;
use super::coordinator::{Ack, AckData, Acks};
use super::inputs::{Inputs, Next};
use super::watermark::Watermark;
use super::{ExecError, Shared};
use crate::batch::Batch;
use crate::sandbox::{
    Description, OperatorInstance, OperatorSnapshot, SandboxError, StateFormat, SubtaskInfo,
};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A subtask's state at a checkpoint barrier.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Keyed state, copy-on-write; encoded off the subtask's thread.
    pub state: Option<crate::state::StateSnapshot>,
    /// The guest's non-keyed state.
    pub operator_state: Option<OperatorSnapshot>,
}

/// What the runtime needs of an operator: a Wasm instance, or native Rust
/// code in the same harness (benchmark baselines and tests).
pub trait OperatorLogic: Send {
    /// Called once before any batch.
    fn open(&mut self, info: &SubtaskInfo) -> Result<(), SandboxError>;
    /// One batch in, the emitted events out.
    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError>;
    /// At the end of input: the final events.
    fn close(&mut self) -> Result<Batch, SandboxError>;
    /// What the operator declares: its state format and named outputs
    /// (`None`: native logic that declares nothing).
    fn describe(&mut self) -> Result<Option<Description>, SandboxError> {
        Ok(None)
    }
    /// The events the last call emitted to named outputs, one batch per
    /// output in the order `describe` named them.
    fn take_side_outputs(&mut self) -> Vec<Batch> {
        Vec::new()
    }
    /// The watermark and the clock (Unix ms) the next calls see.
    fn set_time(&mut self, _watermark: Option<i64>, _now_ms: i64) {}
    /// How many timers are pending.
    fn pending_timers(&self) -> usize {
        0
    }
    /// Fires the timers due at `watermark` and `now_ms`: the main output's
    /// events, and the named outputs' appended to `side`.
    fn fire_timers(
        &mut self,
        _watermark: Option<i64>,
        _now_ms: i64,
        _side: &mut Vec<Batch>,
    ) -> Result<Batch, SandboxError> {
        Ok(Batch::default())
    }
    /// Non-keyed state from a checkpoint, before `open`.
    fn restore(&mut self, _snapshot: &OperatorSnapshot) -> Result<(), SandboxError> {
        Ok(())
    }
    /// Keyed and non-keyed state at a checkpoint barrier; `full` asks for
    /// every key group whole rather than as changes since the previous
    /// snapshot ([`crate::state::KeyedState::snapshot`]).
    fn snapshot(&mut self, _full: bool) -> Result<Snapshot, SandboxError> {
        Ok(Snapshot::default())
    }
    /// Removes some expired keyed state (see
    /// [`OperatorInstance::expire_state`]) as of `watermark` and `now_ms`.
    fn expire_state(&mut self, _watermark: Option<i64>, _now_ms: i64) -> Result<(), SandboxError> {
        Ok(())
    }
}

impl OperatorLogic for OperatorInstance {
    fn open(&mut self, info: &SubtaskInfo) -> Result<(), SandboxError> {
        OperatorInstance::open(self, info)
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        OperatorInstance::process(self, batch)
    }
    fn close(&mut self) -> Result<Batch, SandboxError> {
        OperatorInstance::close(self)
    }
    fn describe(&mut self) -> Result<Option<Description>, SandboxError> {
        OperatorInstance::describe(self).map(Some)
    }
    fn take_side_outputs(&mut self) -> Vec<Batch> {
        OperatorInstance::take_side_outputs(self)
    }
    fn set_time(&mut self, watermark: Option<i64>, now_ms: i64) {
        OperatorInstance::set_time(self, watermark, now_ms)
    }
    fn pending_timers(&self) -> usize {
        OperatorInstance::pending_timers(self)
    }
    fn fire_timers(
        &mut self,
        watermark: Option<i64>,
        now_ms: i64,
        side: &mut Vec<Batch>,
    ) -> Result<Batch, SandboxError> {
        OperatorInstance::fire_timers(self, watermark, now_ms, side)
    }
    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<(), SandboxError> {
        OperatorInstance::restore(self, snapshot)
    }
    fn expire_state(&mut self, watermark: Option<i64>, now_ms: i64) -> Result<(), SandboxError> {
        OperatorInstance::set_time(self, watermark, now_ms);
        OperatorInstance::expire_state(self, Some(EXPIRE_BUDGET)).map(drop)
    }
    fn snapshot(&mut self, full: bool) -> Result<Snapshot, SandboxError> {
        // No checkpoint holds an entry that has expired.
        OperatorInstance::expire_state(self, None)?;
        let state = Some(self.state_mut().snapshot(full));
        Ok(Snapshot {
            state,
            operator_state: OperatorInstance::snapshot(self)?,
        })
    }
}

/// How many refresh times of keyed state with a time to live one cleanup
/// step looks at, after each batch and when idle: enough that cleanup
/// outpaces a stream of new keys, little enough to keep a batch's pause
/// short.
const EXPIRE_BUDGET: usize = 4096;

/// Counts of one subtask.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Events received.
    pub records_in: u64,
    /// Events emitted.
    pub records_out: u64,
}

/// What [`super::restore::check_format`] needs to decide whether restored
/// state may reach this operator's module.
pub(super) struct FormatCheck {
    /// The operator, for messages.
    pub(super) operator: String,
    /// Who wrote the state.
    pub(super) written: super::restore::WrittenBy,
    /// The new module's digest.
    pub(super) module: String,
    /// Format names it declares it migrates.
    pub(super) migrates_from: Vec<String>,
}

pub(super) struct Loop<'a> {
    pub(super) logic: Box<dyn OperatorLogic + 'a>,
    pub(super) info: SubtaskInfo,
    pub(super) rx: Receiver<Message>,
    pub(super) inputs: usize,
    pub(super) outputs: Outputs,
    pub(super) batch_size: usize,
    pub(super) linger: Duration,
    /// The vertex index, for acknowledgements.
    pub(super) vertex: usize,
    /// Where checkpoint acknowledgements go (checkpoints on).
    pub(super) ack: Option<Acks>,
    /// Non-keyed state to restore before `open`.
    pub(super) restore: Option<OperatorSnapshot>,
    /// Restored state the module must accept before it sees it.
    pub(super) format_check: Option<FormatCheck>,
    /// Fault injection for recovery tests: fail after this many records.
    pub(super) fail_after: Option<u64>,
    /// The job's live counters.
    pub(super) metrics: std::sync::Arc<super::metrics::JobMetrics>,
    /// The job's clock: processing time for timers.
    pub(super) clock: &'a dyn Clock,
    /// The subtask's event-time watermark, once one arrived.
    pub(super) watermark: Option<i64>,
    /// The operator's named outputs, in the order it declared them.
    pub(super) side_names: Vec<String>,
}

impl Loop<'_> {
    /// Counts a call the guest did not return from: a trap of its own, or
    /// one wrun forced (a deadline, the memory limit, refused state use).
    fn count_trap(&self, e: &SandboxError) {
        if matches!(
            e,
            SandboxError::Trap { .. }
                | SandboxError::Timeout { .. }
                | SandboxError::MemoryLimit { .. }
                | SandboxError::State { .. }
        ) {
            self.metrics.vertex(self.vertex).trap();
        }
    }

    fn process(&mut self, batch: &Batch, counts: &mut Counts) -> Result<(), ExecError> {
        if batch.is_empty() {
            return Ok(());
        }
        counts.records_in += batch.len() as u64;
        let m = self.metrics.vertex(self.vertex);
        m.add_in(batch.len());
        if let Some(n) = self.fail_after
            && counts.records_in >= n
        {
            return Err(ExecError::Injected(format!(
                "{}[{}] after {n} records",
                self.info.uid, self.info.subtask_index
            )));
        }
        let started = std::time::Instant::now();
        self.logic.set_time(self.watermark, self.clock.unix_ms());
        let mut out = self
            .logic
            .process(batch)
            .inspect_err(|e| self.count_trap(e))?;
        out.mark_born(batch.born());
        self.metrics.vertex(self.vertex).batch(started.elapsed());
        let side = self.logic.take_side_outputs();
        self.emit(out, side, counts)
    }

    /// Sends what one call emitted: `main` to the main output, `side[i]` to
    /// the `i`-th named output.
    fn emit(
        &mut self,
        main: Batch,
        side: Vec<Batch>,
        counts: &mut Counts,
    ) -> Result<(), ExecError> {
        counts.records_out += main.len() as u64;
        self.outputs.emit(main)?;
        for (name, batch) in self.side_names.iter().zip(side) {
            counts.records_out += batch.len() as u64;
            self.outputs.emit_to(Some(name), batch)?;
        }
        Ok(())
    }

    /// Fires the timers that are due now (event-time ones up to the
    /// watermark, processing-time ones up to the clock).
    fn fire_timers(&mut self, counts: &mut Counts) -> Result<(), ExecError> {
        self.logic
            .expire_state(self.watermark, self.clock.unix_ms())
            .inspect_err(|e| self.count_trap(e))?;
        if self.logic.pending_timers() == 0 {
            return Ok(());
        }
        let mut side = Vec::new();
        let main = self
            .logic
            .fire_timers(self.watermark, self.clock.unix_ms(), &mut side)
            .inspect_err(|e| self.count_trap(e))?;
        self.emit(main, side, counts)
    }

    /// `close`, and what it emitted.
    fn close(&mut self, counts: &mut Counts) -> Result<(), ExecError> {
        self.logic.set_time(self.watermark, self.clock.unix_ms());
        let out = self.logic.close().inspect_err(|e| self.count_trap(e))?;
        let side = self.logic.take_side_outputs();
        self.emit(out, side, counts)
    }

    pub(super) fn run(mut self, shared: &Shared) -> Result<Counts, ExecError> {
        let mut counts = Counts::default();
        let description = self.logic.describe().inspect_err(|e| self.count_trap(e))?;
        if let Some(c) = self.format_check.take()
            && let Some(d) = &description
        {
            super::restore::check_format(
                &c.operator,
                &c.written,
                &d.format,
                &c.module,
                &c.migrates_from,
            )?;
        }
        if let Some(s) = self.restore.take() {
            self.logic.restore(&s).inspect_err(|e| self.count_trap(e))?;
        }
        let format: Option<StateFormat> = description.as_ref().map(|d| d.format.clone());
        if let Some(f) = &format {
            self.metrics
                .vertex(self.vertex)
                .set_state_format(format!("{} v{}", f.name, f.version));
        }
        self.side_names = description.map(|d| d.outputs).unwrap_or_default();
        self.logic
            .open(&self.info)
            .inspect_err(|e| self.count_trap(e))?;
        let rx = std::mem::replace(&mut self.rx, std::sync::mpsc::sync_channel(0).1);
        let load = self
            .metrics
            .vertex(self.vertex)
            .subtask(self.info.subtask_index);
        let mut inputs = Inputs::new(rx, self.inputs, load);
        // Events wait in `pending` only while more input is already queued:
        // when the input runs dry, what is pending is processed and every
        // partial output buffer is sent at once. Under load batches fill up;
        // at low rates nothing waits for a batch to fill.
        let mut pending = Batch::with_capacity(self.batch_size, 0);
        loop {
            let waiting = !pending.is_empty() || self.outputs.holds_events();
            let timeout = if waiting { Duration::ZERO } else { self.linger };
            match inputs.next(timeout)? {
                Next::Batch(b) => {
                    // Never let a batch grow past `batch_size`: process what
                    // is pending first when the new events would overflow it.
                    if !pending.is_empty() && pending.len() + b.len() > self.batch_size {
                        self.process(&pending, &mut counts)?;
                        pending.clear();
                    }
                    if pending.is_empty() && b.len() >= self.batch_size {
                        self.process(&b, &mut counts)?;
                    } else {
                        pending.extend_from(&b);
                        if pending.len() >= self.batch_size {
                            self.process(&pending, &mut counts)?;
                            pending.clear();
                        }
                    }
                    // Processing time passes under load too.
                    self.fire_timers(&mut counts)?;
                }
                Next::Aligned(barrier) => {
                    let id = barrier.id;
                    self.metrics
                        .vertex(self.vertex)
                        .alignment(inputs.last_alignment());
                    // Everything before the barrier belongs to this
                    // checkpoint: process it, snapshot, then pass it on.
                    self.process(&pending, &mut counts)?;
                    pending.clear();
                    if barrier.closes_operators() {
                        // Drain, or the end of the input: the operator's
                        // final output belongs to this checkpoint too.
                        self.close(&mut counts)?;
                    }
                    let snap = self
                        .logic
                        .snapshot(barrier.full)
                        .inspect_err(|e| self.count_trap(e))?;
                    if let Some(ack) = &self.ack {
                        let data = AckData::Operator {
                            vertex: self.vertex,
                            subtask: self.info.subtask_index,
                            format: format.clone(),
                            state: snap.state,
                            operator_state: snap.operator_state,
                        };
                        let _ = ack.send(Ack::Done { id, data });
                    }
                    self.outputs.barrier(barrier)?;
                    if barrier.ends_job() {
                        // Stop with a savepoint, or the final checkpoint:
                        // nothing comes after the barrier.
                        return Ok(counts);
                    }
                }
                Next::Watermark(w) => {
                    // The events before the watermark go out before it, and
                    // so does what the timers it passes emit.
                    self.process(&pending, &mut counts)?;
                    pending.clear();
                    if let Watermark::At(t) = w
                        && self.watermark.is_none_or(|old| t > old)
                    {
                        self.watermark = Some(t);
                        self.fire_timers(&mut counts)?;
                    }
                    self.metrics
                        .vertex(self.vertex)
                        .set_watermark(self.info.subtask_index, w);
                    self.outputs.watermark(w)?;
                }
                Next::Idle => {
                    shared.check_cancel()?;
                    self.process(&pending, &mut counts)?;
                    pending.clear();
                    self.fire_timers(&mut counts)?;
                    self.outputs.flush()?;
                }
                Next::End => break,
            }
        }
        self.process(&pending, &mut counts)?;
        self.close(&mut counts)?;
        self.outputs.end()?;
        if let Some(ack) = &self.ack {
            let _ = ack.send(Ack::Finished);
        }
        Ok(counts)
    }
}
