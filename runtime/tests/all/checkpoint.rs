//! Checkpoints and recovery with real components: failures mid-run, a
//! killed process, corrupt chunks, retention and GC. The proof of
//! exactly-once: the counter's output holds, per key, the counts 1..=n
//! each exactly once, as an uninterrupted run does.

use crate::common::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wrun::checkpoint::{CheckpointStore, ChunkRef};
use wrun::exec::{FailPoint, RunOptions};

pub fn counter_job(count: u64, keys: u64, extra_source: &str, job_extra: &str) -> String {
    generator_job(
        count,
        keys,
        guest("wordcount-counter"),
        "uid = \"counter\"\nparallelism = 2",
        "hash",
        job_extra,
    )
    .replace(
        &format!("keys = {keys}\n"),
        &format!("keys = {keys}\n{extra_source}\n"),
    )
}

/// Asserts exactly-once output of a counter over `count` events.
pub fn assert_exactly_once(out: &Path, count: u64) {
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    let lines = read_jsonl(out);
    for (k, v) in &lines {
        per_key
            .entry(k.clone())
            .or_default()
            .push(v.parse().unwrap());
    }
    for (k, counts) in per_key.iter_mut() {
        counts.sort();
        assert_eq!(
            *counts,
            (1..=counts.len() as u64).collect::<Vec<_>>(),
            "key {k}: lost or duplicated updates"
        );
    }
    assert_eq!(
        lines.len() as u64,
        count,
        "every event's update exactly once"
    );
}

fn store(dir: &Path) -> Arc<CheckpointStore> {
    Arc::new(CheckpointStore::open_dir(&dir.join("checkpoints")).unwrap())
}

/// A chunk the newest of job `test`'s (at least two) checkpoints wrote and
/// no older one uses: damaging it hurts the newest checkpoint alone.
pub fn newest_own_chunk(s: &CheckpointStore) -> ChunkRef {
    let ids = s.list_checkpoints("test").unwrap();
    assert!(ids.len() >= 2, "{ids:?}");
    let chunks = |id| {
        s.get_manifest("test", id)
            .unwrap()
            .chunks()
            .map(ChunkRef::of)
            .collect::<Vec<_>>()
    };
    let older: std::collections::HashSet<_> = ids[..ids.len() - 1]
        .iter()
        .flat_map(|id| chunks(*id))
        .collect();
    chunks(*ids.last().unwrap())
        .into_iter()
        .find(|c| !older.contains(c))
        .expect("the newest checkpoint wrote a chunk of its own")
}

