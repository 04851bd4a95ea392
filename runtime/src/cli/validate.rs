//! `wrun validate`, and the reading of a job manifest that `wrun run` and
//! `wrun deploy` share.

use crate::job::{self, JobGraph};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Reads and validates a manifest.
pub(super) fn load_manifest(path: &Path, parallelism: Option<u32>) -> Result<JobGraph> {
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

/// `wrun validate`: the job graph as JSON.
pub(super) fn run(manifest: &Path, parallelism: Option<u32>) -> Result<()> {
    let graph = load_manifest(manifest, parallelism)?;
    println!("{}", serde_json::to_string_pretty(&graph)?);
    Ok(())
}
