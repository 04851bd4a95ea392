//! Connectors: the sources and sinks that read and write the systems a job
//! talks to, behind two small traits the runtime sees ([`SourceReader`],
//! [`SinkWriter`]). One module per system: [`file`] (files, stdin, stdout),
//! [`generator`] (the generator and the discard sink), [`kafka`] (Kafka
//! and Kafka-API brokers), [`nats`] (NATS JetStream).
//!
//! A connector knows its system and the host's [`Batch`]; it never reaches
//! into the job graph, the sandbox, the state backend or the checkpoint
//! store. The subtask loops in `exec` drive it: they decide when a batch is
//! sent (linger, size), answer barriers between polls, and keep what a
//! connector hands them at a barrier ([`Position`], [`Prepared`]) in the
//! checkpoint.
//!
//! - A **source** is a set of *splits* (a file; a Kafka partition; a
//!   JetStream stream or subject filter). Split `i` of a source is read by subtask
//!   `i mod parallelism`, so a resume at another parallelism hands the
//!   splits, each with its position, to other subtasks. A reader polls
//!   events into a batch, never waiting longer than it is told, reports its
//!   position at a barrier and starts from a restored one.
//! - A **sink** writes batches, *prepares* at a barrier (makes durable, or
//!   hands the runtime what the checkpoint must keep), and *commits* what a
//!   checkpoint covers only once that checkpoint's manifest is committed.
//!   Opened from a restored checkpoint, it first finishes what the crash
//!   left half done.

mod codec;
pub mod config;
pub mod event_time;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod nats;
mod secret;

pub use event_time::SplitTime;
pub use secret::Secret;

use crate::batch::Batch;
use std::time::Duration;

/// Why a connector failed: what it was doing and what to do about it, in
/// one message that names the system (address, topic, stream, file).
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct ConnectError {
    /// The message.
    pub detail: String,
    /// The system may come back (a lost connection, a timeout): a restart
    /// of the job can help. Configuration errors (a missing stream, bad
    /// credentials) are not.
    pub transient: bool,
}

impl ConnectError {
    /// A failure a restart cannot mend (configuration, bad data).
    pub fn fatal(detail: impl Into<String>) -> ConnectError {
        ConnectError {
            detail: detail.into(),
            transient: false,
        }
    }

    /// A failure of the connection or the system, which may pass.
    pub fn transient(detail: impl Into<String>) -> ConnectError {
        ConnectError {
            detail: detail.into(),
            transient: true,
        }
    }
}

/// What a [`SourceReader::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// It appended events (at least one), and may have more at once.
    Ready,
    /// Nothing is ready now. `until`: the job-clock time when the next
    /// event is due (a paced generator), so the caller may wait for it;
    /// `None` when the reader already waited as long as it was allowed
    /// (a broker that is quiet).
    Idle {
        /// When the next event is due, on the job's clock.
        until: Option<Duration>,
    },
    /// The input has ended: nothing more will come.
    End,
}

/// Where one split of a source is: the next position to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPosition {
    /// The split's name, stable across runs (`stream/ORDERS`, a file).
    pub split: String,
    /// The next position to read (a stream sequence, a line number).
    pub next: u64,
}

/// Where a source subtask is, covering every event it handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// One number for the whole subtask (lines read, events generated):
    /// tied to the subtask, so the source keeps its parallelism on resume.
    Offset(u64),
    /// A position per split: re-assignable at any parallelism.
    Splits(Vec<SplitPosition>),
}

/// A source subtask's place in its source, and where to start.
#[derive(Debug, Clone)]
pub struct SourceAssignment {
    /// This subtask.
    pub subtask: u32,
    /// The source's parallelism.
    pub parallelism: u32,
    /// Restored: this subtask's [`Position::Offset`] (0 when starting
    /// fresh).
    pub offset: u64,
    /// Restored: the split positions of every subtask of the source in
    /// the checkpoint; the reader takes those of the splits it is
    /// assigned.
    pub splits: Vec<SplitPosition>,
    /// Started from a checkpoint or savepoint (a source's `start` applies
    /// only when not).
    pub restored: bool,
}

impl SourceAssignment {
    /// Whether split `i` (of the source's splits, in a stable order) is
    /// this subtask's.
    pub fn owns(&self, i: usize) -> bool {
        i as u64 % u64::from(self.parallelism.max(1)) == u64::from(self.subtask)
    }

    /// The restored next position of `split`, if the checkpoint had it.
    pub fn restored_split(&self, split: &str) -> Option<u64> {
        self.splits
            .iter()
            .find(|s| s.split == split)
            .map(|s| s.next)
    }
}

