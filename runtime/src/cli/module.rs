//! `wrun module push|list|inspect`: through the running wrun where there is
//! one, on the data directory's module store otherwise; and the upload with
//! progress that `wrun deploy` uses too.

use super::output::utc;
use crate::api::Client;
use crate::module::{ModuleInfo, ModuleStore, Pushed};
use crate::sandbox::{Sandbox, SandboxConfig};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The default largest module `wrun module push` accepts, in MiB.
pub const DEFAULT_MAX_MODULE_MB: usize = 256;

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

/// Percent-encodes everything but unreserved characters (RFC 3986), for a
/// path segment or a query value.
/// `s` as one URL path segment or query value: everything but RFC 3986's
/// unreserved characters percent-encoded.
fn encode(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
}

/// Uploads `file` to the running wrun, with progress on stderr.
pub(super) fn upload(c: &Client, file: &Path, name: Option<(&str, &str)>) -> Result<Pushed> {
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
    if let Some(f) = &m.state_format {
        println!("state      {f}");
    }
    if !m.outputs.is_empty() {
        println!("outputs    main, {}", m.outputs.join(", "));
    }
    if let Some(from) = &m.componentized_from {
        println!("made from  core module {from} (componentized on upload)");
    }
    if full {
        println!("pushed     {} UTC", utc(m.pushed_at_ms));
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
        cache_dir: Some(super::compile_cache_dir(data_dir)),
        ..SandboxConfig::default()
    })?)
}

/// `wrun module`.
pub(super) fn run(cmd: ModuleCommand) -> Result<()> {
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
                    utc(m.pushed_at_ms),
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
