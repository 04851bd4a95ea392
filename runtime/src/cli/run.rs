//! `wrun run` and `wrun validate`.

use crate::checkpoint::{CheckpointStore, FsStore};
use crate::exec::{self, RunOptions};
use crate::job::{self, JobGraph, VertexKind};
use crate::module::ModuleStore;
use crate::sandbox::{OperatorModule, Sandbox, SandboxConfig};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    /// Continue from the job's latest checkpoint in the data directory
    /// (after a crash or a kill); without one, start from the beginning.
    #[arg(long)]
    pub resume: bool,
}

/// Arguments of `wrun checkpoint list`.
#[derive(Debug, clap::Args)]
pub struct CheckpointListArgs {
    /// Only this job's checkpoints.
    #[arg(long)]
    pub job: Option<String>,
    /// Data directory.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
}

/// The checkpoint store of a data directory.
pub fn checkpoint_store(data_dir: &Path) -> Result<std::sync::Arc<dyn CheckpointStore>> {
    Ok(std::sync::Arc::new(FsStore::open(
        &data_dir.join("checkpoints"),
    )?))
}

/// Reads and validates a manifest.
pub fn load_manifest(path: &Path, parallelism: Option<u32>) -> Result<JobGraph> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read job manifest {}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    Ok(job::parse_manifest(
        &text,
        &path.display().to_string(),
        &base,
        parallelism,
    )?)
}

/// Resolves and compiles every operator's component.
pub fn load_modules(
    graph: &JobGraph,
    store: &ModuleStore,
    sandbox: &Sandbox,
) -> Result<HashMap<usize, Arc<OperatorModule>>> {
    let mut modules = HashMap::new();
    for (i, v) in graph.vertices.iter().enumerate() {
        let VertexKind::Operator { component, .. } = &v.kind else {
            continue;
        };
        let bytes = store
            .resolve(component)
            .with_context(|| format!("operator '{}'", v.name))?;
        let module = sandbox
            .load(&bytes)
            .with_context(|| format!("operator '{}'", v.name))?;
        if module.imports_state && v.uid.is_none() {
            tracing::warn!(
                "operator '{}' keeps keyed state but has no `uid`: its state ID comes from the graph's shape, so changing the graph would orphan its state; give it a uid",
                v.name
            );
        }
        modules.insert(i, module);
    }
    Ok(modules)
}

pub(super) fn run(args: RunArgs) -> Result<()> {
    let graph = load_manifest(&args.manifest, args.parallelism)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let store = ModuleStore::new(&args.data_dir);
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(args.data_dir.join("cache")),
        ..SandboxConfig::default()
    })?;
    let modules = load_modules(&graph, &store, &sandbox)?;
    if args.resume && graph.checkpoint.is_none() {
        anyhow::bail!(
            "--resume needs checkpoints, but job '{}' has no [checkpoint] table in {}; add one (see docs/checkpoints.md) or run without --resume",
            graph.name,
            args.manifest.display()
        );
    }
    let store = match (&graph.checkpoint, args.resume) {
        (Some(_), _) | (None, true) => Some(checkpoint_store(&args.data_dir)?),
        (None, false) => None,
    };
    let restore = match (&store, args.resume) {
        (Some(store), true) => {
            let m = exec::latest_checkpoint(store.as_ref(), &graph.name)?;
            match &m {
                Some(m) => tracing::info!(job = %graph.name, "resuming from checkpoint {}", m.id),
                None => {
                    tracing::warn!(job = %graph.name, "--resume: no usable checkpoint in {}; starting from the beginning", args.data_dir.join("checkpoints").display())
                }
            }
            m
        }
        _ => None,
    };
    tracing::info!(job = %graph.name, "running");
    let opts = RunOptions {
        store,
        restore,
        ..RunOptions::default()
    };
    let report = exec::run_supervised(&graph, &sandbox, &modules, &opts)
        .with_context(|| format!("job '{}' failed", graph.name))?;
    let summary: Vec<String> = report
        .vertices
        .iter()
        .map(|v| match (v.records_in, v.records_out) {
            (0, out) => format!("{} out {out}", v.name),
            (inp, 0) => format!("{} in {inp}", v.name),
            (inp, out) => format!("{} in {inp} out {out}", v.name),
        })
        .collect();
    tracing::info!(job = %graph.name, "finished in {:.2} s: {}", report.elapsed.as_secs_f64(), summary.join(", "));
    Ok(())
}

pub(super) fn validate(manifest: &Path, parallelism: Option<u32>) -> Result<()> {
    let graph = load_manifest(manifest, parallelism)?;
    println!("{}", serde_json::to_string_pretty(&graph)?);
    Ok(())
}

pub(super) fn checkpoint_list(args: CheckpointListArgs) -> Result<()> {
    let dir = args.data_dir.join("checkpoints");
    if !dir.is_dir() {
        println!("no checkpoints in {}", dir.display());
        return Ok(());
    }
    let store = checkpoint_store(&args.data_dir)?;
    let jobs = match args.job {
        Some(j) => vec![j],
        None => store.list_jobs()?,
    };
    println!(
        "{:<20} {:>6}  {:<24} {:>9} {:>12} {:>12}",
        "JOB", "ID", "TRIGGERED (UTC)", "DURATION", "FULL SIZE", "NEW BYTES"
    );
    for job in jobs {
        for id in store.list_checkpoints(&job)? {
            match store.get_manifest(&job, id) {
                Ok(m) => println!(
                    "{:<20} {:>6}  {:<24} {:>7}ms {:>12} {:>12}",
                    job,
                    id,
                    utc(m.triggered_at_ms),
                    m.duration_ms,
                    m.full_bytes,
                    m.new_bytes
                ),
                Err(e) => println!("{job:<20} {id:>6}  unreadable: {e}"),
            }
        }
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm`.
fn utc(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}
