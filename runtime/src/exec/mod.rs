//! Running a job: one thread per subtask, bounded channels between them,
//! partitioners on the edges, batches across the Wasm boundary.
//!
//! Subtasks are OS threads, not async tasks: a Wasm call is synchronous
//! CPU work bounded by an epoch deadline, so a thread per subtask never
//! blocks an executor, and a blocking channel send is backpressure for
//! free (docs/architecture.md). Never reaches into checkpoint storage.

pub mod channel;
mod control;
mod coordinator;
mod inputs;
pub mod metrics;
mod operator;
mod sink;
mod source;

pub use control::{
    CHECKPOINT_HISTORY, CheckpointSummary, JobControl, JobState, JobStatus, StopMode, Triggered,
};
pub use operator::{Counts, OperatorLogic, Snapshot};
pub use sink::json_line;
pub use source::generated;

use crate::checkpoint::{
    CheckpointId, CheckpointManifest, CheckpointStore, Savepoint, SavepointStore, choose_restore,
};
use crate::job::{JobGraph, VertexKind};
use crate::sandbox::{
    CallLimits, OperatorInstance, OperatorModule, OperatorSnapshot, Sandbox, SandboxError,
    StateFormat, SubtaskInfo,
};
use crate::state::{KeyGroup, KeyGroupRange, KeyedState, StateLimits};
use channel::{CHANNEL_BATCHES, Message, Output, Outputs};
use coordinator::{Ack, AckData, Coordinator};
use inputs::{Inputs, Next};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An operator failed in its sandbox.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A source failed.
    #[error("source '{vertex}': {detail}")]
    Source {
        /// The source.
        vertex: String,
        /// Why.
        detail: String,
    },
    /// A sink failed.
    #[error("sink '{vertex}': {detail}")]
    Sink {
        /// The sink.
        vertex: String,
        /// Why.
        detail: String,
    },
    /// An event could not be routed.
    #[error("edge {edge}: {detail}")]
    Routing {
        /// "from -> to".
        edge: String,
        /// Why.
        detail: String,
    },
    /// A neighbour stopped (a consequence of another failure).
    #[error("a connected subtask stopped")]
    Disconnected,
    /// The job was cancelled.
    #[error("the job was cancelled")]
    Cancelled,
    /// A failure injected by a test (`RunOptions::fail_point`).
    #[error("injected failure in {0}")]
    Injected(String),
    /// State could not be restored from a checkpoint.
    #[error("cannot restore from checkpoint {id}: {detail}")]
    Restore {
        /// The checkpoint.
        id: u64,
        /// Why.
        detail: String,
    },
    /// The checkpoint coordinator failed the job: a stop with a savepoint
    /// that could not complete, or more checkpoints failed in a row than
    /// `checkpoint.tolerable-failures`.
    #[error("{0}")]
    CheckpointFailure(String),
    /// A runtime thread panicked (a wrun bug).
    #[error("internal error in subtask {0}: {1} (this is a bug in wrun; please report it)")]
    Panicked(String, String),
}

impl ExecError {
    /// Whether this error only follows from another one.
    fn is_consequence(&self) -> bool {
        matches!(self, ExecError::Disconnected | ExecError::Cancelled)
    }
}

/// State shared by the subtasks of a running job.
pub struct Shared {
    cancel: Arc<AtomicBool>,
    first_error: Mutex<Option<ExecError>>,
}

