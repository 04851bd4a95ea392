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
    let rt = Runtime::open(
        &ServeConfig {
            data_dir: args.data_dir.clone(),
            state_url: args.state_url.clone(),
            max_module_bytes: args.max_module_mb.saturating_mul(1 << 20),
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
    tracing::info!(
        api = %format!("http://{}", server.addr),
        "wrun serve: data directory {}, token in {}",
        args.data_dir.display(),
        args.data_dir.join("api-token").display()
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
