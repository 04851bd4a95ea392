//! `wrun serve`, `wrun deploy` and `wrun module push|list|inspect`.

use super::run::{DEFAULT_MAX_MODULE_MB, EndpointFile, load_manifest};
use crate::api::{Client, DeployRequest};
use crate::job::{ComponentRef, VertexKind};
use crate::module::{ModuleInfo, ModuleStore, Pushed};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::serve::{Runtime, ServeConfig};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `wrun serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Data directory: modules, job records, checkpoints, savepoints, the
    /// API token. Jobs running when wrun serve last stopped resume.
    #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API; port 0 picks a free one (written to
    /// DATA_DIR/api.json, where the CLI finds it).
    #[arg(long, default_value = "127.0.0.1:8270")]
    pub listen: std::net::SocketAddr,
    /// Largest module `wrun module push` accepts, in MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_MODULE_MB)]
    pub max_module_mb: usize,
}

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

/// `wrun module ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ModuleCommand {
    /// Upload a component (or a core module with an embedded component
    /// type): validated, compiled once, stored by digest.
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// Name it NAME@VERSION (needs --version).
        #[arg(long, requires = "version")]
        name: Option<String>,
        /// The version for --name.
        #[arg(long, requires = "name")]
        version: Option<String>,
        /// Data directory (of the running wrun, if any).
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
    /// List stored modules.
    List {
        /// Data directory (of the running wrun, if any).
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
    /// Show a module's world, imports, exports, size, digest and names.
    Inspect {
        /// NAME@VERSION, blake3:<hex>, or a unique prefix of the hex digest.
        module: String,
        /// Data directory (of the running wrun, if any).
        #[arg(long, env = "WRUN_DATA_DIR", default_value = ".wrun")]
        data_dir: PathBuf,
    },
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

pub(super) fn serve(args: ServeArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            "the API listens on {}, beyond this machine: it has no TLS, so the bearer token crosses the network in clear text; put a TLS proxy in front or listen on 127.0.0.1",
            args.listen
        );
    }
    let sandbox = Arc::new(Sandbox::new(SandboxConfig {
        cache_dir: Some(args.data_dir.join("cache")),
        ..SandboxConfig::default()
    })?);
    let rt = Runtime::open(
        &ServeConfig {
            data_dir: args.data_dir.clone(),
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

/// Percent-encodes everything but unreserved characters (RFC 3986), for a
/// path segment or a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
}

/// Uploads `file` to the running wrun, with progress on stderr.
fn upload(c: &Client, file: &Path, name: Option<(&str, &str)>) -> Result<Pushed> {
    let bytes =
        std::fs::read(file).with_context(|| format!("cannot read module {}", file.display()))?;
    let info = c.get("/v1/info")?;
    if let Some(max) = info.get("max-module-bytes").and_then(Value::as_u64)
        && bytes.len() as u64 > max
    {
        bail!(
            "{} is {} bytes, over the server's limit of {max} bytes; shrink it (release build, strip debug info) or start `wrun serve` with a larger --max-module-mb",
            file.display(),
            bytes.len()
        );
    }
    eprint!(
        "uploading {} ({})... ",
        file.display(),
        mib(bytes.len() as u64)
    );
    let _ = std::io::stderr().flush();
    let started = Instant::now();
    let mut path = "/v1/modules".to_string();
    if let Some((n, v)) = name {
        path.push_str(&format!("?name={}&version={}", encode(n), encode(v)));
    }
    let r = c.post_bytes(&path, &bytes);
    let r = match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("failed");
            return Err(e.context(format!("cannot push {}", file.display())));
        }
    };
    let pushed: Pushed = serde_json::from_value(r)?;
    eprintln!(
        "{} in {:.1} s",
        if pushed.created {
            "validated and compiled"
        } else {
            "already stored"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(pushed)
}

fn print_module(m: &ModuleInfo, full: bool) {
    println!("digest     {}", m.digest);
    if !m.names.is_empty() {
        println!("names      {}", m.names.join(", "));
    }
    println!("size       {} bytes", m.size);
    println!(
        "world      {} ({})",
        m.world,
        if m.stateful { "stateful" } else { "stateless" }
    );
    if let Some(from) = &m.componentized_from {
        println!("made from  core module {from} (componentized on upload)");
    }
    if full {
        println!("pushed     {} UTC", super::run::utc(m.pushed_at_ms));
        println!("imports");
        for i in &m.imports {
            println!("  {i}");
        }
        println!("exports");
        for e in &m.exports {
            println!("  {e}");
        }
    }
}

fn local_sandbox(data_dir: &Path) -> Result<Sandbox> {
    Ok(Sandbox::new(SandboxConfig {
        cache_dir: Some(data_dir.join("cache")),
        ..SandboxConfig::default()
    })?)
}

pub(super) fn module(cmd: ModuleCommand) -> Result<()> {
    match cmd {
        ModuleCommand::Push {
            file,
            name,
            version,
            data_dir,
        } => {
            let name = name.as_deref().zip(version.as_deref());
            let pushed = match Client::running(&data_dir) {
                Some(c) => upload(&c, &file, name)?,
                None => {
                    // No wrun on this data directory: store it directly.
                    let data = crate::datadir::DataDir::open(&data_dir)?;
                    let bytes = std::fs::read(&file)
                        .with_context(|| format!("cannot read module {}", file.display()))?;
                    let sandbox = local_sandbox(&data_dir)?;
                    crate::module::push(
                        data.modules(),
                        &sandbox,
                        &bytes,
                        name,
                        DEFAULT_MAX_MODULE_MB << 20,
                    )
                    .with_context(|| format!("cannot push {}", file.display()))?
                }
            };
            println!(
                "{} {}",
                if pushed.created {
                    "pushed"
                } else {
                    "already stored:"
                },
                pushed.module.digest
            );
            print_module(&pushed.module, false);
            Ok(())
        }
        ModuleCommand::List { data_dir } => {
            let list: Vec<ModuleInfo> = match Client::running(&data_dir) {
                Some(c) => serde_json::from_value(c.get("/v1/modules")?["modules"].clone())?,
                None => ModuleStore::new(&data_dir).list()?,
            };
            if list.is_empty() {
                println!("no modules; push one with `wrun module push FILE.wasm`");
                return Ok(());
            }
            println!(
                "{:<20} {:>10}  {:<22} {:<23} NAMES",
                "DIGEST", "SIZE", "WORLD", "PUSHED (UTC)"
            );
            for m in &list {
                println!(
                    "{:<20} {:>10}  {:<22} {:<23} {}",
                    format!("{}…", &m.digest[..m.digest.len().min(19)]),
                    m.size,
                    m.world,
                    super::run::utc(m.pushed_at_ms),
                    if m.names.is_empty() {
                        "-".to_string()
                    } else {
                        m.names.join(", ")
                    }
                );
            }
            Ok(())
        }
        ModuleCommand::Inspect { module, data_dir } => {
            let m: ModuleInfo = match Client::running(&data_dir) {
                Some(c) => {
                    serde_json::from_value(c.get(&format!("/v1/modules/{}", encode(&module)))?)?
                }
                None => {
                    let store = ModuleStore::new(&data_dir);
                    store.info(&store.lookup(&module)?)?
                }
            };
            print_module(&m, true);
            Ok(())
        }
    }
}

pub(super) fn deploy(args: DeployArgs) -> Result<()> {
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
                println!("deployed job '{job}'{from}: {state}");
                return Ok(());
            }
        }
    }
}
