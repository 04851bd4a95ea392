//! `wrun stop` (also `wrun job stop`): cancel a running job, or stop it at
//! a savepoint, through its API.

use super::output::{job_name, print_taken, progress};
use crate::api::Client;
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `wrun stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The job.
    pub job: String,
    /// Take a savepoint and stop at it, in one barrier: nothing is
    /// processed after it. Without it, the job is cancelled.
    #[arg(long)]
    pub savepoint: bool,
    /// With --savepoint: close every operator first, so their final output
    /// is emitted and committed (for a job that will not resume).
    #[arg(long, requires = "savepoint")]
    pub drain: bool,
    /// With --savepoint: a name for it.
    #[arg(long, requires = "savepoint")]
    pub name: Option<String>,
    /// With --savepoint: return once the stop is requested, without
    /// waiting for the savepoint.
    #[arg(long, requires = "savepoint")]
    pub detach: bool,
    /// Data directory of the running wrun.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
}

/// `wrun stop`.
pub(super) fn run(args: StopArgs) -> Result<()> {
    if let Some(n) = &args.name {
        crate::checkpoint::check_name(n)?;
    }
    job_name(&args.job)?;
    let c = Client::for_data_dir(&args.data_dir)?;
    if !args.savepoint {
        c.post(&format!("/v1/jobs/{}/cancel", args.job), &json!({}))?;
        println!("cancelled job '{}'", args.job);
        return Ok(());
    }
    let r = c.post(
        &format!("/v1/jobs/{}/savepoints", args.job),
        &json!({
            "name": args.name,
            "stop": if args.drain { "drain" } else { "suspend" },
        }),
    )?;
    let id = r["request-id"].as_str().unwrap_or_default().to_string();
    if args.detach {
        println!("stop with savepoint requested: {id} (GET /v1/requests/{id})");
        return Ok(());
    }
    let v = c.wait(&id, progress("stop with savepoint"))?;
    print_taken(&v)?;
    println!("job '{}' stopped", args.job);
    Ok(())
}
