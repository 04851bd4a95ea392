//! Wiring a job: one thread per subtask, bounded channels between them,
//! partitioners on the edges, the checkpoint coordinator beside them.
//! [`run_job`] runs one attempt; restarts are `supervisor.rs`'s.

use super::channel;
use super::clock::{Clock, SystemClock};
use super::coordinator::{Acks, Controls, Coordinator, Inbound};
use super::restore::check_restore;
use super::subtask::Attempt;
use super::wiring::Wiring;
use super::{Counts, ExecError, JobControl, JobState, OperatorLogic, Shared, metrics, sink};
use crate::checkpoint::{CheckpointManifest, CheckpointStore, Savepoint, SavepointStore};
use crate::job::{JobGraph, VertexKind};
use crate::sandbox::{CallLimits, OperatorModule, Sandbox, SubtaskInfo};
use crate::state::KeyedState;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub store: Option<Arc<CheckpointStore>>,
    /// Start from this checkpoint.
    pub restore: Option<CheckpointManifest>,
    /// Fault injection for tests.
    pub fail_point: Option<FailPoint>,
    /// Where the chunks of `restore` are, when not in `store` (an exported
    /// savepoint).
    pub restore_store: Option<Arc<CheckpointStore>>,
    /// Start even when `restore` holds state for operators the job lacks
    /// (that state is dropped).
    pub allow_non_restored_state: bool,
    /// Where savepoints are registered.
    pub savepoints: Option<Arc<dyn SavepointStore>>,
    /// The handle through which the job is reached while it runs. With a
    /// control and a store, the job takes checkpoints on request even
    /// without a `[checkpoint]` table.
    pub control: Option<Arc<JobControl>>,
    /// The clock sources pace by and checkpoints time out by (default:
    /// real time). Tests pass a [`super::ManualClock`].
    pub clock: Option<Arc<dyn Clock>>,
    /// What `restore` is, in the user's words, for errors: e.g.
    /// "savepoint 'upgrade' (checkpoint 7 of job 'wordcount')". Without
    /// it, errors name the checkpoint.
    pub restore_label: Option<String>,
    /// Where another process could own the job too (a fleet): checkpoint
    /// IDs are reserved and checkpoints committed through it, and
    /// restarts restore only committed checkpoints (`exec::fence`).
    pub fence: Option<Arc<dyn super::Fence>>,
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
    /// The job had already finished: it was resumed from its final
    /// checkpoint (this one), so nothing ran but the sinks' commits of
    /// what that checkpoint staged.
    pub already_finished: Option<u64>,
    /// Source-to-sink latency of the events that reached a sink (over
    /// every attempt), when any did.
    pub latency: Option<metrics::LatencySummary>,
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
    let clock: Arc<dyn Clock> = opts
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(SystemClock::new()));
    let clock: &dyn Clock = clock.as_ref();
    let shared = Shared {
        cancel: Arc::new(AtomicBool::new(false)),
        first_error: Mutex::new(None),
        sources_reading: std::sync::atomic::AtomicUsize::new(
            graph
                .vertices
                .iter()
                .filter(|v| matches!(v.kind, VertexKind::Source(_)))
                .map(|v| v.parallelism as usize)
                .sum(),
        ),
    };
    let n = graph.vertices.len();
    let checkpointing =
        opts.store.is_some() && (graph.checkpoint.is_some() || opts.control.is_some());
    let restore = opts.restore.as_ref();
    let restore_store = opts.restore_store.as_ref().or(opts.store.as_ref());
    if let Some(m) = restore {
        check_restore(graph, m, modules, opts.allow_non_restored_state)
            .map_err(|e| e.with_restore_label(opts.restore_label.as_deref()))?;
    }
    let metrics = match &opts.control {
        Some(c) => c.metrics_for(graph),
        None => Arc::new(metrics::JobMetrics::for_graph(graph)),
    };
    if let Some(c) = &opts.control {
        c.started(graph, modules);
        c.update(|s| s.restored_from = restore.map(|m| m.id.0));
    }
    let mut wiring = Wiring::new(graph, &metrics);

    // Checkpoint control: triggers to sources, commits to sinks, acks back.
    let (inbox_tx, inbox) = channel::<Inbound>();
    let ack_tx = Acks(inbox_tx.clone());
    // Moved into the job's control (or dropped): once the subtasks have
    // ended and the control detached, the inbox closes and the
    // coordinator returns.
    let control_tx = Controls(inbox_tx);
    let fail_job = |e: ExecError| shared.fail(e);
    let coordinator = match (&opts.store, checkpointing) {
        (Some(store), true) => Some(coordinator(
            graph,
            store,
            modules,
            opts,
            Control {
                triggers: std::mem::take(&mut wiring.triggers),
                commits: std::mem::take(&mut wiring.commits),
                inbox,
                tasks: wiring.tasks,
            },
            &fail_job,
            clock,
        )?),
        _ => None,
    };
    // Without a coordinator the sources' control channels stay open (and
    // silent) until the subtasks end: a paced source waits on its channel.
    let _idle_triggers = std::mem::take(&mut wiring.triggers);

    let attempt = Attempt {
        graph,
        sandbox,
        modules,
        opts,
        shared: &shared,
        metrics: &metrics,
        clock,
        restore,
        restore_store,
        checkpointing,
        linger: Duration::from_millis(graph.linger_ms.max(1)),
        limits: CallLimits {
            memory_bytes: usize::try_from(graph.limits.memory_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            call_timeout: Duration::from_millis(graph.limits.call_timeout_ms),
            max_output_events: usize::try_from(graph.limits.max_output_events)
                .unwrap_or(usize::MAX),
        },
    };
    let counts: Mutex<Vec<Counts>> = Mutex::new(vec![Counts::default(); n]);
    if let Some(c) = &opts.control {
        c.attach(
            coordinator.as_ref().map(|_| control_tx),
            shared.cancel.clone(),
        );
        c.update(|s| s.state = JobState::Running);
    } else {
        drop(control_tx);
    }
    let mut stopped_at = None;
    std::thread::scope(|scope| {
        let coordinator_handle = coordinator.map(|c| scope.spawn(move || c.run()));
        let mut handles = Vec::new();
        for (v, vertex) in graph.vertices.iter().enumerate() {
            for s in 0..vertex.parallelism {
                let ports = wiring.take(v, s);
                let ack = checkpointing.then(|| ack_tx.clone());
                let name = format!("{}[{s}]", vertex.name);
                let (attempt, counts) = (&attempt, &counts);
                let spawned = std::thread::Builder::new()
                    .name(format!("wrun {name}"))
                    .spawn_scoped(scope, move || {
                        let work = || attempt.run(v, s, ports, ack);
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                            Ok(Ok(c)) => {
                                let mut all = counts.lock().unwrap_or_else(|p| p.into_inner());
                                all[v].records_in += c.records_in;
                                all[v].records_out += c.records_out;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(subtask = %name, "subtask failed: {e}");
                                attempt.shared.fail(e)
                            }
                            Err(p) => attempt
                                .shared
                                .fail(ExecError::Panicked(name, panic_message(&p))),
                        }
                    });
                match spawned {
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
        latency: metrics::LatencyHistogram::summary(
            metrics
                .vertices
                .iter()
                .filter(|v| v.kind == "sink")
                .map(|v| &v.end_to_end),
        ),
        restarts: 0,
        restored_from: restore.map(|m| m.id.0),
        stopped_at,
        already_finished: None,
    })
}

/// The coordinator's ends of the control channels.
struct Control {
    triggers: Vec<std::sync::mpsc::Sender<channel::Barrier>>,
    commits: Vec<std::sync::mpsc::Sender<u64>>,
    inbox: std::sync::mpsc::Receiver<Inbound>,
    tasks: usize,
}

/// The checkpoint coordinator of one attempt, numbering on from the newest
/// checkpoint in the store (or the one restored).
fn coordinator<'a>(
    graph: &'a JobGraph,
    store: &Arc<CheckpointStore>,
    modules: &HashMap<usize, Arc<OperatorModule>>,
    opts: &RunOptions,
    control: Control,
    fail: &'a (dyn Fn(ExecError) + Sync),
    clock: &'a dyn Clock,
) -> Result<Coordinator<'a>, ExecError> {
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
            detail: crate::report::chain(&e),
        })?;
    let next_id = existing
        .iter()
        .map(|c| c.0)
        .max()
        .unwrap_or(0)
        .max(opts.restore.as_ref().map(|m| m.id.0).unwrap_or(0))
        + 1;
    // In a fleet, IDs another owner reserved are never used again.
    let next_id = match &opts.fence {
        Some(f) => {
            let (_, lowest) = f.committed().map_err(ExecError::from)?;
            next_id.max(lowest)
        }
        None => next_id,
    };
    Ok(Coordinator {
        graph,
        settings,
        store: store.clone(),
        modules: modules
            .iter()
            .map(|(v, m)| (*v, m.digest.to_string()))
            .collect::<BTreeMap<_, _>>(),
        triggers: control.triggers,
        commits: control.commits,
        inbox: control.inbox,
        tasks: control.tasks,
        next_id,
        last: HashMap::new(),
        periodic,
        savepoints: opts.savepoints.clone(),
        control: opts.control.clone(),
        fence: opts.fence.clone(),
        fail,
        clock,
    })
}

