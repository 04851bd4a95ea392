//! What the dashboard watches: a job's graph (`/v1/jobs/{job}/graph`), its
//! vertices' metrics with the last minutes of history
//! (`/v1/jobs/{job}/metrics`), and a stream of server-sent events that
//! carries the job list, or one job's status and metrics, once a second
//! (`/v1/events`).

use crate::api::error::ApiError;
use crate::api::extract::{JobName, NoQuery, StrictQuery, check_job};
use crate::api::history::{PERIOD, Sample, SubtaskSample};
use crate::api::state::ApiState;
use crate::exec::JobControl;
use crate::exec::plan::JobPlan;
use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;

/// `GET /v1/jobs/{job}/graph`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GraphView<'a> {
    /// The job.
    pub job: &'a str,
    #[serde(flatten)]
    plan: &'a JobPlan,
    /// Per vertex, the state format its operator declared (null before a
    /// subtask opened, and for sources and sinks).
    pub state_formats: Vec<Option<String>>,
}

fn not_started(job: &str) -> ApiError {
    ApiError::conflict(format!(
        "job '{job}' has not started yet; its graph and metrics appear once it runs"
    ))
}

pub(super) async fn job_graph(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    _: StrictQuery<NoQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = state.job(&job)?;
    let plan = c.plan().ok_or_else(|| not_started(&job))?;
    let state_formats = match c.metrics() {
        Some(m) => m.vertices.iter().map(|v| v.state_format()).collect(),
        None => vec![None; plan.vertices.len()],
    };
    let view = GraphView {
        job: &job,
        plan: &plan,
        state_formats,
    };
    Ok(Json(
        serde_json::to_value(view).map_err(ApiError::internal)?,
    ))
}

/// One vertex now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VertexNow {
    /// Its name.
    pub name: String,
    /// `source`, `operator` or `sink`.
    pub kind: &'static str,
    /// Records received so far.
    pub records_in: u64,
    /// Records emitted so far.
    pub records_out: u64,
    /// Per subtask over the last second: busy, idle, backpressured shares
    /// and input queue fill.
    pub subtasks: Vec<SubtaskSample>,
    /// Records the system holds beyond what a source read, per split
    /// (Kafka partition, NATS subject filter), where the system says.
    pub lag: Vec<SplitLag>,
}

/// A split's lag.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SplitLag {
    /// The split.
    pub split: String,
    /// Records behind.
    pub records: u64,
}

/// `GET /v1/jobs/{job}/metrics`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobMetricsView {
    /// The job.
    pub job: String,
    /// Per vertex, in graph order.
    pub vertices: Vec<VertexNow>,
    /// One sample a second of the last minutes (rates and shares per
    /// vertex, in graph order), oldest first.
    pub history: Vec<Sample>,
}

/// `?since-ms=`: only history after then.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct Since {
    since_ms: Option<u64>,
}

fn metrics_of(
    state: &ApiState,
    job: &str,
    c: &JobControl,
    since_ms: Option<u64>,
) -> Result<JobMetricsView, ApiError> {
    let m = c.metrics().ok_or_else(|| not_started(job))?;
    let (history, mut subtasks) = state.history.of(job, since_ms);
    let vertices = m
        .vertices
        .iter()
        .enumerate()
        .map(|(i, v)| VertexNow {
            name: v.name.clone(),
            kind: v.kind,
            records_in: v.records_in(),
            records_out: v.records_out(),
            subtasks: subtasks.get_mut(i).map(std::mem::take).unwrap_or_default(),
            lag: v
                .lag()
                .into_iter()
                .map(|(split, records)| SplitLag { split, records })
                .collect(),
        })
        .collect();
    Ok(JobMetricsView {
        job: job.to_string(),
        vertices,
        history,
    })
}

pub(super) async fn job_metrics(
    State(state): State<Arc<ApiState>>,
    JobName(job): JobName,
    StrictQuery(q): StrictQuery<Since>,
) -> Result<Json<JobMetricsView>, ApiError> {
    let c = state.job(&job)?;
    Ok(Json(metrics_of(&state, &job, &c, q.since_ms)?))
}

/// `?job=`: one job's events rather than the list's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct EventsQuery {
    job: Option<String>,
}

/// What one event of a job's stream carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct JobEvent {
    status: crate::exec::JobStatus,
    /// Absent until the job runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<JobMetricsView>,
}

/// Job `job`'s event: from this process when it runs the job here (or,
/// outside a fleet, ran it last), else from the fleet.
async fn job_event(
    state: &Arc<ApiState>,
    job: &str,
    since: u64,
    auth: Option<axum::http::HeaderValue>,
) -> Result<serde_json::Value, ApiError> {
    let local = state.job(job);
    let here = crate::api::cluster::runs_here(state, job);
    if !here
        && let Some(v) = crate::api::cluster::job_event_elsewhere(state, job, since, auth).await?
    {
        return Ok(v);
    }
    let c = local?;
    let ev = JobEvent {
        status: c.status(),
        metrics: metrics_of(state, job, &c, Some(since)).ok(),
    };
    Ok(serde_json::to_value(ev).unwrap_or_default())
}

/// One event of the stream, now.
async fn event_now(
    state: &Arc<ApiState>,
    job: Option<&str>,
    auth: Option<axum::http::HeaderValue>,
) -> Event {
    let data = match job {
        None => {
            let list = super::jobs::job_list(state, auth).await;
            list.map(|l| ("jobs", serde_json::to_value(l).unwrap_or_default()))
        }
        Some(job) => {
            // Only the newest sample: a client keeps its own history.
            let since = crate::time::unix_ms().saturating_sub(PERIOD.as_millis() as u64 * 2);
            job_event(state, job, since, auth).await.map(|v| ("job", v))
        }
    };
    match data {
        Ok((name, v)) => Event::default().event(name).data(v.to_string()),
        Err(e) => Event::default()
            .event("error")
            .data(serde_json::json!({ "error": e.to_string() }).to_string()),
    }
}

pub(super) async fn events(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    StrictQuery(q): StrictQuery<EventsQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).cloned();
    if let Some(j) = &q.job {
        check_job(j)?;
        // An unknown job is refused at once (in a fleet, one no node has).
        job_event(&state, j, crate::time::unix_ms(), auth.clone()).await?;
    }
    let closing = state.closing.subscribe();
    let stream = futures_util::stream::unfold(
        (state, q.job, closing, true),
        move |(state, job, mut closing, first)| {
            let auth = auth.clone();
            async move {
                if !first {
                    tokio::select! {
                        _ = tokio::time::sleep(PERIOD) => {}
                        _ = closing.changed() => return None,
                    }
                }
                if *closing.borrow() {
                    return None;
                }
                let ev = event_now(&state, job.as_deref(), auth).await;
                Some((Ok(ev), (state, job, closing, false)))
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
