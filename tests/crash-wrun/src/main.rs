//! `wrun-crash`: wrun with its crash points armed (the `fault-injection`
//! feature), for the crash tests alone. `WRUN_CRASH_AT=<point>:<n>` makes
//! it SIGKILL itself the n-th time it passes a point (runtime/src/fault.rs).
//! It is a package of its own, outside the workspace's default members, so
//! that `cargo build`, `cargo install` and `cargo bench -p wrun-runtime`
//! never turn the feature on for the `wrun` users run.

fn main() -> std::process::ExitCode {
    wrun::cli::main()
}
