//! `cargo xtask <task>`: developer tasks for the wrun repository.

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask guests [--force] [--rust-only] | c-bindings [DIR]\n\n  guests       build every guest (examples/, tests/guests/) into a component in target/guests/\n  c-bindings   write wit-bindgen's C bindings of the operator world into DIR (default gen/)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("c-bindings") => {
            let out = args
                .get(1)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "gen".into());
            wrun_xtask::lang::c_bindings(&out).map(|()| println!("{}", out.display()))
        }
        Some("guests") => {
            let force = args.iter().any(|a| a == "--force");
            let opts = wrun_xtask::Options {
                force,
                verbose: true,
            };
            if args.iter().any(|a| a == "--rust-only") {
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
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
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
