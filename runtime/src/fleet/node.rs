//! A fleet node: its membership (a lease kept alive), its campaign for
//! scheduler, and the loop that makes what runs here match what etcd says
//! (`reconcile`): the scheduler's placements first when this node leads,
//! then this node's own jobs. The loop is level-triggered: a watch on the
//! fleet's keys only wakes it; each pass reads the whole (small) state.

use super::schedule::{Assignment, Placement, plan};
use super::{ClusterConfig, Committed, Etcd, EtcdError, EtcdFence, NodeInfo, Owner, ROOT, key};
use crate::catalog::{Desired, JobRecord};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// What a node runs jobs with: `wrun serve`'s runtime.
pub trait Host: Send + Sync {
    /// Starts `record` here under `fence` (its owner record and epoch).
    fn run(&self, record: JobRecord, fence: Arc<EtcdFence>);
    /// Stops the job here and records nothing: another node owns it, or
    /// this node lost its place in the fleet.
    fn revoke(&self, job: &str);
    /// Stops the job at a savepoint; when it has stopped, it is released
    /// ([`Node::release`]) and placed elsewhere. `false`: it cannot take
    /// the savepoint yet (it is starting); asked again on the next pass.
    fn drain(&self, job: &str) -> bool;
    /// The jobs running here (until their end is recorded), each with the
    /// epoch it runs under.
    fn running(&self) -> Vec<(String, u64)>;
}

/// A node as `wrun node list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeView {
    /// Its ID.
    pub id: String,
    /// Where its API answers.
    pub api: String,
    /// Its declared cores.
    pub cores: u32,
    /// Its declared memory, in MiB (none: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// When it joined (ms since the Unix epoch).
    pub joined_at_ms: u64,
    /// It is the fleet's scheduler now.
    pub scheduler: bool,
    /// It is draining (takes no job; its jobs move).
    pub draining: bool,
    /// The jobs it owns.
    pub jobs: Vec<String>,
}

/// A job as etcd records it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its record.
    pub record: JobRecord,
    /// Who runs it.
    pub owner: Option<Owner>,
    /// Why the scheduler cannot place it now.
    pub waiting: Option<String>,
}

/// A deploy the fleet refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A job of that name runs.
    #[error("{0}")]
    Conflict(String),
    /// etcd did not answer.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// This process's membership of a fleet.
pub struct Node {
    etcd: Arc<Etcd>,
    cfg: ClusterConfig,
    /// The current lease (0: none, e.g. while cut off from etcd).
    lease: watch::Sender<i64>,
    scheduler: AtomicBool,
    wake: Notify,
    host: OnceLock<Weak<dyn Host>>,
    info: OnceLock<NodeInfo>,
    /// Jobs told to drain (so each is told once).
    draining: Mutex<BTreeSet<String>>,
    leaving: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.cfg.node_id)
            .finish()
    }
}

/// The fleet as one read of etcd shows it.
#[derive(Default)]
struct View {
    nodes: BTreeMap<String, (NodeInfo, i64)>,
    drains: BTreeSet<String>,
    records: BTreeMap<String, JobRecord>,
    /// Each job's owner, its exact bytes and its mod revision.
    owners: BTreeMap<String, (Owner, Vec<u8>, i64)>,
    /// Why the scheduler cannot place a job now.
    waiting: BTreeMap<String, String>,
}

