//! `/v1/modules`: uploads (validated and compiled off the API's thread),
//! the list, and one module's metadata.

use crate::api::error::{ApiError, internal};
use crate::api::state::{ApiState, Modules};
use crate::api::types::ModuleList;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

fn modules(state: &ApiState) -> Result<&Modules, ApiError> {
    state.modules.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this wrun has no module store".into(),
        )
    })
}

fn module_error(e: crate::module::ModuleError) -> ApiError {
    use crate::module::ModuleError as E;
    match e {
        E::UnknownDigest { .. } | E::UnknownName { .. } => ApiError(
            StatusCode::NOT_FOUND,
            format!("{e}; `wrun module list` shows what is there"),
        ),
        E::Ambiguous { .. } => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
        e => internal(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct PushQuery {
    name: Option<String>,
    version: Option<String>,
}

pub(super) async fn push_module(
    State(state): State<Arc<ApiState>>,
    q: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("bad query: {e}; it takes `name` and `version`"),
        )
    })?;
    let max = modules(&state)?.max_bytes;
    let bytes = body.map_err(|e| {
        ApiError(
            e.status(),
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the module is over this wrun's limit of {max} bytes; shrink it or start `wrun serve` with a larger --max-module-mb")
            } else {
                format!("cannot read the upload: {e}")
            },
        )
    })?;
    let name = match (q.name, q.version) {
        (Some(n), Some(v)) => Some((n, v)),
        (None, None) => None,
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give both `name` and `version`, or neither".into(),
            ));
        }
    };
    // Compiling takes a while (seconds for a big component): off the
    // API's thread.
    let st = state.clone();
    let pushed = tokio::task::spawn_blocking(move || {
        let m = modules(&st)?;
        crate::module::push(
            &m.store,
            &m.sandbox,
            &bytes,
            name.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
            m.max_bytes,
        )
        .map_err(|e| {
            use crate::module::PushError as P;
            let status = match &e {
                P::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                P::Store(crate::module::ModuleError::NameTaken { .. }) => StatusCode::CONFLICT,
                P::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError(status, e.to_string())
        })
    })
    .await
    .map_err(internal)??;
    let status = if pushed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(pushed)).into_response())
}

pub(super) async fn list_modules(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<ModuleList>, ApiError> {
    let modules = modules(&state)?.store.list().map_err(module_error)?;
    Ok(Json(ModuleList { modules }))
}

pub(super) async fn get_module(
    State(state): State<Arc<ApiState>>,
    Path(spec): Path<String>,
) -> Result<Json<crate::module::ModuleInfo>, ApiError> {
    let m = modules(&state)?;
    let hex = m.store.lookup(&spec).map_err(module_error)?;
    Ok(Json(m.store.info(&hex).map_err(module_error)?))
}
