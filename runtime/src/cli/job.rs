//! `wrun job list|status|stop|rescale|cancel`: the jobs of the running wrun,
//! through its API.

use super::output::{job_name, print_taken, progress, utc};
use super::stop::StopArgs;
use crate::api::Client;
use anyhow::Result;
use serde_json::{Value, json};
use std::path::PathBuf;

/// `wrun job ...`.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// The jobs of the running wrun, with their state.
    List {
        /// Data directory of the running wrun.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
    /// A job's state, restarts and last checkpoints (duration, size, new bytes).
    Status {
        /// The job.
        job: String,
        /// Data directory of the running wrun.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
    /// Stop a job: with --savepoint, at a savepoint; else cancel (same as
    /// `wrun stop`).
    Stop(StopArgs),
    /// Run a job at another parallelism: stop it at a savepoint and deploy
    /// it again from there (a `wrun serve` only). Operators that set their
    /// own `parallelism` in the manifest keep it.
    Rescale {
        /// The job.
        job: String,
        /// The new default parallelism (as `wrun deploy --parallelism`).
        #[arg(long, short = 'p')]
        parallelism: u32,
        /// Data directory of the running wrun.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
    /// Cancel a job: no savepoint, no restart (`wrun stop JOB` does the same).
    Cancel {
        /// The job.
        job: String,
        /// Data directory of the running wrun.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
}

/// `wrun job`.
pub(super) fn run(cmd: JobCommand) -> Result<()> {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let num_of = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into())
    };
    match cmd {
        JobCommand::List { data_dir } => {
            let c = Client::for_data_dir(&data_dir)?;
            let v = c.get("/v1/jobs")?;
            // A fleet's list says where each job runs.
            let fleet = v["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|j| j.get("node").is_some() || j.get("waiting").is_some());
            let node_col = |s: String| {
                if fleet {
                    format!(" {s}")
                } else {
                    String::new()
                }
            };
            println!(
                "{:<24} {:<11} {:>8} {:>16}{}",
                "JOB",
                "STATE",
                "RESTARTS",
                "LAST CHECKPOINT",
                node_col("NODE".into())
            );
            for j in v["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<11} {:>8} {:>16}{}",
                    str_of(j, "name"),
                    str_of(j, "state"),
                    num_of(j, "restarts"),
                    num_of(j, "last-checkpoint"),
                    node_col(if j.get("waiting").is_some() {
                        "(waiting: wrun job status)".into()
                    } else {
                        str_of(j, "node")
                    })
                );
            }
            Ok(())
        }
        JobCommand::Status { job, data_dir } => {
            let job = job_name(&job)?;
            let c = Client::for_data_dir(&data_dir)?;
            let j = c.get(&format!("/v1/jobs/{job}"))?;
            println!("job         {}", str_of(&j, "name"));
            println!("state       {}", str_of(&j, "state"));
            println!("restarts    {}", num_of(&j, "restarts"));
            if let Some(n) = j.get("node").and_then(Value::as_str) {
                println!("node        {n}");
            }
            if let Some(w) = j.get("waiting").and_then(Value::as_str) {
                println!("waiting     for a node: {w}");
            }
            if let Some(cp) = j.get("restored-from").and_then(Value::as_u64) {
                println!("started at  checkpoint {cp}");
            }
            if let Some(e) = j.get("error").and_then(Value::as_str) {
                println!("last error  {e}");
                let domain = j.get("error-domain").and_then(Value::as_str);
                let retry = j.get("retryable").and_then(Value::as_bool);
                match (domain, retry) {
                    (Some(d), Some(true)) => println!("error kind  {d}; a restart can help"),
                    (Some(d), _) => println!("error kind  {d}; a restart cannot help"),
                    _ => {}
                }
            }
            if let Some(at) = j.get("next-attempt-at-ms").and_then(Value::as_u64) {
                let left = at.saturating_sub(crate::time::unix_ms());
                println!("next try    in {:.1} s", left as f64 / 1000.0);
            }
            for c in j["connectors"].as_array().into_iter().flatten() {
                let up = c.get("connected").and_then(Value::as_bool).unwrap_or(false);
                println!(
                    "connector   {}[{}] {}",
                    str_of(c, "vertex"),
                    num_of(c, "subtask"),
                    if up {
                        "connected"
                    } else {
                        "disconnected (reconnecting)"
                    }
                );
            }
            for w in j["watermarks"].as_array().into_iter().flatten() {
                println!(
                    "watermark   {}[{}] {}",
                    str_of(w, "vertex"),
                    num_of(w, "subtask"),
                    watermark_text(w.get("watermark-ms").and_then(Value::as_i64))
                );
            }
            for w in j["split-watermarks"].as_array().into_iter().flatten() {
                println!(
                    "split       {} {} {}",
                    str_of(w, "vertex"),
                    str_of(w, "split"),
                    watermark_text(w.get("watermark-ms").and_then(Value::as_i64))
                );
            }
            let cps = j["checkpoints"].as_array().cloned().unwrap_or_default();
            if cps.is_empty() {
                println!("checkpoints none yet");
                return Ok(());
            }
            println!();
            println!(
                "{:>6}  {:<24} {:>9} {:>12} {:>12}",
                "ID", "TRIGGERED (UTC)", "DURATION", "FULL SIZE", "NEW BYTES"
            );
            for cp in &cps {
                let n = |k: &str| cp.get(k).and_then(Value::as_u64).unwrap_or(0);
                println!(
                    "{:>6}  {:<24} {:>7}ms {:>12} {:>12}",
                    n("id"),
                    utc(n("triggered-at-ms")),
                    n("duration-ms"),
                    n("full-bytes"),
                    n("new-bytes")
                );
            }
            Ok(())
        }
        JobCommand::Stop(args) => super::stop::run(args),
        JobCommand::Rescale {
            job,
            parallelism,
            data_dir,
        } => {
            let job = job_name(&job)?;
            let c = Client::for_data_dir(&data_dir)?;
            let r = c.post(
                &format!("/v1/jobs/{job}/rescale"),
                &json!({ "parallelism": parallelism }),
            )?;
            let id = r["request-id"].as_str().unwrap_or_default().to_string();
            let v = c.wait(&id, progress("rescale"))?;
            print_taken(&v)?;
            println!("job '{job}' deployed again from it at parallelism {parallelism}");
            Ok(())
        }
        JobCommand::Cancel { job, data_dir } => {
            let job = job_name(&job)?;
            let c = Client::for_data_dir(&data_dir)?;
            c.post(&format!("/v1/jobs/{job}/cancel"), &json!({}))?;
            println!("cancelled job '{job}'");
            Ok(())
        }
    }
}

/// A watermark as `wrun job status` shows it: the UTC time, the end of
/// input, or idle.
fn watermark_text(w: Option<i64>) -> String {
    match w {
        None => "idle".into(),
        Some(i64::MAX) => "end of input (every event time has passed)".into(),
        Some(ms) => {
            match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
                Ok(t) => {
                    let lag = crate::time::unix_ms() as i64 - ms;
                    format!(
                        "{} ({ms} ms; {:.1} s behind the wall clock)",
                        t.format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                        lag as f64 / 1000.0
                    )
                }
                Err(_) => format!("{ms} ms"),
            }
        }
    }
}
