//! The crash test: a checkpointed counter job with the exactly-once file
//! sink runs in the `wrun` binary, which is killed with SIGKILL at a seeded
//! moment; then `wrun run --resume` finishes it, and the output must equal
//! an uninterrupted run's: nothing lost, nothing duplicated.
//!
//! The moments: during processing (the test kills the process after a
//! seeded delay), and at points inside checkpoints and savepoints where the
//! binary kills itself (`WRUN_CRASH_AT=<point>:<n>`, see
//! `crash_point` in runtime/src/fault.rs, compiled in by the `fault-injection`
//! feature of the `wrun-crash` build that the crashing runs launch): before a checkpoint's chunks are written, before
//! and after its manifest commits, in the middle of a sink's commit, and
//! while a savepoint is taken through the API (`wrun savepoint trigger` or
//! `wrun stop --savepoint`, chosen by the seed): before its chunks, before
//! its manifest, before and after its record is written. A savepoint whose
//! record was written before the kill must still be usable after the
//! resumed run (its chunks survive that run's garbage collection): a run
//! from it continues every count from the savepoint's to the final one.
//!
//! The same kill points hit a windowed job reading a broker: per-key
//! tumbling event-time windows over a bounded Kafka topic, whose output
//! must have each window once, with its full count.
//!
//! Seed `s` kills at point `s % 9`, so any 9 consecutive seeds reach every
//! point; the rest (which passage of the point, the delay, trigger or
//! stop) is drawn from the seed. `WRUN_CRASH_N` seeds run (default 9;
//! `scripts/crash-test 100` runs 100). A failing seed prints itself and
//! reruns alone with `WRUN_CRASH_SEED=S`.

use crate::common::*;
use std::collections::BTreeMap;
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
    let bin = if crash_at.is_some() {
        crash_bin()
    } else {
        wrun_bin()
    };
    let mut c = Command::new(bin);
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

/// Runs one seed of [`job`]: returns where it crashed.
fn crash_once(seed: u64, golden: &[(String, String)]) -> String {
    crash_job_once(seed, &job(), golden, true)
}

/// Runs one seed of `job` (its output `out.jsonl`): returns where it
/// crashed. With `counter`, a savepoint registered before the kill is also
/// checked to resume the counter ([`savepoint_still_usable`]).
fn crash_job_once(seed: u64, job: &str, golden: &[(String, String)], counter: bool) -> String {
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
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
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
            // Its outcome does not matter: the job may die under it.
            let _ = output_within(
                Command::new(wrun_bin())
                    .args(how)
                    .arg("--data-dir")
                    .arg(&data)
                    .env("WRUN_LOG", "error"),
                COMMAND_DEADLINE,
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = wait_within(&mut child, COMMAND_DEADLINE);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "seed {seed} ({at}): wrun was not killed ({status}); the job ended before the crash point"
    );
    // Resume until done (a resumed run is not killed).
    let (code, _, err) = output_within(
        &mut wrun_run(dir.path(), &data, &["--resume"], None),
        COMMAND_DEADLINE,
    );
    assert!(
        code == 0,
        "seed {seed} ({at}): the resumed run failed (exit {code}): {err}"
    );
    assert!(
        sorted_output(dir.path()) == golden,
        "seed {seed} ({at}): the output differs from an uninterrupted run's (rerun: WRUN_CRASH_SEED={seed})"
    );
    if counter && point == "savepoint-registered" {
        savepoint_still_usable(dir.path(), &data, golden, seed, &at);
    }
    at
}

/// [`job`] with its sink renamed `resumed`, writing `resumed.jsonl`: a
/// sink finds its state in a savepoint by its name and first brings its
/// file back to what the savepoint committed, so only a sink the savepoint
/// does not know writes a fresh file, holding exactly what the job emits
/// after the savepoint.
fn job_into_fresh_sink() -> String {
    let m = job()
        .replace(
            "name = \"out\"\nkind = \"file\"\npath = \"out.jsonl\"",
            "name = \"resumed\"\nkind = \"file\"\npath = \"resumed.jsonl\"",
        )
        .replace("to = \"out\"", "to = \"resumed\"");
    assert!(
        m.contains("path = \"resumed.jsonl\"") && m.contains("to = \"resumed\""),
        "{m}"
    );
    m
}

