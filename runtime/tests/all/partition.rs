//! Each partitioner through a real job.

use crate::common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wrun::batch::Batch;
use wrun::exec::{OperatorLogic, RunOptions};
use wrun::sandbox::{SandboxError, SubtaskInfo};

/// The values (generator sequence numbers) each subtask of a vertex
/// received, by subtask index.
type Received = Arc<Mutex<BTreeMap<u32, Vec<u64>>>>;

/// A native pass-through operator that notes what its subtask receives.
/// Where an edge puts an event is only visible per subtask, and no test
/// guest reports its subtask index, so the operator downstream of the edge
/// under test is this one (the routing is the runtime's, whatever runs the
/// operator).
struct Recorder {
    subtask: u32,
    received: Received,
}

impl OperatorLogic for Recorder {
    fn open(&mut self, _: &SubtaskInfo) -> Result<(), SandboxError> {
        Ok(())
    }
    fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        let mut received = self.received.lock().unwrap();
        let mine = received.entry(self.subtask).or_default();
        for e in batch.iter() {
            mine.push(std::str::from_utf8(e.value).unwrap().parse().unwrap());
        }
        Ok(batch.clone())
    }
    fn close(&mut self) -> Result<Batch, SandboxError> {
        Ok(Batch::default())
    }
}

/// Options that run vertex `op` as a [`Recorder`], and what it records.
fn recording() -> (RunOptions, Received) {
    let received = Received::default();
    let mut opts = RunOptions::default();
    let r = received.clone();
    opts.native.insert(
        "op".into(),
        Arc::new(move |info: &SubtaskInfo, _: wrun::state::KeyedState| {
            Box::new(Recorder {
                subtask: info.subtask_index,
                received: r.clone(),
            }) as Box<dyn OperatorLogic>
        }),
    );
    (opts, received)
}

/// Every event a seed-0 generator of `count` events over `keys` keys
/// produces, as (key, value), sorted: what the sink must hold, each event
/// exactly once.
fn generated(count: u64, keys: u64) -> Vec<(String, String)> {
    let mut b = Batch::default();
    for seq in 0..count {
        wrun::exec::generated(seq, keys, 0, &mut b);
    }
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    sorted(
        b.iter()
            .map(|e| (text(e.key.unwrap_or_default()), text(e.value)))
            .collect(),
    )
}

/// A forward edge at parallelism 3 on both ends: downstream subtask `i`
/// gets exactly what generator subtask `i` produces (sequence numbers
/// `i, i + 3, ...`, runtime/src/connect/generator.rs), none of another's.
#[test]
fn forward_keeps_subtasks_apart() {
    const COUNT: u64 = 999;
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(COUNT, 10, guest("chaos"), "parallelism = 3", "forward", "")
        .replace("keys = 10\n", "keys = 10\nparallelism = 3\n");
    assert!(job.contains("keys = 10\nparallelism = 3\n"), "{job}");
    let (opts, received) = recording();
    let r = run_with(dir.path(), &job, None, &opts).unwrap();
    let mut received = received.lock().unwrap().clone();
    assert_eq!(
        received.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "every subtask got events"
    );
    for (subtask, values) in &mut received {
        values.sort();
        let upstream: Vec<u64> = (u64::from(*subtask)..COUNT).step_by(3).collect();
        assert_eq!(
            *values, upstream,
            "subtask {subtask} got other than generator subtask {subtask}'s events"
        );
    }
    assert_eq!(
        sorted(read_jsonl(&dir.path().join("out.jsonl"))),
        generated(COUNT, 10)
    );
    assert_eq!(r.vertices[1].records_in, COUNT);
}

