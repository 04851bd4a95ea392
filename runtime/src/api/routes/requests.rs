//! Asynchronous requests: a trigger sent to a job, tracked until its
//! outcome, and `GET /v1/requests/{id}` to poll it.

use crate::api::error::{ApiError, not_found};
use crate::api::state::ApiState;
use crate::api::types::{Accepted, RequestStatus, SavepointSummary};
use crate::exec::{StopMode, Triggered};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Sends a trigger to the job and tracks its outcome as a request.
pub(super) fn start(
    state: &Arc<ApiState>,
    job: &str,
    savepoint: Option<Option<String>>,
    stop: Option<StopMode>,
) -> Result<Response, ApiError> {
    let control = state.job(job)?;
    let rx = control
        .trigger(savepoint.clone(), stop)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    let id = format!("req-{}", state.next_request.fetch_add(1, Ordering::Relaxed));
    let kind = match (&savepoint, stop) {
        (_, Some(_)) => "stop",
        (Some(_), None) => "savepoint",
        (None, None) => "checkpoint",
    };
    let status = RequestStatus {
        id: id.clone(),
        job: job.to_string(),
        kind: kind.into(),
        status: "in-progress".into(),
        checkpoint: None,
        savepoint: None,
        error: None,
    };
    state.set_request(status.clone());
    state
        .undelivered
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone());
    let st = state.clone();
    std::thread::spawn(move || {
        let outcome = rx
            .recv()
            .unwrap_or_else(|_| Err("the job stopped before the request completed".into()));
        let mut status = status;
        match outcome {
            Ok(Triggered {
                checkpoint,
                savepoint,
            }) => {
                status.status = "completed".into();
                status.checkpoint = Some(checkpoint);
                status.savepoint = savepoint.map(|sp| {
                    let location = st
                        .registries()
                        .iter()
                        .find(|r| r.backend() == sp.backend)
                        .map(|r| r.location())
                        .unwrap_or_default();
                    SavepointSummary::of(&sp, location)
                });
            }
            Err(e) => {
                status.status = "failed".into();
                status.error = Some(e);
            }
        }
        st.set_request(status);
    });
    Ok((StatusCode::ACCEPTED, Json(Accepted { request_id: id })).into_response())
}

pub(super) async fn request_status(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<RequestStatus>, ApiError> {
    let status = state
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned()
        .ok_or_else(|| not_found(format!("no request '{id}'")))?;
    if status.status != "in-progress" {
        state
            .undelivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
    Ok(Json(status))
}
