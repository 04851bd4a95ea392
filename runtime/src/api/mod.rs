//! The HTTP API (axum, JSON) through which commands reach running jobs.
//! `wrun run` serves it on loopback for its one job (embedded mode);
//! `wrun serve` serves the same routes for many jobs, plus deployment
//! (through a [`Deployer`]).
//!
//! Every request needs `Authorization: Bearer <token>`; the token lives in
//! the data directory (`api-token`, mode 0600). Long operations
//! (checkpoints, savepoints, stops) answer `202 Accepted` with a request
//! ID to poll, as in Flink's REST API. Errors are `{"error": "..."}`.
//! Routes are listed in docs/api.md.

mod client;

pub use client::{Client, Endpoint};

use crate::checkpoint::{CheckpointStore, Savepoint, SavepointStore};
use crate::exec::{JobControl, JobState, StopMode, Triggered};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// An API error: a status and a message a person can act on. A message
/// made by [`ApiError::chain`] carries its causes too; they are answered
/// apart, as `causes`, so a client can print the chain a line each.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

/// Between a message and each of its causes inside an [`ApiError`].
const CAUSE: &str = "\ncaused by: ";

impl ApiError {
    /// An error with the whole cause chain of `e`.
    pub fn chain(status: StatusCode, e: &anyhow::Error) -> ApiError {
        let all: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        ApiError(status, all.join(CAUSE))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut parts = self.1.split(CAUSE);
        let error = parts.next().unwrap_or_default();
        let causes: Vec<&str> = parts.collect();
        let body = if causes.is_empty() {
            json!({ "error": error })
        } else {
            json!({ "error": error, "causes": causes })
        };
        let mut r = (self.0, Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

/// Where an asynchronous request is.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RequestStatus {
    /// The request ID.
    pub id: String,
    /// The job.
    pub job: String,
    /// `checkpoint`, `savepoint` or `stop`.
    pub kind: String,
    /// `in-progress`, `completed` or `failed`.
    pub status: String,
    /// The checkpoint taken, once completed.
    pub checkpoint: Option<u64>,
    /// The savepoint taken, once completed.
    pub savepoint: Option<SavepointSummary>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A savepoint as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointSummary {
    /// Its ID.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// The job.
    pub job: String,
    /// The checkpoint it pins.
    pub checkpoint: u64,
    /// `memory` or `filesystem`.
    pub backend: String,
    /// When it completed (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether the job stopped at it.
    pub stopped: bool,
    /// Bytes of state it references.
    pub bytes: u64,
    /// Where it is stored.
    pub location: String,
}

impl SavepointSummary {
    /// The summary of `sp`, stored at `location`.
    pub fn of(sp: &Savepoint, location: String) -> SavepointSummary {
        SavepointSummary {
            id: sp.id.clone(),
            name: sp.name.clone(),
            job: sp.job().to_string(),
            checkpoint: sp.checkpoint.id.0,
            backend: sp.backend.to_string(),
            created_at_ms: sp.created_at_ms,
            stopped: sp.stopped,
            bytes: sp.checkpoint.full_bytes,
            location,
        }
    }
}

/// The body of `POST /v1/jobs`: a manifest to deploy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeployRequest {
    /// The job.toml text.
    pub manifest: String,
    /// Where it came from, for error messages.
    #[serde(default)]
    pub manifest_path: Option<String>,
    /// The directory relative paths in the manifest (file sources and
    /// sinks) are resolved against; absolute.
    #[serde(default)]
    pub base_dir: Option<PathBuf>,
    /// Default parallelism of operators that do not set their own.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Digests (`blake3:<hex>`) of operators whose manifest `component` is
    /// a path, by operator name: the CLI uploads the files first.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// Start from this savepoint (ID, name or exported directory).
    #[serde(default)]
    pub from_savepoint: Option<String>,
    /// With `from_savepoint`: drop state of operators the job lacks.
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

/// Starts jobs: what `wrun serve` plugs into the API.
pub trait Deployer: Send + Sync {
    /// Validates and starts a job; returns its status.
    fn deploy(&self, req: DeployRequest) -> Result<crate::exec::JobStatus, ApiError>;
}

/// Module uploads, listing and inspection.
pub struct Modules {
    /// The store.
    pub store: crate::module::ModuleStore,
    /// Validates and compiles uploads.
    pub sandbox: Arc<crate::sandbox::Sandbox>,
    /// Largest module accepted, in bytes.
    pub max_bytes: usize,
}

/// What the API serves: the jobs of this process, the checkpoint store and
/// the savepoint registries.
pub struct ApiState {
    token: String,
    mode: &'static str,
    jobs: Mutex<BTreeMap<String, Arc<JobControl>>>,
    store: Arc<dyn CheckpointStore>,
    registries: crate::datadir::Registries,
    modules: Option<Modules>,
    deployer: std::sync::OnceLock<Arc<dyn Deployer>>,
    requests: Mutex<HashMap<String, RequestStatus>>,
    /// Requests whose outcome no client has read yet.
    undelivered: Mutex<std::collections::HashSet<String>>,
    next_request: AtomicU64,
}

impl ApiState {
    /// A state with no jobs yet; `mode` is `embedded` or `serve`.
    pub fn new(
        token: String,
        mode: &'static str,
        store: Arc<dyn CheckpointStore>,
        registries: crate::datadir::Registries,
        modules: Option<Modules>,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            token,
            mode,
            jobs: Mutex::new(BTreeMap::new()),
            store,
            registries,
            modules,
            deployer: std::sync::OnceLock::new(),
            requests: Mutex::new(HashMap::new()),
            undelivered: Mutex::new(Default::default()),
            next_request: AtomicU64::new(1),
        })
    }

    /// Makes a job reachable.
    pub fn add_job(&self, name: &str, control: Arc<JobControl>) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), control);
    }

    /// Lets `POST /v1/jobs` deploy through `d`.
    pub fn set_deployer(&self, d: Arc<dyn Deployer>) {
        let _ = self.deployer.set(d);
    }

    /// Every savepoint registry now.
    pub fn registries(&self) -> Vec<Arc<dyn SavepointStore>> {
        self.registries.all()
    }

    /// A job's control, if one by that name was ever added.
    pub fn control(&self, name: &str) -> Option<Arc<JobControl>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn job(&self, name: &str) -> Result<Arc<JobControl>, ApiError> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(name).cloned().ok_or_else(|| {
            not_found(format!(
                "no job '{name}' runs here; running: {}",
                if jobs.is_empty() {
                    "none".to_string()
                } else {
                    jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })
    }

    fn all_savepoints(&self) -> Result<Vec<(Savepoint, String)>, ApiError> {
        let mut out = Vec::new();
        for r in &self.registries() {
            for sp in r.list().map_err(internal)? {
                out.push((sp, r.location()));
            }
        }
        Ok(out)
    }

    /// Waits (up to `timeout`) until every request's outcome has been read
    /// by a client: a `wrun run` whose job stopped keeps answering until
    /// the `wrun stop` that stopped it has its savepoint.
    pub fn wait_delivered(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline
            && !self
                .undelivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn set_request(&self, status: RequestStatus) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(status.id.clone(), status);
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The routes, with authentication and the body limits.
pub fn router(state: Arc<ApiState>) -> Router {
    let module_limit = state.modules.as_ref().map(|m| m.max_bytes).unwrap_or(0);
    Router::new()
        .route("/v1/info", get(info))
        .route("/metrics", get(metrics))
        .route(
            "/v1/modules",
            get(list_modules)
                .post(push_module)
                .layer(DefaultBodyLimit::max(
                    // Room for the request around the module; the exact limit
                    // is checked on the bytes.
                    module_limit.saturating_add(4096),
                )),
        )
        .route("/v1/modules/{module}", get(get_module))
        .route("/v1/jobs", get(list_jobs).post(deploy))
        .route("/v1/savepoint-imports", post(import_savepoint))
        .route("/v1/jobs/{job}", get(job_status))
        .route("/v1/jobs/{job}/checkpoints", post(trigger_checkpoint))
        .route("/v1/jobs/{job}/savepoints", post(trigger_savepoint))
        .route("/v1/jobs/{job}/cancel", post(cancel_job))
        .route("/v1/requests/{id}", get(request_status))
        .route("/v1/checkpoints", get(list_checkpoints))
        .route("/v1/savepoints", get(list_savepoints))
        .route(
            "/v1/savepoints/{id}",
            get(get_savepoint).delete(dispose_savepoint),
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
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token; use the one in <data-dir>/api-token (or WRUN_TOKEN)".into(),
        )
        .into_response(),
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`; the token is in <data-dir>/api-token".into(),
        )
        .into_response(),
    }
}

async fn info(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": state.mode,
        "wit": format!("wrun:operator@{}.x", crate::sandbox::SUPPORTED_WIT),
        "max-module-bytes": state.modules.as_ref().map(|m| m.max_bytes),
        "pid": std::process::id(),
    }))
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let jobs: Vec<_> = state
        .jobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(|c| c.metrics())
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::exec::metrics::render(&jobs),
    )
        .into_response()
}

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
struct PushQuery {
    name: Option<String>,
    version: Option<String>,
}

async fn push_module(
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

async fn list_modules(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let list = modules(&state)?.store.list().map_err(module_error)?;
    Ok(Json(json!({ "modules": list })))
}

async fn get_module(
    State(state): State<Arc<ApiState>>,
    Path(spec): Path<String>,
) -> Result<Json<crate::module::ModuleInfo>, ApiError> {
    let m = modules(&state)?;
    let hex = m.store.lookup(&spec).map_err(module_error)?;
    Ok(Json(m.store.info(&hex).map_err(module_error)?))
}

async fn deploy(
    State(state): State<Arc<ApiState>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let Some(d) = state.deployer.get().cloned() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this wrun runs one job (`wrun run`); deploy jobs to a `wrun serve`".into(),
        ));
    };
    let req: DeployRequest = json_body(body)?;
    if req.manifest.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body needs `manifest`: the job.toml text".into(),
        ));
    }
    let status = tokio::task::spawn_blocking(move || d.deploy(req))
        .await
        .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ImportBody {
    dir: PathBuf,
    #[serde(default)]
    name: Option<String>,
}

async fn import_savepoint(
    State(state): State<Arc<ApiState>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let b: ImportBody = json_body(body)?;
    if b.dir.as_os_str().is_empty()
        || !b.dir.is_absolute()
        || b.dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "`dir` must be the absolute path of an exported savepoint directory, without `..`"
                .into(),
        ));
    }
    if let Some(n) = &b.name {
        crate::checkpoint::check_name(n)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    if !b.dir.join(crate::checkpoint::EXPORT_RECORD).is_file() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{} holds no exported savepoint (no {}); `wrun savepoint export` makes one",
                b.dir.display(),
                crate::checkpoint::EXPORT_RECORD
            ),
        ));
    }
    let registry = state
        .registries()
        .into_iter()
        .find(|r| r.backend() == crate::checkpoint::SavepointBackend::Filesystem)
        .ok_or_else(|| internal("no filesystem savepoint registry"))?;
    let st = state.clone();
    let sp = tokio::task::spawn_blocking(move || {
        crate::checkpoint::import(&b.dir, st.store.as_ref(), registry.as_ref(), b.name)
            .map(|sp| (sp, registry.location()))
            .map_err(|e| {
                use crate::checkpoint::SavepointError as S;
                let status = match &e {
                    S::NameTaken(_) => StatusCode::CONFLICT,
                    S::Io { .. } | S::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError(
                    status,
                    format!("cannot import the savepoint in {}: {e}", b.dir.display()),
                )
            })
    })
    .await
    .map_err(internal)??;
    Ok((StatusCode::CREATED, Json(SavepointSummary::of(&sp.0, sp.1))).into_response())
}

async fn list_jobs(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let jobs = state.jobs.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({ "jobs": jobs.values().map(|c| c.status()).collect::<Vec<_>>() }))
}

async fn job_status(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(state.job(&job)?.status()).map_err(internal)?,
    ))
}

/// The body of `POST /v1/jobs/{job}/savepoints`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SavepointBody {
    /// A name for the savepoint.
    #[serde(default)]
    pub name: Option<String>,
    /// Stop the job at the savepoint.
    #[serde(default)]
    pub stop: Option<StopMode>,
}

async fn trigger_checkpoint(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    start(&state, &job, None, None)
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

async fn trigger_savepoint(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body: SavepointBody = json_body(body)?;
    if let Some(n) = &body.name {
        crate::checkpoint::check_name(n)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    start(&state, &job, Some(body.name), body.stop)
}

/// Sends a trigger to the job and tracks its outcome as a request.
fn start(
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
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": id }))).into_response())
}

async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    let control = state.job(&job)?;
    if !matches!(
        control.status().state,
        JobState::Starting | JobState::Running | JobState::Restarting
    ) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("job '{job}' is not running"),
        ));
    }
    control.cancel();
    Ok((StatusCode::ACCEPTED, Json(json!({ "cancelled": job }))).into_response())
}

async fn request_status(
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

#[derive(Debug, Deserialize)]
struct JobQuery {
    job: Option<String>,
}

/// The checkpoints of `job` (or of every job) in `store`, as the API lists
/// them: `{"job", "id", "triggered-at-ms", "duration-ms", "full-bytes",
/// "new-bytes"}`, or `{"job", "id", "error"}` for an unreadable manifest.
pub fn checkpoint_rows(
    store: &dyn CheckpointStore,
    job: Option<String>,
) -> Result<Vec<Value>, crate::checkpoint::StoreError> {
    let jobs = match job {
        Some(j) => vec![j],
        None => store.list_jobs()?,
    };
    let mut out = Vec::new();
    for job in jobs {
        for id in store.list_checkpoints(&job)? {
            match store.get_manifest(&job, id) {
                Ok(m) => out.push(json!({
                    "job": job, "id": id.0, "triggered-at-ms": m.triggered_at_ms,
                    "duration-ms": m.duration_ms, "full-bytes": m.full_bytes, "new-bytes": m.new_bytes,
                })),
                Err(e) => out.push(json!({ "job": job, "id": id.0, "error": e.to_string() })),
            }
        }
    }
    Ok(out)
}

async fn list_checkpoints(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<JobQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = checkpoint_rows(state.store.as_ref(), q.job).map_err(internal)?;
    Ok(Json(json!({ "checkpoints": rows })))
}

async fn list_savepoints(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let all: Vec<SavepointSummary> = state
        .all_savepoints()?
        .into_iter()
        .map(|(sp, loc)| SavepointSummary::of(&sp, loc))
        .collect();
    Ok(Json(json!({ "savepoints": all })))
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
    Err(not_found(format!(
        "no savepoint '{id}' here; GET /v1/savepoints lists them"
    )))
}

async fn get_savepoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Savepoint>, ApiError> {
    Ok(Json(find_savepoint(&state, &id)?.0))
}

async fn dispose_savepoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (sp, registry) = find_savepoint(&state, &id)?;
    // The collector waits for checkpoints being written: off the API's
    // thread.
    let st = state.clone();
    let (sp, freed) = tokio::task::spawn_blocking(move || {
        crate::checkpoint::dispose(st.store.as_ref(), registry.as_ref(), &sp.id)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(Json(
        json!({ "disposed": sp.id, "freed-chunks": freed.len() }),
    ))
}

/// A running API server; dropping it stops the server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the API on `listen` from a thread of its own (the job's subtasks
/// are OS threads; the API must never wait behind them).
pub fn serve(listen: SocketAddr, state: Arc<ApiState>) -> anyhow::Result<Server> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen} for the control API: {e}; choose another address with --listen")
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("wrun api".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("control API: {e}");
                        return;
                    }
                };
                let app = router(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        })?;
    Ok(Server {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// The API token of a data directory, created (mode 0600) on first use.
pub fn token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("api-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read the API token {}: {e}", path.display()),
    }
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom for an API token: {e}"))?;
    let token = blake3::hash(&seed).to_hex().to_string();
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = data_dir.join(format!(".api-token.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    f.sync_all()?;
    drop(f);
    // Two processes starting at once: the first link wins, both read it.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create the API token {}: {e}", path.display()),
    }
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

/// The file through which commands find the API of a running wrun.
pub fn endpoint_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("api.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), MAX_BODY_BYTES)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_error_with_causes_answers_them_apart() {
        let e = anyhow::anyhow!("the chunk is corrupt")
            .context("cannot load module blake3:ab")
            .context("cannot deploy job 'counts'");
        let (status, v) = body(ApiError::chain(StatusCode::BAD_REQUEST, &e)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "cannot deploy job 'counts'");
        assert_eq!(
            v["causes"],
            json!(["cannot load module blake3:ab", "the chunk is corrupt"])
        );
        let (_, v) = body(not_found("no job 'x'".into())).await;
        assert_eq!(v, json!({ "error": "no job 'x'" }));
    }
}
