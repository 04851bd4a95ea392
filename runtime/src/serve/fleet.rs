//! `wrun serve` in a fleet: the jobs the scheduler gives this node are
//! started here (from their newest *committed* checkpoint), each under the
//! fence of its ownership epoch; how a job ends is recorded in etcd only
//! while this node still owns it. See docs/fleet.md.

use super::{Desired, JobRecord, Runtime, bad};
use crate::api::{ApiError, ErrorKind};
use crate::deployment::Restore;
use crate::exec::{self, ExecError, JobControl, JobReport, JobState, JobStatus, StopMode};
use crate::fleet::{EtcdFence, Host, Node};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// How this node holds a job it runs for the fleet.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) fence: Arc<EtcdFence>,
    /// Another node owns it now (or this one lost its lease): its end is
    /// not this node's to record.
    revoked: Arc<AtomicBool>,
    /// It stops at a savepoint to move (a drain).
    draining: Arc<AtomicBool>,
}

impl Runtime {
    /// Joins the fleet: from now on the scheduler's placements start jobs
    /// here. `api` is where this node's API answers.
    pub fn join(self: &Arc<Self>, api: String) -> anyhow::Result<()> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        let host: Arc<dyn Host> = Arc::new(FleetHost(Arc::downgrade(self)));
        // The runtime keeps the host alive; the node holds it weakly.
        let weak: Weak<dyn Host> = Arc::downgrade(&host);
        *self.host.lock().unwrap_or_else(|p| p.into_inner()) = Some(host);
        node.start(api, weak)?;
        Ok(())
    }

    /// A deploy in a fleet: the record goes to etcd; the scheduler places
    /// the job on a node, which starts it.
    pub(super) fn deploy_to_fleet(
        &self,
        node: &Node,
        record: &JobRecord,
    ) -> Result<JobStatus, ApiError> {
        node.deploy(record).map_err(|e| match e {
            crate::fleet::DeployError::Conflict(m) => ApiError::conflict(m),
            crate::fleet::DeployError::Etcd(e) => ApiError::new(
                ErrorKind::Unavailable,
                format!("{e}; the job was not deployed: deploy again once etcd answers"),
            ),
        })?;
        tracing::info!(job = %record.name, from = ?record.from_savepoint, "deployed to the fleet; the scheduler places it");
        Ok(JobControl::new(&record.name).status())
    }

    /// Starts a job the scheduler gave this node: on a thread of its own,
    /// which loads its modules (from the shared store where this node has
    /// not seen them), finds its newest committed checkpoint, and runs it.
    fn run_assigned(self: &Arc<Self>, record: JobRecord, fence: Arc<EtcdFence>) {
        let Some(node) = self.cluster.clone() else {
            return;
        };
        let control = JobControl::new(&record.name);
        control.update(|s| s.node = Some(node.id().to_string()));
        self.api.add_job(&record.name, control.clone());
        let held = Held {
            fence,
            revoked: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
        };
        let rt = self.clone();
        let (c, h) = (control.clone(), held.clone());
        let name = record.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wrun job {name}"))
            .spawn(move || match rt.restore_point(&record, &h) {
                Ok(deployment) => rt.run_to_end(record, deployment, c, Some(h)),
                Err(e) => rt.cannot_start(&record, &c, &h, e),
            });
        self.track(name, control, thread, Some(held));
    }

    /// The job ready to run here: its modules, and where it starts (its
    /// newest committed checkpoint since it was deployed, else what it was
    /// deployed from).
    fn restore_point(
        &self,
        r: &JobRecord,
        held: &Held,
    ) -> Result<crate::deployment::Deployment, ApiError> {
        let deployment = self.prepare(r)?;
        let (committed, _) = exec::Fence::committed(held.fence.as_ref())
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        let latest = exec::latest_checkpoint_among(
            self.store.as_ref(),
            &r.name,
            r.checkpoint_floor,
            Some(&committed),
        )
        .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        let restore = match latest {
            Some(m) => {
                tracing::info!(job = %r.name, epoch = held.fence.epoch(), "resuming from committed checkpoint {}", m.id);
                Some(Restore::checkpoint(m))
            }
            None => match &r.from_savepoint {
                Some(sp) => Some(Restore::savepoint(
                    self.savepoint(sp)?,
                    None,
                    r.allow_non_restored_state,
                )),
                None => None,
            },
        };
        let deployment = deployment.starting_from(restore);
        deployment.check().map_err(|e| bad(e.to_string()))?;
        Ok(deployment)
    }

    /// A job this node was given but cannot start. A fault in what was
    /// deployed (its manifest, modules or restore point) fails it for
    /// good; anything else (the store or etcd not answering) gives it
    /// back, to be placed again a little later.
    fn cannot_start(&self, r: &JobRecord, control: &JobControl, held: &Held, e: ApiError) {
        let node = self.cluster.clone();
        tracing::error!(job = %r.name, "cannot start the job here: {e}");
        let for_good = e.kind() == ErrorKind::BadRequest;
        control.update(|s| {
            // Given back, the job waits to be placed again.
            s.state = if for_good {
                JobState::Failed
            } else {
                JobState::Starting
            };
            s.error = Some(e.to_string());
        });
        let Some(node) = node else {
            return;
        };
        let result = if for_good {
            let mut failed = r.clone();
            failed.desired = Desired::Failed;
            failed.error = Some(e.to_string());
            node.finish(&failed, &held.fence)
        } else {
            // Not at once: the cause may pass, and the scheduler may well
            // place it here again.
            std::thread::sleep(std::time::Duration::from_secs(2));
            node.release(&r.name, &held.fence)
        };
        if let Err(e) = result {
            tracing::error!(job = %r.name, "cannot record that the job did not start: {e}");
        }
    }

    /// What ends a fleet job without the usual record: it was revoked
    /// (another node has it), or it stopped at a savepoint to move.
    /// Returns whether its end is handled.
    pub(super) fn fleet_end(
        &self,
        held: &Held,
        job: &str,
        result: &Result<JobReport, ExecError>,
    ) -> bool {
        if held.revoked.load(Ordering::SeqCst) || matches!(result, Err(ExecError::Fenced(_))) {
            tracing::info!(job, "the job stopped here: another node owns it now");
            return true;
        }
        if held.draining.load(Ordering::SeqCst)
            && let Ok(r) = result
            && r.stopped_at.is_some()
            && let Some(node) = &self.cluster
        {
            match node.release(job, &held.fence) {
                Ok(true) => tracing::info!(
                    job,
                    "drained: stopped at a savepoint; another node resumes it"
                ),
                Ok(false) => tracing::info!(job, "drained; another node owns it already"),
                Err(e) => tracing::error!(
                    job,
                    "drained, but cannot give the job back: {e}; it moves when this node leaves the fleet"
                ),
            }
            return true;
        }
        false
    }

    /// Records how a fleet job ended, if this node still owns it.
    pub(super) fn fleet_record(&self, held: &Held, r: &JobRecord) -> anyhow::Result<()> {
        let Some(node) = &self.cluster else {
            return Ok(());
        };
        if !node.finish(r, &held.fence)? {
            tracing::info!(job = %r.name, "another node owns the job now; its end here is not recorded");
        }
        Ok(())
    }

    fn held_jobs(&self) -> Vec<(String, u64)> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .filter_map(|(name, r)| {
                let h = r.fleet.as_ref()?;
                let alive = r.thread.as_ref().is_some_and(|t| !t.is_finished());
                alive.then(|| (name.clone(), h.fence.epoch()))
            })
            .collect()
    }

    fn revoke(&self, job: &str) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = jobs.get(job)
            && let Some(h) = &r.fleet
        {
            h.revoked.store(true, Ordering::SeqCst);
            r.control.cancel();
            // No longer this node's, even while its thread winds down (a
            // cut-off job may take a while to notice): the API forwards
            // requests about it to its owner from now on.
            r.control.update(|s| s.node = None);
        }
    }

    fn drain(&self, job: &str) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = jobs.get(job) else {
            return true;
        };
        let Some(h) = &r.fleet else {
            return true;
        };
        match r.control.trigger(Some(None), Some(StopMode::Suspend)) {
            Ok(_) => {
                h.draining.store(true, Ordering::SeqCst);
                true
            }
            Err(e) => {
                tracing::info!(job, "draining: {e}");
                false
            }
        }
    }
}

