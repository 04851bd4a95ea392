//! `wrun serve`: a long-running runtime for many jobs. Each deployed job
//! has a record (`catalog`: its manifest, pinned module digests, what it
//! started from, and what it should be doing), and runs on threads of its
//! own under its restart policy. After a restart of the process (clean or
//! `kill -9`), every job whose record says `running` resumes from its
//! newest checkpoint taken since it was deployed (or from what it was
//! deployed from).
//!
//! Alone, a node keeps the records in `<data-dir>/jobs/`. In a fleet
//! (`--cluster`, `fleet.rs` here and `crate::fleet`), the records are in
//! etcd, a deploy only records the job, and the node runs the jobs the
//! fleet's scheduler gives it, each under a fence.

mod fleet;

use crate::api::{ApiError, ApiState, DeployRequest, Deployer, ErrorKind};
use crate::catalog::{Catalog, FileCatalog};
use crate::checkpoint::CheckpointStore;
use crate::datadir::DataDir;
use crate::deployment::{Deployment, Restore};
use crate::exec::{self, JobControl, JobState, JobStatus};
use crate::job::{ComponentRef, JobGraph, VertexKind};
use crate::sandbox::Sandbox;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::catalog::{Desired, JobRecord};

/// Settings of `wrun serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where checkpoints and pins live, when not in the data directory.
    pub state_url: Option<crate::blob::StateUrl>,
    /// Largest module accepted, in bytes.
    pub max_module_bytes: usize,
    /// The fleet this node belongs to (`--cluster`), joined already.
    pub cluster: Option<Arc<crate::fleet::Node>>,
}

struct Running {
    control: Arc<JobControl>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// In a fleet: how this node holds the job.
    fleet: Option<fleet::Held>,
}

/// The runtime behind `wrun serve`.
pub struct Runtime {
    data: DataDir,
    /// `--state-url`: the one store every job of this process uses.
    state_url: Option<crate::blob::StateUrl>,
    store: Arc<CheckpointStore>,
    sandbox: Arc<Sandbox>,
    api: Arc<ApiState>,
    jobs: Mutex<HashMap<String, Running>>,
    /// Set while the process shuts down: jobs then end without changing
    /// their records, so they resume on the next start.
    shutting_down: Arc<AtomicBool>,
    /// Serializes deploys (checks and start of one job at a time).
    deploying: Mutex<()>,
    /// The job records of a single node.
    catalog: FileCatalog,
    /// The fleet, when this node is in one.
    cluster: Option<Arc<crate::fleet::Node>>,
    /// What the fleet node runs jobs through (it holds it weakly).
    host: Mutex<Option<Arc<dyn crate::fleet::Host>>>,
}

use crate::time::unix_ms as now_ms;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

impl Runtime {
    /// Opens the data directory's stores and the API state. Jobs are not
    /// started until [`Runtime::resume_all`].
    pub fn open(cfg: &ServeConfig, sandbox: Arc<Sandbox>) -> anyhow::Result<Arc<Runtime>> {
        let data = DataDir::open_at(&cfg.data_dir, cfg.state_url.as_ref())?;
        let store = data.store();
        let api = ApiState::new(
            crate::api::token(&cfg.data_dir)?,
            "serve",
            store.clone(),
            data.registries(),
            Some(crate::api::Modules {
                store: data.modules().clone(),
                sandbox: sandbox.clone(),
                max_bytes: cfg.max_module_bytes,
            }),
        );
        let rt = Arc::new(Runtime {
            state_url: cfg.state_url.clone(),
            store,
            sandbox,
            api: api.clone(),
            jobs: Mutex::new(HashMap::new()),
            shutting_down: Arc::new(AtomicBool::new(false)),
            deploying: Mutex::new(()),
            catalog: FileCatalog::new(data.jobs_dir()),
            cluster: cfg.cluster.clone(),
            host: Mutex::new(None),
            data,
        });
        api.set_deployer(Arc::new(Handle(Arc::downgrade(&rt))));
        if let Some(node) = &cfg.cluster {
            api.set_cluster(Arc::new(fleet::ApiCluster(node.clone())));
        }
        Ok(rt)
    }

    /// The API state to serve.
    pub fn api(&self) -> Arc<ApiState> {
        self.api.clone()
    }

    fn save(&self, r: &JobRecord) -> anyhow::Result<()> {
        self.catalog.save(r)
    }

    /// Every job record of this node (alone; a fleet's are in etcd).
    pub fn records(&self) -> anyhow::Result<Vec<JobRecord>> {
        self.catalog.records()
    }

