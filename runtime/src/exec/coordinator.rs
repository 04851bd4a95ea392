//! The checkpoint coordinator of a running job: triggers checkpoints at the
//! sources on a timer, collects every subtask's acknowledgement, writes the
//! state through the checkpoint store (off the subtasks' threads), commits
//! the manifest, tells the sinks to commit their staged output, and applies
//! retention and GC. Decisions come from `checkpoint::retention`.
//!
//! It also serves [`JobControl`](super::JobControl) requests: a checkpoint
//! now, a savepoint (a checkpoint registered in the savepoint store), and
//! stop-with-savepoint (the same barrier with a `stop` flag).

use super::control::{JobControl, Request, Triggered};
use crate::checkpoint::{
    CheckpointId, CheckpointManifest, CheckpointStore, KeyGroupRef, MANIFEST_FORMAT,
    OperatorStateRef, SAVEPOINT_FORMAT, Savepoint, SavepointStore, SinkState, SourcePosition,
    SubtaskStateRef, collect_garbage, to_delete, write_key_groups,
};
use crate::job::{CheckpointSettings, JobGraph};
use crate::sandbox::{OperatorSnapshot, StateFormat};
use crate::state::StateSnapshot;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
    /// A request from outside the job ([`JobControl`]).
    Request(Request),
}

pub(crate) struct Coordinator<'a> {
    pub(crate) graph: &'a JobGraph,
    pub(crate) settings: CheckpointSettings,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) modules: BTreeMap<usize, String>,
    pub(crate) triggers: Vec<Sender<super::channel::Barrier>>,
    pub(crate) commits: Vec<Sender<u64>>,
    pub(crate) acks: Receiver<Ack>,
    pub(crate) tasks: usize,
    pub(crate) next_id: u64,
    /// Key group refs of the last completed checkpoint, by (vertex, key
    /// group): the chains that deltas are appended to.
    pub(crate) last: HashMap<(usize, u16), KeyGroupRef>,
    /// Whether the last triggered checkpoint completed: only then do the
    /// subtasks' changes since their last snapshot line up with `last`.
    pub(crate) last_completed: bool,
    /// Trigger checkpoints on the interval (`[checkpoint]`); otherwise only
    /// on request.
    pub(crate) periodic: bool,
    /// Where savepoints are registered.
    pub(crate) savepoints: Option<Arc<dyn SavepointStore>>,
    /// Checkpoints that failed in a row (storage errors, timeouts).
    pub(crate) failures: u32,
    /// The job's control handle, for status.
    pub(crate) control: Option<Arc<JobControl>>,
    /// Fails the job (a stop-with-savepoint that could not complete).
    pub(crate) fail: &'a (dyn Fn(String) + Sync),
    /// The job's clock: the interval and the timeout are on it.
    pub(crate) clock: &'a dyn super::Clock,
}

