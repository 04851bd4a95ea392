//! `/v1/jobs`: the list, deployment (through the [`Deployer`]), a job's
//! status, and the triggers (checkpoint, savepoint, stop, rescale, cancel).
//!
//! [`Deployer`]: crate::api::Deployer

use super::requests::{start, start_then};
use crate::api::error::{ApiError, internal};
use crate::api::extract::{JobName, JsonObject, NoQuery, StrictQuery};
use crate::api::state::ApiState;
use crate::api::types::{
    Cancelled, DeployRequest, JobList, JobSummary, RescaleRequest, SavepointRequest,
};
use crate::exec::{JobState, JobStatus, StopMode};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    _: StrictQuery<NoQuery>,
) -> Result<Json<JobList>, ApiError> {
    // A node of a fleet lists the fleet's jobs (but only its own when
    // another node asks, gathering the list).
    let auth = if headers.contains_key(crate::api::FORWARDED) {
        None
    } else {
        headers.get(axum::http::header::AUTHORIZATION).cloned()
    };
    Ok(Json(job_list(&state, auth).await?))
}

/// Every job's status and summary: with `auth` (the caller's credentials),
/// in a fleet, every node's jobs; else this process's.
pub(super) async fn job_list(
    state: &Arc<ApiState>,
    auth: Option<axum::http::HeaderValue>,
) -> Result<JobList, ApiError> {
    if let Some(c) = state.cluster.get().cloned()
        && auth.is_some()
    {
        return crate::api::cluster::fleet_jobs(state, c, auth).await;
    }
    // Statuses first, summaries after: each takes the jobs lock.
    let jobs = state.controls().iter().map(|(_, c)| c.status()).collect();
    Ok(JobList {
        jobs,
        summaries: summaries(state),
    })
}

/// Per job this process runs: its widest vertex's parallelism and the
/// records its sources read per second (the last sample).
pub(crate) fn summaries(state: &ApiState) -> BTreeMap<String, JobSummary> {
    let mut out = BTreeMap::new();
    for (name, c) in state.controls() {
        let Some(plan) = c.plan() else { continue };
        let parallelism = plan
            .vertices
            .iter()
            .map(|v| v.parallelism)
            .max()
            .unwrap_or(0);
        let records_per_s = state.history.latest(&name).map(|s| {
            s.vertices
                .iter()
                .zip(&plan.vertices)
                .filter(|(_, v)| v.kind == "source")
                .map(|(s, _)| s.out_per_s)
                .sum::<f64>()
        });
        out.insert(
            name,
            JobSummary {
                parallelism,
                records_per_s,
            },
        );
    }
    out
}

pub(super) async fn job_status(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    _: StrictQuery<NoQuery>,
) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(state.job(&job)?.status()))
}

pub(super) async fn deploy(
    State(state): State<Arc<ApiState>>,
    _: StrictQuery<NoQuery>,
    JsonObject(req): JsonObject<DeployRequest>,
) -> Result<Response, ApiError> {
    let Some(d) = state.deployer.get().cloned() else {
        return Err(ApiError::conflict(
            "this wrun runs one job (`wrun run`); deploy jobs to a `wrun serve`",
        ));
    };
    if req.manifest.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the body needs `manifest`: the job.toml text",
        ));
    }
    let status = tokio::task::spawn_blocking(move || d.deploy(req))
        .await
        .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

pub(super) async fn trigger_checkpoint(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    _: StrictQuery<NoQuery>,
) -> Result<Response, ApiError> {
    start(&state, &job, None, None)
}

pub(super) async fn trigger_savepoint(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    _: StrictQuery<NoQuery>,
    JsonObject(body): JsonObject<SavepointRequest>,
) -> Result<Response, ApiError> {
    if let Some(n) = &body.name {
        crate::checkpoint::check_name(n).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    start(&state, &job, Some(body.name), body.stop)
}

/// Stops the job at a savepoint and deploys it again from there with
/// another default parallelism: one request, completed once the job is
/// deployed again.
pub(super) async fn rescale_job(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    _: StrictQuery<NoQuery>,
    JsonObject(body): JsonObject<RescaleRequest>,
) -> Result<Response, ApiError> {
    let Some(d) = state.deployer.get().cloned() else {
        return Err(ApiError::conflict(
            "this wrun runs one job (`wrun run`), which cannot redeploy itself: stop it with a savepoint (`wrun stop JOB --savepoint`) and run it again with `--from-savepoint ID --parallelism N`",
        ));
    };
    if body.parallelism == 0 {
        return Err(ApiError::bad_request("`parallelism` must be at least 1"));
    }
    state.job(&job)?;
    let (d2, j, n) = (d.clone(), job.clone(), body.parallelism);
    // Checked before the job stops: a rescale that cannot start again is
    // refused while the job still runs.
    let mut redeploy = tokio::task::spawn_blocking(move || d2.rescaled(&j, n))
        .await
        .map_err(internal)??;
    let name = job.clone();
    let then: super::requests::Then = Box::new(move |t| {
        let Some(sp) = &t.savepoint else {
            return Err("the stop took no savepoint".into());
        };
        d.settle(&name);
        redeploy.from_savepoint = Some(sp.id.clone());
        d.deploy(redeploy).map(|_| ()).map_err(|e| {
            format!(
                "job '{name}' stopped at savepoint {} but did not start again: {e}; deploy it with `wrun deploy JOB.toml --from-savepoint {} --parallelism {n}`",
                sp.id, sp.id
            )
        })
    });
    start_then(
        &state,
        &job,
        Some(None),
        Some(StopMode::Suspend),
        "rescale",
        Some(then),
    )
}

pub(super) async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    _: StrictQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let control = state.job(&job)?;
    if !matches!(
        control.status().state,
        JobState::Starting | JobState::Running | JobState::Restarting
    ) {
        return Err(ApiError::conflict(format!("job '{job}' is not running")));
    }
    control.cancel();
    Ok((StatusCode::ACCEPTED, Json(Cancelled { cancelled: job })).into_response())
}
