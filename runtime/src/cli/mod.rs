//! The `wrun` command line: parses arguments, prints the whole cause chain
//! of an error (one line each) and exits non-zero; never shows a panic or a
//! `Debug` dump for bad input.
//!
//! One file per top-level command (`run.rs` is `wrun run`, `job.rs` is
//! `wrun job ...`), each with its arguments and a `run` function;
//! `output.rs` holds what several of them print. Nothing outside this
//! module but `main.rs` uses it.

mod checkpoint;
mod deploy;
mod job;
mod module;
mod node;
mod output;
mod run;
mod savepoint;
mod serve;
mod stop;
mod validate;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where compiled components are cached: `WRUN_CACHE_DIR` when set (one
/// cache for several data directories, e.g. a machine's), else the data
/// directory's `cache/`. Entries are keyed by the component's digest and
/// the engine's compatibility hash, so sharing one is safe.
/// Parses `--state-url` (clap's value parser).
fn parse_state_url(s: &str) -> Result<crate::blob::StateUrl, String> {
    crate::blob::StateUrl::parse(s).map_err(|e| e.detail)
}

fn compile_cache_dir(data_dir: &Path) -> PathBuf {
    match std::env::var_os("WRUN_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => data_dir.join("cache"),
    }
}

/// The version `wrun --version` prints; a build with crash points says so.
#[cfg(not(feature = "fault-injection"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "fault-injection")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (crash points: a test build for the crash tests, not for production)"
);

/// wrun runs stream jobs whose operators are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "wrun", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Log filter (e.g. `info`, `debug`, `wrun::guest=trace`); also WRUN_LOG.
    #[arg(long, global = true, env = "WRUN_LOG", default_value = "info")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job in this process until its bounded input ends or it is
    /// stopped; serves the control API meanwhile.
    Run(run::RunArgs),
    /// Run a long-lived runtime for many jobs with an HTTP API; jobs
    /// that were running resume after a restart.
    Serve(serve::ServeArgs),
    /// Deploy a job to a running `wrun serve` (uploading components given
    /// by path) and wait until it runs.
    Deploy(deploy::DeployArgs),
    /// Modules (components): push, list, inspect.
    Module {
        /// What to do.
        #[command(subcommand)]
        command: module::ModuleCommand,
    },
    /// Stop a running job: with --savepoint, at a savepoint; else cancel.
    Stop(stop::StopArgs),
    /// Jobs: list, status (with the last checkpoints), stop, cancel.
    Job {
        /// What to do.
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// The nodes of a fleet: list, drain (docs/fleet.md).
    Node {
        /// What to do.
        #[command(subcommand)]
        command: node::NodeCommand,
    },
    /// Savepoints: trigger, list, inspect, dispose, export, import.
    Savepoint {
        /// What to do.
        #[command(subcommand)]
        command: savepoint::SavepointCommand,
    },
    /// Checkpoints in the data directory.
    Checkpoint {
        /// What to do.
        #[command(subcommand)]
        command: checkpoint::CheckpointCommand,
    },
    /// Check a job manifest and print its graph, without running it.
    Validate {
        /// The job manifest.
        manifest: PathBuf,
        /// Default parallelism of operators that do not set their own.
        #[arg(short, long)]
        parallelism: Option<u32>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    restore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Module { command } => module::run(command),
        Command::Stop(args) => stop::run(args),
        Command::Job { command } => job::run(command),
        Command::Node { command } => node::run(command),
        Command::Savepoint { command } => savepoint::run(command),
        Command::Checkpoint { command } => checkpoint::run(command),
        Command::Validate {
            manifest,
            parallelism,
        } => validate::run(&manifest, parallelism),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", indent(&e.to_string()));
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {}", indent(&cause.to_string()));
            }
            ExitCode::FAILURE
        }
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n    ")
}

fn init_logging(filter: &str) {
    // The NATS client's own log repeats what the connectors say (connected,
    // reconnecting) at info: only its warnings, unless the filter asks.
    let filter = if filter.contains("async_nats") {
        filter.to_string()
    } else {
        format!("{filter},async_nats=warn")
    };
    let filter = filter.as_str();
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| {
        eprintln!("warning: invalid log filter {filter:?}; using \"info\"");
        tracing_subscriber::EnvFilter::new("info,async_nats=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// `wrun savepoint list | head` should end quietly when `head` has what it
/// wants, as Unix tools do, not fail (or panic) writing to a closed pipe.
/// Rust ignores SIGPIPE by default; the CLI restores the default action.
fn restore_sigpipe() {
    // SAFETY: called first thing in `main`, before any other thread exists;
    // setting a signal's disposition to the default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