#[test]
fn a_failure_mid_run_restarts_from_a_checkpoint_with_nothing_lost_or_duplicated() {
    // Failure points drawn from seeds (splitmix64), reproducible: a
    // failing seed can be rerun alone. WRUN_TEST_SEEDS=N runs more.
    let seeds: u64 = std::env::var("WRUN_TEST_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for seed in 1..=seeds {
        let mut x = seed.wrapping_add(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
        // Subtask 0 of 2 receives about half of the 24,000 events.
        // From 4,000 on, so a checkpoint has completed even on a slow machine.
        let fail_after = 4000 + (x ^ (x >> 31)) % 6000;
        let dir = tempfile::tempdir().unwrap();
        let job = counter_job(
            24_000,
            97,
            &format!("seed = {seed}\nrate = 60000.0"),
            "[checkpoint]\ninterval-ms = 20\n[restart]\nattempts = 2\ndelay-ms = 0",
        );
        let opts = RunOptions {
            store: Some(store(dir.path())),
            fail_point: Some(FailPoint {
                vertex: "op".into(),
                after_records: fail_after,
            }),
            ..RunOptions::default()
        };
        let report = run_supervised(dir.path(), &job, &opts).unwrap();
        assert_eq!(report.restarts, 1, "seed {seed}");
        assert!(
            report.restored_from.is_some(),
            "seed {seed}: a checkpoint completed before the failure"
        );
        assert_exactly_once(&dir.path().join("out.jsonl"), 24_000);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".pending-") || n.contains(".inprogress"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn without_restarts_a_failure_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        5000,
        10,
        "",
        "[checkpoint]\ninterval-ms = 10\n[restart]\nattempts = 0",
    );
    let opts = RunOptions {
        store: Some(store(dir.path())),
        fail_point: Some(FailPoint {
            vertex: "op".into(),
            after_records: 100,
        }),
        ..RunOptions::default()
    };
    let err = run_supervised(dir.path(), &job, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("injected failure in counter[0]"), "{err}");
}

#[test]
fn retention_keeps_the_newest_and_gc_leaves_no_orphan_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // Paced to last about a second, so that even a loaded machine takes
    // more checkpoints than it keeps.
    let job = counter_job(
        40_000,
        50,
        "rate = 40000.0",
        "[checkpoint]
interval-ms = 10
retain = 2",
    );
    let opts = RunOptions {
        store: Some(store(dir.path())),
        ..RunOptions::default()
    };
    run_with(dir.path(), &job, None, &opts).unwrap();
    let s = store(dir.path());
    let ids = s.list_checkpoints("test").unwrap();
    assert!(!ids.is_empty() && ids.len() <= 2, "{ids:?}");
    let kept: Vec<_> = ids
        .iter()
        .map(|id| s.get_manifest("test", *id).unwrap())
        .collect();
    assert!(
        ids.last().unwrap().0 > 2,
        "more checkpoints were taken than kept: {ids:?}"
    );
    let referenced: std::collections::HashSet<String> = kept
        .iter()
        .flat_map(|m| m.chunks().map(wrun::checkpoint::object_key))
        .collect();
    let stored = s.blobs().list("segments/").unwrap();
    let far_future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    assert!(
        wrun::checkpoint::garbage(&stored, &referenced, &Default::default(), far_future).is_empty(),
        "retention collected every segment no kept checkpoint references"
    );
    for m in &kept {
        assert_eq!(m.operators.len(), 1, "{m:?}");
        assert_eq!(m.operators[0].uid.as_deref(), Some("counter"));
        assert_eq!(
            m.operators[0].state_format,
            Some(("wordcount".to_string(), 1))
        );
        assert!(m.full_bytes > 0 && m.sources.len() == 1 && m.sinks.len() == 1);
        for c in m.chunks() {
            s.get_chunk(c).unwrap();
        }
    }
    assert_exactly_once(&dir.path().join("out.jsonl"), 40_000);
}

#[test]
fn restore_skips_a_checkpoint_with_a_corrupt_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        20_000,
        50,
        "rate = 80000.0",
        "[checkpoint]\ninterval-ms = 10\nretain = 3",
    );
    run_with(
        dir.path(),
        &job,
        None,
        &RunOptions {
            store: Some(store(dir.path())),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let s = store(dir.path());
    let ids = s.list_checkpoints("test").unwrap();
    let victim = newest_own_chunk(s.as_ref());
    let at = victim.at.clone().unwrap();
    let path = dir.path().join("checkpoints").join(&at.segment);
    // Bit rot inside the chunk's range of its segment.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at.offset as usize] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = s.get_chunk(victim.loc()).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()),
        "the error names the file: {err}"
    );
    let chosen = wrun::exec::latest_checkpoint(s.as_ref(), "test")
        .unwrap()
        .unwrap();
    assert_eq!(
        chosen.id,
        ids[ids.len() - 2],
        "falls back to the previous complete checkpoint"
    );
}

/// Runs a checkpointed counter in the binary, kills it with SIGKILL after
/// two checkpoints, lets `damage` hurt the data directory, resumes with
/// `wrun run --resume`, and checks the output is exactly once.
fn kill_damage_resume(damage: impl Fn(&Path)) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        40_000,
        61,
        "rate = 20000.0",
        "[checkpoint]\ninterval-ms = 50",
    );
    std::fs::write(dir.path().join("job.toml"), &job).unwrap();
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(wrun_bin())
        .args(["run", "job.toml", "--data-dir", data.to_str().unwrap()])
        .current_dir(dir.path())
        .env("WRUN_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for two completed checkpoints (an event, polled), then kill -9.
    let manifests = data.join("checkpoints/jobs/test/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let committed = || {
        std::fs::read_dir(&manifests)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    };
    while committed() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 30 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whole lines only: the kill may fall inside a commit's append, whose
    // cut-off tail the resume takes back.
    let partial = std::fs::read(dir.path().join("out.jsonl"))
        .unwrap_or_default()
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    assert!(
        partial < 40_000,
        "killed mid-run ({partial} lines committed)"
    );
    damage(&data);
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "run",
            "job.toml",
            "--resume",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_exactly_once(&dir.path().join("out.jsonl"), 40_000);
    (dir, data)
}