/// What a panicking subtask said.
fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Resumes a job from its final checkpoint `m` (the input had ended): no
/// source reads and no operator runs; every sink subtask is opened from the
/// checkpoint, which makes visible what it staged and a crash may have
/// left unpublished or uncommitted (with the same message IDs and
/// transactions as before), and is closed.
pub(super) fn finish_from_final(
    graph: &JobGraph,
    m: &crate::checkpoint::CheckpointManifest,
    store: &crate::checkpoint::CheckpointStore,
) -> Result<JobReport, ExecError> {
    let started = Instant::now();
    for vertex in &graph.vertices {
        let VertexKind::Sink(kind) = &vertex.kind else {
            continue;
        };
        for s in 0..vertex.parallelism {
            sink::reopen_and_finish(sink::Reopen {
                name: &vertex.name,
                job: &graph.name,
                kind,
                subtask: s,
                parallelism: vertex.parallelism,
                restore: (m, store),
                interval: graph
                    .checkpoint
                    .as_ref()
                    .map(|c| Duration::from_millis(c.interval_ms)),
            })?;
        }
    }
    Ok(JobReport {
        vertices: graph
            .vertices
            .iter()
            .map(|v| VertexReport {
                name: v.name.clone(),
                records_in: 0,
                records_out: 0,
            })
            .collect(),
        elapsed: started.elapsed(),
        latency: None,
        restarts: 0,
        restored_from: Some(m.id.0),
        stopped_at: None,
        already_finished: Some(m.id.0),
    })
}
