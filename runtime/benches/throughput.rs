//! The runtime benchmark: a keyed running sum over generated events
//! (default 10,000,000 events, 100,000 keys, parallelism 1) through
//!
//! - `wasm`: the `keyed-sum` Rust component with `ValueState<i64>`;
//! - `native-state`: the same logic as native Rust over wrun's own keyed
//!   state backend (the same key groups and hash maps the host gives Wasm);
//! - `native-hashmap`: the same logic as a native closure over a plain
//!   `HashMap`, the cheapest possible baseline;
//!
//! each in the same harness (generator → hash edge → operator → discard
//! sink), in this process, one after another. Prints one JSON line per
//! metric (the median of `WRUN_BENCH_ROUNDS`, default 3, interleaved
//! rounds). `WRUN_BENCH_EVENTS` and `WRUN_BENCH_KEYS` change the workload.
//!
//! Then the checkpoint figures: at 100,000 and 1,000,000 keys, the
//! synchronous pause (the copy-on-write snapshot), the time to encode and
//! write a checkpoint, its full and newly written bytes, and the same after
//! 1% of the keys change; and the keyed sum's throughput with a checkpoint
//! every second, against the same job without (`WRUN_BENCH_SKIP_CHECKPOINT=1`
//! skips them).
//!
//! Then the savepoint figures at 1,000,000 keys (`WRUN_BENCH_SKIP_SAVEPOINT=1`
//! skips them): the first savepoint of the running job, taken once its
//! state is filled, which writes every key group (full, as Flink's
//! savepoints are), with the bytes it wrote; incremental savepoints a
//! second of processing apart, with the bytes each wrote; restore from the
//! savepoint (a run resumed with nothing left to read: restore,
//! instantiate, end); and an in-process swap downtime, from the
//! stop-with-savepoint request to the end of a resumed run that has exactly
//! one event left to process, with the module already compiled (the swap a
//! user meets, through the CLI and a new process, is `scripts/bench-swap`).
//! The checkpoint figures also time what copy-on-write costs the operator:
//! one write into each key group with a snapshot held (each copies its key
//! group) against none held, and a write of every key both ways.
//!
//! Then the language figures (`WRUN_BENCH_SKIP_LANGUAGES=1` skips them;
//! `WRUN_BENCH_ONLY=languages` runs only them): the keyed count (the
//! wordcount counter) in Rust, Python, JavaScript and C against a native
//! closure over a `HashMap`, over `WRUN_BENCH_LANG_EVENTS` (1,000,000)
//! events and 100,000 keys; and per component its size, compile time,
//! instantiation time and linear memory per subtask.
//!
//! For profiling one part alone: `WRUN_BENCH_ONLY=savepoint` (the savepoint
//! figures), `WRUN_BENCH_ONLY=checkpoint` (the checkpoint and copy-on-write
//! figures), `WRUN_BENCH_ONLY=checkpoint-throughput`, `WRUN_BENCH_ONLY=timers`
//! (cost per registered and per fired timer, checkpoint and restore of 1M
//! pending timers; runs after the checkpoint figures otherwise),
//! `WRUN_BENCH_ONLY=storage` (checkpoint and restore of 1M keys on the
//! filesystem and on a garage object store), `WRUN_BENCH_ONLY=window` (the window count in Wasm against a native
//! Rust window operator; also after the timer figures), or a
//! variant's name (`wasm`, `native_state`, `native_hashmap`: that variant's
//! throughput).
//!
//! Run: `cargo bench -p wrun-runtime --bench throughput`

mod support {
    pub mod storage;
    pub mod timers;
    pub mod window;
}

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use wrun::batch::{Batch, EventRef};
use wrun::exec::{NativeFactory, OperatorLogic, RunOptions};
use wrun::sandbox::{SandboxConfig, SandboxError, SubtaskInfo};
use wrun::state::{KeyedState, StateKind};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn manifest(events: u64, keys: u64, component: &str) -> String {
    format!(
        r#"version = 1
name = "bench"
[[source]]
name = "gen"
kind = "generator"
count = {events}
keys = {keys}
[[operator]]
name = "sum"
uid = "sum"
component = "{component}"
[[sink]]
name = "out"
kind = "discard"
[[edge]]
from = "gen"
to = "sum"
partition = "hash"
[[edge]]
from = "sum"
to = "out"
"#
    )
}