/// The savepoint registered just before the kill survived the resumed run
/// and still resumes the job: its counts read back (every chunk there and
/// verified), and a run from it continues each key's count from the
/// savepoint's, one by one, up to the uninterrupted run's final count.
fn savepoint_still_usable(
    dir: &Path,
    data: &Path,
    golden: &[(String, String)],
    seed: u64,
    at: &str,
) {
    let wrun = |args: &[&str]| {
        let (code, text, err) = output_within(
            Command::new(wrun_bin())
                .args(args)
                .arg("--data-dir")
                .arg(data)
                .current_dir(dir)
                .env("WRUN_LOG", "error"),
            COMMAND_DEADLINE,
        );
        assert!(code == 0, "seed {seed} ({at}): wrun {args:?} failed: {err}");
        text
    };
    let list = wrun(&["savepoint", "list"]);
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("seed {seed} ({at}): no savepoint after the resume:\n{list}"))
        .to_string();
    // `inspect --dump` lines: {"key":{"utf8":..},"value":{..,"u64":n}}.
    let dump = wrun(&["savepoint", "inspect", &id, "--dump", "counter", "count"]);
    let mut at_savepoint: BTreeMap<String, u64> = BTreeMap::new();
    for line in dump.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("seed {seed} ({at}): dump line {line:?}: {e}"));
        let (Some(key), Some(n)) = (v["key"]["utf8"].as_str(), v["value"]["u64"].as_u64()) else {
            panic!("seed {seed} ({at}): dump line {line:?} is not a word and its count");
        };
        at_savepoint.insert(key.to_string(), n);
    }
    assert!(
        !at_savepoint.is_empty(),
        "seed {seed} ({at}): savepoint {id} holds no counts"
    );
    // The final count of each key: how many events it has.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, v) in golden {
        let n: u64 = v.parse().unwrap();
        let l = last.entry(k.as_str()).or_default();
        *l = (*l).max(n);
    }
    std::fs::write(dir.join("resumed.toml"), job_into_fresh_sink()).unwrap();
    wrun(&["run", "resumed.toml", "--from-savepoint", &id]);
    // No file when nothing was left to run (a savepoint at the end of the
    // input): then every key must already be counted in full, below.
    let out = dir.join("resumed.jsonl");
    let lines = if out.exists() {
        read_jsonl(&out)
    } else {
        Vec::new()
    };
    let mut resumed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, v) in lines {
        resumed.entry(k).or_default().push(v.parse().unwrap());
    }
    for k in at_savepoint.keys().chain(resumed.keys()) {
        assert!(
            last.contains_key(k.as_str()),
            "seed {seed} ({at}): key {k} is not in the uninterrupted run's output"
        );
    }
    // Each key's counts after the savepoint: from the savepoint's count + 1
    // (1 for a key it has not seen) to the final one, each once. A key the
    // savepoint already counted in full emits nothing.
    for (k, &total) in &last {
        let from = at_savepoint.get(*k).copied().unwrap_or(0);
        assert!(
            from <= total,
            "seed {seed} ({at}): key {k}: {from} at savepoint {id}, above its {total} events"
        );
        let mut got = resumed.get(*k).cloned().unwrap_or_default();
        got.sort();
        assert_eq!(
            got,
            (from + 1..=total).collect::<Vec<_>>(),
            "seed {seed} ({at}): key {k}: the run from savepoint {id} (count {from} there) \
             does not continue to the final count {total}"
        );
    }
}

#[test]
fn sigkill_at_seeded_moments_then_resume_gives_the_golden_output() {
    // The crashing runs launch the crash-point build (`wrun-crash`),
    // checked to have its crash points: a binary without them would never
    // crash, and the test would fail for a reason it could not name.
    crash_bin();
    // The golden output: the same job, uninterrupted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), job()).unwrap();
    let (code, _, err) = output_within(
        &mut wrun_run(dir.path(), &dir.path().join("data"), &[], None),
        COMMAND_DEADLINE,
    );
    assert!(
        code == 0,
        "the uninterrupted run failed (exit {code}): {err}"
    );
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

/// A windowed job reading a broker: per-key tumbling event-time windows
/// (the `timers` guest, `key,start,end,count` when the watermark passes a
/// window) over a bounded two-partition Kafka topic whose records carry
/// their event times, into the exactly-once file sink.
fn windowed_kafka_job(addr: &str, group: &str) -> String {
    format!(
        r#"version = 1
name = "test"
[checkpoint]
interval-ms = 25
[restart]
attempts = 0

[[source]]
name = "in"
kind = "kafka"
bootstrap-servers = ["{addr}"]
topics = ["in"]
group-id = "{group}"
bounded = true
watermark = {{ out-of-orderness-ms = 100 }}

[[operator]]
name = "win"
uid = "win"
parallelism = 2
component = "{component}"
config = {{ window-ms = 100 }}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[sink]]
name = "late"
kind = "file"
path = "late.jsonl"

[[edge]]
from = "in"
to = "win"
partition = "hash"

[[edge]]
from = "win"
to = "out"

[[edge]]
from = "win.late"
to = "late"
"#,
        component = guest("timers")
    )
}

#[test]
fn sigkill_of_a_windowed_kafka_job_then_resume_gives_each_window_once() {
    crash_bin();
    let broker = crate::kafka::Broker::start();
    let addr = broker.addr();
    crate::kafka::create_topic(&addr, "in", 2);
    // 20 keys, an event every 0.1 ms of event time for 12 s from now
    // (a broker may drop records far in the past): 120 windows of 100 ms
    // per key, each key in order in its partition, so nothing is late.
    let n = 120_000u64;
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 1000
        * 1000;
    let records: Vec<(String, String, i64)> = (0..n)
        .map(|i| {
            let key = format!("k{}", i % 20);
            (
                key.clone(),
                format!("{{\"k\":\"{key}\"}}"),
                base + (i / 10) as i64,
            )
        })
        .collect();
    let timed: Vec<(&String, &String, Option<i64>)> =
        records.iter().map(|(k, v, t)| (k, v, Some(*t))).collect();
    crate::kafka::produce_timed(&addr, "in", &timed);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        windowed_kafka_job(&addr, "golden"),
    )
    .unwrap();
    let (code, _, err) = output_within(
        &mut wrun_run(dir.path(), &dir.path().join("data"), &[], None),
        COMMAND_DEADLINE,
    );
    assert!(
        code == 0,
        "the uninterrupted run failed (exit {code}): {err}"
    );
    let golden = sorted_output(dir.path());
    let counted: u64 = golden
        .iter()
        .map(|(_, v)| v.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, n, "every event in exactly one window");
    assert!(read_jsonl(&dir.path().join("late.jsonl")).is_empty());

    let seeds: Vec<u64> = match std::env::var("WRUN_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("WRUN_CRASH_SEED is a number")],
        Err(_) => (1..=POINTS.len() as u64).collect(),
    };
    for seed in seeds {
        // A consumer group of its own per run: the source starts from its
        // checkpoint or, fresh, from the beginning of the topic.
        let job = windowed_kafka_job(&addr, &format!("crash-{seed}"));
        crash_job_once(seed, &job, &golden, false);
    }
}
