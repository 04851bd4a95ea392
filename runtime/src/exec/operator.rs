//! The operator subtask loop: receive batches, call the operator once per
//! batch (flushed on size or after the linger), route what it emits.

use super::channel::{Message, Outputs, Payload};
use super::{ExecError, Shared};
use crate::sandbox::{Event, OperatorInstance, SandboxError, SubtaskInfo};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// What the runtime needs of an operator: a Wasm instance, or native Rust
/// code in the same harness (benchmark baselines and tests).
pub trait OperatorLogic: Send {
    /// Called once before any batch.
    fn open(&mut self, info: &SubtaskInfo) -> Result<(), SandboxError>;
    /// One batch in, the emitted events out.
    fn process(&mut self, batch: &[Event]) -> Result<Vec<Event>, SandboxError>;
    /// At the end of input: the final events.
    fn close(&mut self) -> Result<Vec<Event>, SandboxError>;
}

impl OperatorLogic for OperatorInstance {
    fn open(&mut self, info: &SubtaskInfo) -> Result<(), SandboxError> {
        OperatorInstance::open(self, info)
    }
    fn process(&mut self, batch: &[Event]) -> Result<Vec<Event>, SandboxError> {
        OperatorInstance::process(self, batch)
    }
    fn close(&mut self) -> Result<Vec<Event>, SandboxError> {
        OperatorInstance::close(self)
    }
}

/// Counts of one subtask.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Events received.
    pub records_in: u64,
    /// Events emitted.
    pub records_out: u64,
}

pub(super) struct Loop<'a> {
    pub(super) logic: Box<dyn OperatorLogic + 'a>,
    pub(super) info: SubtaskInfo,
    pub(super) rx: Receiver<Message>,
    pub(super) inputs: usize,
    pub(super) outputs: Outputs,
    pub(super) batch_size: usize,
    pub(super) linger: Duration,
}

impl Loop<'_> {
    fn process(&mut self, batch: Vec<Event>, counts: &mut Counts) -> Result<(), ExecError> {
        if batch.is_empty() {
            return Ok(());
        }
        counts.records_in += batch.len() as u64;
        let out = self.logic.process(&batch)?;
        counts.records_out += out.len() as u64;
        self.outputs.emit(out)
    }

    pub(super) fn run(mut self, shared: &Shared) -> Result<Counts, ExecError> {
        let mut counts = Counts::default();
        self.logic.open(&self.info)?;
        let mut pending: Vec<Event> = Vec::new();
        let mut ended = 0usize;
        while ended < self.inputs {
            match self.rx.recv_timeout(self.linger) {
                Ok(Message {
                    payload: Payload::Batch(b),
                    ..
                }) => {
                    // Never let a batch grow past `batch_size`: flush what
                    // is pending first when the new events would overflow it.
                    if !pending.is_empty() && pending.len() + b.len() > self.batch_size {
                        let batch = std::mem::take(&mut pending);
                        self.process(batch, &mut counts)?;
                    }
                    if pending.is_empty() && b.len() >= self.batch_size {
                        self.process(b, &mut counts)?;
                    } else {
                        pending.extend(b);
                        if pending.len() >= self.batch_size {
                            let batch = std::mem::take(&mut pending);
                            self.process(batch, &mut counts)?;
                        }
                    }
                }
                Ok(Message {
                    payload: Payload::End,
                    ..
                }) => ended += 1,
                Err(RecvTimeoutError::Timeout) => {
                    shared.check_cancel()?;
                    let batch = std::mem::take(&mut pending);
                    self.process(batch, &mut counts)?;
                    self.outputs.flush()?;
                }
                Err(RecvTimeoutError::Disconnected) => return Err(ExecError::Disconnected),
            }
        }
        let batch = std::mem::take(&mut pending);
        self.process(batch, &mut counts)?;
        let out = self.logic.close()?;
        counts.records_out += out.len() as u64;
        self.outputs.emit(out)?;
        self.outputs.end()?;
        Ok(counts)
    }
}