impl Shared {
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

/// A place where the crash test (runtime/tests/all/crash.rs) may kill the
/// process: with `WRUN_CRASH_AT=<name>:<n>` in the environment, the `n`-th
/// time (from 1) the process passes `crash_point(name)`, it sends itself
/// SIGKILL: no destructor, no flush, as when a machine dies. Without the
/// variable this is one load of an initialized `OnceLock`.
pub(crate) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static PASSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("WRUN_CRASH_AT").ok()?;
        let (n, k) = v.split_once(':')?;
        Some((n.to_string(), k.parse().ok()?))
    });
    if let Some((n, k)) = at
        && n == name
        && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *k
    {
        tracing::warn!("WRUN_CRASH_AT={n}:{k}: killing this process");
        // SAFETY: sends a signal to this process; nothing to uphold.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Native operator code used in place of a vertex's component.
pub type NativeFactory =
    Arc<dyn Fn(&SubtaskInfo, KeyedState) -> Box<dyn OperatorLogic> + Send + Sync>;

/// A failure to inject, for recovery tests: the first subtask of `vertex`
/// fails once it has received `after_records` records, on the first
/// attempt only.
#[derive(Debug, Clone)]
pub struct FailPoint {
    /// The operator vertex.
    pub vertex: String,
    /// Records before the failure.
    pub after_records: u64,
}

/// How to run a job.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Vertices (by name) whose logic is native Rust instead of Wasm.
    pub native: HashMap<String, NativeFactory>,
    /// Where checkpoints go; checkpoints run when this is set and the job
    /// has a `[checkpoint]` table.
    pub store: Option<Arc<dyn CheckpointStore>>,
    /// Start from this checkpoint.
    pub restore: Option<CheckpointManifest>,
    /// Fault injection for tests.
    pub fail_point: Option<FailPoint>,
    /// Where the chunks of `restore` are, when not in `store` (an exported
    /// savepoint).
    pub restore_store: Option<Arc<dyn CheckpointStore>>,
    /// Start even when `restore` holds state for operators the job lacks
    /// (that state is dropped).
    pub allow_non_restored_state: bool,
    /// Where savepoints are registered.
    pub savepoints: Option<Arc<dyn SavepointStore>>,
    /// The handle through which the job is reached while it runs. With a
    /// control and a store, the job takes checkpoints on request even
    /// without a `[checkpoint]` table.
    pub control: Option<Arc<JobControl>>,
}

/// Per-vertex totals of a finished job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VertexReport {
    /// The vertex.
    pub name: String,
    /// Events in.
    pub records_in: u64,
    /// Events out.
    pub records_out: u64,
}

/// What a finished job did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobReport {
    /// Per vertex, in graph order (the last attempt's counts).
    pub vertices: Vec<VertexReport>,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Restarts after failures.
    pub restarts: u32,
    /// The checkpoint the last attempt started from.
    pub restored_from: Option<u64>,
    /// The savepoint the job stopped at (`wrun stop --savepoint`).
    pub stopped_at: Option<Savepoint>,
}