#[test]
fn sigkill_then_resume_gives_the_exactly_once_output() {
    let (dir, data) = kill_damage_resume(|_| {});
    let (code, out, err) = wrun(
        dir.path(),
        &["checkpoint", "list", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("JOB")
            && out.contains("NEW BYTES")
            && out.lines().any(|l| l.starts_with("test ")),
        "{out}"
    );
}

/// The newest checkpoint of a killed job is unusable (its manifest cut
/// short, or a chunk of its own gone): `--resume` falls back to the
/// previous one, and the file sink takes back the output the newest one
/// had committed, so the output is still exactly once.
#[test]
fn a_damaged_newest_checkpoint_resumes_from_the_previous_exactly_once() {
    kill_damage_resume(|data| {
        let ids = store(data).list_checkpoints("test").unwrap();
        let path = data.join(format!(
            "checkpoints/jobs/test/checkpoints/{}.json",
            ids.last().unwrap().0
        ));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    kill_damage_resume(|data| {
        let victim = newest_own_chunk(store(data).as_ref());
        std::fs::remove_file(data.join("checkpoints").join(victim.at.unwrap().segment)).unwrap();
    });
}

#[test]
fn a_restart_never_goes_back_to_a_previous_runs_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        6000,
        13,
        "rate = 60000.0",
        "[checkpoint]\ninterval-ms = 10\n[restart]\nattempts = 1\ndelay-ms = 0",
    );
    let store = store(dir.path());
    let first = RunOptions {
        store: Some(store.clone()),
        ..RunOptions::default()
    };
    run_supervised(dir.path(), &job, &first).unwrap();
    let old = wrun::exec::newest_checkpoint_id(store.as_ref(), "test").unwrap();
    assert!(old > 0, "the first run took checkpoints");
    // A fresh run of the same job on the same store fails at once: it must
    // restart from the start (or its own checkpoint), not from the end of
    // the first run.
    let second = RunOptions {
        store: Some(store.clone()),
        fail_point: Some(FailPoint {
            vertex: "op".into(),
            after_records: 1,
        }),
        ..RunOptions::default()
    };
    let report = run_supervised(dir.path(), &job, &second).unwrap();
    assert_eq!(report.restarts, 1);
    assert!(
        report.restored_from.is_none_or(|id| id > old),
        "restarted from checkpoint {:?} of the previous run (<= {old})",
        report.restored_from
    );
    assert_exactly_once(&dir.path().join("out.jsonl"), 6000);
}

/// A store whose writes fail (a full disk): checkpoints fail, the job goes
/// on; once more fail in a row than `checkpoint.tolerable-failures`, the
/// job fails with a message that says so.
#[test]
fn failed_checkpoints_are_tolerated_up_to_the_setting() {
    let full_disk = || {
        let blobs = Arc::new(wrun::blob::MemBlobs::default());
        blobs.fail_writes(true);
        (
            Arc::new(wrun::checkpoint::CheckpointStore::memory(blobs.clone())),
            blobs,
        )
    };
    // Tolerated: the job goes on while checkpoints fail; once the disk
    // has room again, the final checkpoint commits the whole output.
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        3000,
        7,
        "rate = 3000.0",
        "[checkpoint]\ninterval-ms = 5\ntolerable-failures = 100000\n[restart]\nattempts = 0",
    );
    let (store, disk) = full_disk();
    let control = wrun::exec::JobControl::new("test");
    let opts = RunOptions {
        store: Some(store),
        control: Some(control.clone()),
        ..RunOptions::default()
    };
    std::thread::scope(|s| {
        let job = s.spawn(|| run_supervised(dir.path(), &job, &opts));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while control.metrics().is_none_or(|m| m.checkpoints_failed() < 3) {
            assert!(std::time::Instant::now() < deadline, "no checkpoint failed");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        disk.fail_writes(false);
        job.join().unwrap().unwrap();
    });
    assert_exactly_once(&dir.path().join("out.jsonl"), 3000);

    // A final checkpoint that cannot be written fails the job, and nothing
    // after the last completed checkpoint (here: nothing) is visible.
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        3000,
        7,
        "rate = 30000.0",
        "[checkpoint]\ninterval-ms = 5\ntolerable-failures = 100000\n[restart]\nattempts = 0",
    );
    let opts = RunOptions {
        store: Some(full_disk().0),
        ..RunOptions::default()
    };
    let err = chain(&run_supervised(dir.path(), &job, &opts).unwrap_err());
    assert!(err.contains("the final checkpoint failed"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default(),
        "",
        "output became visible without a committed checkpoint"
    );

    // Not tolerated: the third failure in a row fails the job.
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        1_000_000,
        7,
        "rate = 20000.0",
        "[checkpoint]\ninterval-ms = 5\ntolerable-failures = 2\n[restart]\nattempts = 0",
    );
    let store: Arc<CheckpointStore> = full_disk().0;
    let opts = RunOptions {
        store: Some(store),
        ..RunOptions::default()
    };
    let err = chain(&run_supervised(dir.path(), &job, &opts).unwrap_err());
    assert!(
        err.contains("3 checkpoints failed in a row (more than checkpoint.tolerable-failures = 2)"),
        "{err}"
    );
}

