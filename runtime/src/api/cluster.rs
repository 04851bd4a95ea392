//! The API in a fleet: any node answers. A request about a job another
//! node runs is forwarded to that node (once: a forwarded request carries
//! [`FORWARDED`] and is never forwarded again); the job list gathers every
//! node's; a request ID this node does not know is asked of the others;
//! a job's event stream on a node that does not run it asks the owner each
//! second (so it follows the job when it moves); `/v1/nodes` answers from
//! etcd. Every node serves the fleet's one token,
//! so a forwarded request passes the owner's check as it passed this one's.

use super::error::{ApiError, ErrorKind, internal};
use super::extract::{NoQuery, Segment, StrictQuery};
use super::state::ApiState;
use super::types::JobList;
use crate::exec::{JobState, JobStatus};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The header a forwarded request carries.
pub const FORWARDED: &str = "x-wrun-forwarded";

/// What the API needs of the fleet (answers come from etcd; the calls
/// block, so they run on the blocking pool).
pub trait Cluster: Send + Sync {
    /// This node's ID.
    fn node(&self) -> String;
    /// The node that runs `job` and its API, when a live node does.
    fn owner(&self, job: &str) -> Result<Option<(String, String)>, String>;
    /// The other live nodes and their APIs.
    fn peers(&self) -> Result<Vec<(String, String)>, String>;
    /// The fleet's jobs as their records say (those no node runs:
    /// waiting for a node, or ended), by name.
    fn recorded(&self) -> Result<Vec<JobStatus>, String>;
    /// Cancels a job that no node runs now. `Ok(false)`: a node has it.
    fn cancel_unplaced(&self, job: &str) -> Result<bool, String>;
    /// The live nodes.
    fn nodes(&self) -> Result<Vec<crate::fleet::NodeView>, String>;
    /// Marks a node draining; `Ok(false)`: no such live node.
    fn drain(&self, node: &str) -> Result<bool, String>;
}

fn unavailable(e: String) -> ApiError {
    ApiError::new(ErrorKind::Unavailable, format!("the fleet: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(unavailable)
}

/// Whether this node runs `job` now.
/// Whether this process runs `job` now. In a fleet, a job this node was
/// given carries its node until the node gives it up (or loses it).
pub(super) fn runs_here(state: &ApiState, job: &str) -> bool {
    state.control(job).is_some_and(|c| {
        let s = c.status();
        matches!(
            s.state,
            JobState::Starting | JobState::Running | JobState::Restarting
        ) && (state.cluster.get().is_none() || s.node.is_some())
    })
}

/// Forwards requests about jobs other nodes run (see the module's docs).
pub(super) async fn forward(
    State(state): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.get().cloned() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "jobs", job, rest @ ..] => {
            let job = job.to_string();
            if runs_here(&state, &job) {
                return next.run(req).await;
            }
            let c = cluster.clone();
            let j = job.clone();
            let owner = match blocking(move || c.owner(&j)).await {
                Ok(o) => o,
                Err(e) => return e.into_response(),
            };
            match owner {
                Some((node, api)) if node != cluster.node() => proxy(&api, &node, req).await,
                // Placed here and not started yet (or no longer running):
                // its record answers.
                _ => unplaced(cluster, &job, rest, req, next).await,
            }
        }
        ["v1", "requests", id] => {
            let known = state.requests().get(id, std::time::Instant::now()).is_ok();
            if known {
                return next.run(req).await;
            }
            let c = cluster.clone();
            let peers = match blocking(move || c.peers()).await {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
                .await
                .unwrap_or_default();
            for (node, api) in peers {
                let r = send(&api, &node, &parts, body.clone()).await;
                if r.status() != StatusCode::NOT_FOUND {
                    return r;
                }
            }
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        _ => next.run(req).await,
    }
}

/// A request about a job no live node runs: its status and a cancel answer
/// from its record; anything else is refused with what to do.
async fn unplaced(
    cluster: Arc<dyn Cluster>,
    job: &str,
    rest: &[&str],
    req: Request,
    next: Next,
) -> Response {
    let c = cluster.clone();
    let recorded = match blocking(move || c.recorded()).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(status) = recorded.into_iter().find(|s| s.name == job) else {
        return next.run(req).await;
    };
    match rest {
        [] => Json(status).into_response(),
        ["cancel"] if status.state == JobState::Starting => {
            let j = job.to_string();
            match blocking(move || cluster.cancel_unplaced(&j)).await {
                Ok(true) => {
                    let mut s = status;
                    s.state = JobState::Cancelled;
                    Json(s).into_response()
                }
                Ok(false) => ApiError::conflict(format!(
                    "job '{job}' was just placed on a node; cancel it again"
                ))
                .into_response(),
                Err(e) => e.into_response(),
            }
        }
        _ => ApiError::conflict(format!(
            "job '{job}' runs on no node now ({}); wait until the fleet places it (`wrun job list` shows where)",
            serde_json::to_value(status.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ))
        .into_response(),
    }
}

/// Forwards `req` to node `node` at `api`.
async fn proxy(api: &str, node: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("cannot read the body: {e}")).into_response();
        }
    };
    send(api, node, &parts, body).await
}