/// Runs a job under its restart policy: after a failure it restarts from
/// the newest checkpoint that reads back whole (or from the start when
/// there is none), up to `graph.restart.attempts` times.
pub fn run_supervised(
    graph: &JobGraph,
    sandbox: &Sandbox,
    modules: &HashMap<usize, Arc<OperatorModule>>,
    opts: &RunOptions,
) -> Result<JobReport, ExecError> {
    let started = Instant::now();
    let mut opts = opts.clone();
    let initial = (opts.restore.clone(), opts.restore_store.clone());
    // Checkpoints up to this ID are older than this run: a restart never
    // goes back to one of them (a previous run's state), only to the
    // checkpoint or savepoint the run started from.
    let floor = match &opts.store {
        Some(store) => newest_checkpoint_id(store.as_ref(), &graph.name)?,
        None => 0,
    };
    let mut restarts = 0;
    let set_state = |state: JobState, restarts: u32, error: Option<String>| {
        if let Some(c) = &opts.control {
            c.update(|s| {
                s.state = state;
                s.restarts = restarts;
                s.error = error;
            });
        }
    };
    loop {
        let restored_from = opts.restore.as_ref().map(|m| m.id.0);
        let result = run_job(graph, sandbox, modules, &opts);
        let cancelled = opts.control.as_ref().is_some_and(|c| c.is_cancelled());
        match result {
            Ok(mut r) => {
                r.elapsed = started.elapsed();
                r.restarts = restarts;
                r.restored_from = restored_from;
                let state = if r.stopped_at.is_some() {
                    JobState::Stopped
                } else {
                    JobState::Finished
                };
                set_state(state, restarts, None);
                return Ok(r);
            }
            Err(e) if cancelled => {
                set_state(JobState::Cancelled, restarts, None);
                return Err(match e {
                    ExecError::Disconnected => ExecError::Cancelled,
                    e => e,
                });
            }
            Err(e) if restarts < graph.restart.attempts => {
                restarts += 1;
                if let Some(m) = opts.control.as_ref().and_then(|c| c.metrics()) {
                    m.restarted();
                }
                set_state(JobState::Restarting, restarts, Some(e.to_string()));
                opts.fail_point = None;
                // The newest checkpoint taken since the start; before the
                // first one, the checkpoint or savepoint the job started from.
                let latest = match &opts.store {
                    Some(store) => latest_checkpoint_after(store.as_ref(), &graph.name, floor)?,
                    None => None,
                };
                (opts.restore, opts.restore_store) = match latest {
                    Some(m) => (Some(m), None),
                    None => initial.clone(),
                };
                let from = opts
                    .restore
                    .as_ref()
                    .map(|m| format!("checkpoint {}", m.id))
                    .unwrap_or_else(|| "the start (no checkpoint yet)".into());
                tracing::warn!(job = %graph.name, "job failed: {e}; restarting from {from} (restart {restarts} of {})", graph.restart.attempts);
                std::thread::sleep(Duration::from_millis(graph.restart.delay_ms));
            }
            Err(e) => {
                set_state(JobState::Failed, restarts, Some(e.to_string()));
                return Err(e);
            }
        }
    }
}

/// The newest checkpoint of `job` whose manifest reads and whose chunks all
/// verify; newer broken ones are skipped with a warning naming why.
pub fn latest_checkpoint(
    store: &dyn CheckpointStore,
    job: &str,
) -> Result<Option<CheckpointManifest>, ExecError> {
    latest_checkpoint_after(store, job, 0)
}

/// The highest checkpoint ID of `job` in `store` (0: none).
pub fn newest_checkpoint_id(store: &dyn CheckpointStore, job: &str) -> Result<u64, ExecError> {
    Ok(store
        .list_checkpoints(job)
        .map_err(|e| ExecError::Restore {
            id: 0,
            detail: e.to_string(),
        })?
        .iter()
        .map(|c| c.0)
        .max()
        .unwrap_or(0))
}

/// [`latest_checkpoint`] among those with an ID above `after` (the ones a
/// run whose store held checkpoints up to `after` took itself).
pub fn latest_checkpoint_after(
    store: &dyn CheckpointStore,
    job: &str,
    after: u64,
) -> Result<Option<CheckpointManifest>, ExecError> {
    let mut ids = store
        .list_checkpoints(job)
        .map_err(|e| ExecError::Restore {
            id: 0,
            detail: e.to_string(),
        })?;
    ids.retain(|c| c.0 > after);
    let mut found = None;
    let (chosen, skipped) = choose_restore(
        &ids,
        |id: CheckpointId| -> Result<(), crate::checkpoint::StoreError> {
            let m = store.get_manifest(job, id)?;
            for c in m.chunks() {
                store.get_chunk(&c)?;
            }
            found = Some(m);
            Ok(())
        },
    );
    for (id, why) in skipped {
        tracing::warn!(job, checkpoint = id.0, "skipping checkpoint: {why}");
    }
    Ok(chosen.and(found))
}

/// Waits until checkpoint `id` is committed (or the job is cancelled),
/// passing every commit on to `commit`.
fn wait_commit(
    rx: Option<&Receiver<u64>>,
    shared: &Shared,
    id: u64,
    mut commit: impl FnMut(u64) -> Result<(), ExecError>,
) -> Result<(), ExecError> {
    let Some(rx) = rx else {
        return Ok(());
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(c) => {
                commit(c)?;
                if c >= id {
                    return Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => shared.check_cancel()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ExecError::Disconnected);
            }
        }
    }
}

