//! The checkpoint coordinator of a running job. What to do when is decided
//! by a plain state machine (`decide`: events in, actions out, time as an
//! argument); this shell waits for events (subtasks' acknowledgements on
//! one typed sender, [`JobControl`](super::JobControl) requests on
//! another, both into one inbox), and performs the actions: barriers to
//! the sources, writing the state through the checkpoint store (off the
//! subtasks' threads, `write`), registering savepoints, commits to the
//! sinks, replies, metrics, retention and GC (whose decisions come from
//! `checkpoint::retention`).

mod decide;
mod write;

use super::control::{JobControl, Request, Triggered};
use crate::checkpoint::{
    CheckpointManifest, CheckpointStore, KeyGroupRef, OperatorStateRef, SAVEPOINT_FORMAT,
    Savepoint, SavepointStore, SourcePosition, collect_garbage, to_delete,
};
use crate::job::{CheckpointSettings, JobGraph};
use crate::sandbox::{OperatorSnapshot, StateFormat};
use crate::state::StateSnapshot;
use decide::{Action, Decider, Event, Req, ReqId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// A subtask's part of checkpoint `id`.
pub(crate) enum AckData {
    Source(SourcePosition),
    Operator {
        vertex: usize,
        subtask: u32,
        format: Option<StateFormat>,
        state: Option<StateSnapshot>,
        operator_state: Option<OperatorSnapshot>,
    },
    Sink {
        vertex: String,
        subtask: u32,
        prepared: crate::connect::Prepared,
    },
}

/// What subtasks tell the coordinator.
pub(crate) enum Ack {
    /// Snapshot done for checkpoint `id`.
    Done { id: u64, data: AckData },
    /// The subtask reached the end of its input, which a source tells only
    /// once every source subtask has (until then an ended source passes
    /// barriers on with its final position): no more checkpoints can
    /// complete (every subtask must take part). Only without periodic
    /// checkpoints: with them the job ends at its final checkpoint.
    Finished,
    /// Every source subtask has reached the end of its input (sent by the
    /// last one): the coordinator takes the final checkpoint, at whose
    /// barrier every subtask ends.
    InputEnded,
}

/// What reaches the coordinator: the subtasks' acknowledgements and the
/// control requests, each through its own sender ([`Acks`],
/// [`Controls`]), into one inbox it waits on with a timeout.
pub(crate) enum Inbound {
    Ack(Ack),
    Control(Request),
}

/// A subtask's sender of acknowledgements.
#[derive(Clone)]
pub(crate) struct Acks(pub(crate) Sender<Inbound>);

impl Acks {
    /// Sends an acknowledgement; an error once the coordinator is gone.
    pub(crate) fn send(&self, a: Ack) -> Result<(), ()> {
        self.0.send(Inbound::Ack(a)).map_err(|_| ())
    }
}

/// The control handle's sender of requests.
#[derive(Clone)]
pub(crate) struct Controls(pub(crate) Sender<Inbound>);

impl Controls {
    /// Sends a request; an error once the coordinator is gone.
    pub(crate) fn send(&self, r: Request) -> Result<(), ()> {
        self.0.send(Inbound::Control(r)).map_err(|_| ())
    }
}

pub(crate) struct Coordinator<'a> {
    pub(crate) graph: &'a JobGraph,
    pub(crate) settings: CheckpointSettings,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) modules: BTreeMap<usize, String>,
    pub(crate) triggers: Vec<Sender<super::channel::Barrier>>,
    pub(crate) commits: Vec<Sender<u64>>,
    pub(crate) inbox: Receiver<Inbound>,
    pub(crate) tasks: usize,
    pub(crate) next_id: u64,
    /// Key group refs of the last completed checkpoint, by (vertex, key
    /// group): the chains that deltas are appended to.
    pub(crate) last: HashMap<(usize, u16), KeyGroupRef>,
    /// Trigger checkpoints on the interval (`[checkpoint]`); otherwise only
    /// on request.
    pub(crate) periodic: bool,
    /// Where savepoints are registered.
    pub(crate) savepoints: Option<Arc<dyn SavepointStore>>,
    /// The job's control handle, for status.
    pub(crate) control: Option<Arc<JobControl>>,
    /// In a fleet: reserves IDs and commits checkpoints (`exec::fence`).
    pub(crate) fence: Option<Arc<dyn super::Fence>>,
    /// Fails the job (a stop-with-savepoint that could not complete, a
    /// fence that refused).
    pub(crate) fail: &'a (dyn Fn(super::ExecError) + Sync),
    /// The job's clock: the interval and the timeout are on it.
    pub(crate) clock: &'a dyn super::Clock,
}

