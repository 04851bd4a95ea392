//! Checkpoints and savepoints on a real S3-compatible object store:
//! garage 2.5 (built once per machine by `scripts/setup` into
//! `target/toolchains/garage`), started by each test as a one-node
//! cluster on loopback ports with its metadata in SQLite in a temporary
//! directory, and stopped by PID. Credentials reach wrun through a
//! credentials file named in the state URL (never the environment of the
//! test process, never the URL).

use crate::checkpoint::{assert_exactly_once, counter_job};
use crate::common::*;
use bytes::Bytes;

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;
use wrun::blob::{Blobs, StateUrl};
use wrun::checkpoint::{CheckpointStore, begin, collect_garbage};

#[path = "../support/garage.rs"]
mod garage;
pub use garage::Garage;

#[test]
fn objects_on_garage_keep_the_blob_contract() {
    let g = Garage::start();
    let b = g.blobs("contract");
    assert!(
        !b.enforces_create(),
        "wrun never relies on S3 conditional writes"
    );
    b.put_if_absent("a/x", Bytes::from_static(b"hello"))
        .unwrap();
    assert_eq!(&b.get("a/x").unwrap()[..], b"hello");
    assert_eq!(&b.get_range("a/x", 1..4).unwrap()[..], b"ell");
    b.put_if_absent("a/y/z", Bytes::from_static(b"12")).unwrap();
    b.put_if_absent("ab", Bytes::from_static(b"3")).unwrap();
    let keys = |p: &str| -> Vec<String> { b.list(p).unwrap().into_iter().map(|m| m.key).collect() };
    assert_eq!(keys("a/"), vec!["a/x", "a/y/z"]);
    assert_eq!(keys(""), vec!["a/x", "a/y/z", "ab"]);
    assert_eq!(
        keys("a"),
        vec!["a/x", "a/y/z", "ab"],
        "a prefix, not a directory"
    );
    assert!(
        g.blobs("other").list("").unwrap().is_empty(),
        "prefixes do not see each other"
    );
    // A large object goes up in parts and comes back whole.
    let big: Vec<u8> = (0..(17u32 << 20)).map(|i| (i % 251) as u8).collect();
    b.put_if_absent("big", Bytes::from(big.clone())).unwrap();
    assert_eq!(b.get("big").unwrap().len(), big.len());
    assert_eq!(
        &b.get_range("big", 9_000_000..9_000_010).unwrap()[..],
        &big[9_000_000..9_000_010]
    );
    b.delete("a/x").unwrap();
    b.delete("a/x").unwrap();
    let err = b.get("a/x").unwrap_err();
    assert!(
        matches!(err, wrun::blob::BlobError::NotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("s3://wrun/contract/a/x"), "{err}");
}

/// Polls `store` until job `test` has `n` checkpoints.
fn wait_for_checkpoints(store: &CheckpointStore, n: usize, child: &mut Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.list_checkpoints("test").unwrap().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no {n} checkpoints within 60 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_job_on_garage_resumes_exactly_once_after_sigkill_and_a_corrupt_segment() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        40_000,
        61,
        "rate = 20000.0",
        "[checkpoint]\ninterval-ms = 50",
    );
    std::fs::write(dir.path().join("job.toml"), &job).unwrap();
    let url = g.url("prod");
    let run = ["run", "job.toml", "--data-dir", "data", "--state-url", &url];
    let mut child = spawn_wrun(dir.path(), &run);
    let store = g.store("prod");
    wait_for_checkpoints(&store, 3, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("data/checkpoints/jobs").exists(),
        "nothing of the checkpoints is on the local disk"
    );
    // Bit rot behind wrun's back in the newest checkpoint's own segment.
    let blobs = g.blobs("prod");
    let victim = crate::checkpoint::newest_own_chunk(&store)
        .at
        .unwrap()
        .segment;
    let mut bytes = blobs.get(&victim).unwrap().to_vec();
    bytes[0] ^= 0xff;
    blobs.delete(&victim).unwrap();
    blobs.put_if_absent(&victim, Bytes::from(bytes)).unwrap();
    let ids = store.list_checkpoints("test").unwrap();
    let chosen = wrun::exec::latest_checkpoint(&store, "test")
        .unwrap()
        .unwrap();
    assert_eq!(
        chosen.id,
        ids[ids.len() - 2],
        "falls back past the corrupt one"
    );

    let (code, _, err) = wrun(dir.path(), &[&run[..], &["--resume"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_exactly_once(&dir.path().join("out.jsonl"), 40_000);
    let (code, out, err) = wrun(
        dir.path(),
        &[
            "checkpoint",
            "list",
            "--data-dir",
            "data",
            "--state-url",
            &url,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("test ")), "{out}");
}

#[test]
fn a_savepoint_on_garage_is_inspected_resumed_exported_and_disposed_of() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        1_000_000,
        61,
        "rate = 5000.0",
        "[checkpoint]\ninterval-ms = 100",
    );
    std::fs::write(dir.path().join("job.toml"), &job).unwrap();
    let url = g.url("sp");
    let data = dir.path().join("data");
    let mut child = spawn_wrun(
        dir.path(),
        &["run", "job.toml", "--data-dir", "data", "--state-url", &url],
    );
    wait_for_api(&mut child, &data);
    wait_for_checkpoints(&g.store("sp"), 1, &mut child);
    stop_with_savepoint(dir.path(), &data, &mut child);
    let with = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--data-dir".into(),
            "data".into(),
            "--state-url".into(),
            url.clone(),
        ]);
        v
    };
    let run_ok = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(dir.path(), &args)
    };
    let list = run_ok(with(&["savepoint", "list"]));
    let id = list
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("sp-test-")))
        .unwrap_or_else(|| panic!("{list}"))
        .to_string();
    let pins = g.store("sp").list_pins().unwrap();
    assert_eq!(pins.len(), 1, "the pin is in the object store");
    let inspect = run_ok(with(&["savepoint", "inspect", &id]));
    assert!(inspect.contains("counter"), "{inspect}");
    run_ok(with(&["savepoint", "export", &id, "exported"]));
    // Resumes from it, to the end of the input: exactly once overall.
    let out = dir.path().join("out.jsonl");
    let short = counter_job(
        60_000,
        61,
        "rate = 1000000.0",
        "[checkpoint]\ninterval-ms = 100",
    );
    std::fs::write(dir.path().join("job.toml"), &short).unwrap();
    let before = read_jsonl(&out).len();
    assert!(before > 0 && before < 60_000, "{before}");
    run_ok(with(&["run", "job.toml", "--from-savepoint", &id]));
    assert_exactly_once(&out, 60_000);
    let disposed = run_ok(with(&["savepoint", "dispose", &id]));
    assert!(disposed.contains(&id), "{disposed}");
    assert!(g.store("sp").list_pins().unwrap().is_empty());
    // The export, a directory of its own, still holds it.
    let inspect = ok(dir.path(), &["savepoint", "inspect", "exported"]);
    assert!(inspect.contains(&id), "{inspect}");
}

