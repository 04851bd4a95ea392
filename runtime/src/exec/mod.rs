//! Running a job: one thread per subtask, bounded channels between them,
//! partitioners on the edges, batches across the Wasm boundary.
//!
//! Subtasks are OS threads, not async tasks: a Wasm call is synchronous
//! CPU work bounded by an epoch deadline, so a thread per subtask never
//! blocks an executor, and a blocking channel send is backpressure for
//! free (docs/architecture.md). Never reaches into checkpoint storage.

pub mod channel;
mod operator;
mod sink;
mod source;

pub use operator::{Counts, OperatorLogic};
pub use sink::json_line;
pub use source::generated;

use crate::job::{JobGraph, VertexKind};
use crate::sandbox::{
    CallLimits, OperatorInstance, OperatorModule, Sandbox, SandboxError, SubtaskInfo,
};
use crate::state::{KeyGroupRange, KeyedState, StateLimits};
use channel::{CHANNEL_BATCHES, Message, Output, Outputs, Payload};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
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
    cancel: AtomicBool,
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

/// Native operator code used in place of a vertex's component.
pub type NativeFactory =
    Arc<dyn Fn(&SubtaskInfo, KeyedState) -> Box<dyn OperatorLogic> + Send + Sync>;

/// How to run a job.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Vertices (by name) whose logic is native Rust instead of Wasm.
    pub native: HashMap<String, NativeFactory>,
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
    /// Per vertex, in graph order.
    pub vertices: Vec<VertexReport>,
    /// Wall-clock time.
    pub elapsed: Duration,
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
        cancel: AtomicBool::new(false),
        first_error: Mutex::new(None),
    };
    let n = graph.vertices.len();

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
        )
    };

    let limits = CallLimits {
        memory_bytes: usize::try_from(graph.limits.memory_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        call_timeout: Duration::from_millis(graph.limits.call_timeout_ms),
        max_output_events: usize::try_from(graph.limits.max_output_events).unwrap_or(usize::MAX),
    };
    let linger = Duration::from_millis(graph.linger_ms.max(1));
    let counts: Mutex<Vec<Counts>> = Mutex::new(vec![Counts::default(); n]);

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

    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (v, vertex) in graph.vertices.iter().enumerate() {
            for s in 0..vertex.parallelism {
                let outputs = all_outputs[v][s as usize]
                    .take()
                    .unwrap_or(Outputs(Vec::new()));
                let rx = receivers[v].get_mut(s as usize).and_then(Option::take);
                let (shared, counts) = (&shared, &counts);
                let name = format!("{}[{s}]", vertex.name);
                let inputs = input_count[v];
                let work = move || -> Result<Counts, ExecError> {
                    match &vertex.kind {
                        VertexKind::Source(kind) => {
                            let out = source::run(
                                &vertex.name,
                                kind,
                                s,
                                vertex.parallelism,
                                outputs,
                                shared,
                            )?;
                            Ok(Counts {
                                records_in: 0,
                                records_out: out,
                            })
                        }
                        VertexKind::Sink(kind) => {
                            let rx = rx.ok_or(ExecError::Disconnected)?;
                            let mut sink = sink::Sink::open(&vertex.name, kind)?;
                            let mut c = Counts::default();
                            let mut ended = 0;
                            while ended < inputs {
                                match rx.recv_timeout(Duration::from_millis(100)) {
                                    Ok(Message {
                                        payload: Payload::Batch(b),
                                        ..
                                    }) => {
                                        c.records_in += b.len() as u64;
                                        sink.write(&vertex.name, &b)?;
                                    }
                                    Ok(Message {
                                        payload: Payload::End,
                                        ..
                                    }) => ended += 1,
                                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                        shared.check_cancel()?
                                    }
                                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                                        return Err(ExecError::Disconnected);
                                    }
                                }
                            }
                            sink.finish(&vertex.name)?;
                            Ok(c)
                        }
                        VertexKind::Operator { config, .. } => {
                            let rx = rx.ok_or(ExecError::Disconnected)?;
                            let info = SubtaskInfo {
                                uid: vertex.display_uid().to_string(),
                                subtask_index: s,
                                parallelism: vertex.parallelism,
                                max_parallelism: graph.max_parallelism,
                                config: config.clone(),
                                restored: false,
                                restored_format: None,
                            };
                            let range = KeyGroupRange::for_subtask(
                                graph.max_parallelism,
                                vertex.parallelism,
                                s,
                            );
                            let state = KeyedState::new(
                                graph.max_parallelism,
                                range,
                                StateLimits::default(),
                            );
                            let logic: Box<dyn OperatorLogic> = match opts.native.get(&vertex.name)
                            {
                                Some(factory) => factory(&info, state),
                                None => {
                                    let module = modules.get(&v).ok_or_else(|| {
                                        ExecError::Panicked(
                                            format!("{}[{s}]", vertex.name),
                                            "operator module not loaded".into(),
                                        )
                                    })?;
                                    Box::new(OperatorInstance::instantiate(
                                        sandbox, module, &info, limits, state,
                                    )?)
                                }
                            };
                            operator::Loop {
                                logic,
                                info,
                                rx,
                                inputs,
                                outputs,
                                batch_size: graph.batch_size,
                                linger,
                            }
                            .run(shared)
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
        for h in handles {
            let _ = h.join();
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
    })
}