/// What the shell keeps of the checkpoint in flight: what the decisions
/// need not see.
struct Pending {
    id: u64,
    /// On the job's clock.
    triggered: Duration,
    triggered_at_ms: u64,
    acks: Vec<AckData>,
    /// The final checkpoint (the input has ended).
    end: bool,
}

/// The shell's side of the state: what the actions act on.
#[derive(Default)]
struct Shell {
    pending: Option<Pending>,
    written: Option<Written>,
    /// The savepoint registered for the checkpoint being completed.
    savepoint: Option<Savepoint>,
    /// Requests not answered yet, under the IDs the decisions know.
    requests: HashMap<ReqId, Request>,
    next_req: ReqId,
    /// The savepoint a stop ended the job at.
    stopped_at: Option<Savepoint>,
}

/// A checkpoint written, waiting for its savepoint's registration or its
/// commit.
struct Written {
    manifest: CheckpointManifest,
    /// Not read: held until the requester has its answer (see
    /// `Action::Retain`), then freed.
    _snapshots: Vec<StateSnapshot>,
}

use crate::time::unix_ms as now_ms;

/// A hash of the graph's shape: vertex IDs, kinds' names and edges.
pub(crate) fn fingerprint(graph: &JobGraph) -> String {
    let mut h = blake3::Hasher::new();
    for v in &graph.vertices {
        h.update(&v.id.0);
        h.update(&v.parallelism.to_le_bytes());
    }
    for e in &graph.edges {
        h.update(&(e.from as u64).to_le_bytes());
        h.update(&(e.to as u64).to_le_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

impl Coordinator<'_> {
    /// Runs until every subtask has ended; returns the savepoint the job
    /// stopped at, if it stopped at one.
    pub(crate) fn run(mut self) -> Option<Savepoint> {
        let clock = self.clock;
        let mut d = Decider::new(
            decide::Settings {
                interval: Duration::from_millis(self.settings.interval_ms),
                timeout: Duration::from_millis(self.settings.timeout_ms),
                min_pause: Duration::from_millis(self.settings.min_pause_ms),
                tolerable_failures: self.settings.tolerable_failures,
                periodic: self.periodic,
                tasks: self.tasks,
                job: self.graph.name.clone(),
            },
            self.next_id,
            clock.now(),
        );
        let mut shell = Shell::default();
        loop {
            let actions = d.poll(clock.now());
            self.perform(&mut d, &mut shell, actions);
            let wait = clock.real_wait(d.deadline());
            let event = match self.inbox.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Inbound::Ack(Ack::Done { id, data })) => {
                    match shell.pending.as_mut().filter(|p| p.id == id) {
                        Some(p) => {
                            p.acks.push(data);
                            tracing::trace!(job = %self.graph.name, checkpoint = id, acks = p.acks.len(), of = self.tasks, "ack");
                            Event::Ack { id }
                        }
                        None => continue,
                    }
                }
                Ok(Inbound::Ack(Ack::Finished)) => Event::Finished,
                Ok(Inbound::Ack(Ack::InputEnded)) => Event::InputEnded,
                Ok(Inbound::Control(r)) => {
                    shell.next_req += 1;
                    let req = Req {
                        id: shell.next_req,
                        savepoint: r.savepoint.is_some(),
                        stop: r.stop,
                    };
                    shell.requests.insert(req.id, r);
                    Event::Request(req)
                }
                Err(RecvTimeoutError::Timeout) => Event::Tick,
                Err(RecvTimeoutError::Disconnected) => return shell.stopped_at,
            };
            let actions = d.on(event, clock.now());
            self.perform(&mut d, &mut shell, actions);
        }
    }

    /// Performs `actions`, feeding the outcomes of writes and
    /// registrations back to the decisions (and performing what they say
    /// next).
    fn perform(&mut self, d: &mut Decider, shell: &mut Shell, actions: Vec<Action>) {
        let mut todo: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = todo.pop_front() {
            let more = match action {
                Action::Trigger {
                    id,
                    full,
                    stop,
                    end,
                    request,
                } => {
                    let barrier = super::channel::Barrier {
                        id,
                        full,
                        stop,
                        end,
                    };
                    tracing::debug!(job = %self.graph.name, checkpoint = id, full, stop = ?stop, end, "checkpoint triggered");
                    for t in &self.triggers {
                        let _ = t.send(barrier);
                    }
                    let _ = request;
                    shell.pending = Some(Pending {
                        id,
                        triggered: self.clock.now(),
                        triggered_at_ms: now_ms(),
                        acks: Vec::new(),
                        end,
                    });
                    Vec::new()
                }
                Action::Write { id, savepoint } => {
                    let outcome = match shell.pending.take().filter(|p| p.id == id) {
                        Some(p) => {
                            let store = self.store.clone();
                            let txn = crate::checkpoint::begin(store.as_ref());
                            let written = self
                                .fenced(|f| f.reserve(id))
                                .and_then(|()| {
                                    self.write(&txn, p, savepoint)
                                        .map_err(|e| crate::report::chain(&e))
                                })
                                .and_then(|w| self.fenced(|f| f.commit(id)).map(|()| w));
                            drop(txn);
                            match written {
                                Ok((manifest, snapshots)) => {
                                    self.completed_write(&manifest);
                                    shell.written = Some(Written {
                                        manifest,
                                        _snapshots: snapshots,
                                    });
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            }
                        }
                        None => Err("its acknowledgements were dropped".to_string()),
                    };
                    d.on(Event::Written { id, outcome }, self.clock.now())
                }
                Action::Register { id, req } => {
                    let outcome = match (&shell.written, shell.requests.get(&req)) {
                        (Some(w), Some(r)) => self
                            .register(&w.manifest, r.savepoint.clone().flatten(), r.stop)
                            .map(|sp| shell.savepoint = Some(sp)),
                        _ => Err("no savepoint was asked for".to_string()),
                    };
                    d.on(Event::Registered { id, outcome }, self.clock.now())
                }
                Action::Commit { id } => {
                    for c in &self.commits {
                        let _ = c.send(id);
                    }
                    Vec::new()
                }
                Action::Reply { req, outcome } => {
                    if let Some(r) = shell.requests.remove(&req) {
                        let outcome = outcome.map(|checkpoint| {
                            let savepoint = shell.savepoint.take();
                            if r.stop.is_some() {
                                shell.stopped_at = savepoint.clone();
                            }
                            Triggered {
                                checkpoint,
                                savepoint,
                            }
                        });
                        let _ = r.reply.send(outcome);
                    }
                    Vec::new()
                }
                Action::Retain => {
                    // The checkpoint is durable and registered, the sinks
                    // told and the requester answered: retention is
                    // housekeeping after the step, not part of it.
                    if let Err(e) = self.retain() {
                        tracing::warn!(job = %self.graph.name, "checkpoint retention failed: {}", crate::report::chain(&e));
                    }
                    // The snapshots are dropped once the requester has its
                    // answer: where the subtask has written since, they
                    // hold the last copy of the key groups as they were,
                    // and freeing a million entries is not part of the
                    // step.
                    shell.written = None;
                    shell.savepoint = None;
                    Vec::new()
                }
                Action::Discard { id } => {
                    if shell.pending.as_ref().is_some_and(|p| p.id == id) {
                        shell.pending = None;
                    }
                    Vec::new()
                }
                Action::CountFailure { id, why } => {
                    if let Some(c) = &self.control {
                        if let Some(m) = c.metrics() {
                            m.checkpoint_failed();
                        }
                        c.checkpoint_failed(id, why);
                    }
                    shell.written = None;
                    shell.savepoint = None;
                    Vec::new()
                }
                Action::Warn(msg) => {
                    tracing::warn!(job = %self.graph.name, "{msg}");
                    Vec::new()
                }
                Action::Fail(msg) => {
                    tracing::error!(job = %self.graph.name, "{msg}");
                    (self.fail)(super::ExecError::CheckpointFailure(msg));
                    Vec::new()
                }
            };
            todo.extend(more);
        }
    }

    /// Asks the fence, if the job has one. A fence that refused ends the
    /// job at once (another owner has it); one that could not answer
    /// fails only this checkpoint.
    fn fenced(
        &self,
        ask: impl FnOnce(&dyn super::Fence) -> Result<(), super::FenceError>,
    ) -> Result<(), String> {
        let Some(f) = &self.fence else {
            return Ok(());
        };
        match ask(f.as_ref()) {
            Ok(()) => Ok(()),
            Err(super::FenceError::Fenced(m)) => {
                tracing::warn!(job = %self.graph.name, "{m}: this node stops the job and commits nothing more");
                (self.fail)(super::ExecError::Fenced(m.clone()));
                Err(m)
            }
            Err(super::FenceError::Unavailable(m)) => Err(m),
        }
    }

    /// What a completed write changes beside the store: the chains the
    /// next deltas go on, the log, the metrics and the job's status.
    fn completed_write(&mut self, manifest: &CheckpointManifest) {
        let id = manifest.id.0;
        if manifest.input_ended {
            tracing::info!(job = %self.graph.name, checkpoint = id, ms = manifest.duration_ms, full_bytes = manifest.full_bytes, new_bytes = manifest.new_bytes, "final checkpoint complete: the input has ended");
        } else {
            tracing::info!(job = %self.graph.name, checkpoint = id, ms = manifest.duration_ms, full_bytes = manifest.full_bytes, new_bytes = manifest.new_bytes, "checkpoint complete");
        }
        // Keep each key group's ref: the next delta goes on its chain.
        let vertex_of = |o: &OperatorStateRef| {
            self.graph
                .vertices
                .iter()
                .position(|v| v.id.to_hex() == o.operator_id)
        };
        let mut last = HashMap::new();
        for o in &manifest.operators {
            let Some(v) = vertex_of(o) else {
                continue;
            };
            for k in &o.key_groups {
                last.insert((v, k.key_group), k.clone());
            }
        }
        self.last = last;
        if let Some(c) = &self.control {
            if let Some(m) = c.metrics() {
                m.checkpoint_completed(
                    id,
                    manifest.duration_ms,
                    manifest.full_bytes,
                    manifest.new_bytes,
                );
                for o in &manifest.operators {
                    if let Some(v) = vertex_of(o) {
                        let keyed: u64 = o.key_groups.iter().map(|k| k.total_bytes()).sum();
                        let other: u64 = o.operator_state.iter().map(|s| s.bytes).sum();
                        m.vertex(v).checkpoint_size(keyed + other);
                    }
                }
            }
            c.update(|s| {
                s.last_checkpoint = Some(id);
                s.checkpoints
                    .push(super::control::CheckpointSummary::of(manifest));
                let over = s
                    .checkpoints
                    .len()
                    .saturating_sub(super::control::CHECKPOINT_HISTORY);
                s.checkpoints.drain(..over);
            });
        }
    }

    fn register(
        &self,
        m: &CheckpointManifest,
        name: Option<String>,
        stop: Option<super::StopMode>,
    ) -> Result<Savepoint, String> {
        let store = self
            .savepoints
            .as_ref()
            .ok_or_else(|| "this job has no savepoint store".to_string())?;
        let suffix = &blake3::hash(
            format!("{}{}{:?}", now_ms(), m.id, std::thread::current().id()).as_bytes(),
        )
        .to_hex()[..6];
        let prefix = match store.backend() {
            crate::checkpoint::SavepointBackend::Memory => "mem",
            crate::checkpoint::SavepointBackend::Filesystem
            | crate::checkpoint::SavepointBackend::Shared => "sp",
        };
        // The job name may hold characters a savepoint ID may not.
        let job: String = m
            .job
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(32)
            .collect();
        let sp = Savepoint {
            format: SAVEPOINT_FORMAT,
            id: format!("{prefix}-{job}-{}-{suffix}", m.id),
            name,
            backend: store.backend(),
            created_at_ms: now_ms(),
            stopped: stop.is_some(),
            drained: stop == Some(super::StopMode::Drain),
            checkpoint: m.clone(),
        };
        crate::fault::crash_point("savepoint-record");
        crate::checkpoint::register(self.store.as_ref(), store.as_ref(), &sp)
            .map_err(|e| crate::report::chain(&e))?;
        crate::fault::crash_point("savepoint-registered");
        tracing::info!(job = %m.job, savepoint = %sp.id, checkpoint = m.id.0, backend = %sp.backend, "savepoint complete");
        Ok(sp)
    }

    fn retain(&self) -> Result<(), crate::checkpoint::StoreError> {
        let existing = self.store.list_checkpoints(&self.graph.name)?;
        for id in to_delete(&existing, self.settings.retain, &BTreeSet::new()) {
            self.store.delete_manifest(&self.graph.name, id)?;
        }
        // Savepoints keep their chunks through their pins in the store,
        // whichever registry holds their records.
        collect_garbage(&self.store)?;
        Ok(())
    }
}
