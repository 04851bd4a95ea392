//! The data directory's promises, through the `wrun` binary: a savepoint
//! keeps its chunks whichever registry holds its record, against every
//! garbage collection (a running job's, an offline dispose's); job names
//! that could be paths are refused.

use crate::common::*;
use crate::savepoint::{counts, job, v1};
use std::path::Path;

/// A job named `name` in `dir/name/job.toml`: the counter over a paced
/// generator, with `extra` appended to the manifest.
fn write_job(dir: &Path, name: &str, count: u64, rate: Option<u64>, extra: &str) -> String {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let toml = job(v1(), "counter", 1, count, rate).replacen(
        "name = \"counts\"",
        &format!("name = \"{name}\""),
        1,
    ) + extra;
    std::fs::write(sub.join("job.toml"), toml).unwrap();
    format!("{name}/job.toml")
}

/// The newest checkpoint of `job`: (id, full size in bytes).
fn newest_checkpoint(dir: &Path, d: &str, job: &str) -> Option<(u64, u64)> {
    let out = ok(dir, &["checkpoint", "list", "--job", job, "--data-dir", d]);
    out.lines()
        .filter(|l| l.starts_with(job))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.parse().ok()?, f.get(5)?.parse().ok()?))
        })
        .max()
}

/// Waits until `job` has a checkpoint with state numbered at least `id`.
fn wait_for_checkpoint(dir: &Path, d: &str, job: &str, id: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some((n, full)) = newest_checkpoint(dir, d, job)
            && n >= id
            && full > 0
        {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{job} took no checkpoint {id}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs a paced job that checkpoints often and retains one checkpoint,
/// takes a savepoint `sp` of it, lets retention and garbage collection
/// run past it (so only the savepoint still references its chunks), and
/// cancels the job.
fn savepoint_then_cancel(dir: &Path, data: &Path, manifest: &str, job: &str, sp: &str) {
    let d = data.to_str().unwrap();
    let mut child = spawn_run(dir, manifest, data);
    wait_for_api(&mut child, data);
    wait_for_checkpoint(dir, d, job, 3);
    let out = ok(
        dir,
        &["savepoint", "trigger", job, "--name", sp, "--data-dir", d],
    );
    assert!(out.contains("savepoint sp-"), "{out}");
    let at = newest_checkpoint(dir, d, job).unwrap().0;
    wait_for_checkpoint(dir, d, job, at + 5);
    ok(dir, &["stop", job, "--data-dir", d]);
    assert!(
        !wait_within(&mut child, COMMAND_DEADLINE).success(),
        "a cancelled run exits non-zero"
    );
}

/// Every chunk of a savepoint reads back: `inspect --dump` decodes all of
/// its state.
fn assert_readable(dir: &Path, data: &Path, sp: &str, registry: Option<&str>) {
    let d = data.to_str().unwrap();
    let mut args = vec!["savepoint", "inspect", sp, "--dump", "counter", "count"];
    args.extend(["--data-dir", d]);
    if let Some(r) = registry {
        args.extend(["--dir", r]);
    }
    let (code, out, err) = wrun(dir, &args);
    assert_eq!(code, 0, "savepoint {sp} lost chunks: {err}");
    assert!(out.contains("\"u64\""), "{out}");
}

#[test]
fn savepoints_in_any_registry_survive_every_collection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // Y keeps its savepoints in the data directory's registry; X in a
    // directory of its own.
    let ckpt = "[checkpoint]\ninterval-ms = 10\nretain = 1\n";
    let y = write_job(dir.path(), "ycounts", 1_000_000, Some(20_000), ckpt);
    let x_extra = format!("[savepoints]\ndir = \"xsp\"\n{ckpt}");
    let x_paced = write_job(dir.path(), "xcounts", 1_000_000, Some(20_000), &x_extra);
    savepoint_then_cancel(dir.path(), &data, &y, "ycounts", "y-sp");
    assert_readable(dir.path(), &data, "y-sp", None);

    // X checkpoints, retains one, and collects garbage many times over,
    // with a savepoint in its own registry.
    savepoint_then_cancel(dir.path(), &data, &x_paced, "xcounts", "x-sp");
    let xsp = dir.path().join("xcounts/xsp");
    let xsp = xsp.to_str().unwrap();
    assert_readable(dir.path(), &data, "y-sp", None);
    assert_readable(dir.path(), &data, "x-sp", Some(xsp));

    // An offline dispose of Y's savepoint collects garbage too: X's stays.
    let out = ok(
        dir.path(),
        &["savepoint", "dispose", "y-sp", "--data-dir", d],
    );
    assert!(out.contains("disposed of savepoint"), "{out}");
    assert_readable(dir.path(), &data, "x-sp", Some(xsp));

    // And X resumes from it with its counts intact.
    let x_to_end = write_job(dir.path(), "xcounts", 100_000, None, &x_extra);
    let before = counts(&dir.path().join("xcounts/out.jsonl"));
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "run",
            &x_to_end,
            "--from-savepoint",
            "x-sp",
            "--data-dir",
            d,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let after = counts(&dir.path().join("xcounts/out.jsonl"));
    for (k, v) in &after {
        let mut v = v.clone();
        v.sort();
        assert_eq!(
            v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "key {k} restarted or repeated"
        );
    }
    assert!(after.values().map(Vec::len).sum::<usize>() > before.values().map(Vec::len).sum());
}

#[test]
fn a_job_name_that_could_be_a_path_is_refused_offline() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../../x", "/etc"] {
        let (code, out, err) = wrun(dir.path(), &["checkpoint", "list", "--job", bad]);
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("invalid job name"), "{err}");
        for args in [
            vec!["job", "status", bad],
            vec!["checkpoint", "trigger", bad],
            vec!["stop", bad],
        ] {
            let (code, _, err) = wrun(dir.path(), &args);
            assert_ne!(code, 0);
            assert!(err.contains("invalid job name"), "{args:?}: {err}");
        }
    }
}