/// Checks that a job can start from checkpoint or savepoint `m`, before
/// any subtask starts (DESIGN.md, "Savepoints": restore rules).
pub fn check_restore(
    graph: &JobGraph,
    m: &CheckpointManifest,
    modules: &HashMap<usize, Arc<OperatorModule>>,
    allow_non_restored_state: bool,
) -> Result<(), ExecError> {
    let err = |detail: String| ExecError::Restore { id: m.id.0, detail };
    if m.max_parallelism != graph.max_parallelism {
        return Err(err(format!(
            "it was taken with max-parallelism {}, and the job now has {}; max-parallelism fixes the key groups state is split into, so it cannot change for the life of a job's state. Set max-parallelism = {} in the job",
            m.max_parallelism, graph.max_parallelism, m.max_parallelism
        )));
    }
    let orphans: Vec<String> = m
        .operators
        .iter()
        .filter(|o| !o.key_groups.is_empty() || !o.operator_state.is_empty())
        .filter(|o| {
            !graph
                .vertices
                .iter()
                .any(|v| v.id.to_hex() == o.operator_id)
        })
        .map(|o| match &o.uid {
            Some(uid) => format!("uid '{uid}' (operator '{}')", o.name),
            None => format!("operator '{}' (no uid; ID {})", o.name, o.operator_id),
        })
        .collect();
    if !orphans.is_empty() {
        if !allow_non_restored_state {
            return Err(err(format!(
                "it holds state for operators this job does not have: {}. Add them back with the same uid, or pass --allow-non-restored-state to start without that state",
                orphans.join(", ")
            )));
        }
        tracing::warn!(job = %graph.name, "--allow-non-restored-state: dropping the state of {}", orphans.join(", "));
    }
    for (i, v) in graph.vertices.iter().enumerate() {
        if let Some(o) = m.operators.iter().find(|o| o.operator_id == v.id.to_hex()) {
            if o.parallelism != v.parallelism && !o.operator_state.is_empty() {
                return Err(err(format!(
                    "operator '{}' has non-keyed operator state from {} subtasks, which cannot be split or merged to parallelism {}; keep parallelism {} or keep that state in keyed state",
                    v.name, o.parallelism, v.parallelism, o.parallelism
                )));
            }
            if let Some(module) = modules.get(&i)
                && !o.module.is_empty()
                && o.module != module.digest.to_string()
            {
                tracing::info!(job = %graph.name, operator = %v.name, "module swap: state written by {} is restored into {}", o.module, module.digest);
            }
        }
        let positions = m.sources.iter().filter(|p| p.vertex == v.name).count();
        if positions > 0 && positions != v.parallelism as usize {
            return Err(err(format!(
                "source '{}' ran with parallelism {positions}, and the job now gives it {}; a source's read positions cannot be redistributed, so keep its parallelism at {positions}",
                v.name, v.parallelism
            )));
        }
    }
    Ok(())
}

/// Decodes an operator-state chunk: name length (u32 LE), name, version (u32 LE), data.
fn operator_state(bytes: &[u8]) -> Option<OperatorSnapshot> {
    let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(bytes.get(4..4 + n)?).ok()?.to_string();
    let version = u32::from_le_bytes(bytes.get(4 + n..8 + n)?.try_into().ok()?);
    Some(OperatorSnapshot {
        format: StateFormat { name, version },
        data: bytes.get(8 + n..)?.to_vec(),
    })
}

/// What a subtask restores from a checkpoint.
struct Restored {
    state: KeyedState,
    operator_state: Option<OperatorSnapshot>,
    format: Option<StateFormat>,
    restored: bool,
}

