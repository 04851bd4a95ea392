//! `/v1/savepoints` and `/v1/savepoint-imports`: the savepoints of every
//! registry, one savepoint, disposal (with garbage collection) and import.

use super::json_body;
use crate::api::error::{ApiError, internal, not_found};
use crate::api::state::ApiState;
use crate::api::types::{Disposed, ImportRequest, SavepointList, SavepointSummary};
use crate::checkpoint::{Savepoint, SavepointStore, collect_garbage};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn import_savepoint(
    State(state): State<Arc<ApiState>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let b: ImportRequest = json_body(body)?;
    if b.dir.as_os_str().is_empty()
        || !b.dir.is_absolute()
        || b.dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "`dir` must be the absolute path of an exported savepoint directory, without `..`"
                .into(),
        ));
    }
    if let Some(n) = &b.name {
        crate::checkpoint::check_name(n)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    if !b.dir.join(crate::checkpoint::EXPORT_RECORD).is_file() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{} holds no exported savepoint (no {}); `wrun savepoint export` makes one",
                b.dir.display(),
                crate::checkpoint::EXPORT_RECORD
            ),
        ));
    }
    let registry = state
        .registries()
        .into_iter()
        .find(|r| r.backend() == crate::checkpoint::SavepointBackend::Filesystem)
        .ok_or_else(|| internal("no filesystem savepoint registry"))?;
    let st = state.clone();
    let sp = tokio::task::spawn_blocking(move || {
        crate::checkpoint::import(&b.dir, st.store.as_ref(), registry.as_ref(), b.name)
            .map(|sp| (sp, registry.location()))
            .map_err(|e| {
                use crate::checkpoint::SavepointError as S;
                let status = match &e {
                    S::NameTaken(_) => StatusCode::CONFLICT,
                    S::Io { .. } | S::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError(
                    status,
                    format!("cannot import the savepoint in {}: {e}", b.dir.display()),
                )
            })
    })
    .await
    .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(SavepointSummary::of(&sp.0, sp.1))).into_response())
}

pub(super) async fn list_savepoints(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<SavepointList>, ApiError> {
    let savepoints = state
        .all_savepoints()?
        .into_iter()
        .map(|(sp, loc)| SavepointSummary::of(&sp, loc))
        .collect();
    Ok(Json(SavepointList { savepoints }))
}

fn find_savepoint(
    state: &ApiState,
    id: &str,
) -> Result<(Savepoint, Arc<dyn SavepointStore>), ApiError> {
    for r in state.registries() {
        if let Ok(sp) = crate::checkpoint::find(r.as_ref(), id) {
            return Ok((sp, r));
        }
    }
    Err(not_found(format!(
        "no savepoint '{id}' here; GET /v1/savepoints lists them"
    )))
}

pub(super) async fn get_savepoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Savepoint>, ApiError> {
    Ok(Json(find_savepoint(&state, &id)?.0))
}

pub(super) async fn dispose_savepoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Disposed>, ApiError> {
    let (sp, registry) = find_savepoint(&state, &id)?;
    registry.remove(&sp.id).map_err(internal)?;
    // The collector waits for checkpoints being written: off the API's
    // thread.
    let st = state.clone();
    let freed = tokio::task::spawn_blocking(move || {
        collect_garbage(st.store.as_ref(), || st.registries.savepoints())
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(Json(Disposed {
        disposed: sp.id,
        freed_chunks: freed.len(),
    }))
}
