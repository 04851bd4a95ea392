//! Asynchronous requests: a trigger sent to a job (and, for a rescale, the
//! deploy after it), tracked in the
//! [`RequestTable`](crate::api::requests) until its outcome, and
//! `GET /v1/requests/{id}` to poll it.
//!
//! Waiting for an outcome blocks (the job answers on a std channel), so it
//! runs on the API runtime's blocking pool, never an OS thread of its own
//! per trigger; the table bounds how many of one job are in progress.

use crate::api::error::ApiError;
use crate::api::extract::{NoQuery, Segment, StrictQuery};
use crate::api::state::ApiState;
use crate::api::types::{Accepted, RequestStatus, SavepointSummary};
use crate::exec::{StopMode, Triggered};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// What runs once a trigger has completed, before its request does (a
/// rescale's deploy); an error fails the request.
pub(super) type Then = Box<dyn FnOnce(&Triggered) -> Result<(), String> + Send>;

/// Sends a trigger to the job and tracks its outcome as a request.
pub(super) fn start(
    state: &Arc<ApiState>,
    job: &str,
    savepoint: Option<Option<String>>,
    stop: Option<StopMode>,
) -> Result<Response, ApiError> {
    let kind = match (&savepoint, stop) {
        (_, Some(_)) => "stop",
        (Some(_), None) => "savepoint",
        (None, None) => "checkpoint",
    };
    start_then(state, job, savepoint, stop, kind, None)
}

/// [`start`], as a request of `kind`, with `then` run once the trigger
/// completed.
pub(super) fn start_then(
    state: &Arc<ApiState>,
    job: &str,
    savepoint: Option<Option<String>>,
    stop: Option<StopMode>,
    kind: &str,
    then: Option<Then>,
) -> Result<Response, ApiError> {
    let control = state.job(job)?;
    // Admitted, triggered and recorded under one lock: two triggers cannot
    // both take the last place.
    let (id, rx) = {
        let mut table = state.requests();
        table.admit(job)?;
        let rx = control
            .trigger(savepoint, stop)
            .map_err(ApiError::conflict)?;
        (table.begin(job, kind), rx)
    };
    let st = state.clone();
    let waiting = id.clone();
    tokio::task::spawn_blocking(move || {
        let outcome = rx
            .recv()
            .unwrap_or_else(|_| Err("the job stopped before the request completed".into()));
        let summary = |sp: &crate::checkpoint::Savepoint| {
            let location = st
                .registries()
                .iter()
                .find(|r| r.backend() == sp.backend)
                .map(|r| r.location())
                .unwrap_or_default();
            SavepointSummary::of(sp, location)
        };
        let (taken, error) = match outcome {
            Ok(t) => {
                let after = then.map(|f| f(&t)).unwrap_or(Ok(()));
                (
                    Some((t.checkpoint, t.savepoint.as_ref().map(summary))),
                    after.err(),
                )
            }
            Err(e) => (None, Some(e)),
        };
        st.requests()
            .finish(&waiting, Instant::now(), |status: &mut RequestStatus| {
                if let Some((checkpoint, savepoint)) = taken {
                    status.checkpoint = Some(checkpoint);
                    status.savepoint = savepoint;
                }
                match error {
                    None => status.status = "completed".into(),
                    Some(e) => {
                        status.status = "failed".into();
                        status.error = Some(e);
                    }
                }
            });
    });
    Ok((StatusCode::ACCEPTED, Json(Accepted { request_id: id })).into_response())
}

pub(super) async fn request_status(
    State(state): State<Arc<ApiState>>,
    Segment(id): Segment,
    _: StrictQuery<NoQuery>,
) -> Result<Json<RequestStatus>, ApiError> {
    Ok(Json(state.requests().get(&id, Instant::now())?))
}