/// The store down for a while: checkpoints fail (tolerated), the job goes
/// on, and once the store is back checkpoints commit and the output is
/// exactly once.
#[test]
fn an_unreachable_store_fails_checkpoints_and_the_job_goes_on() {
    let mut g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let job = counter_job(
        20_000,
        7,
        "rate = 4000.0",
        "[checkpoint]\ninterval-ms = 20\ntolerable-failures = 100000\n[restart]\nattempts = 0",
    );
    let store = Arc::new(g.store("down"));
    let control = wrun::exec::JobControl::new("test");
    let opts = wrun::exec::RunOptions {
        store: Some(store.clone()),
        control: Some(control.clone()),
        ..Default::default()
    };
    std::thread::scope(|s| {
        let run = s.spawn(|| run_supervised(dir.path(), &job, &opts));
        let metrics = || control.metrics();
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait("no checkpoint completed", &|| {
            metrics().is_some_and(|m| m.checkpoints_completed() >= 1)
        });
        g.stop();
        wait("no checkpoint failed while the store was down", &|| {
            metrics().is_some_and(|m| m.checkpoints_failed() >= 2)
        });
        // The status lists them, each with why.
        let failed = control.status().failed_checkpoints;
        assert!(failed.len() >= 2, "{failed:?}");
        assert!(
            failed
                .iter()
                .all(|f| f.reason.contains(&format!("checkpoint {}", f.id))),
            "{failed:?}"
        );
        let completed = metrics().unwrap().checkpoints_completed();
        g.start_again();
        wait("no checkpoint completed after the store came back", &|| {
            metrics().unwrap().checkpoints_completed() > completed
        });
        run.join().unwrap().unwrap();
    });
    assert_exactly_once(&dir.path().join("out.jsonl"), 20_000);
}