    /// Starts every job whose record says it runs: from its newest
    /// checkpoint since it was deployed, or from what it was deployed from.
    /// Jobs that cannot start are marked failed with the reason.
    pub fn resume_all(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.cluster.is_some() {
            // In a fleet the scheduler says what runs here (`join`).
            return Ok(());
        }
        let _no_deploys = self.deploying.lock().unwrap_or_else(|p| p.into_inner());
        let records = self.records()?;
        // Every job's own savepoint directory first, running or not, so
        // their savepoints can be found by name (and, written before pins
        // existed, get their pins before any collection runs).
        for r in &records {
            if let Ok(g) = crate::job::parse_manifest(
                &r.manifest,
                &r.manifest_path,
                &r.base_dir,
                r.parallelism,
            ) && let Err(e) = self.data.savepoints_for(&g.savepoints)
            {
                tracing::warn!(job = %r.name, "cannot open its savepoint directory: {}", crate::report::chain(&e));
            }
        }
        for r in records {
            let control = JobControl::new(&r.name);
            self.api.add_job(&r.name, control.clone());
            if r.desired != Desired::Running {
                // Shown in `wrun job list` with how it ended.
                control.update(|s| {
                    s.state = match r.desired {
                        Desired::Stopped => JobState::Stopped,
                        Desired::Finished => JobState::Finished,
                        Desired::Cancelled => JobState::Cancelled,
                        _ => JobState::Failed,
                    };
                    s.error = r.error.clone();
                });
                continue;
            }
            let started = self.prepare(&r).and_then(|deployment| {
                let latest = exec::latest_checkpoint_after(
                    self.store.as_ref(),
                    &r.name,
                    r.checkpoint_floor,
                )
                .map_err(|e| bad(e.to_string()))?;
                let restore = match latest {
                    Some(m) => {
                        tracing::info!(job = %r.name, "resuming from checkpoint {}", m.id);
                        self.seed_history(&r, &control);
                        Some(Restore::checkpoint(m))
                    }
                    None => match &r.from_savepoint {
                        Some(sp) => {
                            tracing::info!(job = %r.name, "no checkpoint since deploy; starting again from savepoint {sp}");
                            Some(Restore::savepoint(
                                self.savepoint(sp)?,
                                None,
                                r.allow_non_restored_state,
                            ))
                        }
                        None => None,
                    },
                };
                self.start(&r, deployment.starting_from(restore), control.clone(), None);
                Ok(())
            });
            if let Err(e) = started {
                // The record stays `running` (the cause may pass, e.g. an
                // I/O error): the next start tries again; a deploy of the
                // job replaces it.
                tracing::error!(job = %r.name, "cannot resume: {e:#}");
                control.update(|s| {
                    s.state = JobState::Failed;
                    s.error = Some(format!(
                        "cannot resume after a restart of wrun serve: {e:#}; it is tried again on the next start, or deploy the job again"
                    ));
                });
            }
        }
        Ok(())
    }

    /// The checkpoint history `wrun job status` shows, from the manifests
    /// the job's runs before this restart kept (its retained checkpoints).
    fn seed_history(&self, r: &JobRecord, control: &JobControl) {
        let Ok(ids) = self.store.list_checkpoints(&r.name) else {
            return;
        };
        let kept: Vec<_> = ids
            .into_iter()
            .filter(|id| id.0 > r.checkpoint_floor)
            .collect();
        let from = kept.len().saturating_sub(exec::CHECKPOINT_HISTORY);
        let history: Vec<_> = kept[from..]
            .iter()
            .filter_map(|id| self.store.get_manifest(&r.name, *id).ok())
            .map(|m| exec::CheckpointSummary::of(&m))
            .collect();
        control.update(|s| s.checkpoints = history);
    }

    /// A savepoint in one of this server's registries. Never an exported
    /// directory: a job may need its savepoint on every restart until its
    /// first checkpoint, so its chunks must be in the data directory.
    fn savepoint(&self, spec: &str) -> Result<crate::checkpoint::Savepoint, ApiError> {
        let (sp, chunks) = crate::checkpoint::resolve_savepoint(spec, &self.api.registries())
            .map_err(|e| bad(format!("{e}; `wrun savepoint list` shows the savepoints")))?;
        if chunks.is_some() {
            return Err(bad(
                "deploying from an exported savepoint directory: import it first (`wrun savepoint import DIR`), then deploy from its ID",
            ));
        }
        Ok(sp)
    }

