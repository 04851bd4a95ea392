//! What the API serves: the jobs of this process, the checkpoint store,
//! the savepoint registries, the module store and the requests in flight.

use super::error::{ApiError, internal};
use super::requests::{KEEP_FINISHED, MAX_FINISHED, RequestTable};
use super::types::DeployRequest;
use crate::checkpoint::{CheckpointStore, Savepoint, SavepointStore};
use crate::exec::JobControl;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Starts jobs: what `wrun serve` plugs into the API.
pub trait Deployer: Send + Sync {
    /// Validates and starts a job; returns its status.
    fn deploy(&self, req: DeployRequest) -> Result<crate::exec::JobStatus, ApiError>;
    /// The deploy that runs job `job` again with default parallelism
    /// `parallelism`: its record's manifest and pinned modules, checked,
    /// not started. Refused when the job does not run, or when no vertex
    /// would change.
    fn rescaled(&self, job: &str, parallelism: u32) -> Result<DeployRequest, ApiError>;
    /// Waits until this process's run of `job` has ended and how it ended
    /// is recorded (a new deploy of the name may follow).
    fn settle(&self, job: &str);
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
    pub(super) token: String,
    pub(super) mode: &'static str,
    pub(super) jobs: Mutex<BTreeMap<String, Arc<JobControl>>>,
    pub(super) store: Arc<CheckpointStore>,
    pub(super) registries: crate::datadir::Registries,
    pub(super) modules: Option<Modules>,
    pub(super) deployer: std::sync::OnceLock<Arc<dyn Deployer>>,
    pub(super) requests: Mutex<RequestTable>,
    /// The fleet, when this process is a node of one.
    pub(super) cluster: std::sync::OnceLock<Arc<dyn super::Cluster>>,
    /// The last minutes of each job's vertex metrics.
    pub(super) history: super::history::History,
    /// `true` once the server stops: event streams end.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
}

impl ApiState {
    /// A state with no jobs yet; `mode` is `embedded` or `serve`.
    pub fn new(
        token: String,
        mode: &'static str,
        store: Arc<CheckpointStore>,
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
            requests: Mutex::new(RequestTable::new(MAX_FINISHED, KEEP_FINISHED)),
            cluster: std::sync::OnceLock::new(),
            history: Default::default(),
            closing: tokio::sync::watch::Sender::new(false),
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

    /// Answers as a node of a fleet through `c` (forwarding, the job list,
    /// `/v1/nodes`).
    pub fn set_cluster(&self, c: Arc<dyn super::Cluster>) {
        self.requests().prefix = format!("req-{}-", c.node());
        let _ = self.cluster.set(c);
    }

    /// Every savepoint registry now.
    pub fn registries(&self) -> Vec<Arc<dyn SavepointStore>> {
        self.registries.all()
    }

    /// Every job's control, by name.
    pub(super) fn controls(&self) -> Vec<(String, Arc<JobControl>)> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter().map(|(n, c)| (n.clone(), c.clone())).collect()
    }

    /// A job's control, if one by that name was ever added.
    pub fn control(&self, name: &str) -> Option<Arc<JobControl>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub(super) fn job(&self, name: &str) -> Result<Arc<JobControl>, ApiError> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(name).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no job '{name}' runs here; running: {}",
                if jobs.is_empty() {
                    "none".to_string()
                } else {
                    jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })
    }

    pub(super) fn all_savepoints(&self) -> Result<Vec<(Savepoint, String)>, ApiError> {
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
        while std::time::Instant::now() < deadline && self.requests().undelivered() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub(super) fn requests(&self) -> std::sync::MutexGuard<'_, RequestTable> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}