struct Pending {
    id: u64,
    /// On the job's clock.
    triggered: Duration,
    triggered_at_ms: u64,
    acks: Vec<AckData>,
    request: Option<Request>,
    /// The final checkpoint (the input has ended).
    end: bool,
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
        let interval = Duration::from_millis(self.settings.interval_ms);
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let min_pause = Duration::from_millis(self.settings.min_pause_ms);
        let never = Duration::from_secs(365 * 24 * 3600);
        let period = if self.periodic { interval } else { never };
        let clock = self.clock;
        let mut next_trigger = clock.now().saturating_add(period);
        let mut pending: Option<Pending> = None;
        let mut queued: VecDeque<Request> = VecDeque::new();
        let mut finished = false;
        // The input has ended; the final checkpoint, once triggered.
        let mut input_ended = false;
        let mut final_triggered = false;
        let mut stopped_at: Option<Savepoint> = None;
        loop {
            if pending.is_none()
                && stopped_at.is_none()
                && !finished
                && !input_ended
                && let Some(r) = queued.pop_front()
            {
                pending = Some(self.trigger(Some(r), false));
            }
            if pending.is_none() && stopped_at.is_none() && input_ended && !final_triggered {
                final_triggered = true;
                pending = Some(self.trigger(None, true));
            }
            let deadline = match &pending {
                Some(p) => p.triggered.saturating_add(timeout),
                None => next_trigger,
            };
            let wait = clock.real_wait(deadline);
            match self.acks.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Ack::Done { id, data }) => {
                    let Some(p) = pending.as_mut().filter(|p| p.id == id) else {
                        continue;
                    };
                    p.acks.push(data);
                    tracing::trace!(job = %self.graph.name, checkpoint = id, acks = p.acks.len(), of = self.tasks, "ack");
                    if p.acks.len() == self.tasks
                        && let Some(p) = pending.take()
                    {
                        if let Some(sp) = self.complete(p) {
                            stopped_at = Some(sp);
                        }
                        next_trigger = clock.now().saturating_add(min_pause).max(next_trigger);
                    }
                }
                Ok(Ack::Finished) => {
                    if !finished {
                        finished = true;
                        if let Some(p) = pending.take() {
                            tracing::debug!(job = %self.graph.name, checkpoint = p.id, "abandoned: a subtask finished its input");
                            self.abandon(p.request, "the job's input ended before every subtask took part; the job finished without it".into());
                        }
                        for r in queued.drain(..) {
                            let _ = r.reply.send(Err(format!("job '{}' reached the end of its input and is finishing; no more checkpoints can complete", self.graph.name)));
                        }
                    }
                }
                Ok(Ack::InputEnded) => {
                    input_ended = true;
                    for r in queued.drain(..) {
                        let _ = r.reply.send(Err(self.taking_final()));
                    }
                }
                Ok(Ack::Request(r)) => {
                    if input_ended {
                        let _ = r.reply.send(Err(self.taking_final()));
                    } else if finished || stopped_at.is_some() {
                        let _ = r.reply.send(Err(format!(
                            "job '{}' is finishing; no more checkpoints can complete",
                            self.graph.name
                        )));
                    } else {
                        queued.push_back(r);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(p) = &pending
                        && clock.now().saturating_sub(p.triggered) >= timeout
                        && let Some(p) = pending.take()
                    {
                        let msg = format!(
                            "checkpoint {} timed out after {} ms (checkpoint.timeout-ms)",
                            p.id, self.settings.timeout_ms
                        );
                        if p.end {
                            self.final_failed(&msg);
                        } else {
                            self.failed(&msg);
                        }
                        self.abandon(p.request, msg);
                        next_trigger = clock.now().saturating_add(min_pause);
                    }
                    if pending.is_none()
                        && !finished
                        && !input_ended
                        && stopped_at.is_none()
                        && clock.now() >= next_trigger
                    {
                        pending = Some(self.trigger(None, false));
                        next_trigger = clock.now().saturating_add(period);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return stopped_at,
            }
        }
    }

    fn trigger(&mut self, request: Option<Request>, end: bool) -> Pending {
        let id = self.next_id;
        self.next_id += 1;
        let barrier = super::channel::Barrier {
            id,
            full: !self.last_completed,
            stop: request.as_ref().and_then(|r| r.stop),
            end,
        };
        self.last_completed = false;
        tracing::debug!(job = %self.graph.name, checkpoint = id, full = barrier.full, stop = ?barrier.stop, end, "checkpoint triggered");
        for t in &self.triggers {
            let _ = t.send(barrier);
        }
        Pending {
            id,
            triggered: self.clock.now(),
            triggered_at_ms: now_ms(),
            acks: Vec::new(),
            request,
            end,
        }
    }

    /// Why a checkpoint or savepoint asked for after the input ended is
    /// refused.
    fn taking_final(&self) -> String {
        format!(
            "job '{}' reached the end of its input and is taking its final checkpoint; no savepoint can be taken now",
            self.graph.name
        )
    }

    /// The final checkpoint failed: every subtask has passed its barrier
    /// and ends there, so it cannot be taken again in this run. The job
    /// fails (whatever `tolerable-failures` says) and restarts under its
    /// policy from the last completed checkpoint, replaying the tail, which
    /// no sink has made visible.
    fn final_failed(&mut self, msg: &str) {
        self.failures += 1;
        tracing::error!(job = %self.graph.name, "{msg}: the final checkpoint failed; the job restarts from its last completed checkpoint");
        (self.fail)(format!(
            "the final checkpoint failed ({msg}); nothing after the last completed checkpoint was made visible"
        ));
    }

    /// A checkpoint failed (storage, timeout): the job goes on, until more
    /// than `tolerable-failures` fail in a row; then it fails, and restarts
    /// under its policy from the last completed checkpoint.
    fn failed(&mut self, msg: &str) {
        self.failures += 1;
        if self.failures > self.settings.tolerable_failures {
            tracing::error!(job = %self.graph.name, "{msg}; {} checkpoints failed in a row, more than checkpoint.tolerable-failures = {}: the job fails", self.failures, self.settings.tolerable_failures);
            (self.fail)(format!(
                "{} checkpoints failed in a row (more than checkpoint.tolerable-failures = {}); the last: {msg}",
                self.failures, self.settings.tolerable_failures
            ));
        } else {
            tracing::warn!(job = %self.graph.name, "{msg}; the job goes on ({} of {} tolerated failures in a row)", self.failures, self.settings.tolerable_failures);
        }
    }