/// Sends one request to another node and returns its answer as is.
async fn send(api: &str, node: &str, parts: &axum::http::request::Parts, body: Bytes) -> Response {
    let url = format!(
        "{}{}",
        api.trim_end_matches('/'),
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = parts.method.clone();
    let auth = parts.headers.get(header::AUTHORIZATION).cloned();
    let ctype = parts.headers.get(header::CONTENT_TYPE).cloned();
    let node = node.to_string();
    let r = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            // What is forwarded answers at once (triggers answer 202 and
            // are polled); a node that hangs (paused, cut off) must not
            // hold the caller longer than it takes the fleet to move on.
            .timeout_global(Some(FORWARD_TIMEOUT))
            .build()
            .into();
        let mut b = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url)
            .header(FORWARDED, "1");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION.as_str(), a.as_bytes());
        }
        if let Some(c) = ctype {
            b = b.header(header::CONTENT_TYPE.as_str(), c.as_bytes());
        }
        let request = b.body(body.to_vec()).map_err(|e| e.to_string())?;
        let mut resp = agent.run(request).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, ctype, bytes))
    })
    .await;
    match r {
        Ok(Ok((status, ctype, bytes))) => {
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                bytes,
            )
                .into_response();
            if let Some(c) = ctype.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, c);
            }
            resp
        }
        Ok(Err(e)) => ApiError::new(
            ErrorKind::Unavailable,
            format!(
                "node '{node}' runs the job but did not answer ({e}); try again, or ask that node"
            ),
        )
        .into_response(),
        Err(e) => internal(e).into_response(),
    }
}

/// `GET path` of node `node` at `api`, forwarded (never forwarded again),
/// as JSON; 5 seconds at most.
fn get_forwarded(
    api: &str,
    path: &str,
    auth: Option<&HeaderValue>,
) -> Result<serde_json::Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent
        .get(format!("{}{path}", api.trim_end_matches('/')))
        .header(FORWARDED, "1");
    if let Some(a) = auth {
        r = r.header(
            header::AUTHORIZATION.as_str(),
            a.to_str().unwrap_or_default(),
        );
    }
    r.call()
        .map_err(|e| e.to_string())?
        .body_mut()
        .read_json()
        .map_err(|e| e.to_string())
}

/// Job `job` as its event on the event stream shows it (`{"status",
/// "metrics"?}`), when this node does not run it: from the node that does
/// (its status, and its metrics since `since_ms`), else from its record.
/// `Ok(None)`: not in a fleet, or the fleet has no such job.
pub(super) async fn job_event_elsewhere(
    state: &Arc<ApiState>,
    job: &str,
    since_ms: u64,
    auth: Option<HeaderValue>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let Some(cluster) = state.cluster.get().cloned() else {
        return Ok(None);
    };
    let c = cluster.clone();
    let j = job.to_string();
    match blocking(move || c.owner(&j)).await? {
        Some((node, api)) if node != cluster.node() => {
            let job = job.to_string();
            let got = tokio::task::spawn_blocking(move || {
                let status = get_forwarded(&api, &format!("/v1/jobs/{job}"), auth.as_ref())?;
                // None until the job has started there.
                let metrics = get_forwarded(
                    &api,
                    &format!("/v1/jobs/{job}/metrics?since-ms={since_ms}"),
                    auth.as_ref(),
                )
                .ok();
                Ok::<_, String>(match metrics {
                    Some(m) => serde_json::json!({ "status": status, "metrics": m }),
                    None => serde_json::json!({ "status": status }),
                })
            })
            .await
            .map_err(internal)?
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Unavailable,
                    format!("node '{node}' runs the job but did not answer ({e})"),
                )
            })?;
            Ok(Some(got))
        }
        _ => {
            let recorded = blocking(move || cluster.recorded()).await?;
            Ok(recorded
                .into_iter()
                .find(|s| s.name == job)
                .map(|s| serde_json::json!({ "status": s })))
        }
    }
}