    /// Parses a record's manifest, pins its modules and loads them.
    fn prepare(&self, r: &JobRecord) -> Result<Deployment, ApiError> {
        let mut graph =
            crate::job::parse_manifest(&r.manifest, &r.manifest_path, &r.base_dir, r.parallelism)
                .map_err(|e| bad(e.to_string()))?;
        for v in &mut graph.vertices {
            if let VertexKind::Operator { component, .. } = &mut v.kind {
                let digest = r
                    .modules
                    .get(&v.name)
                    .ok_or_else(|| bad(format!("operator '{}' has no pinned module", v.name)))?;
                *component = ComponentRef::Digest(
                    digest.strip_prefix("blake3:").unwrap_or(digest).to_string(),
                );
            }
        }
        Deployment::load(graph, self.data.modules(), &self.sandbox).map_err(|e| {
            let kind = if e.is_transient() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::BadRequest
            };
            ApiError::chain(kind, &anyhow::Error::from(e))
        })
    }

    /// Pins every operator's module: uploaded paths (by the CLI), digests
    /// and `name@version` become digests.
    fn pin(
        &self,
        req: &DeployRequest,
        graph: &JobGraph,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let mut pinned = BTreeMap::new();
        for v in &graph.vertices {
            let VertexKind::Operator { component, .. } = &v.kind else {
                continue;
            };
            let hex = match component {
                ComponentRef::Path(p) => {
                    let given = req.components.get(&v.name).ok_or_else(|| {
                        bad(format!(
                            "operator '{}' names its component by path ({}); a server runs uploaded modules only: `wrun deploy` uploads paths itself, or `wrun module push` it and name it name@version or by digest",
                            v.name,
                            p.display()
                        ))
                    })?;
                    self.data.modules().lookup(given).map_err(|e| bad(e.to_string()))?
                }
                ComponentRef::Digest(hex) => hex.clone(),
                ComponentRef::Named { name, version } => self
                    .data
                    .modules()
                    .lookup(&format!("{name}@{version}"))
                    .map_err(|e| bad(format!("operator '{}': {e}; push it with `wrun module push FILE --name {name} --version {version}`", v.name)))?,
            };
            self.data.modules().info(&hex).map_err(|e| {
                bad(format!(
                    "operator '{}': {e}; push it with `wrun module push`",
                    v.name
                ))
            })?;
            pinned.insert(v.name.clone(), format!("blake3:{hex}"));
        }
        Ok(pinned)
    }

    fn deploy(self: &Arc<Self>, req: DeployRequest) -> Result<JobStatus, ApiError> {
        let _one_at_a_time = self.deploying.lock().unwrap_or_else(|p| p.into_inner());
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "wrun serve is shutting down; deploy again once it is back",
            ));
        }
        let path = req
            .manifest_path
            .clone()
            .unwrap_or_else(|| "job.toml".into());
        let base = match &req.base_dir {
            Some(b) if b.is_absolute() => b.clone(),
            Some(b) => {
                return Err(bad(format!("`base-dir` {} must be absolute", b.display())));
            }
            None => self.data.root().to_path_buf(),
        };
        let graph = crate::job::parse_manifest(&req.manifest, &path, &base, req.parallelism)
            .map_err(|e| bad(e.to_string()))?;
        // A missing topic or stream, or a broker that does not answer, is
        // refused here rather than left to fail the job after deploy.
        exec::check_connectors(&graph).map_err(bad)?;
        if let Some(url) = &graph.state
            && self.state_url.as_ref() != Some(url)
        {
            return Err(bad(format!(
                "the manifest's [state] url is {url}, but this wrun serve keeps every job's checkpoints in {}; remove [state] from the manifest, or deploy to a wrun serve started with --state-url '{url}'",
                self.store.location("")
            )));
        }
        if let Some(c) = self
            .api
            .control(&graph.name)
            .filter(|_| self.cluster.is_none())
        {
            let st = c.status().state;
            if matches!(
                st,
                JobState::Starting | JobState::Running | JobState::Restarting
            ) {
                return Err(ApiError::conflict(format!(
                    "job '{}' is already {}; stop it first (`wrun job stop {} --savepoint`) and deploy again, or give the new job another name",
                    graph.name,
                    serde_json::to_value(st)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    graph.name
                )));
            }
        }
        let modules = self.pin(&req, &graph)?;
        let from = req
            .from_savepoint
            .as_deref()
            .map(|spec| self.savepoint(spec))
            .transpose()?;
        let from_savepoint = from.as_ref().map(|sp| sp.id.clone());
        let mut record = JobRecord {
            name: graph.name.clone(),
            manifest: req.manifest.clone(),
            manifest_path: path,
            base_dir: base,
            parallelism: req.parallelism,
            memory_mb: 0,
            modules,
            from_savepoint: from_savepoint.clone(),
            allow_non_restored_state: req.allow_non_restored_state,
            checkpoint_floor: exec::newest_checkpoint_id(self.store.as_ref(), &graph.name)
                .map_err(ApiError::internal)?,
            deployed_at_ms: now_ms(),
            desired: Desired::Running,
            error: None,
            stopped_at: None,
        };
        let deployment = self.prepare(&record)?.starting_from(
            from.map(|sp| Restore::savepoint(sp, None, req.allow_non_restored_state)),
        );
        deployment.check().map_err(|e| bad(e.to_string()))?;
        record.memory_mb = deployment.graph.memory_mb();
        if let Some(node) = &self.cluster {
            return self.deploy_to_fleet(node, &record);
        }
        // The previous run of this name has ended (checked above), but its
        // thread may still be recording how: let it finish first, so it
        // cannot overwrite the new record.
        let old = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.name);
        if let Some(t) = old.and_then(|o| o.thread) {
            let _ = t.join();
        }
        self.save(&record)
            .map_err(|e| ApiError::chain(ErrorKind::Internal, &e))?;
        let control = JobControl::new(&record.name);
        self.api.add_job(&record.name, control.clone());
        self.start(&record, deployment, control.clone(), None);
        tracing::info!(job = %record.name, from = ?from_savepoint, "deployed");
        Ok(control.status())
    }

    /// A job's record: this node's, or the fleet's.
    fn record_of(&self, job: &str) -> Result<JobRecord, ApiError> {
        let records = match &self.cluster {
            Some(node) => node
                .records()
                .map(|rs| rs.into_iter().map(|r| r.record).collect())
                .map_err(|e| {
                    ApiError::new(
                        ErrorKind::Unavailable,
                        format!("{e}; try again once etcd answers"),
                    )
                })?,
            None => self
                .records()
                .map_err(|e| ApiError::chain(ErrorKind::Internal, &e))?,
        };
        records
            .into_iter()
            .find(|r| r.name == job)
            .ok_or_else(|| ApiError::not_found(format!("no job '{job}' was deployed here")))
    }

    /// The deploy that runs a job again with another default parallelism
    /// (see [`Deployer::rescaled`]).
    fn rescaled(&self, job: &str, parallelism: u32) -> Result<DeployRequest, ApiError> {
        let r = self.record_of(job)?;
        if r.desired != Desired::Running {
            return Err(ApiError::conflict(format!(
                "job '{job}' is not running; deploy it from a savepoint with `--parallelism {parallelism}`"
            )));
        }
        let parse = |p| {
            crate::job::parse_manifest(&r.manifest, &r.manifest_path, &r.base_dir, p).map_err(|e| {
                bad(format!(
                    "cannot rescale job '{job}' to parallelism {parallelism}: {e}"
                ))
            })
        };
        let shape = |g: &JobGraph| g.vertices.iter().map(|v| v.parallelism).collect::<Vec<_>>();
        if shape(&parse(r.parallelism)?) == shape(&parse(Some(parallelism))?) {
            return Err(ApiError::conflict(format!(
                "job '{job}' already runs at default parallelism {parallelism} (operators that set their own `parallelism` in the manifest keep it; change those in the manifest and deploy it from a savepoint)"
            )));
        }
        Ok(DeployRequest {
            manifest: r.manifest,
            manifest_path: Some(r.manifest_path),
            base_dir: Some(r.base_dir),
            parallelism: Some(parallelism),
            // Operators named by path run what was uploaded for them; the
            // others name a digest or an immutable name@version.
            components: r.modules,
            from_savepoint: None,
            allow_non_restored_state: false,
        })
    }

    /// Waits until this process's run of `job` has ended and recorded how.
    fn settle(&self, job: &str) {
        let thread = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(job)
            .and_then(|r| r.thread.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Runs a job on a thread of its own; when it ends, records how.
    fn start(
        self: &Arc<Self>,
        record: &JobRecord,
        deployment: Deployment,
        control: Arc<JobControl>,
        held: Option<fleet::Held>,
    ) {
        let rt = self.clone();
        let name = record.name.clone();
        let record = record.clone();
        let h = held.clone();
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wrun job {}", deployment.graph.name))
            .spawn(move || rt.run_to_end(record, deployment, c, h));
        self.track(name, control, thread, held);
    }

    /// How a job's options are made here: checkpoints into the store,
    /// savepoints into the job's registry, and, in a fleet, its fence.
    fn options(
        &self,
        deployment: &Deployment,
        control: &Arc<JobControl>,
        held: Option<&fleet::Held>,
    ) -> exec::RunOptions {
        let graph = &deployment.graph;
        let savepoints = match self.data.savepoints_for(&graph.savepoints) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %graph.name, "{}; its savepoints go to the data directory's registry", crate::report::chain(&e));
                self.data.default_savepoints()
            }
        };
        let mut opts = deployment.options(self.store.clone(), savepoints, control.clone());
        opts.fence = held.map(|h| h.fence.clone() as Arc<dyn exec::Fence>);
        opts
    }

    /// Runs a job (on its own thread) until it ends, then records how.
    fn run_to_end(
        self: Arc<Self>,
        mut record: JobRecord,
        deployment: Deployment,
        control: Arc<JobControl>,
        held: Option<fleet::Held>,
    ) {
        let opts = self.options(&deployment, &control, held.as_ref());
        let rt = self;
        let result = deployment.run(&rt.sandbox, &opts);
        let graph = &deployment.graph;
        if result.is_err() && rt.shutting_down.load(Ordering::SeqCst) {
            // Cancelled by the shutdown: resume it on the next
            // start. (A job that stopped at a savepoint or
            // finished meanwhile is recorded as such.)
            return;
        }
        if let Some(h) = &held
            && rt.fleet_end(h, &record.name, &result)
        {
            return;
        }
        match result {
            Ok(report) => {
                record.stopped_at = report.stopped_at.as_ref().map(|s| s.id.clone());
                record.desired = if report.stopped_at.is_some() {
                    Desired::Stopped
                } else {
                    Desired::Finished
                };
                tracing::info!(job = %graph.name, "job {}", if report.stopped_at.is_some() { "stopped at a savepoint" } else { "finished" });
            }
            Err(_) if opts.control.as_ref().is_some_and(|c| c.is_cancelled()) => {
                record.desired = Desired::Cancelled;
                tracing::info!(job = %graph.name, "job cancelled");
            }
            Err(e) => {
                let e = crate::report::chain(&e);
                tracing::error!(job = %graph.name, "job failed: {e}");
                record.desired = Desired::Failed;
                record.error = Some(e);
            }
        }
        let saved = match &held {
            Some(h) => rt.fleet_record(h, &record),
            None => rt.save(&record),
        };
        if let Err(e) = saved {
            tracing::error!(job = %graph.name, "cannot record how the job ended: {e}");
        }
    }

    /// Keeps a started job's thread (or records that it could not start).
    fn track(
        &self,
        name: String,
        control: Arc<JobControl>,
        thread: std::io::Result<std::thread::JoinHandle<()>>,
        held: Option<fleet::Held>,
    ) {
        match thread {
            Ok(t) => {
                self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    name,
                    Running {
                        control,
                        thread: Some(t),
                        fleet: held,
                    },
                );
            }
            Err(e) => {
                control.update(|s| {
                    s.state = JobState::Failed;
                    s.error = Some(format!("cannot start a thread: {e}"));
                });
            }
        }
    }

    /// Stops every job without changing their records (they resume on the
    /// next start) and waits for them.
    pub fn shutdown(&self) {
        {
            // No deploy is half done, and none starts after this.
            let _no_deploys = self.deploying.lock().unwrap_or_else(|p| p.into_inner());
            self.shutting_down.store(true, Ordering::SeqCst);
        }
        // Not joined under the lock: a fleet job's last commit goes through
        // etcd, whose tasks ask which jobs run (the same lock).
        let threads: Vec<_> = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for r in jobs.values() {
                r.control.cancel();
            }
            jobs.iter_mut()
                .filter_map(|(name, r)| r.thread.take().map(|t| (name.clone(), t)))
                .collect()
        };
        for (name, t) in threads {
            tracing::info!(job = %name, "waiting for the job to stop");
            let _ = t.join();
        }
        if let Some(node) = &self.cluster {
            // The jobs move at once, not a lease later.
            node.leave();
        }
    }
}

/// The API's way into the runtime (weak: the runtime owns the API state).
struct Handle(std::sync::Weak<Runtime>);

impl Handle {
    fn runtime(&self) -> Result<Arc<Runtime>, ApiError> {
        self.0
            .upgrade()
            .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "wrun serve is shutting down"))
    }
}

impl Deployer for Handle {
    fn deploy(&self, req: DeployRequest) -> Result<JobStatus, ApiError> {
        self.runtime()?.deploy(req)
    }

    fn rescaled(&self, job: &str, parallelism: u32) -> Result<DeployRequest, ApiError> {
        self.runtime()?.rescaled(job, parallelism)
    }

    fn settle(&self, job: &str) {
        if let Ok(rt) = self.runtime() {
            rt.settle(job);
        }
    }
}