    /// A checkpoint that will not complete: tell whoever asked for it; a
    /// stop that cannot complete fails the job (its sources have stopped).
    fn abandon(&self, request: Option<Request>, why: String) {
        if let Some(m) = self.control.as_ref().and_then(|c| c.metrics()) {
            m.checkpoint_failed();
        }
        if let Some(r) = request {
            if r.stop.is_some() {
                (self.fail)(format!(
                    "stop with savepoint failed: {why}; the job stopped without a savepoint"
                ));
            }
            let _ = r.reply.send(Err(why));
        }
    }

    /// Writes a checkpoint whose acks are all in; returns the savepoint
    /// the job stops at, when this was a stop-with-savepoint.
    fn complete(&mut self, mut p: Pending) -> Option<Savepoint> {
        let id = p.id;
        let end = p.end;
        let request = p.request.take();
        let savepoint = request.as_ref().is_some_and(|r| r.savepoint.is_some());
        let written = {
            // No collection can run between the chunks and the manifest.
            let txn = crate::checkpoint::begin(self.store.as_ref());
            self.write(&txn, p, savepoint)
        };
        let (manifest, snapshots) = match written {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("checkpoint {id} failed: {}", crate::report::chain(&e));
                if end {
                    self.final_failed(&msg);
                } else {
                    self.failed(&msg);
                }
                self.abandon(request, msg);
                return None;
            }
        };
        self.failures = 0;
        if end {
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
        self.last_completed = true;
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
                    .push(super::control::CheckpointSummary::of(&manifest));
                let over = s
                    .checkpoints
                    .len()
                    .saturating_sub(super::control::CHECKPOINT_HISTORY);
                s.checkpoints.drain(..over);
            });
        }
        // Register the savepoint before the sinks commit: a stop must not
        // commit output past a savepoint that does not exist.
        let mut savepoint = None;
        if let Some(r) = &request
            && let Some(name) = &r.savepoint
        {
            match self.register(&manifest, name.clone(), r.stop) {
                Ok(sp) => savepoint = Some(sp),
                Err(e) => {
                    self.abandon(
                        request,
                        format!(
                            "checkpoint {id} completed, but the savepoint could not be registered: {e}"
                        ),
                    );
                    return None;
                }
            }
        }
        for c in &self.commits {
            let _ = c.send(id);
        }
        // The checkpoint is durable and registered: answer now. Retention
        // (deleting expired manifests, collecting their chunks) is
        // housekeeping after the step, not part of it.
        let stop = request.as_ref().and_then(|r| r.stop);
        if let Some(r) = request {
            let _ = r.reply.send(Ok(Triggered {
                checkpoint: id,
                savepoint: savepoint.clone(),
            }));
        }
        if let Err(e) = self.retain() {
            tracing::warn!(job = %self.graph.name, "checkpoint retention failed: {}", crate::report::chain(&e));
        }
        // The snapshots are dropped once the requester has its answer:
        // where the subtask has written since, they hold the last copy of
        // the key groups as they were, and freeing a million entries is
        // not part of the step.
        drop(snapshots);
        if stop.is_some() { savepoint } else { None }
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
            crate::checkpoint::SavepointBackend::Filesystem => "sp",
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
        super::fault::crash_point("savepoint-record");
        crate::checkpoint::register(self.store.as_ref(), store.as_ref(), &sp)
            .map_err(|e| crate::report::chain(&e))?;
        super::fault::crash_point("savepoint-registered");
        tracing::info!(job = %m.job, savepoint = %sp.id, checkpoint = m.id.0, backend = %sp.backend, "savepoint complete");
        Ok(sp)
    }

    /// Writes the checkpoint (for a savepoint: the crash test's savepoint
    /// points are armed); returns its manifest and the keyed state
    /// snapshots it was written from (to be dropped later).
    #[allow(clippy::type_complexity)]
    fn write(
        &self,
        txn: &crate::checkpoint::Txn<'_>,
        p: Pending,
        savepoint: bool,
    ) -> Result<(CheckpointManifest, Vec<StateSnapshot>), crate::checkpoint::StoreError> {
        let end = p.end;
        let mut snapshots = Vec::new();
        let (mut full, mut new) = (0u64, 0u64);
        let mut operators: BTreeMap<usize, OperatorStateRef> = BTreeMap::new();
        let mut sources = Vec::new();
        let mut sinks = Vec::new();
        for ack in p.acks {
            match ack {
                AckData::Source(pos) => sources.push(pos),
                AckData::Sink {
                    vertex,
                    subtask,
                    prepared,
                } => {
                    if prepared.file.is_none() && prepared.staged.is_empty() {
                        continue;
                    }
                    let (committed_bytes, staged_bytes) = prepared.file.unwrap_or((0, 0));
                    let mut staged = Vec::new();
                    for st in &prepared.staged {
                        super::fault::crash_point("checkpoint-sink-staged");
                        let (r, written) = txn.put_chunk(&st.bytes)?;
                        full += st.bytes.len() as u64;
                        new += written;
                        staged.push(crate::checkpoint::StagedRef {
                            checkpoint: st.checkpoint,
                            chunk: r.chunk,
                            bytes: r.bytes,
                            at: r.at,
                        });
                    }
                    sinks.push(SinkState {
                        vertex,
                        subtask,
                        committed_bytes,
                        staged_bytes,
                        staged,
                    });
                }
                AckData::Operator {
                    vertex,
                    subtask,
                    format,
                    state,
                    operator_state,
                } => {
                    let v = &self.graph.vertices[vertex];
                    let entry = operators.entry(vertex).or_insert_with(|| OperatorStateRef {
                        operator_id: v.id.to_hex(),
                        uid: v.uid.clone(),
                        name: v.name.clone(),
                        parallelism: v.parallelism,
                        module: self.modules.get(&vertex).cloned().unwrap_or_default(),
                        state_format: None,
                        key_groups: Vec::new(),
                        operator_state: Vec::new(),
                    });
                    if let Some(f) = format {
                        entry.state_format = Some((f.name, f.version));
                    }
                    // The asynchronous part: encode the copy-on-write
                    // snapshot here, off the subtask's thread.
                    if let Some(snap) = &state {
                        super::fault::crash_point("checkpoint-chunks");
                        if savepoint {
                            super::fault::crash_point("savepoint-chunks");
                        }
                        let last = &self.last;
                        let previous = |kg: u16| last.get(&(vertex, kg)).cloned();
                        let (refs, f, n) = write_key_groups(txn, &previous, snap)?;
                        entry.key_groups.extend(refs);
                        full += f;
                        new += n;
                    }
                    snapshots.extend(state);
                    if let Some(s) = operator_state {
                        let payload = crate::checkpoint::encode_operator_state(
                            &s.format.name,
                            s.format.version,
                            &s.data,
                        );
                        let (r, written) = txn.put_chunk(&payload)?;
                        full += payload.len() as u64;
                        new += written;
                        entry.operator_state.push(SubtaskStateRef {
                            subtask,
                            chunk: r.chunk,
                            bytes: r.bytes,
                            at: r.at,
                        });
                    }
                }
            }
        }
        let mut operators: Vec<OperatorStateRef> = operators.into_values().collect();
        for o in &mut operators {
            o.key_groups.sort_by_key(|k| k.key_group);
            o.operator_state.sort_by_key(|s| s.subtask);
        }
        sources.sort_by(|a, b| (&a.vertex, a.subtask).cmp(&(&b.vertex, b.subtask)));
        sinks.sort_by(|a, b| (&a.vertex, a.subtask).cmp(&(&b.vertex, b.subtask)));
        let m = CheckpointManifest {
            format: MANIFEST_FORMAT,
            job: self.graph.name.clone(),
            id: CheckpointId(p.id),
            triggered_at_ms: p.triggered_at_ms,
            duration_ms: self.clock.now().saturating_sub(p.triggered).as_millis() as u64,
            graph_fingerprint: fingerprint(self.graph),
            max_parallelism: self.graph.max_parallelism,
            operators,
            sources,
            sinks,
            full_bytes: full,
            new_bytes: new,
            input_ended: end,
        };
        super::fault::crash_point("checkpoint-manifest");
        if savepoint {
            super::fault::crash_point("savepoint-manifest");
        }
        if end {
            // The tail is staged (in the chunks above), no manifest yet.
            super::fault::crash_point("final-tail-staged");
        }
        txn.put_manifest(&m)?;
        super::fault::crash_point("checkpoint-committed");
        if end {
            super::fault::crash_point("final-manifest-committed");
        }
        Ok((m, snapshots))
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
