//! `GET /v1/info` and `GET /metrics`: what this wrun is, and its counters.

use crate::api::extract::{NoQuery, StrictQuery};
use crate::api::state::ApiState;
use crate::api::types::Info;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn info(
    State(state): State<Arc<ApiState>>,
    _: StrictQuery<NoQuery>,
) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        mode: state.mode.to_string(),
        wit: crate::sandbox::SUPPORTED_WIT
            .iter()
            .map(|v| format!("wrun:operator@{v}.x"))
            .collect::<Vec<_>>()
            .join(", "),
        max_module_bytes: state.modules.as_ref().map(|m| m.max_bytes),
        pid: std::process::id(),
    })
}

pub(super) async fn metrics(
    State(state): State<Arc<ApiState>>,
    _: StrictQuery<NoQuery>,
) -> Response {
    let jobs: Vec<_> = state
        .jobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(|c| c.metrics())
        .collect();
    (
        [(header::CONTENT_TYPE, crate::exec::metrics::CONTENT_TYPE)],
        crate::exec::metrics::render(&jobs),
    )
        .into_response()
}