fn parse(v: &[u8]) -> Result<i64, SandboxError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SandboxError::Guest {
            who: "native".into(),
            call: "process",
            message: "not a number".into(),
        })
}

/// The keyed sum over wrun's keyed state backend.
struct NativeState {
    state: KeyedState,
}

impl OperatorLogic for NativeState {
    fn open(&mut self, _: &SubtaskInfo) -> Result<(), SandboxError> {
        Ok(())
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        let err = |e: wrun::state::StateError| SandboxError::State {
            who: "native".into(),
            call: "process",
            error: e,
        };
        let id = self.state.id("sum", StateKind::Value).map_err(err)?;
        let mut out = Batch::with_capacity(batch.len(), batch.byte_len() + batch.len() * 8);
        for e in batch.iter() {
            let key = e.key.unwrap_or_default();
            let old = match self.state.value_ref(id, key).map_err(err)? {
                Some(b) => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
                None => 0,
            };
            let sum = old.wrapping_add(parse(e.value)?);
            self.state
                .value_set(id, key, Some(&sum.to_le_bytes()))
                .map_err(err)?;
            emit_sum(&mut out, key, sum, e.timestamp);
        }
        Ok(out)
    }
    fn close(&mut self) -> Result<Batch, SandboxError> {
        Ok(Batch::default())
    }
}

/// Appends `(key, sum as decimal text)`.
fn emit_sum(out: &mut Batch, key: &[u8], sum: i64, ts: Option<i64>) {
    out.push_with(
        ts,
        |b| {
            b.extend_from_slice(key);
            true
        },
        |b| {
            let _ = write!(b, "{sum}");
        },
    );
}

