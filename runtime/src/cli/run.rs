//! `wrun run` and `wrun validate`.

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
    /// Data directory: module store and compile cache.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
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
    tracing::info!(job = %graph.name, "running");
    let report = exec::run_job(&graph, &sandbox, &modules, &RunOptions::default())
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
