//! `wrun run`: one job in this process, with the control API on loopback,
//! until its bounded input ends or it is stopped.

use super::module::DEFAULT_MAX_MODULE_MB;
use super::serve::EndpointFile;
use super::validate::load_manifest;
use crate::checkpoint::SavepointBackend;
use crate::datadir::DataDir;
use crate::deployment::{Deployment, Restore};
use crate::exec;
use crate::sandbox::{Sandbox, SandboxConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `wrun run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job manifest (job.toml).
    pub manifest: PathBuf,
    /// Default parallelism of operators that do not set their own.
    #[arg(short, long)]
    pub parallelism: Option<u32>,
    /// Data directory: module store, compile cache and checkpoints.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
    /// Where checkpoints and savepoint pins live: a directory, or
    /// s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true for an
    /// S3-compatible object store (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or credentials-file=PATH). Default:
    /// DATA_DIR/checkpoints. See docs/state-storage.md.
    #[arg(long, env = "WRUN_STATE_URL", value_name = "URL", value_parser = super::parse_state_url)]
    pub state_url: Option<crate::blob::StateUrl>,
    /// Continue from the job's latest checkpoint in the data directory
    /// (after a crash or a kill); without one, start from the beginning.
    #[arg(long, conflicts_with = "from_savepoint")]
    pub resume: bool,
    /// Start from a savepoint: its ID or name, or the directory of an
    /// exported savepoint. State is mapped to operators by uid.
    #[arg(long, value_name = "SAVEPOINT")]
    pub from_savepoint: Option<String>,
    /// With --from-savepoint: start even if the savepoint holds state for
    /// operators (uids) this job does not have; that state is dropped.
    #[arg(long, requires = "from_savepoint")]
    pub allow_non_restored_state: bool,
    /// Address of the control API (savepoints, stop, checkpoints) on
    /// loopback; port 0 picks a free one. Commands find it through the data
    /// directory.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

/// `wrun run`.
pub(super) fn run(args: RunArgs) -> Result<()> {
    let graph = load_manifest(&args.manifest, args.parallelism)?;
    if args.resume && graph.checkpoint.is_none() {
        anyhow::bail!(
            "--resume needs checkpoints, but job '{}' has no [checkpoint] table in {}; add one (see docs/checkpoints.md) or run without --resume",
            graph.name,
            args.manifest.display()
        );
    }
    // The command line wins over the manifest's `[state] url`.
    let state_url = args.state_url.as_ref().or(graph.state.as_ref());
    let data = DataDir::open_at(&args.data_dir, state_url)?;
    let sandbox = Arc::new(Sandbox::new(SandboxConfig {
        cache_dir: Some(super::compile_cache_dir(data.root())),
        ..SandboxConfig::default()
    })?);
    let store = data.store();
    // Savepoints can be taken on request even without periodic checkpoints.
    // Opened first: the job's own savepoint directory is where
    // --from-savepoint finds its savepoints too.
    let savepoints = data.savepoints_for(&graph.savepoints)?;
    let restore = if args.resume {
        let m = exec::latest_checkpoint(store.as_ref(), &graph.name)?;
        match &m {
            Some(m) => tracing::info!(job = %graph.name, "resuming from checkpoint {}", m.id),
            None => {
                tracing::warn!(job = %graph.name, "--resume: no usable checkpoint in {}; starting from the beginning", store.location(""))
            }
        }
        m.map(Restore::checkpoint)
    } else if let Some(sp) = &args.from_savepoint {
        let (sp, chunks) = crate::checkpoint::resolve_savepoint(sp, &data.registries().all())?;
        tracing::info!(job = %graph.name, savepoint = %sp.id, "starting from savepoint {} (checkpoint {} of job '{}')", sp.id, sp.checkpoint.id, sp.job());
        Some(Restore::savepoint(
            sp,
            chunks,
            args.allow_non_restored_state,
        ))
    } else {
        None
    };
    let module_api = crate::api::Modules {
        store: data.modules().clone(),
        sandbox: sandbox.clone(),
        max_bytes: DEFAULT_MAX_MODULE_MB << 20,
    };
    let deployment = Deployment::load(graph, data.modules(), &sandbox)?.starting_from(restore);
    let graph = &deployment.graph;

    let control = exec::JobControl::new(&graph.name);
    let api = crate::api::ApiState::new(
        crate::api::token(&args.data_dir)?,
        "embedded",
        store.clone(),
        data.registries(),
        Some(module_api),
    );
    api.add_job(&graph.name, control.clone());
    let server = crate::api::serve(args.listen, api.clone())?;
    let endpoint = EndpointFile::write(&args.data_dir, server.addr)?;
    tracing::info!(job = %graph.name, api = %format!("http://{}", server.addr), "running; its dashboard is at http://{}/ui/ while it runs (sign in with the token in {})", server.addr, args.data_dir.join("api-token").display());
    if graph.savepoints.backend == SavepointBackend::Memory {
        tracing::warn!(job = %graph.name, "savepoints of this job are kept in memory: they are lost when this wrun stops and can only resume a job inside this same running wrun (see docs/savepoints.md)");
    }
    let opts = deployment.options(store, savepoints, control);
    let report = deployment.run(&sandbox, &opts);
    // A `wrun stop` is waiting for the outcome of its request: answer it
    // before the API goes away.
    api.wait_delivered(std::time::Duration::from_secs(10));
    drop(server);
    drop(endpoint);
    if report.is_err() && opts.control.as_ref().is_some_and(|c| c.is_cancelled()) {
        anyhow::bail!(
            "job '{}' was cancelled (`wrun stop` or `wrun job cancel`); its output is committed up to its last completed checkpoint, and `wrun run {} --resume` continues from there",
            graph.name,
            args.manifest.display()
        );
    }
    let report = report.with_context(|| format!("job '{}' failed", graph.name))?;
    if let Some(id) = report.already_finished {
        println!(
            "job '{}' had already finished at checkpoint {id}: its input had ended and its output is committed; nothing to do. To run it again from the start, run it without --resume.",
            graph.name
        );
        return Ok(());
    }
    if let Some(sp) = &report.stopped_at {
        if sp.backend == SavepointBackend::Memory {
            tracing::warn!(job = %graph.name, savepoint = %sp.id, "stopped at memory savepoint {}, which is gone now that this wrun exits: it cannot resume the job. To stop at a savepoint you can resume from later, use the filesystem backend ([savepoints] backend = \"filesystem\", the default) or `wrun savepoint export` it before the job stops; `wrun run {} --resume` continues from the latest checkpoint", sp.id, args.manifest.display());
        } else {
            tracing::info!(job = %graph.name, savepoint = %sp.id, "stopped at savepoint {}; resume with `wrun run {} --from-savepoint {}`", sp.id, args.manifest.display(), sp.id);
        }
    }
    let summary: Vec<String> = report
        .vertices
        .iter()
        .map(|v| match (v.records_in, v.records_out) {
            (0, out) => format!("{} out {out}", v.name),
            (inp, 0) => format!("{} in {inp}", v.name),
            (inp, out) => format!("{} in {inp} out {out}", v.name),
        })
        .collect();
    let from_sources: u64 = graph
        .vertices
        .iter()
        .zip(&report.vertices)
        .filter(|(g, _)| matches!(g.kind, crate::job::VertexKind::Source(_)))
        .map(|(_, v)| v.records_out)
        .sum();
    let rate = from_sources as f64 / report.elapsed.as_secs_f64().max(1e-9);
    let latency = report
        .latency
        .map(|l| {
            format!(
                "; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50_ms, l.p99_ms, l.max_ms
            )
        })
        .unwrap_or_default();
    tracing::info!(job = %graph.name, "finished in {:.2} s: {}; {rate:.0} records/s{latency}", report.elapsed.as_secs_f64(), summary.join(", "));
    Ok(())
}