/// Two processes on one prefix: a collection on one never deletes what
/// the other wrote for a commit still in flight (the grace period), and
/// does delete what nothing references once it is older.
#[test]
fn collection_on_one_node_while_another_commits_loses_nothing() {
    let g = Garage::start();
    let url = |grace: u64| {
        let u = format!("{}&gc-grace-seconds={grace}", g.url("shared"));
        CheckpointStore::open(&StateUrl::parse(&u).unwrap()).unwrap()
    };
    let (writer, collector) = (url(600), url(600));
    let txn = begin(&writer);
    let (r, _) = txn.put_chunk(b"in flight on another node").unwrap();
    txn.flush().unwrap();
    assert!(
        collect_garbage(&collector).unwrap().is_empty(),
        "another node's segment, young: kept"
    );
    let mut m =
        wrun::checkpoint::CheckpointManifest::empty("job", wrun::checkpoint::CheckpointId(1), 128);
    m.operators.push(wrun::checkpoint::OperatorStateRef {
        operator_id: "00".repeat(16),
        uid: None,
        name: "op".into(),
        parallelism: 1,
        module: String::new(),
        state_format: None,
        key_groups: vec![wrun::checkpoint::KeyGroupRef::whole(0, r.clone())],
        operator_state: vec![],
    });
    txn.put_manifest(&m).unwrap();
    drop(txn);
    assert_eq!(
        &collector.get_chunk(r.loc()).unwrap()[..],
        b"in flight on another node"
    );
    // An abandoned segment (its writer died before the commit), seen by a
    // collector whose grace period has passed for it.
    let txn = begin(&writer);
    let (orphan, _) = txn.put_chunk(b"abandoned").unwrap();
    txn.flush().unwrap();
    drop(txn);
    let impatient = url(0);
    assert_eq!(
        collect_garbage(&impatient).unwrap(),
        vec![orphan.at.unwrap().segment]
    );
    impatient.get_chunk(r.loc()).unwrap();
    // The manifest on one node is the manifest on the other.
    assert_eq!(
        collector
            .get_manifest("job", wrun::checkpoint::CheckpointId(1))
            .unwrap(),
        m
    );
}

/// `[state] url` in the manifest puts a `wrun run` job's checkpoints on
/// the object store; `wrun serve --state-url` keeps every deployed job's
/// there, and refuses a manifest that names another store.
#[test]
fn the_manifest_and_wrun_serve_name_the_state_url() {
    let g = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let with_state = |url: &str| {
        counter_job(
            3_000,
            7,
            "rate = 1000000.0",
            "[checkpoint]\ninterval-ms = 50",
        ) + &format!("\n[state]\nurl = \"{url}\"\n")
    };
    std::fs::write(
        dir.path().join("job.toml"),
        with_state(&g.url("from-manifest")),
    )
    .unwrap();
    ok(dir.path(), &["run", "job.toml", "--data-dir", "data"]);
    assert_exactly_once(&dir.path().join("out.jsonl"), 3_000);
    let store = g.store("from-manifest");
    let ids = store.list_checkpoints("test").unwrap();
    let last = store.get_manifest("test", *ids.last().unwrap()).unwrap();
    assert!(
        last.input_ended,
        "the final checkpoint is on the object store"
    );

    let serve_url = g.url("serve");
    let serve =
        crate::serve::Serve::start(&dir.path().join("serve-data"), &["--state-url", &serve_url]);
    let (code, _, err) = wrun(dir.path(), &["deploy", "job.toml", "--data-dir", serve.d()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("remove [state] from the manifest") && err.contains("s3://wrun/serve"),
        "{err}"
    );
    std::fs::write(dir.path().join("job.toml"), with_state(&serve_url)).unwrap();
    std::fs::remove_file(dir.path().join("out.jsonl")).unwrap();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", serve.d()]);
    crate::serve::wait_job(&serve.client(), "test", "finished", |s| {
        s["state"] == "finished"
    });
    assert_exactly_once(&dir.path().join("out.jsonl"), 3_000);
    assert!(
        !g.store("serve")
            .list_checkpoints("test")
            .unwrap()
            .is_empty()
    );
}