fn restore_operator(
    graph: &JobGraph,
    v: usize,
    subtask: u32,
    m: Option<&CheckpointManifest>,
    store: Option<&Arc<dyn CheckpointStore>>,
) -> Result<Restored, ExecError> {
    let vertex = &graph.vertices[v];
    let range = KeyGroupRange::for_subtask(graph.max_parallelism, vertex.parallelism, subtask);
    let mut state = KeyedState::new(graph.max_parallelism, range, StateLimits::default());
    let (Some(m), Some(store)) = (m, store) else {
        return Ok(Restored {
            state,
            operator_state: None,
            format: None,
            restored: false,
        });
    };
    let err = |detail: String| ExecError::Restore { id: m.id.0, detail };
    if m.max_parallelism != graph.max_parallelism {
        return Err(err(format!(
            "the checkpoint has max-parallelism {}, the job {}; max-parallelism cannot change for the life of a job's state",
            m.max_parallelism, graph.max_parallelism
        )));
    }
    let Some(op) = m
        .operators
        .iter()
        .find(|o| o.operator_id == vertex.id.to_hex())
    else {
        return Ok(Restored {
            state,
            operator_state: None,
            format: None,
            restored: false,
        });
    };
    let started = std::time::Instant::now();
    let (mut groups, mut bytes) = (0usize, 0u64);
    for r in op
        .key_groups
        .iter()
        .filter(|r| range.contains(KeyGroup(r.key_group)))
    {
        crate::checkpoint::read_key_group(store.as_ref(), r, &mut state)
            .map_err(|e| err(format!("operator '{}': {e}", vertex.name)))?;
        groups += 1;
        bytes += r.total_bytes();
    }
    tracing::info!(
        job = %graph.name,
        "restored {}[{subtask}] from checkpoint {}: {groups} key groups, {bytes} bytes in {} ms",
        vertex.name,
        m.id,
        started.elapsed().as_millis()
    );
    let operator_state = match op.operator_state.iter().find(|s| s.subtask == subtask) {
        Some(s) => {
            let bytes = store.get_chunk(&s.chunk).map_err(|e| err(e.to_string()))?;
            Some(operator_state(&bytes).ok_or_else(|| {
                err(format!(
                    "operator '{}': subtask {subtask}'s operator state is malformed",
                    vertex.name
                ))
            })?)
        }
        None => None,
    };
    let format = op
        .state_format
        .clone()
        .map(|(name, version)| StateFormat { name, version });
    Ok(Restored {
        state,
        operator_state,
        format,
        restored: true,
    })
}

