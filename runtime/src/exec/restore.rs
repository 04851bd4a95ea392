//! Restore: which checkpoint a job starts from (the newest that reads back
//! whole), whether a checkpoint or savepoint fits the job (`check_restore`,
//! before any subtask starts), and what each operator subtask reads back
//! (`restore_operator`). Chunk formats live in `checkpoint/`.

use super::ExecError;
use crate::checkpoint::{
    CheckpointId, CheckpointManifest, CheckpointStore, choose_restore, decode_operator_state,
};
use crate::job::{JobGraph, VertexKind};
use crate::sandbox::{OperatorModule, OperatorSnapshot, StateFormat};
use crate::state::{KeyGroup, KeyGroupRange, KeyedState, StateLimits};
use std::collections::HashMap;
use std::sync::Arc;

/// The newest checkpoint of `job` whose manifest reads and whose chunks all
/// verify; newer broken ones are skipped with a warning naming why.
pub fn latest_checkpoint(
    store: &CheckpointStore,
    job: &str,
) -> Result<Option<CheckpointManifest>, ExecError> {
    latest_checkpoint_after(store, job, 0)
}

/// The highest checkpoint ID of `job` in `store` (0: none).
pub fn newest_checkpoint_id(store: &CheckpointStore, job: &str) -> Result<u64, ExecError> {
    Ok(store
        .list_checkpoints(job)
        .map_err(|e| ExecError::Restore {
            id: 0,
            detail: crate::report::chain(&e),
        })?
        .iter()
        .map(|c| c.0)
        .max()
        .unwrap_or(0))
}

/// [`latest_checkpoint`] among those with an ID above `after` (the ones a
/// run whose store held checkpoints up to `after` took itself).
pub fn latest_checkpoint_after(
    store: &CheckpointStore,
    job: &str,
    after: u64,
) -> Result<Option<CheckpointManifest>, ExecError> {
    latest_checkpoint_among(store, job, after, None)
}

/// [`latest_checkpoint_after`] among the IDs in `committed` only, when
/// given: in a fleet, a manifest an owner wrote but could not commit (it
/// had lost the job) is never restored (`exec::fence`).
pub fn latest_checkpoint_among(
    store: &CheckpointStore,
    job: &str,
    after: u64,
    committed: Option<&std::collections::BTreeSet<u64>>,
) -> Result<Option<CheckpointManifest>, ExecError> {
    let mut ids = store
        .list_checkpoints(job)
        .map_err(|e| ExecError::Restore {
            id: 0,
            detail: crate::report::chain(&e),
        })?;
    ids.retain(|c| c.0 > after && committed.is_none_or(|set| set.contains(&c.0)));
    let mut found = None;
    let (chosen, skipped) = choose_restore(
        &ids,
        |id: CheckpointId| -> Result<(), crate::checkpoint::StoreError> {
            let m = store.get_manifest(job, id)?;
            store.verify_chunks(m.chunks())?;
            found = Some(m);
            Ok(())
        },
    );
    for (id, why) in skipped {
        tracing::warn!(job, checkpoint = id.0, "skipping checkpoint: {why}");
    }
    Ok(chosen.and(found))
}