/// Forward between two vertices at parallelism 2, with checkpoints: each
/// subtask has one input channel, so its end and its barriers come (a
/// subtask once waited for one channel per upstream subtask and failed).
#[test]
fn forward_at_parallelism_2_ends_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        20_000,
        10,
        guest("chaos"),
        "parallelism = 2\nconfig = { mode = \"echo\" }",
        "forward",
        "[checkpoint]\ninterval-ms = 5",
    )
    .replace(
        "keys = 10\n",
        "keys = 10\nparallelism = 2\nrate = 100000.0\n",
    );
    let store = wrun::checkpoint::CheckpointStore::in_memory();
    let store: std::sync::Arc<wrun::checkpoint::CheckpointStore> = std::sync::Arc::new(store);
    let opts = wrun::exec::RunOptions {
        store: Some(store.clone()),
        ..Default::default()
    };
    let r = run_with(dir.path(), &job, None, &opts).unwrap();
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 20_000);
    assert_eq!(r.vertices[1].records_in, 20_000);
    assert!(
        !store.list_checkpoints("test").unwrap().is_empty(),
        "no checkpoint completed"
    );
}

/// Rebalance is round-robin per event (docs/architecture.md; `Output` in
/// runtime/src/exec/channel.rs): from the one generator subtask, which
/// produces sequence numbers 0, 1, 2, ... in order, every third event goes
/// to the same subtask. Which subtask takes the first is not the contract,
/// so each subtask must hold one whole residue class modulo 3, each class
/// at one subtask; and the sink must hold every event exactly once.
#[test]
fn rebalance_spreads_over_subtasks() {
    const COUNT: u64 = 999;
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        COUNT,
        10,
        guest("chaos"),
        "parallelism = 3",
        "rebalance",
        "",
    );
    let (opts, received) = recording();
    run_with(dir.path(), &job, None, &opts).unwrap();
    let mut received = received.lock().unwrap().clone();
    assert_eq!(
        received.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "every subtask got events"
    );
    let mut classes = Vec::new();
    for (subtask, values) in &mut received {
        values.sort();
        let class = values.first().expect("a subtask without events") % 3;
        let round_robin: Vec<u64> = (class..COUNT).step_by(3).collect();
        assert_eq!(
            *values, round_robin,
            "subtask {subtask} did not get every third event"
        );
        classes.push(class);
    }
    classes.sort();
    assert_eq!(classes, [0, 1, 2], "two subtasks got the same events");
    assert_eq!(
        sorted(read_jsonl(&dir.path().join("out.jsonl"))),
        generated(COUNT, 10)
    );
}

#[test]
fn broadcast_copies_to_every_subtask() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        100,
        10,
        guest("chaos"),
        "parallelism = 3\nconfig = { mode = \"echo\" }",
        "broadcast",
        "",
    );
    run_in(dir.path(), &job, None).unwrap();
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 300);
}

/// Over a hash edge every key reaches one subtask, so the running counts of
/// each key are exactly 1..=n, whatever the parallelism.
#[test]
fn hash_routes_each_key_to_its_state() {
    for p in [1, 2, 5] {
        let dir = tempfile::tempdir().unwrap();
        let job = generator_job(
            2000,
            37,
            guest("wordcount-counter"),
            &format!("uid = \"counter\"\nparallelism = {p}"),
            "hash",
            "",
        );
        run_in(dir.path(), &job, None).unwrap();
        let mut per_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
        for (k, v) in read_jsonl(&dir.path().join("out.jsonl")) {
            per_key.entry(k).or_default().push(v.parse().unwrap());
        }
        assert_eq!(per_key.len(), 37);
        for (k, mut counts) in per_key {
            counts.sort();
            assert_eq!(
                counts,
                (1..=counts.len() as u64).collect::<Vec<_>>(),
                "key {k} at parallelism {p}"
            );
        }
    }
}

/// Keyed state needs a hash edge; over rebalance a key reaches a subtask
/// that does not own it, and the error says so.
#[test]
fn keyed_state_without_a_hash_edge_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        1000,
        50,
        guest("wordcount-counter"),
        "uid = \"counter\"\nparallelism = 3",
        "rebalance",
        "",
    );
    let err = chain(&run_in(dir.path(), &job, None).unwrap_err());
    assert!(err.contains("counter["), "{err}");
    assert!(err.contains("hash` edge"), "{err}");
}
