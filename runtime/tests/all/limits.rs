//! Sandbox limits, each as a pair: one run that stays inside the limit and
//! one that breaks it, asserting the exact failure.

use crate::common::*;

fn chaos(
    mode: &str,
    n: u64,
    limits: &str,
    count: u64,
) -> (tempfile::TempDir, anyhow::Result<wrun::exec::JobReport>) {
    let dir = tempfile::tempdir().unwrap();
    let op = format!("uid = \"chaos\"\nconfig = {{ mode = \"{mode}\", n = {n} }}");
    let job = generator_job(
        count,
        10,
        guest("chaos"),
        &op,
        "forward",
        &format!("[limits]\n{limits}\n[batch]\nsize = 16"),
    );
    let r = run_in(dir.path(), &job, None);
    (dir, r)
}

#[test]
fn an_infinite_loop_in_process_times_out() {
    let (_d, ok) = chaos("echo", 0, "call-timeout-ms = 50", 100);
    ok.unwrap();
    let (_d, err) = chaos("loop-process", 0, "call-timeout-ms = 50", 100);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("operator chaos[0] timed out in process"),
        "{err}"
    );
    assert!(err.contains("50 ms"), "{err}");
}

#[test]
fn an_infinite_loop_in_open_times_out() {
    let (_d, err) = chaos("loop-open", 0, "call-timeout-ms = 50", 10);
    let err = chain(&err.unwrap_err());
    assert!(err.contains("operator chaos[0] timed out in open"), "{err}");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    // 16 events x 1 MiB per batch, 4 batches: 64 MiB kept in all.
    let (_d, ok) = chaos("alloc", 1 << 20, "memory-mb = 128", 64);
    ok.unwrap();
    let (_d, err) = chaos("alloc", 1 << 20, "memory-mb = 32", 64);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("operator chaos[0] failed in process: memory limit exceeded"),
        "{err}"
    );
    assert!(err.contains("the limit is 32 MiB"), "{err}");
}

#[test]
fn a_huge_output_batch_is_refused() {
    let (d, ok) = chaos("fanout", 10, "max-output-events = 160", 32);
    ok.unwrap();
    assert_eq!(read_jsonl(&d.path().join("out.jsonl")).len(), 320);
    let (_d, err) = chaos("fanout", 100, "max-output-events = 160", 32);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains(
            "operator chaos[0] emitted 1600 events from one call of process; the limit is 160"
        ),
        "{err}"
    );
}

#[test]
fn a_trap_names_the_operator_subtask_and_panic() {
    let (_d, ok) = chaos("trap-after", 1000, "", 100);
    ok.unwrap();
    let (_d, err) = chaos("trap-after", 5, "", 100);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("operator chaos[0] trapped in process"),
        "{err}"
    );
    assert!(err.contains("chaos: trapping after 5 events"), "{err}");
    assert!(err.contains("wasm backtrace"), "{err}");
}

#[test]
fn deep_recursion_overflows_the_guest_stack_not_the_host() {
    let (_d, ok) = chaos("recurse", 100, "", 10);
    ok.unwrap();
    let (_d, err) = chaos("recurse", 100_000_000, "", 10);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("operator chaos[0] trapped in process"),
        "{err}"
    );
    // Rust keeps its frames in linear memory (a "shadow stack") and the
    // wasm stack holds the calls: whichever runs out first traps.
    assert!(
        err.contains("the guest's stack overflowed")
            || err.contains("a stack overflow shows up like this too"),
        "{err}"
    );
    assert!(err.lines().count() < 40, "the backtrace is capped: {err}");
}

#[test]
fn an_oversized_state_key_is_refused() {
    let (_d, ok) = chaos("raw-key", 1024, "", 10);
    // The raw key does not hash into this subtask's key groups unless
    // parallelism is 1, which it is here.
    ok.unwrap();
    let (_d, err) = chaos("raw-key", 1 << 20, "", 10);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("a key of 1048576 bytes exceeds the limit of 65536 bytes"),
        "{err}"
    );
}

/// A guest with room for it (2 GiB of memory) passes a 1 GiB key to
/// state: wasmtime refuses to copy that much into the host in one call
/// (its hostcall fuel) and the guest traps, before wrun's own 64 KiB key
/// limit (tested above with 1 MiB) is even reached; the runtime goes on.
#[test]
fn a_one_gib_state_key_is_refused() {
    let (_d, err) = chaos(
        "raw-key",
        1 << 30,
        "memory-mb = 2048\ncall-timeout-ms = 60000",
        1,
    );
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("operator chaos[0] trapped in process")
            && err.contains("too much data is being copied between the host and the guest"),
        "{err}"
    );
}

#[test]
fn malformed_packed_arguments_are_refused() {
    let (_d, err) = chaos("bad-packed", 0, "", 10);
    let err = chain(&err.unwrap_err());
    assert!(err.contains("operator chaos[0] failed in process: state 'raw': malformed call: packed end offset 9 after 1 in 2 bytes of data"), "{err}");
}

/// One read call whose answer could never fit the guest's memory (a 1 MiB
/// value asked for 1,000 times: 1 GiB) is refused before the host builds
/// it, so a guest cannot make the host allocate gigabytes.
#[test]
fn a_read_larger_than_guest_memory_is_refused() {
    let (_d, ok) = chaos("big-read", 1024, "memory-mb = 64", 2);
    ok.unwrap();
    let (_d, err) = chaos("big-read", 1 << 20, "memory-mb = 64", 2);
    let err = chain(&err.unwrap_err());
    assert!(
        err.contains("operator chaos[0] failed in process: state 'raw': one call asked for more than 67108864 bytes of state"),
        "{err}"
    );
}
