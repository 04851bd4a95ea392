//! The `wrun` command.

fn main() -> std::process::ExitCode {
    wrun::cli::main()
}