/// Checks that a job can start from checkpoint or savepoint `m`, before
/// any subtask starts (docs/architecture.md, "Restoring"). A refusal
/// is [`ExecError::RestoreRefused`]: deterministic, so never retried.
pub fn check_restore(
    graph: &JobGraph,
    m: &CheckpointManifest,
    modules: &HashMap<usize, Arc<OperatorModule>>,
    allow_non_restored_state: bool,
) -> Result<(), ExecError> {
    let err = |detail: String| ExecError::RestoreRefused {
        from: format!("checkpoint {}", m.id),
        detail,
    };
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
            let no_uid = if m.operators.iter().any(|o| {
                o.uid.is_none()
                    && (!o.key_groups.is_empty() || !o.operator_state.is_empty())
                    && !graph
                        .vertices
                        .iter()
                        .any(|v| v.id.to_hex() == o.operator_id)
            }) {
                " An operator without a uid has an ID made of its name, its kind and its inputs' IDs: renaming it or changing what feeds it gives it a new ID. Give stateful operators a `uid` (the savepoint's operators can be listed with `wrun savepoint inspect`)."
            } else {
                ""
            };
            return Err(err(format!(
                "it holds state for operators this job does not have: {}. Add them back with the same uid, or pass --allow-non-restored-state to start without that state.{no_uid}",
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
        // Split-based sources (brokers) hand their splits to any subtask.
        let by_split = matches!(&v.kind, VertexKind::Source(k) if k.has_splits());
        if positions > 0 && positions != v.parallelism as usize && !by_split {
            return Err(err(format!(
                "source '{}' ran with parallelism {positions}, and the job now gives it {}; a source's read positions cannot be redistributed, so keep its parallelism at {positions}",
                v.name, v.parallelism
            )));
        }
    }
    Ok(())
}

/// What a subtask restores from a checkpoint.
pub(super) struct Restored {
    pub(super) state: KeyedState,
    pub(super) operator_state: Option<OperatorSnapshot>,
    pub(super) format: Option<StateFormat>,
    pub(super) restored: bool,
    /// What the new module must accept before it sees the state: the
    /// format name that wrote it and who wrote it (`None` when the
    /// checkpoint holds no state for this operator).
    pub(super) written_by: Option<WrittenBy>,
}

impl Restored {
    /// Nothing restored: the subtask starts with `state` empty.
    fn fresh(state: KeyedState) -> Restored {
        Restored {
            state,
            operator_state: None,
            format: None,
            restored: false,
            written_by: None,
        }
    }
}

/// Who wrote the state an operator restores, for [`check_format`].
#[derive(Debug, Clone)]
pub(super) struct WrittenBy {
    /// The state format name recorded with it.
    pub(super) format: String,
    /// The module that wrote it (`blake3:…`).
    pub(super) module: String,
    /// What the job starts from, for messages.
    pub(super) from: String,
}

/// Refuses to restore state into an operator whose module declares another
/// state format name than the one that wrote it (state landing on the
/// wrong operator: a uid moved to another operator, or a vertex without
/// uid whose ID another one took), unless the module declares that it
/// migrates that format.
pub(super) fn check_format(
    operator: &str,
    written: &WrittenBy,
    declared: &StateFormat,
    module: &str,
    migrates_from: &[String],
) -> Result<(), ExecError> {
    if declared.name == written.format || migrates_from.contains(&written.format) {
        return Ok(());
    }
    Err(ExecError::RestoreRefused {
        from: written.from.clone(),
        detail: format!(
            "operator {operator}: its state was written in format '{}' by {}, but its module {module} declares format '{}' and does not declare that it migrates '{}'; the state belongs to another operator. Give each stateful operator a `uid` that stays with it, put the operator that wrote this state back, pass --allow-non-restored-state after removing this state's uid, or declare the migration in the new module (Rust: `export_operator!(T, migrates_from = [\"{}\"])`)",
            written.format, written.module, declared.name, written.format, written.format
        ),
    })
}

/// Reads back subtask `subtask` of operator vertex `v`: the key groups it
/// owns at the job's parallelism and its non-keyed state.
pub(super) fn restore_operator(
    graph: &JobGraph,
    v: usize,
    subtask: u32,
    m: Option<&CheckpointManifest>,
    store: Option<&Arc<CheckpointStore>>,
    label: Option<&str>,
) -> Result<Restored, ExecError> {
    let vertex = &graph.vertices[v];
    let range = KeyGroupRange::for_subtask(graph.max_parallelism, vertex.parallelism, subtask);
    let limits = StateLimits {
        max_timers: usize::try_from(graph.limits.max_timers).unwrap_or(usize::MAX),
        ..StateLimits::default()
    };
    let mut state = KeyedState::new(graph.max_parallelism, range, limits);
    let (Some(m), Some(store)) = (m, store) else {
        return Ok(Restored::fresh(state));
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
        return Ok(Restored::fresh(state));
    };
    let started = std::time::Instant::now();
    let mine: Vec<_> = op
        .key_groups
        .iter()
        .filter(|r| range.contains(KeyGroup(r.key_group)))
        .collect();
    let groups = mine.len();
    let bytes: u64 = mine.iter().map(|r| r.total_bytes()).sum();
    crate::checkpoint::read_key_groups(store.as_ref(), &mine, &mut state)
        .map_err(|e| err(format!("operator '{}': {e}", vertex.name)))?;
    tracing::info!(
        job = %graph.name,
        "restored {}[{subtask}] from checkpoint {}: {groups} key groups, {bytes} bytes in {} ms",
        vertex.name,
        m.id,
        started.elapsed().as_millis()
    );
    let operator_state = match op.operator_state.iter().find(|s| s.subtask == subtask) {
        Some(s) => {
            let bytes = store
                .get_chunk(s.loc())
                .map_err(|e| err(crate::report::chain(&e)))?;
            let chunk = decode_operator_state(&bytes).ok_or_else(|| {
                err(format!(
                    "operator '{}': subtask {subtask}'s operator state is malformed",
                    vertex.name
                ))
            })?;
            Some(OperatorSnapshot {
                format: StateFormat {
                    name: chunk.format_name,
                    version: chunk.format_version,
                },
                data: chunk.data,
            })
        }
        None => None,
    };
    let format = op
        .state_format
        .clone()
        .map(|(name, version)| StateFormat { name, version });
    let had_state = !op.key_groups.is_empty() || !op.operator_state.is_empty();
    let written_by = match (&format, had_state) {
        (Some(f), true) => Some(WrittenBy {
            format: f.name.clone(),
            module: op.module.clone(),
            from: label
                .map(String::from)
                .unwrap_or_else(|| format!("checkpoint {}", m.id)),
        }),
        _ => None,
    };
    Ok(Restored {
        state,
        operator_state,
        format,
        restored: true,
        written_by,
    })
}
