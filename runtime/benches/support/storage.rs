//! Checkpoint and restore of one subtask's 1M keys on the local filesystem
//! against an S3-compatible object store (a one-node garage on loopback,
//! as the tests start it): duration, bytes and objects, for a full
//! checkpoint, an incremental one after 1% of the keys changed, and a
//! restore (`WRUN_BENCH_ONLY=storage`; also part of a full run).
//!
//! The same code path as a job's coordinator: `write_key_groups` (one
//! segment per encoding thread), the manifest, then `latest_checkpoint`
//! (which verifies every chunk) and `read_key_groups`.

#[path = "../../tests/support/garage.rs"]
mod garage;

use std::time::Instant;
use wrun::checkpoint::{
    CheckpointId, CheckpointManifest, CheckpointStore, KeyGroupRef, OperatorStateRef, begin,
    read_key_groups, write_key_groups,
};
use wrun::state::{KeyGroupRange, KeyedState, StateKind, StateLimits};

fn fresh() -> KeyedState {
    KeyedState::new(
        128,
        KeyGroupRange { start: 0, end: 128 },
        StateLimits::default(),
    )
}

/// Writes checkpoint `id` of `state` on top of `last`; returns (ms, full
/// bytes, new bytes).
fn checkpoint(
    store: &CheckpointStore,
    state: &mut KeyedState,
    last: &mut std::collections::HashMap<u16, KeyGroupRef>,
    id: u64,
) -> anyhow::Result<(f64, u64, u64)> {
    let t = Instant::now();
    let snap = state.snapshot(last.is_empty());
    let previous = |kg: u16| last.get(&kg).cloned();
    let txn = begin(store);
    let (refs, full, new) = write_key_groups(&txn, &previous, &snap)?;
    *last = refs.iter().map(|r| (r.key_group, r.clone())).collect();
    let mut m = CheckpointManifest::empty("bench", CheckpointId(id), 128);
    m.operators.push(OperatorStateRef {
        operator_id: "00".repeat(16),
        uid: None,
        name: "sum".into(),
        parallelism: 1,
        module: String::new(),
        state_format: None,
        key_groups: refs,
        operator_state: vec![],
    });
    (m.full_bytes, m.new_bytes) = (full, new);
    txn.put_manifest(&m)?;
    Ok((t.elapsed().as_secs_f64() * 1e3, full, new))
}

pub fn storage_figures(metric: fn(&str, f64, &str)) -> anyhow::Result<()> {
    let keys = 1_000_000u64;
    let g = garage::Garage::start();
    let dir = tempfile::tempdir()?;
    let stores = [
        ("fs", CheckpointStore::open_dir(dir.path())?),
        ("s3", g.store("bench")),
    ];
    for (label, store) in &stores {
        let mut state = fresh();
        let id = state.id("sum", StateKind::Value)?;
        for k in 0..keys {
            state.value_set(
                id,
                format!("key-{k}").as_bytes(),
                Some(&(k as i64).to_le_bytes()),
            )?;
        }
        let mut last = Default::default();
        let objects = |store: &CheckpointStore| -> anyhow::Result<f64> {
            Ok(store.blobs().list("")?.len() as f64)
        };
        let m =
            |what: &str, v: f64, unit: &str| metric(&format!("storage.{label}.{what}"), v, unit);
        let (ms, full, new) = checkpoint(store, &mut state, &mut last, 1)?;
        m("full_checkpoint_ms", ms, "ms");
        m("full_checkpoint_bytes", full as f64, "bytes");
        m("full_checkpoint_new_bytes", new as f64, "bytes");
        let after_full = objects(store)?;
        m("full_checkpoint_objects", after_full, "objects");
        for k in (0..keys).step_by(100) {
            state.value_set(
                id,
                format!("key-{k}").as_bytes(),
                Some(&(-(k as i64)).to_le_bytes()),
            )?;
        }
        let (ms, _, new) = checkpoint(store, &mut state, &mut last, 2)?;
        m("incremental_checkpoint_ms", ms, "ms");
        m("incremental_checkpoint_new_bytes", new as f64, "bytes");
        m(
            "incremental_checkpoint_objects",
            objects(store)? - after_full,
            "objects",
        );
        // Restore: find the newest checkpoint (verifying every chunk, as a
        // job's restart does), then decode it on every core.
        let t = Instant::now();
        let found = wrun::exec::latest_checkpoint(store, "bench")?
            .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
        let verified = t.elapsed().as_secs_f64() * 1e3;
        let refs: Vec<&KeyGroupRef> = found.operators[0].key_groups.iter().collect();
        let mut restored = fresh();
        read_key_groups(store, &refs, &mut restored).map_err(anyhow::Error::msg)?;
        m("restore_verify_ms", verified, "ms");
        m("restore_ms", t.elapsed().as_secs_f64() * 1e3, "ms");
        anyhow::ensure!(
            restored.encode_key_group(wrun::state::KeyGroup(7))
                == state.encode_key_group(wrun::state::KeyGroup(7)),
            "the restore differs"
        );
    }
    Ok(())
}
