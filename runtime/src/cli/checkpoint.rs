//! `wrun checkpoint list` (through the running wrun, else from the data
//! directory) and `wrun checkpoint trigger` (through the running wrun).

use super::output::{job_name, progress, utc};
use crate::api::Client;
use crate::datadir::DataDir;
use anyhow::Result;
use serde_json::json;
use std::path::{Path, PathBuf};

/// `wrun checkpoint ...`.
#[derive(Debug, clap::Subcommand)]
pub enum CheckpointCommand {
    /// List checkpoints: id, time, duration, full size, bytes newly written.
    List(ListArgs),
    /// Take a checkpoint of a running job now.
    Trigger {
        /// The job.
        job: String,
        /// Return once requested, with the request ID, instead of waiting.
        #[arg(long)]
        detach: bool,
        /// Data directory of the running wrun.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
}

/// Arguments of `wrun checkpoint list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this job's checkpoints.
    #[arg(long)]
    pub job: Option<String>,
    /// Data directory.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
    /// Where checkpoints and savepoint pins live: a directory, or
    /// s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true for an
    /// S3-compatible object store (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or credentials-file=PATH). Default:
    /// DATA_DIR/checkpoints. See docs/state-storage.md.
    #[arg(long, env = "WRUN_STATE_URL", value_name = "URL", value_parser = super::parse_state_url)]
    pub state_url: Option<crate::blob::StateUrl>,
}

/// `wrun checkpoint`.
pub(super) fn run(cmd: CheckpointCommand) -> Result<()> {
    match cmd {
        CheckpointCommand::List(args) => list(args),
        CheckpointCommand::Trigger {
            job,
            detach,
            data_dir,
        } => trigger(&job, detach, &data_dir),
    }
}

/// `wrun checkpoint list`.
fn list(args: ListArgs) -> Result<()> {
    if let Some(job) = &args.job {
        crate::names::check(crate::names::NameKind::Job, job)?;
    }
    // Through the running wrun when there is one (it owns the store), else
    // straight from the data directory.
    let rows = match crate::api::Client::running(&args.data_dir) {
        Some(c) => {
            let path = match &args.job {
                Some(j) => format!("/v1/checkpoints?job={j}"),
                None => "/v1/checkpoints".to_string(),
            };
            match c.get(&path)?.get("checkpoints") {
                Some(serde_json::Value::Array(rows)) => rows.clone(),
                _ => anyhow::bail!("the running wrun returned no checkpoint list"),
            }
        }
        None => {
            let dir = args.data_dir.join("checkpoints");
            if args.state_url.is_none() && !dir.is_dir() {
                println!("no checkpoints in {}", dir.display());
                return Ok(());
            }
            crate::api::checkpoint_rows(
                DataDir::open_read_only_at(&args.data_dir, args.state_url.as_ref())?
                    .store()
                    .as_ref(),
                args.job,
            )?
        }
    };
    println!(
        "{:<20} {:>6}  {:<24} {:>9} {:>12} {:>12}",
        "JOB", "ID", "TRIGGERED (UTC)", "DURATION", "FULL SIZE", "NEW BYTES"
    );
    for r in rows {
        let num = |k: &str| r.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let job = r
            .get("job")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?");
        match r.get("error").and_then(serde_json::Value::as_str) {
            Some(e) => println!("{job:<20} {:>6}  unreadable: {e}", num("id")),
            None => println!(
                "{:<20} {:>6}  {:<24} {:>7}ms {:>12} {:>12}",
                job,
                num("id"),
                utc(num("triggered-at-ms")),
                num("duration-ms"),
                num("full-bytes"),
                num("new-bytes")
            ),
        }
    }
    Ok(())
}

/// `wrun checkpoint trigger`.
fn trigger(job: &str, detach: bool, data_dir: &Path) -> Result<()> {
    let job = job_name(job)?;
    let c = Client::for_data_dir(data_dir)?;
    let r = c.post(&format!("/v1/jobs/{job}/checkpoints"), &json!({}))?;
    let id = r["request-id"].as_str().unwrap_or_default().to_string();
    if detach {
        println!("checkpoint requested: {id} (GET /v1/requests/{id})");
        return Ok(());
    }
    let v = c.wait(&id, progress("checkpoint"))?;
    eprintln!();
    println!("checkpoint {} of job '{job}' complete", v["checkpoint"]);
    Ok(())
}
