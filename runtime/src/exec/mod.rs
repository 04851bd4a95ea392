//! Running a job: one thread per subtask, bounded channels between them,
//! partitioners on the edges, batches across the Wasm boundary.
//!
//! Subtasks are OS threads, not async tasks: a Wasm call is synchronous
//! CPU work bounded by an epoch deadline, so a thread per subtask never
//! blocks an executor, and a blocking channel send is backpressure for
//! free (docs/architecture.md). Never reaches into checkpoint storage
//! except through `checkpoint`'s store and codecs.
//!
//! One file per concept: `job.rs` wires and runs one attempt,
//! `supervisor.rs` restarts it under the policy, `restore.rs` picks and
//! checks what to restore, `source.rs` / `operator.rs` / `sink.rs` are the
//! subtask loops, `coordinator/` takes checkpoints (`decide.rs` its
//! decisions, `write.rs` its writes), `error.rs` says why a
//! job failed (the crash test's kill points are in `crate::fault`; the
//! sources and sinks themselves in `crate::connect`).

pub mod channel;
mod clock;
mod control;
mod coordinator;
mod error;
mod fence;
mod inputs;
mod job;
pub mod load;
pub mod metrics;
mod operator;
pub mod plan;
mod restore;
mod sink;
mod source;
mod subtask;
mod supervisor;
mod watermark;
mod wiring;

pub use crate::connect::file::json_line;
pub use crate::connect::generator::generated;
pub use clock::{Clock, ManualClock, SystemClock};
pub use control::{
    CHECKPOINT_HISTORY, CheckpointSummary, FailedCheckpoint, JobControl, JobState, JobStatus,
    SplitWatermark, StopMode, SubtaskWatermark, Triggered,
};
#[cfg(test)]
pub(crate) use coordinator::Controls;
pub use error::{ErrorDomain, ExecError};
pub use fence::{Fence, FenceError};
pub use job::{FailPoint, JobReport, NativeFactory, RunOptions, VertexReport, run_job};
pub use operator::{Counts, OperatorLogic, Snapshot};
pub use restore::{
    check_restore, latest_checkpoint, latest_checkpoint_after, latest_checkpoint_among,
    newest_checkpoint_id,
};
pub use supervisor::run_supervised;

/// Checks that the systems a job's Kafka and NATS sources and sinks name
/// answer, and that their topics and streams exist: the check `wrun
/// deploy` makes before it accepts a job, so a missing topic is an error
/// at deploy rather than a failed job. The error names the vertex.
pub fn check_connectors(graph: &crate::job::JobGraph) -> Result<(), String> {
    use crate::job::{SinkKind, SourceKind, VertexKind};
    for v in &graph.vertices {
        let r = match &v.kind {
            VertexKind::Source(SourceKind::Kafka(c)) => {
                crate::connect::kafka::check_topics(&c.connection, &c.topics)
            }
            VertexKind::Sink(SinkKind::Kafka(c)) => {
                crate::connect::kafka::check_topics(&c.connection, std::slice::from_ref(&c.topic))
            }
            VertexKind::Source(SourceKind::Nats(c)) => {
                crate::connect::nats::check_stream(&c.connection, &c.stream)
            }
            VertexKind::Sink(SinkKind::Nats(c)) => {
                crate::connect::nats::check_stream(&c.connection, &c.stream)
            }
            _ => Ok(()),
        };
        let kind = if matches!(v.kind, VertexKind::Source(_)) {
            "source"
        } else {
            "sink"
        };
        r.map_err(|e| format!("{kind} '{}': {}", v.name, e.detail))?;
    }
    Ok(())
}

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// State shared by the subtasks of a running job.
pub struct Shared {
    cancel: Arc<AtomicBool>,
    first_error: Mutex<Option<ExecError>>,
    /// Source subtasks that have not reached the end of their input. A
    /// source subtask that has waits for the others, taking part in
    /// checkpoints, so that checkpoints go on completing until the whole
    /// input has ended.
    sources_reading: AtomicUsize,
}

impl Shared {
    /// A source subtask reached the end of its input; returns whether
    /// others are still reading.
    fn source_ended(&self) -> bool {
        self.sources_reading.fetch_sub(1, Ordering::AcqRel) > 1
    }

    fn sources_reading(&self) -> bool {
        self.sources_reading.load(Ordering::Acquire) > 0
    }

    fn check_cancel(&self) -> Result<(), ExecError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(ExecError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn fail(&self, e: ExecError) {
        self.cancel.store(true, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        let replace = match &*first {
            None => true,
            Some(existing) => existing.is_consequence() && !e.is_consequence(),
        };
        if replace {
            *first = Some(e);
        }
    }
}
