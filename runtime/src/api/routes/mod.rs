//! The routes, a file per resource, and what they share: the router with
//! its authentication, body limits and fallbacks, and body parsing.

mod checkpoints;
mod jobs;
mod meta;
mod modules;
mod requests;
mod savepoints;

pub use checkpoints::checkpoint_rows;

use super::MAX_BODY_BYTES;
use super::error::ApiError;
use super::state::ApiState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use std::sync::Arc;

/// The routes, with authentication and the body limits.
pub fn router(state: Arc<ApiState>) -> Router {
    let module_limit = state.modules.as_ref().map(|m| m.max_bytes).unwrap_or(0);
    Router::new()
        .route("/v1/info", get(meta::info))
        .route("/metrics", get(meta::metrics))
        .route(
            "/v1/modules",
            get(modules::list_modules)
                .post(modules::push_module)
                .layer(DefaultBodyLimit::max(
                    // Room for the request around the module; the exact limit
                    // is checked on the bytes.
                    module_limit.saturating_add(4096),
                )),
        )
        .route("/v1/modules/{module}", get(modules::get_module))
        .route("/v1/jobs", get(jobs::list_jobs).post(jobs::deploy))
        .route("/v1/savepoint-imports", post(savepoints::import_savepoint))
        .route("/v1/jobs/{job}", get(jobs::job_status))
        .route("/v1/jobs/{job}/checkpoints", post(jobs::trigger_checkpoint))
        .route("/v1/jobs/{job}/savepoints", post(jobs::trigger_savepoint))
        .route("/v1/jobs/{job}/cancel", post(jobs::cancel_job))
        .route("/v1/requests/{id}", get(requests::request_status))
        .route("/v1/checkpoints", get(checkpoints::list_checkpoints))
        .route("/v1/savepoints", get(savepoints::list_savepoints))
        .route(
            "/v1/savepoints/{id}",
            get(savepoints::get_savepoint).delete(savepoints::dispose_savepoint),
        )
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route; see docs/api.md".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method; see docs/api.md".into(),
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::auth::auth,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Parses a JSON body (empty means the default), turning every rejection
/// into a JSON error.
fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        ApiError(
            e.status(),
            format!("cannot read the request body: {e} (the limit is {MAX_BODY_BYTES} bytes)"),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}