/// The runtime as the fleet node sees it.
struct FleetHost(Weak<Runtime>);

impl Host for FleetHost {
    fn run(&self, record: JobRecord, fence: Arc<EtcdFence>) {
        if let Some(rt) = self.0.upgrade()
            && !rt.shutting_down.load(Ordering::SeqCst)
        {
            rt.run_assigned(record, fence);
        }
    }
    fn revoke(&self, job: &str) {
        if let Some(rt) = self.0.upgrade() {
            rt.revoke(job);
        }
    }
    fn drain(&self, job: &str) -> bool {
        self.0.upgrade().is_none_or(|rt| rt.drain(job))
    }
    fn running(&self) -> Vec<(String, u64)> {
        self.0
            .upgrade()
            .map(|rt| rt.held_jobs())
            .unwrap_or_default()
    }
}

/// The fleet as the API asks it.
pub(super) struct ApiCluster(pub(super) Arc<Node>);

fn status_of(r: &JobRecord, node: Option<String>, waiting: Option<String>) -> JobStatus {
    let c = JobControl::new(&r.name);
    c.update(|s| {
        s.state = match r.desired {
            // Waiting for a node, or starting on one.
            Desired::Running => JobState::Starting,
            Desired::Stopped => JobState::Stopped,
            Desired::Finished => JobState::Finished,
            Desired::Cancelled => JobState::Cancelled,
            Desired::Failed => JobState::Failed,
        };
        s.error = r.error.clone();
        s.node = node;
        s.waiting = waiting;
    });
    c.status()
}

impl crate::api::Cluster for ApiCluster {
    fn node(&self) -> String {
        self.0.id().to_string()
    }
    fn owner(&self, job: &str) -> Result<Option<(String, String)>, String> {
        Ok(self
            .0
            .owner_of(job)
            .map_err(|e| e.to_string())?
            .map(|n| (n.id, n.api)))
    }
    fn peers(&self) -> Result<Vec<(String, String)>, String> {
        Ok(self
            .0
            .peers()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|n| (n.id, n.api))
            .collect())
    }
    fn recorded(&self) -> Result<Vec<JobStatus>, String> {
        Ok(self
            .0
            .records()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|j| {
                let running = j.record.desired == Desired::Running;
                let node = j.owner.and_then(|o| o.node).filter(|_| running);
                status_of(&j.record, node, j.waiting.filter(|_| running))
            })
            .collect())
    }
    fn cancel_unplaced(&self, job: &str) -> Result<bool, String> {
        let records = self.0.records().map_err(|e| e.to_string())?;
        let Some(mut r) = records
            .into_iter()
            .map(|j| j.record)
            .find(|r| r.name == job)
        else {
            return Ok(false);
        };
        r.desired = Desired::Cancelled;
        self.0.update_unplaced(&r).map_err(|e| e.to_string())
    }
    fn nodes(&self) -> Result<Vec<crate::fleet::NodeView>, String> {
        self.0.nodes().map_err(|e| e.to_string())
    }
    fn drain(&self, node: &str) -> Result<bool, String> {
        self.0.drain(node).map_err(|e| e.to_string())
    }
}