/// `GET /v1/jobs` in a fleet: the jobs this node runs, those every other
/// node runs (their statuses and summaries as those nodes give them), and
/// those that run nowhere (from their records).
pub(super) async fn fleet_jobs(
    state: &Arc<ApiState>,
    cluster: Arc<dyn Cluster>,
    auth: Option<HeaderValue>,
) -> Result<JobList, ApiError> {
    let mut all: BTreeMap<String, JobStatus> = Default::default();
    let mut summaries = BTreeMap::new();
    let c = cluster.clone();
    let (peers, recorded) = blocking(move || Ok((c.peers()?, c.recorded()?))).await?;
    for s in recorded {
        all.insert(s.name.clone(), s);
    }
    for (node, api) in peers {
        let auth = auth.clone();
        let got =
            tokio::task::spawn_blocking(move || get_forwarded(&api, "/v1/jobs", auth.as_ref()))
                .await
                .map_err(internal)?
                .and_then(|v| serde_json::from_value::<JobList>(v).map_err(|e| e.to_string()));
        match got {
            Ok(list) => {
                for s in list.jobs {
                    let active = matches!(
                        s.state,
                        JobState::Starting | JobState::Running | JobState::Restarting
                    );
                    // Only a job its record knows: not one the node ran
                    // before it was deployed again elsewhere.
                    if active && all.contains_key(&s.name) {
                        if let Some(sum) = list.summaries.get(&s.name) {
                            summaries.insert(s.name.clone(), sum.clone());
                        }
                        let mut s = s;
                        s.node = Some(node.clone());
                        all.insert(s.name.clone(), s);
                    }
                }
            }
            Err(e) => tracing::warn!(node = %node, "job list: the node did not answer: {e}"),
        }
    }
    let me = cluster.node();
    let jobs = state.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mine = super::routes::summaries(state);
    for c in jobs.values() {
        let s = c.status();
        if runs_here(state, &s.name) || !all.contains_key(&s.name) {
            let mut s = s;
            s.node.get_or_insert(me.clone());
            if let Some(sum) = mine.get(&s.name) {
                summaries.insert(s.name.clone(), sum.clone());
            }
            all.insert(s.name.clone(), s);
        }
    }
    Ok(JobList {
        jobs: all.into_values().collect(),
        summaries,
    })
}

/// `GET /v1/nodes`.
#[derive(Debug, Serialize)]
pub struct NodeList {
    /// The live nodes.
    pub nodes: Vec<crate::fleet::NodeView>,
}

fn cluster_of(state: &ApiState) -> Result<Arc<dyn Cluster>, ApiError> {
    state.cluster.get().cloned().ok_or_else(|| {
        ApiError::conflict(
            "this wrun is not in a fleet; start wrun serve with --cluster etcd://HOST:PORT (docs/fleet.md)",
        )
    })
}

pub(super) async fn list_nodes(
    State(state): State<Arc<ApiState>>,
    _: StrictQuery<NoQuery>,
) -> Result<Json<NodeList>, ApiError> {
    let c = cluster_of(&state)?;
    let nodes = blocking(move || c.nodes()).await?;
    Ok(Json(NodeList { nodes }))
}

/// `POST /v1/nodes/{node}/drain`.
#[derive(Debug, Serialize)]
pub struct Draining {
    /// The node.
    pub node: String,
    /// The jobs it is moving.
    pub jobs: Vec<String>,
}

pub(super) async fn drain_node(
    State(state): State<Arc<ApiState>>,
    Segment(node): Segment,
    _: StrictQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let c = cluster_of(&state)?;
    let n = node.clone();
    let (found, nodes) = blocking(move || Ok((c.drain(&n)?, c.nodes()?))).await?;
    if !found {
        return Err(ApiError::not_found(format!(
            "no live node '{node}' in the fleet; `wrun node list` shows them"
        )));
    }
    let jobs = nodes
        .into_iter()
        .find(|n| n.id == node)
        .map(|n| n.jobs)
        .unwrap_or_default();
    Ok((StatusCode::ACCEPTED, Json(Draining { node, jobs })).into_response())
}
