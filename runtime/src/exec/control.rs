//! Reaching a running job from outside (the HTTP API, tests): trigger a
//! checkpoint or a savepoint, stop with a savepoint, cancel, read status.
//!
//! A [`JobControl`] outlives the job's attempts: each attempt attaches its
//! coordinator's channel while it runs, so a request made during a restart
//! gets a clear "try again" instead of vanishing.

use super::coordinator::Controls;
use crate::checkpoint::Savepoint;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// How a job stops at a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopMode {
    /// Stop right after the savepoint barrier: operators are not closed,
    /// so the job can resume from the savepoint as if never stopped.
    Suspend,
    /// Close every operator first (their `close` output is emitted and
    /// committed), then take the savepoint: the pipeline is drained, for a
    /// job that will not resume.
    Drain,
}

/// What a completed trigger produced.
#[derive(Debug, Clone)]
pub struct Triggered {
    /// The checkpoint taken.
    pub checkpoint: u64,
    /// The savepoint registered for it, when one was asked for.
    pub savepoint: Option<Savepoint>,
}

/// A request to the coordinator of a running job.
pub(crate) struct Request {
    /// Register the checkpoint as a savepoint (with this name, if any).
    pub(crate) savepoint: Option<Option<String>>,
    /// Stop the job at this checkpoint.
    pub(crate) stop: Option<StopMode>,
    pub(crate) reply: Sender<Result<Triggered, String>>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Starting or restoring.
    Starting,
    /// Processing.
    Running,
    /// Restarting after a failure.
    Restarting,
    /// Stopped at a savepoint.
    Stopped,
    /// Its input ended.
    Finished,
    /// Cancelled by a user.
    Cancelled,
    /// Failed for good.
    Failed,
}

/// A job's status for the API.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobStatus {
    /// The job.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// Restarts so far.
    pub restarts: u32,
    /// When its first attempt started (ms since the Unix epoch); absent
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// The newest completed checkpoint of this run.
    pub last_checkpoint: Option<u64>,
    /// The checkpoint the current attempt started from.
    pub restored_from: Option<u64>,
    /// The last completed checkpoints, oldest first (at most
    /// [`CHECKPOINT_HISTORY`]).
    pub checkpoints: Vec<CheckpointSummary>,
    /// The last failed checkpoints, oldest first (at most
    /// [`CHECKPOINT_HISTORY`]).
    #[serde(default)]
    pub failed_checkpoints: Vec<FailedCheckpoint>,
    /// Why it failed, when it did (while restarting: the failure that
    /// made it restart).
    pub error: Option<String>,
    /// Whose failure `error` is: `user` (the job's configuration or code),
    /// `external` (a system it talks to), `internal` (a bug in wrun).
    pub error_domain: Option<super::ErrorDomain>,
    /// Whether a restart can help with `error` (the restart policy applies
    /// only then; otherwise the job failed at once).
    pub retryable: Option<bool>,
    /// While restarting: when the next attempt starts (ms since the Unix
    /// epoch).
    pub next_attempt_at_ms: Option<u64>,
    /// The connection state of each connector subtask (Kafka, NATS) that
    /// has one, as it last reported it.
    pub connectors: Vec<ConnectorStatus>,
    /// Each subtask's event-time watermark, once it has one.
    pub watermarks: Vec<SubtaskWatermark>,
    /// Each source split's watermark, for sources with a watermark
    /// strategy.
    pub split_watermarks: Vec<SplitWatermark>,
    /// In a fleet: the node that runs it (none: it waits for a node, or
    /// has ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In a fleet: why no node can take the job now (it waits until one
    /// can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// A connector subtask's connection to its system.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConnectorStatus {
    /// The source or sink.
    pub vertex: String,
    /// The subtask.
    pub subtask: u32,
    /// Connected (`false`: the connection was lost and the client is
    /// reconnecting).
    pub connected: bool,
}

/// A subtask's event-time watermark.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubtaskWatermark {
    /// The vertex.
    pub vertex: String,
    /// The subtask.
    pub subtask: u32,
    /// Its watermark (ms since the Unix epoch; `i64::MAX` once its input
    /// has ended); `None` while idle.
    pub watermark_ms: Option<i64>,
    /// Every input is idle: it holds no watermark back.
    pub idle: bool,
}

/// A source split's watermark.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SplitWatermark {
    /// The source.
    pub vertex: String,
    /// The split (a Kafka partition, a NATS subject filter, a file).
    pub split: String,
    /// Its highest event time less the out-of-orderness bound; `None`
    /// before its first event with a timestamp.
    pub watermark_ms: Option<i64>,
}

/// How many completed checkpoints a job's status lists.
pub const CHECKPOINT_HISTORY: usize = 10;

/// A checkpoint that failed, in a job's status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailedCheckpoint {
    /// Its ID.
    pub id: u64,
    /// When it failed (ms since the Unix epoch).
    pub failed_at_ms: u64,
    /// Why.
    pub reason: String,
}

/// One completed checkpoint in a job's status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointSummary {
    /// Its ID.
    pub id: u64,
    /// When it was triggered (ms since the Unix epoch).
    pub triggered_at_ms: u64,
    /// Trigger to completion.
    pub duration_ms: u64,
    /// Bytes of state it references.
    pub full_bytes: u64,
    /// Bytes it wrote that were not stored already.
    pub new_bytes: u64,
}

impl CheckpointSummary {
    /// The summary of a committed checkpoint.
    pub fn of(m: &crate::checkpoint::CheckpointManifest) -> CheckpointSummary {
        CheckpointSummary {
            id: m.id.0,
            triggered_at_ms: m.triggered_at_ms,
            duration_ms: m.duration_ms,
            full_bytes: m.full_bytes,
            new_bytes: m.new_bytes,
        }
    }
}

