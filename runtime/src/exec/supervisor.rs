//! Restarts under a job's restart policy: run an attempt, and after a
//! failure that a restart can help, start again from the newest checkpoint
//! this run took (or the checkpoint or savepoint it started from).

use super::job::{finish_from_final, run_job};
use super::restore::{latest_checkpoint_among, newest_checkpoint_id};
use super::{ExecError, JobReport, JobState, RunOptions};
use crate::job::JobGraph;
use crate::sandbox::{OperatorModule, Sandbox};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a job under its restart policy: after a failure it restarts from
/// the newest checkpoint that reads back whole (or from the start when
/// there is none), up to `graph.restart.attempts` times. A failure that a
/// restart cannot help ([`ExecError::is_retryable`]) fails the job at once.
pub fn run_supervised(
    graph: &JobGraph,
    sandbox: &Sandbox,
    modules: &HashMap<usize, Arc<OperatorModule>>,
    opts: &RunOptions,
) -> Result<JobReport, ExecError> {
    let started = Instant::now();
    let mut opts = opts.clone();
    let initial = (
        opts.restore.clone(),
        opts.restore_store.clone(),
        opts.restore_label.clone(),
    );
    // Checkpoints up to this ID are older than this run: a restart never
    // goes back to one of them (a previous run's state), only to the
    // checkpoint or savepoint the run started from.
    let floor = match &opts.store {
        Some(store) => newest_checkpoint_id(store.as_ref(), &graph.name)?,
        None => 0,
    };
    let mut restarts = 0;
    let set_state =
        |state: JobState, restarts: u32, error: Option<&ExecError>, next: Option<u64>| {
            if let Some(c) = &opts.control {
                c.update(|s| {
                    s.state = state;
                    s.restarts = restarts;
                    s.error = error.map(|e| e.to_string());
                    s.error_domain = error.map(|e| e.domain());
                    s.retryable = error.map(|e| e.is_retryable());
                    s.next_attempt_at_ms = next;
                });
            }
        };
    loop {
        let restored_from = opts.restore.as_ref().map(|m| m.id.0);
        let result = match &opts.restore {
            // The job had finished: nothing to replay, only the sinks'
            // commits of its final checkpoint to make sure of.
            Some(m) if m.input_ended => {
                let store = opts.restore_store.as_ref().or(opts.store.as_ref());
                match store {
                    Some(store) => {
                        super::check_restore(graph, m, modules, opts.allow_non_restored_state)
                            .map_err(|e| e.with_restore_label(opts.restore_label.as_deref()))
                            .and_then(|()| finish_from_final(graph, m, store.as_ref()))
                    }
                    None => run_job(graph, sandbox, modules, &opts),
                }
            }
            _ => run_job(graph, sandbox, modules, &opts),
        };
        let cancelled = opts.control.as_ref().is_some_and(|c| c.is_cancelled());
        match result {
            Ok(mut r) => {
                r.elapsed = started.elapsed();
                r.restarts = restarts;
                r.restored_from = restored_from;
                let state = if r.stopped_at.is_some() {
                    JobState::Stopped
                } else {
                    JobState::Finished
                };
                set_state(state, restarts, None, None);
                return Ok(r);
            }
            Err(e) if cancelled => {
                set_state(JobState::Cancelled, restarts, None, None);
                return Err(match e {
                    ExecError::Disconnected => ExecError::Cancelled,
                    e => e,
                });
            }
            Err(e) if restarts < graph.restart.attempts && e.is_retryable() => {
                restarts += 1;
                if let Some(m) = opts.control.as_ref().and_then(|c| c.metrics()) {
                    m.restarted();
                }
                let delay = graph.restart.delay(restarts);
                set_state(
                    JobState::Restarting,
                    restarts,
                    Some(&e),
                    Some(crate::time::unix_ms() + delay.as_millis() as u64),
                );
                opts.fail_point = None;
                // The newest checkpoint taken since the start; before the
                // first one, the checkpoint or savepoint the job started from.
                let committed = match &opts.fence {
                    Some(f) => Some(f.committed().map_err(ExecError::from)?.0),
                    None => None,
                };
                let latest = match &opts.store {
                    Some(store) => latest_checkpoint_among(
                        store.as_ref(),
                        &graph.name,
                        floor,
                        committed.as_ref(),
                    )?,
                    None => None,
                };
                (opts.restore, opts.restore_store, opts.restore_label) = match latest {
                    Some(m) => (Some(m), None, None),
                    None => initial.clone(),
                };
                let from = opts
                    .restore
                    .as_ref()
                    .map(|m| format!("checkpoint {}", m.id))
                    .unwrap_or_else(|| "the start (no checkpoint yet)".into());
                tracing::warn!(job = %graph.name, "job failed: {e}; restarting from {from} in {} ms (restart {restarts} of {})", delay.as_millis(), graph.restart.attempts);
                if let Some(m) = opts.control.as_ref().and_then(|c| c.metrics()) {
                    m.restart_backoff(delay);
                }
                wait_before_restart(delay, opts.control.as_deref());
                if let Some(m) = opts.control.as_ref().and_then(|c| c.metrics()) {
                    m.restart_backoff(Duration::ZERO);
                }
            }
            Err(e) => {
                if !e.is_retryable() {
                    tracing::error!(job = %graph.name, "job failed: {e}; a restart cannot help (a {} error), so it is not retried", e.domain());
                }
                set_state(JobState::Failed, restarts, Some(&e), None);
                return Err(e);
            }
        }
    }
}

/// Waits `delay` before a restart, ending early when the job is cancelled
/// meanwhile (its next attempt then ends at once).
fn wait_before_restart(delay: Duration, control: Option<&super::JobControl>) {
    let until = Instant::now() + delay;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if control.is_some_and(|c| c.is_cancelled()) {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
