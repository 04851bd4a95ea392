//! `/v1/modules`: uploads (validated and compiled off the API's thread),
//! the list, and one module's metadata.

use crate::api::error::{ApiError, ErrorKind, internal};
use crate::api::extract::{NoQuery, Segment, StrictQuery, body_error};
use crate::api::state::{ApiState, Modules};
use crate::api::types::ModuleList;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

fn modules(state: &ApiState) -> Result<&Modules, ApiError> {
    state
        .modules
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this wrun has no module store"))
}

fn module_error(e: crate::module::ModuleError) -> ApiError {
    use crate::module::ModuleError as E;
    match e {
        E::UnknownDigest { .. } | E::UnknownName { .. } => {
            ApiError::not_found(format!("{e}; `wrun module list` shows what is there"))
        }
        E::Ambiguous { .. } => ApiError::bad_request(e.to_string()),
        e => ApiError::internal(e),
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
    StrictQuery(q): StrictQuery<PushQuery>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let max = modules(&state)?.max_bytes;
    let bytes = body.map_err(|e| {
        let e = body_error(e, max);
        if e.kind() == ErrorKind::PayloadTooLarge {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("the module is over this wrun's limit of {max} bytes; shrink it or start `wrun serve` with a larger --max-module-mb"),
            )
        } else {
            e
        }
    })?;
    let name = match (q.name, q.version) {
        (Some(n), Some(v)) => Some((n, v)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "give both `name` and `version`, or neither",
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
            let kind = match &e {
                P::TooLarge { .. } => ErrorKind::PayloadTooLarge,
                P::Store(crate::module::ModuleError::NameTaken { .. }) => ErrorKind::Conflict,
                P::Store(_) => ErrorKind::Internal,
                _ => ErrorKind::BadRequest,
            };
            ApiError::from_error(kind, &e)
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
    _: StrictQuery<NoQuery>,
) -> Result<Json<ModuleList>, ApiError> {
    let modules = modules(&state)?.store.list().map_err(module_error)?;
    Ok(Json(ModuleList { modules }))
}

pub(super) async fn get_module(
    State(state): State<Arc<ApiState>>,
    Segment(spec): Segment,
    _: StrictQuery<NoQuery>,
) -> Result<Json<crate::module::ModuleInfo>, ApiError> {
    let m = modules(&state)?;
    let hex = m.store.lookup(&spec).map_err(module_error)?;
    Ok(Json(m.store.info(&hex).map_err(module_error)?))
}
