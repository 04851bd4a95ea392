//! `/v1/savepoints` and `/v1/savepoint-imports`: the savepoints of every
//! registry, one savepoint, disposal (with garbage collection) and import.

use crate::api::error::{ApiError, ErrorKind, internal};
use crate::api::extract::{JsonObject, NoQuery, Segment, StrictQuery};
use crate::api::state::ApiState;
use crate::api::types::{Disposed, ImportRequest, SavepointList, SavepointSummary};
use crate::checkpoint::{Savepoint, SavepointStore};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn import_savepoint(
    State(state): State<Arc<ApiState>>,
    _: StrictQuery<NoQuery>,
    JsonObject(b): JsonObject<ImportRequest>,
) -> Result<Response, ApiError> {
    if b.dir.as_os_str().is_empty()
        || !b.dir.is_absolute()
        || b.dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(ApiError::bad_request(
            "`dir` must be the absolute path of an exported savepoint directory, without `..`",
        ));
    }
    if let Some(n) = &b.name {
        crate::checkpoint::check_name(n).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if !b.dir.join(crate::checkpoint::EXPORT_RECORD).is_file() {
        return Err(ApiError::bad_request(format!(
            "{} holds no exported savepoint (no {}); `wrun savepoint export` makes one",
            b.dir.display(),
            crate::checkpoint::EXPORT_RECORD
        )));
    }
    let registry = state
        .registries()
        .into_iter()
        .find(|r| r.backend() != crate::checkpoint::SavepointBackend::Memory)
        .ok_or_else(|| internal("no durable savepoint registry"))?;
    let st = state.clone();
    let sp = tokio::task::spawn_blocking(move || {
        crate::checkpoint::import(&b.dir, st.store.as_ref(), registry.as_ref(), b.name)
            .map(|sp| (sp, registry.location()))
            .map_err(|e| {
                use crate::checkpoint::SavepointError as S;
                let kind = match &e {
                    S::NameTaken(_) => ErrorKind::Conflict,
                    S::Io { .. } | S::Store(_) => ErrorKind::Internal,
                    _ => ErrorKind::BadRequest,
                };
                let mut err = ApiError::new(
                    kind,
                    format!("cannot import the savepoint in {}", b.dir.display()),
                );
                let mut cause: Option<&dyn std::error::Error> = Some(&e);
                while let Some(c) = cause {
                    err = err.caused_by(c.to_string());
                    cause = c.source();
                }
                err
            })
    })
    .await
    .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(SavepointSummary::of(&sp.0, sp.1))).into_response())
}

pub(super) async fn list_savepoints(
    State(state): State<Arc<ApiState>>,
    _: StrictQuery<NoQuery>,
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
    Err(ApiError::not_found(format!(
        "no savepoint '{id}' here; GET /v1/savepoints lists them"
    )))
}

pub(super) async fn get_savepoint(
    State(state): State<Arc<ApiState>>,
    Segment(id): Segment,
    _: StrictQuery<NoQuery>,
) -> Result<Json<Savepoint>, ApiError> {
    Ok(Json(find_savepoint(&state, &id)?.0))
}

pub(super) async fn dispose_savepoint(
    State(state): State<Arc<ApiState>>,
    Segment(id): Segment,
    _: StrictQuery<NoQuery>,
) -> Result<Json<Disposed>, ApiError> {
    let (sp, registry) = find_savepoint(&state, &id)?;
    // The store may be an object store far away: off the API's thread.
    let st = state.clone();
    let (sp, freed) = tokio::task::spawn_blocking(move || {
        crate::checkpoint::dispose(st.store.as_ref(), registry.as_ref(), &sp.id)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(Json(Disposed {
        disposed: sp.id,
        freed_chunks: freed.len(),
    }))
}
