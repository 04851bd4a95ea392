//! Each partitioner through a real job.

use crate::common::*;

#[test]
fn forward_keeps_subtasks_apart() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        1000,
        10,
        guest("chaos"),
        "parallelism = 1\nconfig = { mode = \"echo\" }",
        "forward",
        "",
    );
    let r = run_in(dir.path(), &job, None).unwrap();
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 1000);
    assert_eq!(r.vertices[1].records_in, 1000);
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
    let store = wrun::checkpoint::MemStore::default();
    let store: std::sync::Arc<dyn wrun::checkpoint::CheckpointStore> = std::sync::Arc::new(store);
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

#[test]
fn rebalance_spreads_over_subtasks() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        999,
        10,
        guest("chaos"),
        "parallelism = 3\nconfig = { mode = \"echo\" }",
        "rebalance",
        "",
    );
    run_in(dir.path(), &job, None).unwrap();
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 999);
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
