//! Crash points for the crash test (runtime/tests/all/crash.rs): places in
//! the checkpoint and sink-commit paths where the process may kill itself,
//! as when a machine dies. Nothing here changes what a job computes.
//!
//! The kill path exists only with the `fault-injection` cargo feature,
//! which the test build turns on (runtime/Cargo.toml's self
//! dev-dependency) and `cargo build` / `cargo build --release` do not:
//! without it [`crash_point`] is an empty function, and no environment
//! variable can make a production `wrun` kill itself.

/// A place where the crash test (runtime/tests/all/crash.rs) may kill the
/// process: with `WRUN_CRASH_AT=<name>:<n>` in the environment, the `n`-th
/// time (from 1) the process passes `crash_point(name)`, it sends itself
/// SIGKILL: no destructor, no flush, as when a machine dies. Without the
/// variable this is one load of an initialized `OnceLock`.
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point(name: &str) {
    use std::sync::atomic::Ordering;
    static AT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static PASSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("WRUN_CRASH_AT").ok()?;
        let (n, k) = v.split_once(':')?;
        Some((n.to_string(), k.parse().ok()?))
    });
    if let Some((n, k)) = at
        && n == name
        && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *k
    {
        tracing::warn!("WRUN_CRASH_AT={n}:{k}: killing this process");
        // SAFETY: sends a signal to this process; nothing to uphold.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}
