//! A deployment: a job ready to run — its graph, the loaded module of every
//! operator, and where it starts (fresh, a checkpoint, a savepoint). `wrun
//! run` and `wrun serve` build one each the same way and run it the same
//! way; they differ only in where the manifest, the modules and the restore
//! point come from (a file and the CLI's flags; a job record and the API).

use crate::checkpoint::{CheckpointManifest, CheckpointStore, Savepoint, SavepointStore};
use crate::exec::{self, ExecError, JobControl, JobReport, RunOptions};
use crate::job::JobGraph;
use crate::module::{LoadError, ModuleStore};
use crate::sandbox::{OperatorModule, Sandbox};
use std::collections::HashMap;
use std::sync::Arc;

/// A job ready to run.
pub struct Deployment {
    /// The validated graph.
    pub graph: JobGraph,
    /// The loaded component of every operator vertex (by vertex index).
    pub modules: HashMap<usize, Arc<OperatorModule>>,
    /// Where it starts; `None`: from the beginning.
    pub restore: Option<Restore>,
}

/// The checkpoint a deployment starts from.
pub struct Restore {
    /// The checkpoint (a savepoint's, or the job's own).
    pub checkpoint: CheckpointManifest,
    /// Where its chunks are when not in the job's store (an exported
    /// savepoint directory).
    pub chunks: Option<Arc<CheckpointStore>>,
    /// What it is in the user's words ("savepoint 'v1' (checkpoint 7 of
    /// job 'wordcount')"), for errors; `None`: errors name the checkpoint.
    pub label: Option<String>,
    /// Start even if it holds state for operators (uids) the job lacks;
    /// that state is dropped.
    pub allow_non_restored_state: bool,
}

impl Restore {
    /// From the job's own checkpoint.
    pub fn checkpoint(m: CheckpointManifest) -> Restore {
        Restore {
            checkpoint: m,
            chunks: None,
            label: None,
            allow_non_restored_state: false,
        }
    }

    /// From a savepoint (`chunks`: where they are, when it is an exported
    /// directory).
    pub fn savepoint(
        sp: Savepoint,
        chunks: Option<Arc<CheckpointStore>>,
        allow_non_restored_state: bool,
    ) -> Restore {
        Restore {
            label: Some(savepoint_label(&sp)),
            checkpoint: sp.checkpoint,
            chunks,
            allow_non_restored_state,
        }
    }
}

/// "savepoint 'v1' (checkpoint 7 of job 'wordcount')".
pub fn savepoint_label(sp: &Savepoint) -> String {
    format!(
        "savepoint '{}' (checkpoint {} of job '{}')",
        sp.name.as_deref().unwrap_or(&sp.id),
        sp.checkpoint.id,
        sp.job()
    )
}

impl Deployment {
    /// Loads (compiling where the cache has nothing) the module of every
    /// operator of `graph` from `store`.
    pub fn load(
        graph: JobGraph,
        store: &ModuleStore,
        sandbox: &Sandbox,
    ) -> Result<Deployment, LoadError> {
        let modules = crate::module::load_modules(&graph, store, sandbox)?;
        Ok(Deployment {
            graph,
            modules,
            restore: None,
        })
    }

    /// Starts from `restore`.
    pub fn starting_from(mut self, restore: Option<Restore>) -> Deployment {
        self.restore = restore;
        self
    }

    /// Whether the restore point fits the job (every state has its
    /// operator, every operator reads its state's format), before anything
    /// runs.
    pub fn check(&self) -> Result<(), ExecError> {
        match &self.restore {
            Some(r) => exec::check_restore(
                &self.graph,
                &r.checkpoint,
                &self.modules,
                r.allow_non_restored_state,
            )
            .map_err(|e| e.with_restore_label(r.label.as_deref())),
            None => Ok(()),
        }
    }

    /// How to run it: checkpoints into `store`, savepoints registered in
    /// `savepoints`, reached through `control`.
    pub fn options(
        &self,
        store: Arc<CheckpointStore>,
        savepoints: Arc<dyn SavepointStore>,
        control: Arc<JobControl>,
    ) -> RunOptions {
        let r = self.restore.as_ref();
        RunOptions {
            store: Some(store),
            restore: r.map(|r| r.checkpoint.clone()),
            restore_store: r.and_then(|r| r.chunks.clone()),
            restore_label: r.and_then(|r| r.label.clone()),
            allow_non_restored_state: r.is_some_and(|r| r.allow_non_restored_state),
            savepoints: Some(savepoints),
            control: Some(control),
            ..RunOptions::default()
        }
    }

    /// Runs it under its restart policy until it finishes, stops or fails.
    pub fn run(&self, sandbox: &Sandbox, opts: &RunOptions) -> Result<JobReport, ExecError> {
        exec::run_supervised(&self.graph, sandbox, &self.modules, opts)
    }
}