/// The handle to a running job.
pub struct JobControl {
    metrics: std::sync::OnceLock<Arc<super::metrics::JobMetrics>>,
    plan: std::sync::OnceLock<Arc<super::plan::JobPlan>>,
    coordinator: Mutex<Option<Controls>>,
    cancel_attempt: Mutex<Option<Arc<AtomicBool>>>,
    cancelled: AtomicBool,
    status: Mutex<JobStatus>,
}

impl JobControl {
    /// A handle for job `name`, before it starts.
    pub fn new(name: &str) -> Arc<JobControl> {
        Arc::new(JobControl {
            metrics: std::sync::OnceLock::new(),
            plan: std::sync::OnceLock::new(),
            coordinator: Mutex::new(None),
            cancel_attempt: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            status: Mutex::new(JobStatus {
                name: name.to_string(),
                state: JobState::Starting,
                restarts: 0,
                started_at_ms: None,
                last_checkpoint: None,
                restored_from: None,
                checkpoints: Vec::new(),
                failed_checkpoints: Vec::new(),
                error: None,
                error_domain: None,
                retryable: None,
                next_attempt_at_ms: None,
                connectors: Vec::new(),
                watermarks: Vec::new(),
                split_watermarks: Vec::new(),
                node: None,
                waiting: None,
            }),
        })
    }

    /// The job's live counters, once it has started.
    pub fn metrics(&self) -> Option<Arc<super::metrics::JobMetrics>> {
        self.metrics.get().cloned()
    }

    /// Checkpoint `id` failed for `why`.
    pub(crate) fn checkpoint_failed(&self, id: u64, why: String) {
        self.update(|s| {
            s.failed_checkpoints.push(FailedCheckpoint {
                id,
                failed_at_ms: crate::time::unix_ms(),
                reason: why,
            });
            let over = s
                .failed_checkpoints
                .len()
                .saturating_sub(CHECKPOINT_HISTORY);
            s.failed_checkpoints.drain(..over);
        });
    }

    /// The job's graph and modules, once it has started.
    pub fn plan(&self) -> Option<Arc<super::plan::JobPlan>> {
        self.plan.get().cloned()
    }

    /// Records the job's graph and modules (its first attempt's) and when
    /// it started.
    pub(crate) fn started(
        &self,
        graph: &crate::job::JobGraph,
        modules: &std::collections::HashMap<usize, Arc<crate::sandbox::OperatorModule>>,
    ) {
        self.plan
            .get_or_init(|| Arc::new(super::plan::JobPlan::new(graph, modules)));
        self.update(|s| {
            s.started_at_ms.get_or_insert_with(crate::time::unix_ms);
        });
    }

    /// The job's counters, created for `graph` on first use; they outlive
    /// attempts so that counters only grow.
    pub(crate) fn metrics_for(
        &self,
        graph: &crate::job::JobGraph,
    ) -> Arc<super::metrics::JobMetrics> {
        self.metrics
            .get_or_init(|| Arc::new(super::metrics::JobMetrics::for_graph(graph)))
            .clone()
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(m) = self.metrics.get() {
            for v in &m.vertices {
                for (subtask, connected) in v.connected() {
                    s.connectors.push(ConnectorStatus {
                        vertex: v.name.clone(),
                        subtask,
                        connected,
                    });
                }
                for (subtask, w) in v.watermarks() {
                    s.watermarks.push(SubtaskWatermark {
                        vertex: v.name.clone(),
                        subtask,
                        watermark_ms: w,
                        idle: w.is_none(),
                    });
                }
                for (split, w) in v.split_watermarks() {
                    s.split_watermarks.push(SplitWatermark {
                        vertex: v.name.clone(),
                        split,
                        watermark_ms: w,
                    });
                }
            }
        }
        s
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn attach(&self, coordinator: Option<Controls>, cancel: Arc<AtomicBool>) {
        *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = coordinator;
        if self.cancelled.load(Ordering::SeqCst) {
            cancel.store(true, Ordering::SeqCst);
        }
        *self
            .cancel_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(cancel);
    }

    pub(crate) fn detach(&self) {
        *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self
            .cancel_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether a user cancelled the job (no restart follows).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Cancels the job: every subtask stops, no savepoint is taken, and the
    /// restart policy does not apply.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(c) = &*self
            .cancel_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            c.store(true, Ordering::SeqCst);
        }
    }

    /// Triggers a checkpoint now; with `savepoint`, registers it as a
    /// savepoint (named, if a name is given); with `stop`, the job stops at
    /// it. Returns a receiver for the outcome, so callers can wait or poll.
    pub fn trigger(
        &self,
        savepoint: Option<Option<String>>,
        stop: Option<StopMode>,
    ) -> Result<Receiver<Result<Triggered, String>>, String> {
        let state = self.status().state;
        let guard = self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else {
            return Err(match state {
                JobState::Starting | JobState::Restarting => format!(
                    "job '{}' is {}; try again in a moment",
                    self.status().name,
                    if state == JobState::Starting {
                        "starting"
                    } else {
                        "restarting"
                    }
                ),
                JobState::Running => format!(
                    "job '{}' takes no checkpoints: it has no [checkpoint] table and no checkpoint store",
                    self.status().name
                ),
                _ => format!("job '{}' is no longer running", self.status().name),
            });
        };
        let (reply, rx) = channel();
        tx.send(Request {
            savepoint,
            stop,
            reply,
        })
        .map_err(|_| format!("job '{}' is no longer running", self.status().name))?;
        Ok(rx)
    }
}
