//! `GET /v1/checkpoints`: the checkpoints of one job or of all.

use crate::api::error::ApiError;
use crate::api::extract::{StrictQuery, check_job};
use crate::api::state::ApiState;
use crate::api::types::{CheckpointInfo, CheckpointList, CheckpointRow, UnreadableCheckpoint};
use crate::checkpoint::CheckpointStore;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// `?job=NAME`, at most once, and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobQuery {
    job: Option<String>,
}

/// The checkpoints of `job` (or of every job) in `store`.
fn rows(
    store: &CheckpointStore,
    job: Option<String>,
) -> Result<Vec<CheckpointRow>, crate::checkpoint::StoreError> {
    let jobs = match job {
        Some(j) => vec![j],
        None => store.list_jobs()?,
    };
    let mut out = Vec::new();
    for job in jobs {
        for id in store.list_checkpoints(&job)? {
            out.push(match store.get_manifest(&job, id) {
                Ok(m) => CheckpointRow::Ok(CheckpointInfo {
                    job: job.clone(),
                    id: id.0,
                    triggered_at_ms: m.triggered_at_ms,
                    duration_ms: m.duration_ms,
                    full_bytes: m.full_bytes,
                    new_bytes: m.new_bytes,
                }),
                Err(e) => CheckpointRow::Unreadable(UnreadableCheckpoint {
                    job: job.clone(),
                    id: id.0,
                    // The store's error keeps its cause (the JSON or I/O
                    // error) as a source: the row's one string has both.
                    error: std::iter::successors(Some(&e as &dyn std::error::Error), |e| {
                        e.source()
                    })
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": "),
                }),
            });
        }
    }
    Ok(out)
}

/// The checkpoints of `job` (or of every job) in `store`, as the API lists
/// them: `{"job", "id", "triggered-at-ms", "duration-ms", "full-bytes",
/// "new-bytes"}`, or `{"job", "id", "error"}` for an unreadable manifest.
pub fn checkpoint_rows(
    store: &CheckpointStore,
    job: Option<String>,
) -> Result<Vec<Value>, crate::checkpoint::StoreError> {
    Ok(rows(store, job)?
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect())
}

pub(super) async fn list_checkpoints(
    State(state): State<Arc<ApiState>>,
    StrictQuery(q): StrictQuery<JobQuery>,
) -> Result<Json<CheckpointList>, ApiError> {
    if let Some(j) = &q.job {
        check_job(j)?;
    }
    // The store may be an object store far away: off the API's thread.
    let st = state.clone();
    let checkpoints = tokio::task::spawn_blocking(move || rows(st.store.as_ref(), q.job))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(CheckpointList { checkpoints }))
}
