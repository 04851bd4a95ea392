//! `wrun serve`: a long-lived runtime for many jobs behind the HTTP API,
//! and the `api.json` endpoint file through which the CLI finds a running
//! wrun (`wrun run` writes it too).

use super::module::DEFAULT_MAX_MODULE_MB;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::serve::{Runtime, ServeConfig};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `wrun serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Data directory: modules, job records, checkpoints, savepoints, the
    /// API token. Jobs running when wrun serve last stopped resume.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
    /// Where checkpoints and savepoint pins live: a directory, or
    /// s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true for an
    /// S3-compatible object store (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or credentials-file=PATH). Default:
    /// DATA_DIR/checkpoints. See docs/state-storage.md.
    #[arg(long, env = "WRUN_STATE_URL", value_name = "URL", value_parser = super::parse_state_url)]
    pub state_url: Option<crate::blob::StateUrl>,
    /// Address of the HTTP API; port 0 picks a free one (written to
    /// DATA_DIR/api.json, where the CLI finds it).
    #[arg(long, default_value = "127.0.0.1:8270")]
    pub listen: std::net::SocketAddr,
    /// Largest module `wrun module push` accepts, in MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_MB)]
    pub max_module_mb: usize,
    /// Join a fleet whose membership, scheduler and job records live in
    /// this etcd cluster: etcd://HOST:PORT[,HOST:PORT...]. Needs
    /// --node-id and a --state-url every node shares. See docs/fleet.md.
    #[arg(long, env = "WRUN_CLUSTER", value_name = "URL", value_parser = crate::fleet::parse_cluster_url)]
    pub cluster: Option<crate::fleet::Endpoints>,
    /// This node's ID in the fleet (letters, digits, '-', '_').
    #[arg(long, env = "WRUN_NODE_ID", requires = "cluster")]
    pub node_id: Option<String>,
    /// How long a node may go unheard before the fleet moves its jobs,
    /// in seconds (etcd lease TTL).
    #[arg(long, default_value_t = crate::fleet::DEFAULT_LEASE_TTL.as_secs(), requires = "cluster")]
    pub lease_ttl: u64,
    /// The cores this node offers jobs; placement weighs by them. Default:
    /// the machine's.
    #[arg(long, requires = "cluster")]
    pub cores: Option<u32>,
    /// The memory, in MiB, this node offers jobs: placement gives it a job
    /// only while its jobs' `limits.memory-mb` × operator subtasks fit.
    /// Default: no limit.
    #[arg(long, value_name = "MIB", requires = "cluster")]
    pub memory_mb: Option<u64>,
    /// The address other nodes reach this node's API at, when not the
    /// --listen address (e.g. http://10.0.0.5:8270).
    #[arg(long, value_name = "URL", requires = "cluster")]
    pub advertise: Option<String>,
}

/// Joins the fleet named by `--cluster`, if any: checks the flags, connects
/// to etcd and adopts the fleet's API token.
fn join_fleet(args: &ServeArgs) -> Result<Option<Arc<crate::fleet::Node>>> {
    let Some(endpoints) = &args.cluster else {
        return Ok(None);
    };
    let Some(id) = &args.node_id else {
        anyhow::bail!(
            "--cluster needs --node-id: this node's name in the fleet, unique among its nodes"
        );
    };
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!("--node-id {id:?}: use 1 to 64 letters, digits, '-' and '_'");
    }
    if args.state_url.is_none() {
        anyhow::bail!(
            "--cluster needs --state-url: a fleet's checkpoints and savepoints live where every node reads them (s3://BUCKET/PREFIX?endpoint=..., or a directory all nodes share); see docs/fleet.md"
        );
    }
    if args.lease_ttl == 0 {
        anyhow::bail!("--lease-ttl must be at least 1 second");
    }
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let node = crate::fleet::Node::connect(crate::fleet::ClusterConfig {
        endpoints: endpoints.0.clone(),
        node_id: id.clone(),
        lease_ttl: std::time::Duration::from_secs(args.lease_ttl),
        cores,
        memory_mb: args.memory_mb,
    })?;
    let local = crate::api::token(&args.data_dir)?;
    let token = node.api_token(&local)?;
    crate::api::set_token(&args.data_dir, &token)?;
    Ok(Some(node))
}

fn signals() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

/// `wrun serve`: until SIGINT or SIGTERM.
pub(super) fn run(args: ServeArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            "the API listens on {}, beyond this machine: it has no TLS, so the bearer token crosses the network in clear text; put a TLS proxy in front or listen on 127.0.0.1",
            args.listen
        );
    }
    let sandbox = Arc::new(Sandbox::new(SandboxConfig {
        cache_dir: Some(super::compile_cache_dir(&args.data_dir)),
        ..SandboxConfig::default()
    })?);
    let cluster = join_fleet(&args)?;
    let rt = Runtime::open(
        &ServeConfig {
            data_dir: args.data_dir.clone(),
            state_url: args.state_url.clone(),
            max_module_bytes: args.max_module_mb.saturating_mul(1 << 20),
            cluster,
        },
        sandbox,
    )?;
    // Jobs first, then the API: no request sees a half-resumed runtime.
    rt.resume_all()?;
    let server = match crate::api::serve(args.listen, rt.api()) {
        Ok(s) => s,
        Err(e) => {
            // The jobs' records stay `running`: they resume next time.
            rt.shutdown();
            return Err(e);
        }
    };
    let endpoint = EndpointFile::write(&args.data_dir, server.addr)?;
    let api = args
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{}", server.addr));
    if let Err(e) = rt.join(api) {
        rt.shutdown();
        return Err(e.context("cannot join the fleet"));
    }
    tracing::info!(
        api = %format!("http://{}", server.addr),
        "wrun serve: data directory {}, token in {}; the dashboard is at http://{}/ui/",
        args.data_dir.display(),
        args.data_dir.join("api-token").display(),
        server.addr
    );
    signals()?;
    tracing::info!(
        "shutting down: jobs stop now and resume from their latest checkpoints on the next start"
    );
    rt.shutdown();
    drop(server);
    drop(endpoint);
    Ok(())
}

/// `api.json` while this process serves the API; removed on drop, unless
/// another process has replaced it since.
pub(super) struct EndpointFile {
    path: PathBuf,
}

impl EndpointFile {
    pub(super) fn write(data_dir: &Path, addr: std::net::SocketAddr) -> Result<EndpointFile> {
        let path = crate::api::endpoint_path(data_dir);
        let ep = crate::api::Endpoint {
            url: format!("http://{addr}"),
            pid: std::process::id(),
        };
        crate::fsutil::write_atomic_path(&path, &serde_json::to_vec_pretty(&ep)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(EndpointFile { path })
    }
}

impl Drop for EndpointFile {
    fn drop(&mut self) {
        let ours = std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::api::Endpoint>(&b).ok())
            .is_some_and(|ep| ep.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
