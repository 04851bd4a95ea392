//! Writing a checkpoint whose acknowledgements are all in: the keyed
//! state as segments (on one thread per core), operator state and staged
//! sink data, then the manifest, through one store transaction; the crash
//! test's kill points along the way.

use super::{AckData, Coordinator, Pending, fingerprint};
use crate::checkpoint::{
    CheckpointId, CheckpointManifest, MANIFEST_FORMAT, OperatorStateRef, SinkState,
    SubtaskStateRef, write_key_groups,
};
use crate::state::StateSnapshot;
use std::collections::BTreeMap;

impl Coordinator<'_> {
    /// Writes the checkpoint (for a savepoint: the crash test's savepoint
    /// points are armed); returns its manifest and the keyed state
    /// snapshots it was written from (to be dropped later).
    #[allow(clippy::type_complexity)]
    pub(super) fn write(
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
                        crate::fault::crash_point("checkpoint-sink-staged");
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
                        crate::fault::crash_point("checkpoint-chunks");
                        if savepoint {
                            crate::fault::crash_point("savepoint-chunks");
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
        crate::fault::crash_point("checkpoint-manifest");
        if savepoint {
            crate::fault::crash_point("savepoint-manifest");
        }
        if end {
            // The tail is staged (in the chunks above), no manifest yet.
            crate::fault::crash_point("final-tail-staged");
        }
        txn.put_manifest(&m)?;
        crate::fault::crash_point("checkpoint-committed");
        if end {
            crate::fault::crash_point("final-manifest-committed");
        }
        Ok((m, snapshots))
    }
}
