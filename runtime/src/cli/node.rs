//! `wrun node list|drain`: the nodes of a fleet, through any node's API.

use super::output::utc;
use crate::api::Client;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `wrun node ...`.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// The fleet's live nodes: the scheduler, who drains, the jobs on each.
    List {
        /// Data directory of a node of the fleet.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
    /// Move every job off a node: each stops at a savepoint and resumes
    /// from it on another node; the node then takes no job until it
    /// leaves the fleet (a restarted node takes jobs again).
    Drain {
        /// The node's ID.
        node: String,
        /// Return at once instead of waiting until the node runs no job.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Data directory of a node of the fleet.
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
}

fn jobs_of(v: &Value, node: &str) -> Option<Vec<String>> {
    v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == node)
        .map(|n| {
            n["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|j| j.as_str().map(String::from))
                .collect()
        })
}

/// The strings of a JSON array joined by `sep`, or `none` when it has none.
fn names(v: &Value, sep: &str, none: &str) -> String {
    let all: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if all.is_empty() {
        none.to_string()
    } else {
        all.join(sep)
    }
}

/// `wrun node`.
pub(super) fn run(cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::List { data_dir } => {
            let c = Client::for_data_dir(&data_dir)?;
            let v = c.get("/v1/nodes")?;
            println!(
                "{:<16} {:<28} {:>5} {:>10} {:<10} {:<20} JOBS",
                "NODE", "API", "CORES", "MEMORY", "ROLE", "JOINED"
            );
            for n in v["nodes"].as_array().into_iter().flatten() {
                let role = match (n["scheduler"].as_bool(), n["draining"].as_bool()) {
                    (_, Some(true)) => "draining",
                    (Some(true), _) => "scheduler",
                    _ => "-",
                };
                let memory = n["memory-mb"]
                    .as_u64()
                    .map_or("-".to_string(), |m| format!("{m} MiB"));
                println!(
                    "{:<16} {:<28} {:>5} {:>10} {:<10} {:<20} {}",
                    n["id"].as_str().unwrap_or("-"),
                    n["api"].as_str().unwrap_or("-"),
                    n["cores"].as_u64().unwrap_or(0),
                    memory,
                    role,
                    n["joined-at-ms"].as_u64().map(utc).unwrap_or_default(),
                    names(&n["jobs"], ",", "-")
                );
            }
            Ok(())
        }
        NodeCommand::Drain {
            node,
            no_wait,
            timeout,
            data_dir,
        } => {
            let c = Client::for_data_dir(&data_dir)?;
            let r = c.post(&format!("/v1/nodes/{node}/drain"), &json!({}))?;
            println!(
                "node {node} is draining; moving {}",
                names(&r["jobs"], ", ", "no job")
            );
            if no_wait {
                return Ok(());
            }
            let until = Instant::now() + Duration::from_secs(timeout);
            loop {
                let v = c.get("/v1/nodes")?;
                match jobs_of(&v, &node) {
                    Some(j) if j.is_empty() => {
                        println!("node {node} runs no job now");
                        return Ok(());
                    }
                    None => {
                        println!("node {node} has left the fleet");
                        return Ok(());
                    }
                    Some(j) if Instant::now() > until => bail!(
                        "node {node} still runs {} after {timeout} s; `wrun job status JOB` says why (a job that cannot take a savepoint cannot move)",
                        j.join(", ")
                    ),
                    Some(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            }
        }
    }
}
