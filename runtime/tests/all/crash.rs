//! The crash test: a checkpointed counter job with the exactly-once file
//! sink runs in the `wrun` binary, which is killed with SIGKILL at a seeded
//! moment; then `wrun run --resume` finishes it, and the output must equal
//! an uninterrupted run's: nothing lost, nothing duplicated.
//!
//! The moments: during processing (the test kills the process after a
//! seeded delay), and at points inside checkpoints and savepoints where the
//! binary kills itself (`WRUN_CRASH_AT=<point>:<n>`, see
//! `crash_point` in runtime/src/fault.rs, compiled in by the `fault-injection`
//! feature that test builds have): before a checkpoint's chunks are written, before
//! and after its manifest commits, in the middle of a sink's commit, and
//! while a savepoint is taken through the API (`wrun savepoint trigger` or
//! `wrun stop --savepoint`, chosen by the seed): before its chunks, before
//! its manifest, before and after its record is written. A savepoint whose
//! record was written before the kill must still be usable after the
//! resumed run (its chunks survive that run's garbage collection).
//!
//! Seed `s` kills at point `s % 9`, so any 9 consecutive seeds reach every
//! point; the rest (which passage of the point, the delay, trigger or
//! stop) is drawn from the seed. `WRUN_CRASH_N` seeds run (default 9;
//! `scripts/crash-test 100` runs 100). A failing seed prints itself and
//! reruns alone with `WRUN_CRASH_SEED=S`.

use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POINTS: &[&str] = &[
    "processing",
    "checkpoint-chunks",
    "checkpoint-manifest",
    "checkpoint-committed",
    "sink-commit",
    "savepoint-chunks",
    "savepoint-manifest",
    "savepoint-record",
    "savepoint-registered",
];

const EVENTS: u64 = 30_000;

fn job() -> String {
    generator_job(
        EVENTS,
        97,
        guest("wordcount-counter"),
        "uid = \"counter\"\nparallelism = 2",
        "hash",
        "[checkpoint]\ninterval-ms = 25\n[restart]\nattempts = 0",
    )
    .replace("keys = 97\n", "keys = 97\nrate = 10000.0\n")
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e3779b97f4a7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn wrun_run(dir: &Path, data: &Path, extra: &[&str], crash_at: Option<&str>) -> Command {
    let mut c = Command::new(wrun_bin());
    c.args(["run", "job.toml", "--data-dir"])
        .arg(data)
        .args(extra)
        .current_dir(dir)
        .env("WRUN_LOG", "error")
        .env_remove("WRUN_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(at) = crash_at {
        c.env("WRUN_CRASH_AT", at);
    }
    c
}

fn sorted_output(dir: &Path) -> Vec<(String, String)> {
    sorted(read_jsonl(&dir.join("out.jsonl")))
}

/// Runs one seed: returns where it crashed.
fn crash_once(seed: u64, golden: &[(String, String)]) -> String {
    let mut x = seed;
    let point = POINTS[(seed % POINTS.len() as u64) as usize];
    // Checkpoints pass their points every 25 ms; a savepoint (taken by a
    // separate `wrun savepoint trigger`) takes longer: its first one.
    let nth = if point.starts_with("savepoint") {
        1
    } else {
        1 + splitmix(&mut x) % 3
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("job.toml"), job()).unwrap();
    let at = format!("{point}:{nth}");
    let internal = point != "processing";
    let mut child = wrun_run(dir.path(), &data, &[], internal.then_some(at.as_str()))
        .spawn()
        .unwrap();
    let started = Instant::now();
    if point == "processing" {
        // A seeded moment in the first ~2 s of a ~3 s job.
        std::thread::sleep(Duration::from_millis(150 + splitmix(&mut x) % 1800));
        let _ = child.kill();
    } else if point.starts_with("savepoint") {
        // Take savepoints (or stop with one) until the process dies at the
        // crash point.
        let how: &[&str] = if splitmix(&mut x).is_multiple_of(2) {
            &["savepoint", "trigger", "test"]
        } else {
            &["stop", "test", "--savepoint"]
        };
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
            let _ = Command::new(wrun_bin())
                .args(how)
                .arg("--data-dir")
                .arg(&data)
                .env("WRUN_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "seed {seed} ({at}): wrun was not killed ({status}); the job ended before the crash point"
    );
    // Resume until done (a resumed run is not killed).
    let status = wrun_run(dir.path(), &data, &["--resume"], None)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "seed {seed} ({at}): the resumed run failed: {status}"
    );
    assert!(
        sorted_output(dir.path()) == golden,
        "seed {seed} ({at}): the output differs from an uninterrupted run's (rerun: WRUN_CRASH_SEED={seed})"
    );
    if point == "savepoint-registered" {
        savepoint_still_usable(&data, seed, &at);
    }
    at
}

/// The savepoint registered just before the kill survived the resumed run:
/// listed, and its state readable (every chunk there and verified).
fn savepoint_still_usable(data: &Path, seed: u64, at: &str) {
    let wrun = |args: &[&str]| {
        let out = Command::new(wrun_bin())
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("WRUN_LOG", "error")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "seed {seed} ({at}): wrun {args:?} failed: {err}"
        );
        text
    };
    let list = wrun(&["savepoint", "list"]);
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("seed {seed} ({at}): no savepoint after the resume:\n{list}"))
        .to_string();
    let dump = wrun(&["savepoint", "inspect", &id, "--dump", "counter", "count"]);
    assert!(
        dump.lines().count() > 0,
        "seed {seed} ({at}): savepoint {id} holds no counts"
    );
}

#[test]
fn sigkill_at_seeded_moments_then_resume_gives_the_golden_output() {
    // The binary under test is built with the same features as this test:
    // without the crash points it would never crash, and the test would
    // pass while proving nothing.
    #[cfg(not(feature = "fault-injection"))]
    panic!(
        "the crash test needs the fault-injection feature (runtime/Cargo.toml's self dev-dependency turns it on for test builds)"
    );
    // The golden output: the same job, uninterrupted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), job()).unwrap();
    let status = wrun_run(dir.path(), &dir.path().join("data"), &[], None)
        .status()
        .unwrap();
    assert!(status.success());
    let golden = sorted_output(dir.path());
    assert_eq!(golden.len() as u64, EVENTS);

    let seeds: Vec<u64> = match std::env::var("WRUN_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("WRUN_CRASH_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("WRUN_CRASH_N")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(POINTS.len() as u64);
            (1..=n).collect()
        }
    };
    let mut seen = std::collections::BTreeMap::new();
    for seed in seeds {
        let at = crash_once(seed, &golden);
        let point = at.split(':').next().unwrap_or_default().to_string();
        *seen.entry(point).or_insert(0) += 1;
    }
    eprintln!("crash test: kills per point: {seen:?}");
}
