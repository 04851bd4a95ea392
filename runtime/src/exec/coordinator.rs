//! The checkpoint coordinator of a running job: triggers checkpoints at the
//! sources on a timer, collects every subtask's acknowledgement, writes the
//! state through the checkpoint store (off the subtasks' threads), commits
//! the manifest, tells the sinks to commit their staged output, and applies
//! retention and GC. Decisions come from `checkpoint::retention`.

use crate::checkpoint::{
    CheckpointId, CheckpointManifest, CheckpointStore, KeyGroupRef, MANIFEST_FORMAT,
    OperatorStateRef, SinkState, SourcePosition, SubtaskStateRef, to_delete, unreferenced_chunks,
    write_key_groups,
};
use crate::job::{CheckpointSettings, JobGraph};
use crate::sandbox::{OperatorSnapshot, StateFormat};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A subtask's part of checkpoint `id`.
pub(crate) enum AckData {
    Source(SourcePosition),
    Operator {
        vertex: usize,
        subtask: u32,
        format: Option<StateFormat>,
        state: Option<crate::state::StateSnapshot>,
        operator_state: Option<OperatorSnapshot>,
    },
    Sink(Option<SinkState>),
}

/// What subtasks tell the coordinator.
pub(crate) enum Ack {
    /// Snapshot done for checkpoint `id`.
    Done { id: u64, data: AckData },
    /// The subtask reached the end of its input: no more checkpoints can
    /// complete (every subtask must take part).
    Finished,
}

pub(crate) struct Coordinator<'a> {
    pub(crate) graph: &'a JobGraph,
    pub(crate) settings: CheckpointSettings,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) modules: BTreeMap<usize, String>,
    pub(crate) triggers: Vec<Sender<super::channel::Barrier>>,
    pub(crate) commits: Vec<Sender<u64>>,
    pub(crate) acks: Receiver<Ack>,
    pub(crate) tasks: usize,
    pub(crate) next_id: u64,
    /// Key group refs of the last completed checkpoint, by (vertex, key
    /// group): the bases that deltas are written against.
    pub(crate) last: HashMap<(usize, u16), KeyGroupRef>,
    /// Whether the last triggered checkpoint completed: only then do the
    /// subtasks' changes since their last snapshot line up with `last`.
    pub(crate) last_completed: bool,
}

