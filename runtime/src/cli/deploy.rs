//! `wrun deploy`: sends a job to a running `wrun serve`, uploading the
//! components its manifest gives by path, and waits until it runs.

use super::module::upload;
use super::validate::load_manifest;
use crate::api::{Client, DeployRequest};
use crate::job::{ComponentRef, VertexKind};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `wrun deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The job manifest (job.toml). Components given by path are uploaded.
    pub manifest: PathBuf,
    /// Default parallelism of operators that do not set their own.
    #[arg(short, long)]
    pub parallelism: Option<u32>,
    /// Start from a savepoint: its ID or name, or an exported directory
    /// (imported first).
    #[arg(long, value_name = "SAVEPOINT")]
    pub from_savepoint: Option<String>,
    /// With --from-savepoint: start even if the savepoint holds state for
    /// operators (uids) this job does not have; that state is dropped.
    #[arg(long, requires = "from_savepoint")]
    pub allow_non_restored_state: bool,
    /// Return once the server accepted the job, without waiting for it to
    /// run.
    #[arg(long)]
    pub detach: bool,
    /// Data directory of the running wrun serve (or set WRUN_URL and
    /// WRUN_TOKEN).
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
}

/// `wrun deploy`.
pub(super) fn run(args: DeployArgs) -> Result<()> {
    let graph = load_manifest(&args.manifest, args.parallelism)?;
    let text = std::fs::read_to_string(&args.manifest)?;
    let c = Client::for_data_dir(&args.data_dir).context(
        "`wrun deploy` sends the job to a running `wrun serve`: start one with `wrun serve --data-dir DIR` and pass the same --data-dir (or set WRUN_URL and WRUN_TOKEN)",
    )?;
    let info = c.get("/v1/info")?;
    if info.get("mode").and_then(Value::as_str) != Some("serve") {
        bail!(
            "the wrun on {} runs one job (`wrun run`); deploy to a `wrun serve`",
            args.data_dir.display()
        );
    }
    let mut components = std::collections::BTreeMap::new();
    for v in &graph.vertices {
        if let VertexKind::Operator {
            component: ComponentRef::Path(p),
            ..
        } = &v.kind
        {
            let pushed = upload(&c, p, None).with_context(|| format!("operator '{}'", v.name))?;
            components.insert(v.name.clone(), pushed.module.digest);
        }
    }
    let from_savepoint = match &args.from_savepoint {
        Some(spec)
            if Path::new(spec)
                .join(crate::checkpoint::EXPORT_RECORD)
                .is_file() =>
        {
            let dir = std::fs::canonicalize(spec)?;
            eprintln!("importing the exported savepoint {}...", dir.display());
            let sp = c.post("/v1/savepoint-imports", &json!({ "dir": dir }))?;
            Some(sp["id"].as_str().unwrap_or_default().to_string())
        }
        other => other.clone(),
    };
    let base = args
        .manifest
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base)
        .with_context(|| format!("cannot resolve {}", base.display()))?;
    let req = DeployRequest {
        manifest: text,
        manifest_path: Some(args.manifest.display().to_string()),
        base_dir: Some(base),
        parallelism: args.parallelism,
        components,
        from_savepoint: from_savepoint.clone(),
        allow_non_restored_state: args.allow_non_restored_state,
    };
    c.post("/v1/jobs", &serde_json::to_value(&req)?)?;
    let job = &graph.name;
    if args.detach {
        println!("deployed job '{job}'; `wrun job status {job}` shows how it runs");
        return Ok(());
    }
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        let s = c.get(&format!("/v1/jobs/{job}"))?;
        let state = s["state"].as_str().unwrap_or("?");
        if let Some(why) = s["waiting"].as_str() {
            if started.elapsed() > Duration::from_millis(500) {
                eprintln!();
            }
            println!(
                "deployed job '{job}'; it waits for a node: {why}. It starts once a node can take it (`wrun job status {job}`)"
            );
            return Ok(());
        }
        match state {
            "starting" => {
                if started.elapsed() > Duration::from_millis(500) {
                    eprint!(
                        "\r{} job '{job}': {:.1} s...",
                        if from_savepoint.is_some() {
                            "restoring"
                        } else {
                            "starting"
                        },
                        started.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            "failed" => bail!(
                "job '{job}' failed: {}",
                s["error"].as_str().unwrap_or("(no reason given)")
            ),
            _ => {
                if started.elapsed() > Duration::from_millis(500) {
                    eprintln!();
                }
                let from = match (&from_savepoint, s["restored-from"].as_u64()) {
                    (Some(sp), Some(cp)) => format!(" from savepoint {sp} (checkpoint {cp})"),
                    _ => String::new(),
                };
                let on = match s["node"].as_str() {
                    Some(n) => format!(" on node {n}"),
                    None => String::new(),
                };
                println!("deployed job '{job}'{from}{on}: {state}");
                return Ok(());
            }
        }
    }
}