/// A source subtask's reader.
pub trait SourceReader: Send {
    /// Appends at most `room` events to `batch`. When none is ready, waits
    /// at most `wait` (real time) for one. `now` is the job clock's time
    /// (pacing is on it).
    fn poll(
        &mut self,
        batch: &mut Batch,
        room: usize,
        now: Duration,
        wait: Duration,
    ) -> Result<Poll, ConnectError>;

    /// Where the reader is: everything it appended so far is before it.
    fn position(&self) -> Position;

    /// Checkpoint `checkpoint`, which recorded `position` (an earlier
    /// [`SourceReader::position`]), completed (a Kafka source commits the
    /// offsets to its consumer group here, for monitoring).
    fn checkpoint_complete(&mut self, _checkpoint: u64, _position: &Position) {}

    /// Whether the reader's connection to its system is up (`None`: it
    /// has none).
    fn connected(&self) -> Option<bool> {
        None
    }

    /// How many records the system holds that the reader has not read
    /// yet, per split, where the system says (`wrun_source_lag_records`).
    fn lag(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Per split this reader reads, the event times it has read (the
    /// source's watermarks are per split, so a fast split does not make a
    /// slow one's events late). `None`: the reader is one split (a file, a
    /// generator subtask), and the runtime follows its events itself.
    fn split_times(&self) -> Option<Vec<SplitTime>> {
        None
    }
}

/// Data a sink staged for a checkpoint and the runtime keeps in it (as a
/// chunk of the checkpoint store) until the sink has committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The checkpoint whose barrier staged it.
    pub checkpoint: u64,
    /// The sink's own encoding.
    pub bytes: std::sync::Arc<[u8]>,
}

/// What a sink hands the runtime at a barrier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// A file sink's commit point: bytes committed before this
    /// checkpoint's part, and the part's size.
    pub file: Option<(u64, u64)>,
    /// Everything staged and not yet committed, this checkpoint's last:
    /// the checkpoint must keep it, so that a recovery can commit it.
    pub staged: Vec<Staged>,
}

/// What a sink subtask is restored from.
#[derive(Debug, Clone, Default)]
pub struct SinkRestore {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The file sink's commit point in it.
    pub file: Option<(u64, u64)>,
    /// What the checkpoint kept of this subtask's staged data (and, after
    /// a rescale, of the old subtasks this one took over).
    pub staged: Vec<Staged>,
    /// The subtasks of the checkpoint's run whose state this one takes
    /// over (itself, and after a rescale to fewer subtasks, others).
    pub subtasks: Vec<u32>,
}

/// What the runtime tells a sink subtask about itself.
pub struct SinkContext<'a> {
    /// The job.
    pub job: &'a str,
    /// The sink vertex.
    pub sink: &'a str,
    /// This subtask.
    pub subtask: u32,
    /// Checkpoints are on.
    pub exactly_once: bool,
    /// The checkpoint interval.
    pub interval: Option<Duration>,
    /// What the checkpoint the job starts from kept.
    pub restore: Option<&'a SinkRestore>,
}

/// How a sink delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Every event's effect once, across failures (with checkpoints on).
    ExactlyOnce,
    /// Written at once, acknowledged by each checkpoint; a recovery may
    /// write some events again.
    AtLeastOnce,
}

/// A sink subtask's writer.
pub trait SinkWriter: Send {
    /// Writes (or buffers) a batch.
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectError>;

    /// Barrier `checkpoint`: pre-commits everything written since the last
    /// barrier.
    fn prepare(&mut self, checkpoint: u64) -> Result<Prepared, ConnectError>;

    /// Checkpoint `checkpoint`'s manifest is committed: commit everything
    /// prepared up to it. Returns only when that is done (acknowledged by
    /// the system).
    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectError>;

    /// The input ended. With periodic checkpoints this comes after the
    /// final checkpoint's commit, so nothing was written since: release
    /// what the writer holds. Without them (no recovery, so nothing will
    /// replay the output) it makes everything written final.
    fn finish(&mut self) -> Result<(), ConnectError>;

    /// Whether the writer's connection to its system is up (`None`: it
    /// has none).
    fn connected(&self) -> Option<bool> {
        None
    }
}

/// The connectors' tokio runtime: one worker thread for the whole process,
/// which drives every broker connection (reads, pings, reconnects) while
/// the subtask threads wait on it with [`block_on`].
fn runtime() -> Result<&'static tokio::runtime::Runtime, ConnectError> {
    static RT: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wrun connectors")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ConnectError::fatal(format!("cannot start the connectors' runtime: {e}")))
}

/// Runs `f` to completion on the connectors' runtime, from a subtask's
/// (non-async) thread.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ConnectError> {
    Ok(runtime()?.block_on(f))
}