/// A keyed fold over a plain HashMap: the cheapest possible baseline.
/// `step` gives what an event adds to its key's value (the keyed sum: the
/// event's number; the keyed count: 1); the new value is emitted as text.
struct NativeMap {
    sums: HashMap<Vec<u8>, i64>,
    step: fn(EventRef<'_>) -> Result<i64, SandboxError>,
}

impl OperatorLogic for NativeMap {
    fn open(&mut self, _: &SubtaskInfo) -> Result<(), SandboxError> {
        Ok(())
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        let mut out = Batch::with_capacity(batch.len(), batch.byte_len() + batch.len() * 8);
        for e in batch.iter() {
            let key = e.key.unwrap_or_default();
            let step = (self.step)(e)?;
            let s = match self.sums.get_mut(key) {
                Some(s) => s,
                None => self.sums.entry(key.to_vec()).or_insert(0),
            };
            *s = s.wrapping_add(step);
            emit_sum(&mut out, key, *s, e.timestamp);
        }
        Ok(out)
    }
    fn close(&mut self) -> Result<Batch, SandboxError> {
        Ok(Batch::default())
    }
}

fn metric(name: &str, value: f64, unit: &str) {
    println!(
        "{}",
        serde_json::json!({ "name": name, "value": (value * 1000.0).round() / 1000.0, "unit": unit })
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; any other argument is ignored.
    let events = env_u64("WRUN_BENCH_EVENTS", 10_000_000);
    let keys = env_u64("WRUN_BENCH_KEYS", 100_000);
    let component = wrun_test_guests::KEYED_SUM;
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-cache");
    let sandbox = wrun::sandbox::Sandbox::new(SandboxConfig {
        cache_dir: Some(cache),
        ..SandboxConfig::default()
    })?;
    let graph = wrun::job::parse_manifest(
        &manifest(events, keys, component),
        "bench.toml",
        std::path::Path::new("."),
        None,
    )?;
    let store = wrun::module::ModuleStore::new(std::path::Path::new("target/bench-data"));
    let modules = wrun::module::load_modules(&graph, &store, &sandbox)?;

    let native_state: NativeFactory = Arc::new(|_, state| Box::new(NativeState { state }));
    let native_map: NativeFactory = Arc::new(|_, _| {
        Box::new(NativeMap {
            sums: HashMap::new(),
            step: |e| parse(e.value),
        })
    });
    let variants: Vec<(&str, RunOptions)> = vec![
        ("wasm", RunOptions::default()),
        (
            "native_state",
            RunOptions {
                native: HashMap::from([("sum".to_string(), native_state)]),
                ..RunOptions::default()
            },
        ),
        (
            "native_hashmap",
            RunOptions {
                native: HashMap::from([("sum".to_string(), native_map)]),
                ..RunOptions::default()
            },
        ),
    ];
    // Interleaved rounds, medians (see `medians`).
    let rounds = env_u64("WRUN_BENCH_ROUNDS", 3).max(1);
    // `WRUN_BENCH_ONLY=checkpoint-throughput`: just that comparison (for
    // profiling it).
    // `savepoint`: just the savepoint figures; a variant's name: just that
    // variant's throughput (both for profiling).
    let only = std::env::var("WRUN_BENCH_ONLY").unwrap_or_default();
    let only_cp = only == "checkpoint-throughput";
    if only == "languages" {
        return language_figures(&sandbox, rounds);
    }
    if only == "timers" {
        return support::timers::timer_figures(metric);
    }
    if only == "storage" {
        return support::storage::storage_figures(metric);
    }
    if only == "window" {
        return support::window::window_figures(&sandbox, rounds, metric, medians);
    }
    if only == "savepoint" {
        return savepoint_figures(&sandbox, &store);
    }
    if only == "checkpoint" {
        // Pause, bytes and copy-on-write cost of checkpoints of one
        // subtask's state, alone.
        return checkpoint_figures();
    }
    let only_variant = variants.iter().any(|(name, _)| *name == only);
    let mut rates = HashMap::new();
    if !only_cp {
        let runs: Vec<Run> = variants
            .into_iter()
            .filter(|(name, _)| !only_variant || *name == only)
            .map(|(name, opts)| (name, graph.clone(), modules.clone(), opts))
            .collect();
        rates = medians(&sandbox, &runs, rounds, events, "sum")?;
        for (name, ..) in &runs {
            metric(
                &format!("keyed_sum.{name}.records_per_s"),
                rates[name],
                "records/s",
            );
        }
    }
    if only_variant {
        return Ok(());
    }
    if std::env::var_os("WRUN_BENCH_SKIP_SAVEPOINT").is_none() && !only_cp {
        savepoint_figures(&sandbox, &store)?;
    }
    if std::env::var_os("WRUN_BENCH_SKIP_CHECKPOINT").is_none() {
        if !only_cp {
            checkpoint_figures()?;
            support::timers::timer_figures(metric)?;
            support::storage::storage_figures(metric)?;
            support::window::window_figures(&sandbox, rounds, metric, medians)?;
        }
        let mut cp_graph = graph.clone();
        cp_graph.checkpoint = Some(wrun::job::CheckpointSettings {
            interval_ms: 1000,
            timeout_ms: 60_000,
            min_pause_ms: 0,
            retain: 3,
            tolerable_failures: 3,
        });
        let dir = tempfile::tempdir()?;
        let store: Arc<wrun::checkpoint::CheckpointStore> =
            Arc::new(wrun::checkpoint::CheckpointStore::open_dir(dir.path())?);
        let mut with = Vec::new();
        let mut without = Vec::new();
        for _ in 0..rounds {
            let r = wrun::exec::run_job(
                &cp_graph,
                &sandbox,
                &modules,
                &RunOptions {
                    store: Some(store.clone()),
                    ..RunOptions::default()
                },
            )?;
            with.push(events as f64 / r.elapsed.as_secs_f64());
            let r = wrun::exec::run_job(&graph, &sandbox, &modules, &RunOptions::default())?;
            without.push(events as f64 / r.elapsed.as_secs_f64());
        }
        with.sort_by(f64::total_cmp);
        without.sort_by(f64::total_cmp);
        let (w, wo) = (with[with.len() / 2], without[without.len() / 2]);
        metric("keyed_sum.wasm_checkpoint_1s.records_per_s", w, "records/s");
        // Checkpoint ids count up across the rounds: their number proves
        // the checkpoints happened.
        let taken = store
            .list_checkpoints("bench")?
            .last()
            .map(|id| id.0)
            .unwrap_or(0);
        metric(
            "keyed_sum.wasm_checkpoint_1s.checkpoints_per_run",
            taken as f64 / rounds as f64,
            "checkpoints",
        );
        metric(
            "keyed_sum.wasm_checkpoint_1s_vs_none.ratio",
            w / wo,
            "ratio",
        );
    }
    if std::env::var_os("WRUN_BENCH_SKIP_LANGUAGES").is_none() && !only_cp {
        language_figures(&sandbox, rounds)?;
    }
    if !only_cp {
        metric(
            "keyed_sum.wasm_vs_native_state.ratio",
            rates["wasm"] / rates["native_state"],
            "ratio",
        );
        metric(
            "keyed_sum.wasm_vs_native_hashmap.ratio",
            rates["wasm"] / rates["native_hashmap"],
            "ratio",
        );
    }
    Ok(())
}

/// A named variant: its graph, modules and options.
type Run = (
    &'static str,
    wrun::job::JobGraph,
    HashMap<usize, Arc<wrun::sandbox::OperatorModule>>,
    RunOptions,
);

/// [`medians`], for the benchmark parts in `support`.
type Medians = fn(
    &wrun::sandbox::Sandbox,
    &[Run],
    u64,
    u64,
    &str,
) -> anyhow::Result<HashMap<&'static str, f64>>;

/// Runs every variant `rounds` times, interleaved (the machine is shared
/// and has 2 cores for 3 pipeline threads, so single runs are noisy), and
/// returns each one's median records/s; every run must process all
/// `events` in its operator `vertex`.
fn medians(
    sandbox: &wrun::sandbox::Sandbox,
    runs: &[Run],
    rounds: u64,
    events: u64,
    vertex: &str,
) -> anyhow::Result<HashMap<&'static str, f64>> {
    let mut samples: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..rounds {
        for (name, graph, modules, opts) in runs {
            let report = wrun::exec::run_job(graph, sandbox, modules, opts)?;
            let processed = report
                .vertices
                .iter()
                .find(|v| v.name == vertex)
                .map(|v| v.records_in)
                .unwrap_or(0);
            anyhow::ensure!(
                processed == events,
                "{name}: processed {processed} of {events} events"
            );
            samples
                .entry(name)
                .or_default()
                .push(events as f64 / report.elapsed.as_secs_f64());
        }
    }
    Ok(samples
        .into_iter()
        .map(|(name, mut s)| {
            s.sort_by(f64::total_cmp);
            (name, s[s.len() / 2])
        })
        .collect())
}

/// The wordcount counter in every language, in the harness of the keyed
/// sum; and what each component costs per subtask.
fn language_figures(sandbox: &wrun::sandbox::Sandbox, rounds: u64) -> anyhow::Result<()> {
    use wrun::sandbox::{CallLimits, OperatorInstance};
    use wrun::state::{KeyGroupRange, StateLimits};
    let events = env_u64("WRUN_BENCH_LANG_EVENTS", 1_000_000);
    let keys = 100_000;
    let counters = [
        ("rust", wrun_test_guests::WORDCOUNT_COUNTER),
        ("python", wrun_test_guests::WORDCOUNT_COUNTER_PY),
        ("javascript", wrun_test_guests::WORDCOUNT_COUNTER_JS),
        ("c", wrun_test_guests::WORDCOUNT_COUNTER_C),
    ];
    let store = wrun::module::ModuleStore::new(std::path::Path::new("target/bench-data"));
    let mut runs: Vec<Run> = Vec::new();
    for (lang, component) in counters {
        let bytes = std::fs::read(component)?;
        let graph = wrun::job::parse_manifest(
            &manifest(events, keys, component),
            "bench.toml",
            std::path::Path::new("."),
            None,
        )?;
        // Compile time, without the disk cache.
        let fresh = wrun::sandbox::Sandbox::new(SandboxConfig::default())?;
        let t = std::time::Instant::now();
        let module = fresh.load(&bytes)?;
        let compile = t.elapsed();
        drop(module);
        drop(fresh);
        let modules = wrun::module::load_modules(&graph, &store, sandbox)?;
        let module = modules.values().next().cloned().expect("one operator");
        // Instantiation (from the pre-linked module) and memory after
        // `open`, over 5 subtasks; the median time.
        let mut times = Vec::new();
        let mut memory = 0;
        for i in 0..5u32 {
            let state = KeyedState::new(
                128,
                KeyGroupRange { start: 0, end: 128 },
                StateLimits::default(),
            );
            let info = SubtaskInfo {
                uid: "sum".into(),
                subtask_index: i,
                parallelism: 5,
                max_parallelism: 128,
                config: b"{}".to_vec(),
                restored: false,
                restored_format: None,
            };
            let limits = CallLimits {
                memory_bytes: 1 << 30,
                call_timeout: std::time::Duration::from_secs(10),
                max_output_events: 1 << 20,
            };
            let t = std::time::Instant::now();
            let mut inst = OperatorInstance::instantiate(sandbox, &module, &info, limits, state)?;
            inst.open(&info)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            memory = inst.linear_memory_bytes();
        }
        times.sort_by(f64::total_cmp);
        metric(
            &format!("lang.{lang}.component_bytes"),
            bytes.len() as f64,
            "bytes",
        );
        metric(
            &format!("lang.{lang}.compile_ms"),
            compile.as_secs_f64() * 1e3,
            "ms",
        );
        metric(
            &format!("lang.{lang}.instantiate_open_ms"),
            times[times.len() / 2],
            "ms",
        );
        metric(
            &format!("lang.{lang}.memory_per_subtask_bytes"),
            memory as f64,
            "bytes",
        );
        runs.push((lang, graph, modules, RunOptions::default()));
    }
    let native: NativeFactory = Arc::new(|_, _| {
        Box::new(NativeMap {
            sums: HashMap::new(),
            step: |_| Ok(1),
        })
    });
    let (_, graph, modules, _) = &runs[0];
    let native_run = (
        "native_hashmap",
        graph.clone(),
        modules.clone(),
        RunOptions {
            native: HashMap::from([("sum".to_string(), native)]),
            ..RunOptions::default()
        },
    );
    runs.push(native_run);
    let median = medians(sandbox, &runs, rounds, events, "sum")?;
    for (name, ..) in &runs {
        metric(
            &format!("lang.{name}.count_records_per_s"),
            median[name],
            "records/s",
        );
    }
    for (lang, _) in counters {
        metric(
            &format!("lang.{lang}_vs_native_hashmap.ratio"),
            median[lang] / median["native_hashmap"],
            "ratio",
        );
    }
    Ok(())
}

/// Pause, duration and bytes of a checkpoint of one subtask's value state.
fn checkpoint_figures() -> anyhow::Result<()> {
    use wrun::checkpoint::CheckpointStore;
    use wrun::state::{KeyGroupRange, StateLimits};
    for keys in [100_000u64, 1_000_000] {
        let mut state = KeyedState::new(
            128,
            KeyGroupRange { start: 0, end: 128 },
            StateLimits::default(),
        );
        let id = state.id("sum", StateKind::Value)?;
        for k in 0..keys {
            state.value_set(
                id,
                format!("key-{k}").as_bytes(),
                Some(&(k as i64).to_le_bytes()),
            )?;
        }
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::open_dir(dir.path())?;
        // The previous checkpoint's key group refs: what deltas build on.
        let mut last: std::collections::HashMap<u16, wrun::checkpoint::KeyGroupRef> =
            Default::default();
        let mut write = |state: &mut KeyedState, label: &str, id: u64| -> anyhow::Result<()> {
            let t = std::time::Instant::now();
            let snap = state.snapshot(last.is_empty());
            let pause = t.elapsed();
            let previous = |kg: u16| last.get(&kg).cloned();
            let txn = wrun::checkpoint::begin(&store);
            let (refs, full, new) = wrun::checkpoint::write_key_groups(&txn, &previous, &snap)?;
            last = refs.iter().map(|r| (r.key_group, r.clone())).collect();
            let manifest = wrun::checkpoint::CheckpointManifest {
                format: wrun::checkpoint::MANIFEST_FORMAT,
                job: "bench".into(),
                id: wrun::checkpoint::CheckpointId(id),
                triggered_at_ms: 0,
                duration_ms: 0,
                graph_fingerprint: String::new(),
                max_parallelism: 128,
                operators: vec![wrun::checkpoint::OperatorStateRef {
                    operator_id: "00".repeat(16),
                    uid: None,
                    name: "sum".into(),
                    parallelism: 1,
                    module: String::new(),
                    state_format: None,
                    key_groups: refs,
                    operator_state: vec![],
                }],
                sources: vec![],
                sinks: vec![],
                full_bytes: full,
                new_bytes: new,
                input_ended: false,
            };
            txn.put_manifest(&manifest)?;
            drop(txn);
            let total = t.elapsed();
            metric(
                &format!("checkpoint.{keys}_keys.{label}.sync_pause_ms"),
                pause.as_secs_f64() * 1e3,
                "ms",
            );
            metric(
                &format!("checkpoint.{keys}_keys.{label}.duration_ms"),
                total.as_secs_f64() * 1e3,
                "ms",
            );
            metric(
                &format!("checkpoint.{keys}_keys.{label}.full_bytes"),
                full as f64,
                "bytes",
            );
            metric(
                &format!("checkpoint.{keys}_keys.{label}.new_bytes"),
                new as f64,
                "bytes",
            );
            Ok(())
        };
        write(&mut state, "full", 1)?;
        // 1% of the keys change, spread over the key space.
        for k in (0..keys).step_by(100) {
            state.value_set(
                id,
                format!("key-{k}").as_bytes(),
                Some(&(-(k as i64)).to_le_bytes()),
            )?;
        }
        write(&mut state, "after_1pct_change", 2)?;
        cow_figures(&mut state, id, keys)?;
    }
    Ok(())
}

/// What the operator pays for copy-on-write snapshots: the first write to
/// a key group after a snapshot (while the checkpoint still holds it)
/// copies that key group. Times one write into each of the 128 key groups
/// with a snapshot held (each copies its key group: `keys` entries in
/// all) against the same writes with none held, and a write of every key
/// both ways (the worst case: every key changes between checkpoints).
fn cow_figures(state: &mut KeyedState, id: usize, keys: u64) -> anyhow::Result<()> {
    let mut one_per_group: Vec<Vec<u8>> = vec![Vec::new(); 128];
    for k in 0..keys {
        let key = format!("key-{k}").into_bytes();
        let kg = wrun::state::key_group_of(&key, 128).0 as usize;
        if one_per_group[kg].is_empty() {
            one_per_group[kg] = key;
        }
    }
    let timed = |state: &mut KeyedState, keys: &mut dyn Iterator<Item = Vec<u8>>| {
        let t = std::time::Instant::now();
        for key in keys {
            state.value_set(id, &key, Some(&1i64.to_le_bytes()))?;
        }
        anyhow::Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let group_keys = || one_per_group.iter().filter(|k| !k.is_empty()).cloned();
    let all_keys = || (0..keys).map(|k| format!("key-{k}").into_bytes());
    let plain_groups = timed(state, &mut group_keys())?;
    let snap = state.snapshot(false);
    let cow_groups = timed(state, &mut group_keys())?;
    drop(snap);
    let plain_all = timed(state, &mut all_keys())?;
    let snap = state.snapshot(false);
    let cow_all = timed(state, &mut all_keys())?;
    drop(snap);
    let m = |what: &str, v: f64| metric(&format!("checkpoint.{keys}_keys.{what}"), v, "ms");
    m("first_write_per_key_group_no_snapshot_ms", plain_groups);
    m("first_write_per_key_group_after_snapshot_ms", cow_groups);
    m("write_every_key_no_snapshot_ms", plain_all);
    m("write_every_key_after_snapshot_ms", cow_all);
    Ok(())
}

/// Savepoint trigger → complete, restore, and swap downtime at 1M keys.
fn savepoint_figures(
    sandbox: &wrun::sandbox::Sandbox,
    modules_store: &wrun::module::ModuleStore,
) -> anyhow::Result<()> {
    use std::time::Instant;
    use wrun::checkpoint::{CheckpointStore, FsSavepoints, SavepointStore};
    use wrun::exec::{JobControl, StopMode};
    let keys = 1_000_000u64;
    let component = wrun_test_guests::KEYED_SUM;
    let parse = |count: u64| {
        wrun::job::parse_manifest(
            &manifest(count, keys, component),
            "bench.toml",
            std::path::Path::new("."),
            None,
        )
    };
    let graph = parse(u64::MAX / 4)?;
    let modules = wrun::module::load_modules(&graph, modules_store, sandbox)?;
    let dir = tempfile::tempdir()?;
    let store: Arc<CheckpointStore> = Arc::new(CheckpointStore::open_dir(&dir.path().join("cp"))?);
    let savepoints: Arc<dyn SavepointStore> = Arc::new(FsSavepoints::open(&dir.path().join("sp"))?);
    let control = JobControl::new("bench");
    let opts = RunOptions {
        store: Some(store.clone()),
        savepoints: Some(savepoints.clone()),
        control: Some(control.clone()),
        ..RunOptions::default()
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let job = scope.spawn(|| wrun::exec::run_job(&graph, sandbox, &modules, &opts));
        let trigger = |stop: Option<StopMode>| -> anyhow::Result<wrun::checkpoint::Savepoint> {
            let rx = loop {
                match control.trigger(Some(None), stop) {
                    Ok(rx) => break rx,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            };
            let t = rx
                .recv()?
                .map_err(|e| anyhow::anyhow!("savepoint failed: {e}"))?;
            t.savepoint.ok_or_else(|| anyhow::anyhow!("no savepoint"))
        };
        // Fill the state with no savepoint taken: 3,000,000 events reach
        // ~95% of the 1M keys. The first savepoint is then a full one (as
        // Flink's savepoints always are): every key group written.
        let generated = || control.metrics().map_or(0, |m| m.vertex(0).records_out());
        while generated() < 3 * keys {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let t = Instant::now();
        let first = trigger(None)?;
        metric(
            "savepoint.1000000_keys.first_full.trigger_to_complete_ms",
            t.elapsed().as_secs_f64() * 1e3,
            "ms",
        );
        metric(
            "savepoint.1000000_keys.first_full.written_bytes",
            first.checkpoint.new_bytes as f64,
            "bytes",
        );
        metric(
            "savepoint.1000000_keys.state_bytes",
            first.checkpoint.full_bytes as f64,
            "bytes",
        );
        // Then incremental ones, a second of processing apart (what a
        // savepoint after a periodic checkpoint writes): only the key
        // groups' changes since the previous one.
        let mut took = Vec::new();
        let mut written = Vec::new();
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let t = Instant::now();
            let sp = trigger(None)?;
            took.push(t.elapsed().as_secs_f64() * 1e3);
            written.push(sp.checkpoint.new_bytes as f64);
        }
        took.sort_by(f64::total_cmp);
        written.sort_by(f64::total_cmp);
        metric(
            "savepoint.1000000_keys.incremental.trigger_to_complete_ms",
            took[1],
            "ms",
        );
        metric(
            "savepoint.1000000_keys.incremental.written_bytes",
            written[1],
            "bytes",
        );

        let t = Instant::now();
        let sp = trigger(Some(StopMode::Suspend))?;
        job.join()
            .map_err(|_| anyhow::anyhow!("job thread panicked"))??;
        let stop_ms = t.elapsed().as_secs_f64() * 1e3;
        let position = sp.checkpoint.sources[0].position;
        metric(
            "savepoint.1000000_keys.stop_with_savepoint_ms",
            stop_ms,
            "ms",
        );

        let resume = |count: u64| -> anyhow::Result<f64> {
            let g = parse(count)?;
            let t = Instant::now();
            wrun::exec::run_job(
                &g,
                sandbox,
                &modules,
                &RunOptions {
                    store: Some(store.clone()),
                    restore: Some(sp.checkpoint.clone()),
                    ..RunOptions::default()
                },
            )?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        let restore_ms = resume(position)?;
        metric("savepoint.1000000_keys.restore_ms", restore_ms, "ms");
        let first_event_ms = resume(position + 1)?;
        metric(
            "savepoint.1000000_keys.swap_downtime_ms",
            stop_ms + first_event_ms,
            "ms",
        );
        Ok(())
    })
}