struct Pending {
    id: u64,
    triggered: Instant,
    triggered_at_ms: u64,
    acks: Vec<AckData>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
    pub(crate) fn run(mut self) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let min_pause = Duration::from_millis(self.settings.min_pause_ms);
        let mut next_trigger = Instant::now() + interval;
        let mut pending: Option<Pending> = None;
        let mut finished = false;
        loop {
            let wait = match &pending {
                Some(p) => (p.triggered + timeout).saturating_duration_since(Instant::now()),
                None => next_trigger.saturating_duration_since(Instant::now()),
            };
            match self.acks.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Ack::Done { id, data }) => {
                    let Some(p) = pending.as_mut().filter(|p| p.id == id) else {
                        continue;
                    };
                    p.acks.push(data);
                    if p.acks.len() == self.tasks
                        && let Some(p) = pending.take()
                    {
                        self.complete(p);
                        next_trigger = (Instant::now() + min_pause).max(next_trigger);
                    }
                }
                Ok(Ack::Finished) => {
                    if !finished {
                        finished = true;
                        if let Some(p) = pending.take() {
                            tracing::debug!(job = %self.graph.name, checkpoint = p.id, "abandoned: a subtask finished its input");
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(p) = &pending
                        && p.triggered.elapsed() >= timeout
                    {
                        tracing::warn!(job = %self.graph.name, checkpoint = p.id, "checkpoint timed out after {} ms (checkpoint.timeout-ms); the job goes on", self.settings.timeout_ms);
                        pending = None;
                        next_trigger = Instant::now() + min_pause;
                    }
                    if pending.is_none() && !finished && Instant::now() >= next_trigger {
                        let id = self.next_id;
                        self.next_id += 1;
                        pending = Some(Pending {
                            id,
                            triggered: Instant::now(),
                            triggered_at_ms: now_ms(),
                            acks: Vec::new(),
                        });
                        let barrier = super::channel::Barrier {
                            id,
                            full: !self.last_completed,
                        };
                        self.last_completed = false;
                        for t in &self.triggers {
                            let _ = t.send(barrier);
                        }
                        next_trigger = Instant::now() + interval;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn complete(&mut self, p: Pending) {
        let id = p.id;
        match self.write(p) {
            Ok(m) => {
                self.last = m
                    .operators
                    .iter()
                    .filter_map(|o| {
                        let v = self
                            .graph
                            .vertices
                            .iter()
                            .position(|v| v.id.to_hex() == o.operator_id)?;
                        Some(
                            o.key_groups
                                .iter()
                                .map(move |k| ((v, k.key_group), k.clone())),
                        )
                    })
                    .flatten()
                    .collect();
                self.last_completed = true;
                tracing::info!(job = %self.graph.name, checkpoint = id, ms = m.duration_ms, full_bytes = m.full_bytes, new_bytes = m.new_bytes, "checkpoint complete");
                for c in &self.commits {
                    let _ = c.send(id);
                }
                if let Err(e) = self.retain() {
                    tracing::warn!(job = %self.graph.name, "checkpoint retention failed: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(job = %self.graph.name, checkpoint = id, "checkpoint failed, the job goes on: {e}")
            }
        }
    }

    fn write(&self, p: Pending) -> Result<CheckpointManifest, crate::checkpoint::StoreError> {
        let (mut full, mut new) = (0u64, 0u64);
        let mut operators: BTreeMap<usize, OperatorStateRef> = BTreeMap::new();
        let mut sources = Vec::new();
        let mut sinks = Vec::new();
        for ack in p.acks {
            match ack {
                AckData::Source(pos) => sources.push(pos),
                AckData::Sink(state) => sinks.extend(state),
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
                        let previous = |kg: u16| self.last.get(&(vertex, kg)).cloned();
                        let (refs, f, n) = write_key_groups(self.store.as_ref(), &previous, snap)?;
                        entry.key_groups.extend(refs);
                        full += f;
                        new += n;
                    }
                    if let Some(s) = operator_state {
                        let mut payload = Vec::with_capacity(s.data.len() + 32);
                        payload.extend_from_slice(&(s.format.name.len() as u32).to_le_bytes());
                        payload.extend_from_slice(s.format.name.as_bytes());
                        payload.extend_from_slice(&s.format.version.to_le_bytes());
                        payload.extend_from_slice(&s.data);
                        let (chunk, written) = self.store.put_chunk(&payload)?;
                        full += payload.len() as u64;
                        new += written;
                        entry.operator_state.push(SubtaskStateRef {
                            subtask,
                            chunk,
                            bytes: payload.len() as u64,
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
        let m = CheckpointManifest {
            format: MANIFEST_FORMAT,
            job: self.graph.name.clone(),
            id: CheckpointId(p.id),
            triggered_at_ms: p.triggered_at_ms,
            duration_ms: p.triggered.elapsed().as_millis() as u64,
            graph_fingerprint: fingerprint(self.graph),
            max_parallelism: self.graph.max_parallelism,
            operators,
            sources,
            sinks,
            full_bytes: full,
            new_bytes: new,
        };
        self.store.put_manifest(&m)?;
        Ok(m)
    }

    fn retain(&self) -> Result<(), crate::checkpoint::StoreError> {
        let existing = self.store.list_checkpoints(&self.graph.name)?;
        for id in to_delete(&existing, self.settings.retain, &BTreeSet::new()) {
            self.store.delete_manifest(&self.graph.name, id)?;
        }
        // Chunks are shared by every job in the store, so what is kept is
        // every manifest of every job. A manifest that cannot be read stops
        // the GC: deleting what it might reference could lose state.
        let mut kept = Vec::new();
        for job in self.store.list_jobs()? {
            for id in self.store.list_checkpoints(&job)? {
                kept.push(self.store.get_manifest(&job, id)?);
            }
        }
        for chunk in unreferenced_chunks(&self.store.list_chunks()?, &kept, &HashSet::new()) {
            self.store.delete_chunk(&chunk)?;
        }
        Ok(())
    }
}