/// Runs a job to the end of its bounded input (or to its first failure).
/// `modules` holds the loaded component of every operator vertex (by vertex
/// index) that `opts.native` does not replace.
pub fn run_job(
    graph: &JobGraph,
    sandbox: &Sandbox,
    modules: &HashMap<usize, Arc<OperatorModule>>,
    opts: &RunOptions,
) -> Result<JobReport, ExecError> {
    let started = Instant::now();
    let shared = Shared {
        cancel: Arc::new(AtomicBool::new(false)),
        first_error: Mutex::new(None),
    };
    let n = graph.vertices.len();
    let checkpointing =
        opts.store.is_some() && (graph.checkpoint.is_some() || opts.control.is_some());
    let restore = opts.restore.as_ref();
    let restore_store = opts.restore_store.as_ref().or(opts.store.as_ref());
    if let Some(m) = restore {
        check_restore(graph, m, modules, opts.allow_non_restored_state)?;
    }

    // Input channels: one receiver per subtask of every vertex with inputs.
    // Channel indices at a receiver: edges in order, then upstream subtask.
    let mut senders: Vec<Vec<SyncSender<Message>>> = vec![Vec::new(); n];
    let mut receivers: Vec<Vec<Option<Receiver<Message>>>> = (0..n).map(|_| Vec::new()).collect();
    let mut input_count = vec![0usize; n];
    let mut chan_base: HashMap<(usize, usize), u32> = HashMap::new();
    for (v, vertex) in graph.vertices.iter().enumerate() {
        if matches!(vertex.kind, VertexKind::Source(_)) {
            continue;
        }
        let cap = CHANNEL_BATCHES * graph.inputs(v).count().max(1);
        for _ in 0..vertex.parallelism {
            let (tx, rx) = sync_channel(cap);
            senders[v].push(tx);
            receivers[v].push(Some(rx));
        }
        let mut base = 0u32;
        for e in graph.inputs(v) {
            chan_base.insert((e.from, e.to), base);
            let up = graph.vertices[e.from].parallelism;
            input_count[v] += up as usize;
            base += up;
        }
    }

    let metrics = match &opts.control {
        Some(c) => c.metrics_for(graph),
        None => Arc::new(metrics::JobMetrics::for_graph(graph)),
    };
    if let Some(c) = &opts.control {
        c.update(|s| s.restored_from = restore.map(|m| m.id.0));
    }
    let outputs_for = |v: usize, subtask: u32| -> Outputs {
        Outputs(
            graph
                .outputs(v)
                .map(|e| {
                    let base = chan_base[&(e.from, e.to)];
                    let to = &graph.vertices[e.to];
                    let targets: Vec<(SyncSender<Message>, u32)> =
                        if e.partition == crate::job::Partition::Forward {
                            vec![(senders[e.to][subtask as usize].clone(), base + subtask)]
                        } else {
                            senders[e.to]
                                .iter()
                                .map(|tx| (tx.clone(), base + subtask))
                                .collect()
                        };
                    let edge = format!("'{}' -> '{}'", graph.vertices[v].name, to.name);
                    Output::new(
                        e.partition,
                        targets,
                        graph.max_parallelism,
                        graph.batch_size,
                        edge,
                        subtask as usize,
                    )
                })
                .collect(),
            Some((metrics.clone(), v)),
        )
    };
    let mut all_outputs: Vec<Vec<Option<Outputs>>> = graph
        .vertices
        .iter()
        .enumerate()
        .map(|(v, vx)| {
            (0..vx.parallelism)
                .map(|s| Some(outputs_for(v, s)))
                .collect()
        })
        .collect();
    // The runner keeps no senders: once every upstream thread ends, its
    // channels close.
    drop(senders);

    // Checkpoint control: triggers to sources, commits to sinks, acks back.
    let (ack_tx, ack_rx) = channel::<Ack>();
    let mut triggers: HashMap<(usize, u32), Receiver<channel::Barrier>> = HashMap::new();
    let mut trigger_txs = Vec::new();
    let mut commits: HashMap<(usize, u32), Receiver<u64>> = HashMap::new();
    let mut commit_txs = Vec::new();
    let mut tasks = 0;
    for (v, vertex) in graph.vertices.iter().enumerate() {
        for s in 0..vertex.parallelism {
            tasks += 1;
            match vertex.kind {
                VertexKind::Source(_) => {
                    let (tx, rx) = channel();
                    trigger_txs.push(tx);
                    triggers.insert((v, s), rx);
                }
                VertexKind::Sink(_) => {
                    let (tx, rx) = channel();
                    commit_txs.push(tx);
                    commits.insert((v, s), rx);
                }
                VertexKind::Operator { .. } => {}
            }
        }
    }
    let fail_job = |msg: String| shared.fail(ExecError::CheckpointFailure(msg));
    let coordinator = match (&opts.store, checkpointing) {
        (Some(store), true) => {
            let periodic = graph.checkpoint.is_some();
            let settings = graph
                .checkpoint
                .clone()
                .unwrap_or(crate::job::CheckpointSettings {
                    interval_ms: 1000,
                    timeout_ms: 600_000,
                    min_pause_ms: 0,
                    retain: 3,
                    tolerable_failures: 3,
                });
            let existing = store
                .list_checkpoints(&graph.name)
                .map_err(|e| ExecError::Restore {
                    id: 0,
                    detail: e.to_string(),
                })?;
            let next_id = existing
                .iter()
                .map(|c| c.0)
                .max()
                .unwrap_or(0)
                .max(restore.map(|m| m.id.0).unwrap_or(0))
                + 1;
            Some(Coordinator {
                graph,
                settings,
                store: store.clone(),
                modules: modules
                    .iter()
                    .map(|(v, m)| (*v, m.digest.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                triggers: trigger_txs,
                commits: commit_txs,
                acks: ack_rx,
                tasks,
                next_id,
                last: HashMap::new(),
                last_completed: false,
                failures: 0,
                periodic,
                savepoints: opts.savepoints.clone(),
                control: opts.control.clone(),
                fail: &fail_job,
            })
        }
        _ => None,
    };

    let limits = CallLimits {
        memory_bytes: usize::try_from(graph.limits.memory_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        call_timeout: Duration::from_millis(graph.limits.call_timeout_ms),
        max_output_events: usize::try_from(graph.limits.max_output_events).unwrap_or(usize::MAX),
    };
    let linger = Duration::from_millis(graph.linger_ms.max(1));
    let counts: Mutex<Vec<Counts>> = Mutex::new(vec![Counts::default(); n]);

    if let Some(c) = &opts.control {
        c.attach(
            coordinator.as_ref().map(|_| ack_tx.clone()),
            shared.cancel.clone(),
        );
        c.update(|s| s.state = JobState::Running);
    }
    let mut stopped_at = None;
    std::thread::scope(|scope| {
        let coordinator_handle = coordinator.map(|c| scope.spawn(move || c.run()));
        let mut handles = Vec::new();
        for (v, vertex) in graph.vertices.iter().enumerate() {
            for s in 0..vertex.parallelism {
                let outputs = all_outputs[v][s as usize]
                    .take()
                    .unwrap_or(Outputs(Vec::new(), None));
                let rx = receivers[v].get_mut(s as usize).and_then(Option::take);
                let trigger = triggers.remove(&(v, s));
                let commit = commits.remove(&(v, s));
                let ack = checkpointing.then(|| ack_tx.clone());
                let (shared, counts, metrics) = (&shared, &counts, &metrics);
                let name = format!("{}[{s}]", vertex.name);
                let inputs = input_count[v];
                let fail_after = opts
                    .fail_point
                    .as_ref()
                    .filter(|f| f.vertex == vertex.name && s == 0)
                    .map(|f| f.after_records);
                let work = move || -> Result<Counts, ExecError> {
                    match &vertex.kind {
                        VertexKind::Source(kind) => {
                            let start = restore
                                .and_then(|m| {
                                    m.sources
                                        .iter()
                                        .find(|p| p.vertex == vertex.name && p.subtask == s)
                                })
                                .map(|p| p.position)
                                .unwrap_or(0);
                            let ctl = source::SourceCtl {
                                trigger,
                                ack,
                                start,
                            };
                            let out = source::run(
                                &vertex.name,
                                kind,
                                s,
                                vertex.parallelism,
                                outputs,
                                shared,
                                &ctl,
                            )?;
                            Ok(Counts {
                                records_in: 0,
                                records_out: out,
                            })
                        }
                        VertexKind::Sink(kind) => {
                            let rx = rx.ok_or(ExecError::Disconnected)?;
                            let sink_state = restore.and_then(|m| {
                                m.sinks
                                    .iter()
                                    .find(|k| k.vertex == vertex.name)
                                    .map(|k| (m.id.0, k))
                            });
                            let mut sink =
                                sink::Sink::open(&vertex.name, kind, ack.is_some(), sink_state)?;
                            let mut c = Counts::default();
                            let mut inputs = Inputs::new(rx, inputs);
                            loop {
                                if let Some(commit) = &commit {
                                    while let Ok(id) = commit.try_recv() {
                                        sink.commit(&vertex.name, id)?;
                                    }
                                }
                                match inputs.next(Duration::from_millis(20))? {
                                    Next::Batch(b) => {
                                        c.records_in += b.len() as u64;
                                        metrics.vertex(v).add_in(b.len());
                                        sink.write(&vertex.name, &b)?;
                                    }
                                    Next::Aligned(b) => {
                                        let id = b.id;
                                        metrics.vertex(v).alignment(inputs.last_alignment());
                                        let state = sink.barrier(&vertex.name, id)?;
                                        if let Some(ack) = &ack {
                                            let _ = ack.send(Ack::Done {
                                                id,
                                                data: AckData::Sink(state),
                                            });
                                        }
                                        if b.stop.is_some() {
                                            // Stop with a savepoint: commit
                                            // what the savepoint covers, then
                                            // end without finishing.
                                            wait_commit(commit.as_ref(), shared, id, |c| {
                                                sink.commit(&vertex.name, c)
                                            })?;
                                            return Ok(c);
                                        }
                                    }
                                    Next::Idle => shared.check_cancel()?,
                                    Next::End => break,
                                }
                            }
                            sink.finish(&vertex.name)?;
                            if let Some(ack) = &ack {
                                let _ = ack.send(Ack::Finished);
                            }
                            Ok(c)
                        }
                        VertexKind::Operator { config, .. } => {
                            let rx = rx.ok_or(ExecError::Disconnected)?;
                            let r = restore_operator(graph, v, s, restore, restore_store)?;
                            let info = SubtaskInfo {
                                uid: vertex.display_uid().to_string(),
                                subtask_index: s,
                                parallelism: vertex.parallelism,
                                max_parallelism: graph.max_parallelism,
                                config: config.clone(),
                                restored: r.restored,
                                restored_format: r.format,
                            };
                            let logic: Box<dyn OperatorLogic> = match opts.native.get(&vertex.name)
                            {
                                Some(factory) => factory(&info, r.state),
                                None => {
                                    let module = modules.get(&v).ok_or_else(|| {
                                        ExecError::Panicked(
                                            format!("{}[{s}]", vertex.name),
                                            "operator module not loaded".into(),
                                        )
                                    })?;
                                    Box::new(OperatorInstance::instantiate(
                                        sandbox, module, &info, limits, r.state,
                                    )?)
                                }
                            };
                            let l = operator::Loop {
                                logic,
                                info,
                                rx,
                                inputs,
                                outputs,
                                batch_size: graph.batch_size,
                                linger,
                                vertex: v,
                                ack,
                                restore: r.operator_state,
                                fail_after,
                                metrics: metrics.clone(),
                            };
                            l.run(shared)
                        }
                    }
                };
                let handle = std::thread::Builder::new()
                    .name(format!("wrun {name}"))
                    .spawn_scoped(scope, move || {
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                            Ok(Ok(c)) => {
                                let mut all = counts.lock().unwrap_or_else(|p| p.into_inner());
                                all[v].records_in += c.records_in;
                                all[v].records_out += c.records_out;
                            }
                            Ok(Err(e)) => shared.fail(e),
                            Err(p) => {
                                let msg = p
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                shared.fail(ExecError::Panicked(name, msg));
                            }
                        }
                    });
                match handle {
                    Ok(h) => handles.push(h),
                    Err(e) => shared.fail(ExecError::Panicked(
                        vertex.name.clone(),
                        format!("cannot start a thread: {e}"),
                    )),
                }
            }
        }
        // Once every subtask has ended, the coordinator's ack channel closes.
        drop(ack_tx);
        for h in handles {
            let _ = h.join();
        }
        // The control holds a sender too: let go of it so the
        // coordinator's channel closes.
        if let Some(c) = &opts.control {
            c.detach();
        }
        if let Some(h) = coordinator_handle {
            stopped_at = h.join().ok().flatten();
        }
    });

    if let Some(e) = shared
        .first_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(e);
    }
    let counts = counts.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(JobReport {
        vertices: graph
            .vertices
            .iter()
            .zip(counts)
            .map(|(v, c)| VertexReport {
                name: v.name.clone(),
                records_in: c.records_in,
                records_out: c.records_out,
            })
            .collect(),
        elapsed: started.elapsed(),
        restarts: 0,
        restored_from: restore.map(|m| m.id.0),
        stopped_at,
    })
}