fn parse_view(kvs: Vec<etcd_client::KeyValue>) -> View {
    let mut v = View::default();
    for kv in kvs {
        let Ok(k) = kv.key_str() else { continue };
        let Some((kind, name)) = k.strip_prefix(ROOT).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let name = name.to_string();
        let bad = |e: serde_json::Error| {
            tracing::error!(
                "fleet: the etcd key {k} is unreadable ({e}); it is ignored until it is fixed or removed"
            );
        };
        match kind {
            "nodes" => match serde_json::from_slice::<NodeInfo>(kv.value()) {
                Ok(n) => {
                    v.nodes.insert(name, (n, kv.lease()));
                }
                Err(e) => bad(e),
            },
            "drain" => {
                v.drains.insert(name);
            }
            "waiting" => {
                v.waiting
                    .insert(name, String::from_utf8_lossy(kv.value()).into_owned());
            }
            "jobs" => match serde_json::from_slice::<JobRecord>(kv.value()) {
                Ok(r) => {
                    v.records.insert(name, r);
                }
                Err(e) => bad(e),
            },
            "owners" => match serde_json::from_slice::<Owner>(kv.value()) {
                Ok(o) => {
                    v.owners
                        .insert(name, (o, kv.value().to_vec(), kv.mod_revision()));
                }
                Err(e) => bad(e),
            },
            _ => {}
        }
    }
    v
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // The types encoded here (plain structs of strings and numbers) always
    // encode.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Node {
    /// Connects to the fleet's etcd. A node of the same ID that is still
    /// alive is waited for up to one lease (a node restarted at once after
    /// `kill -9` finds its old lease still running), then refused.
    pub fn connect(cfg: ClusterConfig) -> Result<Arc<Node>, EtcdError> {
        let etcd = Arc::new(Etcd::connect(
            &cfg.endpoints,
            Duration::from_secs(5).max(cfg.lease_ttl),
        )?);
        let until = Instant::now() + cfg.lease_ttl + Duration::from_secs(1);
        while etcd.get(&key("nodes", &cfg.node_id))?.is_some() {
            if Instant::now() > until {
                return Err(etcd.error(format!(
                    "a live node with ID '{}' is in the fleet already; give this one another --node-id",
                    cfg.node_id
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (lease, _) = watch::channel(0);
        Ok(Arc::new(Node {
            etcd,
            cfg,
            lease,
            scheduler: AtomicBool::new(false),
            wake: Notify::new(),
            host: OnceLock::new(),
            info: OnceLock::new(),
            draining: Mutex::new(BTreeSet::new()),
            leaving: AtomicBool::new(false),
        }))
    }

    /// This node's ID.
    pub fn id(&self) -> &str {
        &self.cfg.node_id
    }

    /// The etcd connection.
    pub fn etcd(&self) -> &Arc<Etcd> {
        &self.etcd
    }

    /// The fleet's API token: the one in etcd, or `local` if this is the
    /// first node (it is then stored for the others).
    pub fn api_token(&self, local: &str) -> Result<String, EtcdError> {
        let k = key("api-token", "fleet");
        let txn = Txn::new()
            .when([Compare::version(k.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.as_str(), local, None)])
            .or_else([TxnOp::get(k.as_str(), None)]);
        let r = self.etcd.txn(txn)?;
        if r.succeeded() {
            return Ok(local.to_string());
        }
        for op in r.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                return Ok(String::from_utf8_lossy(kv.value()).to_string());
            }
        }
        Err(self
            .etcd
            .error("the fleet's API token vanished while it was read".into()))
    }

    /// Joins: registers under a lease and starts the node's tasks (keep
    /// alive, campaign, watch, reconcile). `api` is where this node's API
    /// answers; `host` runs the jobs.
    pub fn start(self: &Arc<Self>, api: String, host: Weak<dyn Host>) -> Result<(), EtcdError> {
        let _ = self.host.set(host);
        let _ = self.info.set(NodeInfo {
            id: self.cfg.node_id.clone(),
            api,
            cores: self.cfg.cores.max(1),
            memory_mb: self.cfg.memory_mb,
            joined_at_ms: crate::time::unix_ms(),
        });
        // The first registration before returning: a node that cannot
        // join fails its start.
        let mut c = self.etcd.client();
        let lease = self.etcd.block(self.register(&mut c))?;
        self.lease.send_replace(lease);
        let me = self.clone();
        self.etcd.spawn(async move { me.keep_alive().await });
        let me = self.clone();
        self.etcd.spawn(async move { me.campaign().await });
        let me = self.clone();
        self.etcd.spawn(async move { me.watch().await });
        let me = self.clone();
        self.etcd.spawn(async move { me.reconcile_loop().await });
        tracing::info!(node = %self.cfg.node_id, etcd = %self.etcd.endpoints(), lease_ttl_ms = self.cfg.lease_ttl.as_millis() as u64, "joined the fleet");
        Ok(())
    }

    async fn register(&self, c: &mut Client) -> Result<i64, etcd_client::Error> {
        let ttl = self.cfg.lease_ttl.as_secs().max(1) as i64;
        let lease = c.lease_grant(ttl, None).await?.id();
        let info = self.info.get().cloned();
        c.put(
            key("nodes", &self.cfg.node_id),
            encode(&info),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
        Ok(lease)
    }

    fn host(&self) -> Option<Arc<dyn Host>> {
        self.host.get().and_then(|h| h.upgrade())
    }

    /// Keeps the lease alive; when it cannot for a whole TTL (cut off from
    /// etcd, or paused), this node has lost its place: it stops every job
    /// it runs (another node has them by now) and joins again.
    async fn keep_alive(self: Arc<Self>) {
        let ttl = self.cfg.lease_ttl;
        let beat = ttl / 3;
        let mut c = self.etcd.client();
        let mut last_ok = Instant::now();
        loop {
            if self.leaving.load(Ordering::SeqCst) {
                return;
            }
            let lease = *self.lease.borrow();
            if lease == 0 {
                match tokio::time::timeout(ttl, self.register(&mut c)).await {
                    Ok(Ok(l)) => {
                        tracing::info!(node = %self.cfg.node_id, "joined the fleet again");
                        last_ok = Instant::now();
                        self.lease.send_replace(l);
                        self.wake.notify_one();
                    }
                    _ => tokio::time::sleep(beat).await,
                }
                continue;
            }
            // One keep-alive stream per lease; a broken one is opened again.
            let mut expired = false;
            match tokio::time::timeout(beat, c.lease_keep_alive(lease)).await {
                Ok(Ok((mut keeper, mut answers))) => loop {
                    if self.leaving.load(Ordering::SeqCst) {
                        return;
                    }
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(beat, answers.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => last_ok = Instant::now(),
                        // etcd has forgotten the lease: it expired.
                        Ok(Ok(Some(_))) => {
                            expired = true;
                            break;
                        }
                        Ok(Ok(None) | Err(_)) => break,
                        Err(_) => {}
                    }
                    if last_ok.elapsed() >= ttl {
                        break;
                    }
                    tokio::time::sleep(beat).await;
                },
                _ => tokio::time::sleep(beat).await,
            }
            if !expired && last_ok.elapsed() < ttl {
                continue;
            }
            if self.leaving.load(Ordering::SeqCst) {
                return;
            }
            tracing::warn!(node = %self.cfg.node_id, "lost the fleet's lease (cut off from etcd, or paused, for {} ms): stopping this node's jobs, which other nodes take over", ttl.as_millis());
            self.lease.send_replace(0);
            self.scheduler.store(false, Ordering::SeqCst);
            if let Some(h) = self.host() {
                for (job, _) in h.running() {
                    h.revoke(&job);
                }
            }
        }
    }

    /// Campaigns for scheduler under the current lease; leads until the
    /// lease changes.
    async fn campaign(self: Arc<Self>) {
        let mut c = self.etcd.client();
        let mut leases = self.lease.subscribe();
        loop {
            let lease = *leases.borrow_and_update();
            if lease == 0 {
                let _ = leases.changed().await;
                continue;
            }
            let name = format!("{ROOT}scheduler");
            tokio::select! {
                r = c.campaign(name.as_str(), self.cfg.node_id.as_str(), lease) => match r {
                    Ok(_) => {
                        tracing::info!(node = %self.cfg.node_id, "elected the fleet's scheduler");
                        self.scheduler.store(true, Ordering::SeqCst);
                        self.wake.notify_one();
                        // Leads while the lease lives (the election key is
                        // under it).
                        let _ = leases.changed().await;
                        self.scheduler.store(false, Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::debug!("campaign: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = leases.changed() => {}
            }
        }
    }

    /// Wakes the reconcile loop on every change under the fleet's keys.
    async fn watch(self: Arc<Self>) {
        let mut c = self.etcd.client();
        loop {
            match c.watch(ROOT, Some(WatchOptions::new().with_prefix())).await {
                Ok(mut stream) => {
                    while let Ok(Some(_)) = stream.message().await {
                        self.wake.notify_one();
                    }
                }
                Err(e) => tracing::debug!("fleet watch: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn reconcile_loop(self: Arc<Self>) {
        loop {
            // A pass at least every second, whatever the watch says.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
            if self.leaving.load(Ordering::SeqCst) {
                return;
            }
            if *self.lease.borrow() == 0 {
                continue;
            }
            if let Err(e) = self.reconcile().await {
                tracing::warn!(node = %self.cfg.node_id, "fleet: {e}; trying again");
            }
        }
    }

    async fn read(&self, c: &mut Client) -> Result<View, etcd_client::Error> {
        let r = c.get(ROOT, Some(GetOptions::new().with_prefix())).await?;
        Ok(parse_view(r.kvs().to_vec()))
    }

    async fn reconcile(&self) -> Result<(), etcd_client::Error> {
        let mut c = self.etcd.client();
        let mut view = self.read(&mut c).await?;
        if self.scheduler.load(Ordering::SeqCst) && self.schedule(&mut c, &view).await? {
            view = self.read(&mut c).await?;
        }
        let Some(host) = self.host() else {
            return Ok(());
        };
        let me = self.cfg.node_id.as_str();
        let running: BTreeMap<String, u64> = host.running().into_iter().collect();
        for (job, epoch) in &running {
            let mine = view
                .owners
                .get(job)
                .is_some_and(|(o, _, _)| o.node.as_deref() == Some(me) && o.epoch == *epoch);
            if !mine {
                tracing::info!(node = me, job = %job, "another node owns the job now: stopping it here");
                host.revoke(job);
            }
        }
        for (job, (owner, bytes, _)) in &view.owners {
            if owner.node.as_deref() != Some(me) || running.contains_key(job) {
                continue;
            }
            let Some(record) = view.records.get(job) else {
                continue;
            };
            if record.desired != Desired::Running {
                continue;
            }
            tracing::info!(node = me, job = %job, epoch = owner.epoch, "assigned the job: starting it");
            self.draining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(job);
            host.run(
                record.clone(),
                Arc::new(EtcdFence::new(
                    self.etcd.clone(),
                    job,
                    bytes.clone(),
                    owner.epoch,
                )),
            );
        }
        if view.drains.contains(me) {
            let mut told = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            for job in running.keys() {
                if !told.contains(job) && host.drain(job) {
                    tracing::info!(node = me, job = %job, "draining: stopping the job at a savepoint to move it");
                    told.insert(job.clone());
                }
            }
        }
        Ok(())
    }

    /// The scheduler's pass: places every job that should run and has no
    /// live owner. Returns whether it wrote anything.
    async fn schedule(&self, c: &mut Client, view: &View) -> Result<bool, etcd_client::Error> {
        let nodes: Vec<Placement> = view
            .nodes
            .values()
            .map(|(n, _)| Placement {
                id: n.id.clone(),
                cores: n.cores,
                draining: view.drains.contains(&n.id),
                memory_mb: n.memory_mb,
            })
            .collect();
        let jobs: Vec<Assignment> = view
            .records
            .values()
            .filter(|r| r.desired == Desired::Running)
            .map(|r| Assignment {
                job: r.name.clone(),
                weight: r.parallelism.unwrap_or(1),
                memory_mb: r.memory_mb,
                owner: view
                    .owners
                    .get(&r.name)
                    .and_then(|(o, _, _)| o.node.clone()),
                left: view
                    .owners
                    .get(&r.name)
                    .and_then(|(o, _, _)| o.left.clone()),
            })
            .collect();
        let mut wrote = false;
        let planned = plan(&nodes, &jobs);
        self.record_waiting(c, view, &planned.waiting).await?;
        for (job, node) in planned.placed {
            let (epoch, rev) = view
                .owners
                .get(&job)
                .map(|(o, _, rev)| (o.epoch, *rev))
                .unwrap_or((0, 0));
            let owner = Owner {
                node: Some(node.clone()),
                epoch: epoch + 1,
                left: None,
            };
            let k = key("owners", &job);
            let txn = Txn::new()
                .when([Compare::mod_revision(k.as_str(), CompareOp::Equal, rev)])
                .and_then([
                    TxnOp::put(k.as_str(), encode(&owner), None),
                    TxnOp::delete(key("waiting", &job), None),
                ]);
            if c.txn(txn).await?.succeeded() {
                tracing::info!(job = %job, node = %node, epoch = epoch + 1, "scheduler: placed the job");
                wrote = true;
            }
        }
        Ok(wrote)
    }

    /// Writes why each of `waiting` cannot be placed (under this node's
    /// lease, where it changed) and removes the reasons no longer true.
    async fn record_waiting(
        &self,
        c: &mut Client,
        view: &View,
        waiting: &[(String, String)],
    ) -> Result<(), etcd_client::Error> {
        let lease = *self.lease.borrow();
        for (job, why) in waiting {
            if view.waiting.get(job) != Some(why) {
                tracing::warn!(job = %job, "scheduler: cannot place the job: {why}");
                let opts = PutOptions::new().with_lease(lease);
                c.put(key("waiting", job), why.as_str(), Some(opts)).await?;
            }
        }
        for job in view.waiting.keys() {
            let placed = view.owners.get(job).is_some_and(|(o, _, _)| {
                o.node.as_ref().is_some_and(|n| view.nodes.contains_key(n))
            });
            let still = waiting.iter().any(|(j, _)| j == job);
            let wanted = view
                .records
                .get(job)
                .is_some_and(|r| r.desired == Desired::Running);
            if !still && (placed || !wanted) {
                c.delete(key("waiting", job), None).await?;
            }
        }
        Ok(())
    }

    /// Leaves the fleet at a clean shutdown: the lease is revoked, so the
    /// jobs this node ran move at once rather than after a TTL.
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        let lease = *self.lease.borrow();
        if lease != 0 {
            let mut c = self.etcd.client();
            match self.etcd.block(async move { c.lease_revoke(lease).await }) {
                Ok(_) => {
                    tracing::info!(node = %self.cfg.node_id, "left the fleet: its jobs move to other nodes now")
                }
                Err(e) => {
                    tracing::warn!("leaving the fleet: {e}; its jobs move when the lease expires")
                }
            }
        }
    }

    fn view(&self) -> Result<View, EtcdError> {
        let (kvs, _) = self.etcd.get_prefix(ROOT)?;
        Ok(parse_view(kvs))
    }

    /// Every job record in the fleet, with its owner.
    pub fn records(&self) -> Result<Vec<Recorded>, EtcdError> {
        let mut v = self.view()?;
        Ok(v.records
            .into_values()
            .map(|record| Recorded {
                owner: v.owners.remove(&record.name).map(|(o, _, _)| o),
                waiting: v.waiting.remove(&record.name),
                record,
            })
            .collect())
    }

    /// The node that runs `job` and where its API answers, when that is a
    /// live node.
    pub fn owner_of(&self, job: &str) -> Result<Option<NodeInfo>, EtcdError> {
        let v = self.view()?;
        Ok(v.owners
            .get(job)
            .and_then(|(o, _, _)| o.node.as_ref())
            .and_then(|n| v.nodes.get(n))
            .map(|(info, _)| info.clone()))
    }

    /// The other live nodes (one read; no election query, unlike
    /// [`Node::nodes`]): where a request is forwarded or gathered from.
    pub fn peers(&self) -> Result<Vec<NodeInfo>, EtcdError> {
        Ok(self
            .view()?
            .nodes
            .into_values()
            .map(|(n, _)| n)
            .filter(|n| n.id != self.cfg.node_id)
            .collect())
    }

    /// The live nodes.
    pub fn nodes(&self) -> Result<Vec<NodeView>, EtcdError> {
        let v = self.view()?;
        let mut c = self.etcd.client();
        let leader = self
            .etcd
            .block(async move { c.leader(format!("{ROOT}scheduler")).await })
            .ok()
            .and_then(|r| {
                r.kv()
                    .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
            });
        Ok(v.nodes
            .values()
            .map(|(n, _)| NodeView {
                id: n.id.clone(),
                api: n.api.clone(),
                cores: n.cores,
                memory_mb: n.memory_mb,
                joined_at_ms: n.joined_at_ms,
                scheduler: leader.as_deref() == Some(n.id.as_str()),
                draining: v.drains.contains(&n.id),
                jobs: v
                    .owners
                    .iter()
                    .filter(|(j, (o, _, _))| {
                        o.node.as_deref() == Some(n.id.as_str())
                            && v.records
                                .get(*j)
                                .is_some_and(|r| r.desired == Desired::Running)
                    })
                    .map(|(j, _)| j.clone())
                    .collect(),
            })
            .collect())
    }

    /// Marks `node` draining (until it leaves the fleet): it takes no job,
    /// and stops its jobs at savepoints so they move. `false`: no such
    /// live node.
    pub fn drain(&self, node: &str) -> Result<bool, EtcdError> {
        let Some(kv) = self.etcd.get(&key("nodes", node))? else {
            return Ok(false);
        };
        let txn = Txn::new()
            .when([Compare::lease(
                key("nodes", node),
                CompareOp::Equal,
                kv.lease(),
            )])
            .and_then([TxnOp::put(
                key("drain", node),
                "",
                Some(PutOptions::new().with_lease(kv.lease())),
            )]);
        Ok(self.etcd.txn(txn)?.succeeded())
    }

    /// The committed checkpoints of `job`.
    pub fn committed(&self, job: &str) -> Result<Committed, EtcdError> {
        match self.etcd.get(&key("checkpoints", job))? {
            Some(kv) => serde_json::from_slice(kv.value()).map_err(|e| {
                self.etcd.error(format!(
                    "the committed checkpoints of job '{job}' are unreadable: {e}"
                ))
            }),
            None => Ok(Committed::default()),
        }
    }

    /// Records a new deployment: the record, an owner of no node at the
    /// next epoch (so any earlier owner is fenced off), and checkpoint IDs
    /// going on above `record.checkpoint_floor`. The scheduler places it.
    pub fn deploy(&self, record: &JobRecord) -> Result<(), DeployError> {
        let jk = key("jobs", &record.name);
        let ok = key("owners", &record.name);
        let ck = key("checkpoints", &record.name);
        let old = self.etcd.get(&jk)?;
        if let Some(kv) = &old
            && let Ok(r) = serde_json::from_slice::<JobRecord>(kv.value())
            && r.desired == Desired::Running
        {
            let at = self
                .owner_of(&record.name)?
                .map(|n| format!(" on node '{}'", n.id))
                .unwrap_or_default();
            return Err(DeployError::Conflict(format!(
                "job '{}' is already deployed and running{at}; stop it first (`wrun job stop {} --savepoint`) and deploy again, or give the new job another name",
                record.name, record.name
            )));
        }
        let owner = self.etcd.get(&ok)?;
        let (epoch, owner_rev) = match &owner {
            Some(kv) => (
                serde_json::from_slice::<Owner>(kv.value())
                    .map(|o| o.epoch)
                    .unwrap_or(0),
                kv.mod_revision(),
            ),
            None => (0, 0),
        };
        let committed = self.committed(&record.name)?;
        let next = Committed {
            next: committed.next.max(record.checkpoint_floor + 1),
            ids: Vec::new(),
        };
        let txn = Txn::new()
            .when([
                Compare::mod_revision(
                    jk.as_str(),
                    CompareOp::Equal,
                    old.as_ref().map(|kv| kv.mod_revision()).unwrap_or(0),
                ),
                Compare::mod_revision(ok.as_str(), CompareOp::Equal, owner_rev),
            ])
            .and_then([
                TxnOp::put(jk.as_str(), encode(record), None),
                TxnOp::put(
                    ok.as_str(),
                    encode(&Owner {
                        node: None,
                        epoch: epoch + 1,
                        left: None,
                    }),
                    None,
                ),
                TxnOp::put(ck.as_str(), encode(&next), None),
            ]);
        if !self.etcd.txn(txn)?.succeeded() {
            return Err(DeployError::Conflict(format!(
                "job '{}' changed while it was deployed (another deploy of it?); look at `wrun job list` and deploy again",
                record.name
            )));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Records how a job ended (`record`), if this node still owns it at
    /// `fence`'s epoch, and frees it. `false`: another owner has it; nothing
    /// was written.
    pub fn finish(&self, record: &JobRecord, fence: &EtcdFence) -> Result<bool, EtcdError> {
        self.release_with(&record.name, fence, Some(record))
    }

    /// Frees a job this node stopped to move (a drain): the scheduler
    /// places it again. `false`: another owner has it already.
    pub fn release(&self, job: &str, fence: &EtcdFence) -> Result<bool, EtcdError> {
        self.release_with(job, fence, None)
    }

    fn release_with(
        &self,
        job: &str,
        fence: &EtcdFence,
        record: Option<&JobRecord>,
    ) -> Result<bool, EtcdError> {
        let ok = key("owners", job);
        let mine = Owner {
            node: Some(self.cfg.node_id.clone()),
            epoch: fence.epoch(),
            left: None,
        };
        let free = Owner {
            node: None,
            epoch: fence.epoch(),
            left: Some(self.cfg.node_id.clone()),
        };
        let mut ops = vec![TxnOp::put(ok.as_str(), encode(&free), None)];
        if let Some(r) = record {
            ops.push(TxnOp::put(key("jobs", job), encode(r), None));
        }
        let txn = Txn::new()
            .when([Compare::value(ok.as_str(), CompareOp::Equal, encode(&mine))])
            .and_then(ops);
        let done = self.etcd.txn(txn)?.succeeded();
        self.wake.notify_one();
        Ok(done)
    }

    /// Writes a record whose job runs nowhere (a cancel of a job no node
    /// has placed). `false`: it is placed now; ask its node.
    pub fn update_unplaced(&self, record: &JobRecord) -> Result<bool, EtcdError> {
        let ok = key("owners", &record.name);
        let owner = self.etcd.get(&ok)?;
        let (rev, placed) = match &owner {
            Some(kv) => (
                kv.mod_revision(),
                serde_json::from_slice::<Owner>(kv.value())
                    .map(|o| o.node.is_some())
                    .unwrap_or(false),
            ),
            None => (0, false),
        };
        if placed {
            return Ok(false);
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(ok.as_str(), CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key("jobs", &record.name), encode(record), None)]);
        Ok(self.etcd.txn(txn)?.succeeded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_records_compare_byte_for_byte() {
        // The fence compares the exact bytes the scheduler wrote with those
        // `release_with` expects: one encoding for both.
        let o = Owner {
            node: Some("n1".into()),
            epoch: 7,
            left: None,
        };
        assert_eq!(encode(&o), br#"{"node":"n1","epoch":7}"#.to_vec());
    }
}
