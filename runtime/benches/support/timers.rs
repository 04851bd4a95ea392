//! What keyed timers cost on the host, without Wasm: registering one,
//! firing one, and a checkpoint and a restore of a subtask holding 1M
//! pending timers (`WRUN_BENCH_ONLY=timers`; also part of a full run).
//!
//! Timers are map state of the reserved name `wrun:timers` plus an
//! in-memory queue per domain (runtime/src/state/timers.rs), so these
//! figures are that map state's and that queue's costs. The guest side
//! (one `register-many` call per batch, one `on-timers` call per 1024
//! fired timers) is in the window benchmark (`scripts/bench-window`).

use std::time::Instant;
use wrun::state::{Domain, KeyGroupRange, KeyedState, StateLimits, Timer, TimerQueue};

fn fresh_state() -> KeyedState {
    KeyedState::new(
        128,
        KeyGroupRange { start: 0, end: 128 },
        StateLimits::default(),
    )
}

/// Registers, checkpoints, restores and fires 1M event-time timers, one
/// per key, their times spread over a minute.
pub fn timer_figures(metric: fn(&str, f64, &str)) -> anyhow::Result<()> {
    use wrun::checkpoint::CheckpointStore;
    let n = 1_000_000usize;
    let timers: Vec<Timer> = (0..n)
        .map(|i| Timer {
            key: format!("key-{i}").into_bytes(),
            time: (i as i64 * 7919) % 60_000,
            domain: Domain::EventTime,
            tag: 0,
        })
        .collect();
    let mut state = fresh_state();
    let mut queue = TimerQueue::restore(&state, usize::MAX)?;
    let t = Instant::now();
    for timer in &timers {
        queue.register(&mut state, timer)?;
    }
    let register = t.elapsed();
    metric(
        "timers.register_ns_per_timer",
        register.as_nanos() as f64 / n as f64,
        "ns",
    );
    // Registering them again changes nothing (deduplicated).
    let t = Instant::now();
    for timer in &timers {
        queue.register(&mut state, timer)?;
    }
    metric(
        "timers.register_again_ns_per_timer",
        t.elapsed().as_nanos() as f64 / n as f64,
        "ns",
    );

    // A full checkpoint of the 1M pending timers into a filesystem store.
    let dir = tempfile::tempdir()?;
    let store = CheckpointStore::open_dir(dir.path())?;
    let t = Instant::now();
    let snap = state.snapshot(true);
    let txn = wrun::checkpoint::begin(&store);
    let (refs, full, _) = wrun::checkpoint::write_key_groups(&txn, &|_| None, &snap)?;
    drop(txn);
    metric(
        "timers.1000000_pending.checkpoint_ms",
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    metric(
        "timers.1000000_pending.checkpoint_bytes",
        full as f64,
        "bytes",
    );

    // Restore: the key groups back into a fresh state, and the queue
    // rebuilt from it (what a subtask does before it opens).
    let t = Instant::now();
    let mut restored = fresh_state();
    let refs: Vec<&wrun::checkpoint::KeyGroupRef> = refs.iter().collect();
    wrun::checkpoint::read_key_groups(&store, &refs, &mut restored)
        .map_err(|e| anyhow::anyhow!(e))?;
    let read = t.elapsed();
    let mut queue = TimerQueue::restore(&restored, usize::MAX)?;
    metric(
        "timers.1000000_pending.restore_read_ms",
        read.as_secs_f64() * 1e3,
        "ms",
    );
    metric(
        "timers.1000000_pending.restore_ms",
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    anyhow::ensure!(queue.len() == n, "restored {} timers of {n}", queue.len());

    // Fire them all, in batches of 1024 as the host hands them to the guest.
    let t = Instant::now();
    let mut fired = Vec::with_capacity(1024);
    let mut count = 0;
    loop {
        fired.clear();
        queue.pop_due(&mut restored, Domain::EventTime, i64::MAX, 1024, &mut fired)?;
        if fired.is_empty() {
            break;
        }
        count += fired.len();
    }
    anyhow::ensure!(count == n, "fired {count} timers of {n}");
    metric(
        "timers.fire_ns_per_timer",
        t.elapsed().as_nanos() as f64 / n as f64,
        "ns",
    );
    Ok(())
}