/// A guest that traps when snapshotted fails its subtask at the barrier:
/// the job restarts under its policy, and fails for good with the trap.
#[test]
fn a_trap_in_snapshot_fails_the_job_under_its_restart_policy() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        1_000_000,
        10,
        guest("chaos"),
        "uid = \"chaos\"\nconfig = { mode = \"snapshot-trap\", n = 0 }",
        "forward",
        "[checkpoint]\ninterval-ms = 10\n[restart]\nattempts = 1\ndelay-ms = 0",
    )
    .replace("keys = 10\n", "keys = 10\nrate = 20000.0\n");
    let control = wrun::exec::JobControl::new("test");
    let opts = RunOptions {
        store: Some(store(dir.path())),
        control: Some(control.clone()),
        ..RunOptions::default()
    };
    let err = chain(&run_supervised(dir.path(), &job, &opts).unwrap_err());
    assert!(
        err.contains("operator chaos[0] trapped in snapshot"),
        "{err}"
    );
    // It restarted once, as its policy says, and trapped again.
    let status = control.status();
    assert_eq!(status.restarts, 1, "{status:?}");
    let traps = control.metrics().map(|m| {
        m.vertices
            .iter()
            .find(|v| v.name == "op")
            .map(|v| v.traps())
            .unwrap_or_default()
    });
    assert_eq!(traps, Some(2), "one trap per attempt");
}

#[test]
fn a_restore_refusal_fails_at_once_and_names_what_the_user_gave() {
    let dir = tempfile::tempdir().unwrap();
    let first = counter_job(
        2000,
        10,
        "rate = 20000.0",
        "max-parallelism = 32\n[checkpoint]\ninterval-ms = 10\n[restart]\nattempts = 3\ndelay-ms = 0",
    );
    let opts = RunOptions {
        store: Some(store(dir.path())),
        ..RunOptions::default()
    };
    run_supervised(dir.path(), &first, &opts).unwrap();
    let s = store(dir.path());
    let m = wrun::exec::latest_checkpoint(s.as_ref(), "test")
        .unwrap()
        .expect("a checkpoint");
    let id = m.id;

    // max-parallelism changed: no attempt can ever restore this.
    let changed = first.replace("max-parallelism = 32", "max-parallelism = 64");
    let control = wrun::exec::JobControl::new("test");
    let label = format!("savepoint 'upgrade' (checkpoint {id} of job 'test')");
    let opts = RunOptions {
        store: Some(s),
        restore: Some(m),
        restore_label: Some(label.clone()),
        control: Some(control.clone()),
        ..RunOptions::default()
    };
    let err = run_supervised(dir.path(), &changed, &opts).unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains(&format!(
            "cannot restore from {label}: it was taken with max-parallelism 32"
        )),
        "{msg}"
    );
    let status = control.status();
    assert_eq!(status.state, wrun::exec::JobState::Failed);
    assert_eq!(status.restarts, 0, "a refusal is not retried");
}
