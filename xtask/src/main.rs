//! `cargo xtask <task>`: developer tasks for the wrun repository.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Developer tasks for the wrun repository.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build every guest (examples/, tests/guests/) into a component in
    /// target/guests/.
    Guests {
        /// Rebuild even when nothing changed.
        #[arg(long)]
        force: bool,
        /// Only the Rust guests (no Python, JavaScript or C toolchain needed).
        #[arg(long)]
        rust_only: bool,
    },
    /// Write wit-bindgen's C bindings of the operator world into DIR.
    CBindings {
        /// Where to write them.
        #[arg(default_value = "gen")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::CBindings { dir } => {
            wrun_xtask::lang::c_bindings(&dir).map(|()| println!("{}", dir.display()))
        }
        Task::Guests { force, rust_only } => {
            let opts = wrun_xtask::Options {
                force,
                verbose: true,
            };
            if rust_only {
                wrun_xtask::build_rust_guests(&opts)
            } else {
                wrun_xtask::build_guests(&opts)
            }
            .map(|built| {
                for g in &built {
                    println!("{}", g.component.display());
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
