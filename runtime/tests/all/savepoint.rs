//! Savepoints with real components: the module swap (counter v1 → v2),
//! rescaling, the restore rules, export/import, dispose + GC, inspect, and
//! the two backends. Jobs run in-process under a `JobControl`, the handle
//! the HTTP API uses; `api.rs` drives the same through the binary.

use crate::common::*;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wrun::checkpoint::{
    CheckpointStore, FsSavepoints, MemorySavepoints, Savepoint, SavepointStore,
};
use wrun::exec::{JobControl, JobReport, JobState, RunOptions, StopMode};

/// A generator of `count` events over `keys` keys, paced at `rate` events/s
/// when given, into operator `count` (the component, with `uid` and
/// `parallelism`), into the exactly-once file sink `out.jsonl`.
pub fn job(component: &str, uid: &str, parallelism: u32, count: u64, rate: Option<u64>) -> String {
    let rate = rate.map(|r| format!("rate = {r}")).unwrap_or_default();
    format!(
        r#"version = 1
name = "counts"
max-parallelism = 16

[batch]
size = 64

[[source]]
name = "gen"
kind = "generator"
count = {count}
keys = 50
{rate}

[[operator]]
name = "count"
uid = "{uid}"
parallelism = {parallelism}
component = "{component}"

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "gen"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "out"
"#
    )
}

pub fn v1() -> &'static str {
    guest("wordcount-counter")
}

pub fn v2() -> &'static str {
    guest("wordcount-counter-v2")
}

/// The stores of a data directory.
pub struct Data {
    pub store: Arc<CheckpointStore>,
    pub savepoints: Arc<dyn SavepointStore>,
}

pub fn data(dir: &Path) -> Data {
    Data {
        store: Arc::new(CheckpointStore::open_dir(&dir.join(".wrun/checkpoints")).unwrap()),
        savepoints: Arc::new(FsSavepoints::open(&dir.join(".wrun/savepoints")).unwrap()),
    }
}

/// A job running on a thread, reachable through its control.
pub struct Running {
    pub control: Arc<JobControl>,
    handle: std::thread::JoinHandle<anyhow::Result<JobReport>>,
}

impl Running {
    pub fn join(self) -> anyhow::Result<JobReport> {
        self.handle.join().expect("job thread")
    }
}

pub fn start(dir: &Path, toml: &str, data: &Data, mut opts: RunOptions) -> Running {
    let control = JobControl::new("counts");
    opts.store = Some(data.store.clone());
    opts.savepoints = Some(data.savepoints.clone());
    opts.control = Some(control.clone());
    let (dir, toml) = (dir.to_path_buf(), toml.to_string());
    let handle = std::thread::spawn(move || run_supervised(&dir, &toml, &opts));
    Running { control, handle }
}

/// Waits until the job runs and its sources have read something, by
/// taking savepoints until one records a position past zero; returns it.
pub fn savepoint_once_running(control: &JobControl, name: Option<&str>) -> Savepoint {
    savepoint_beyond(control, name, &[])
}

/// A savepoint of a running job whose sources have read past `start` (the
/// positions a restored job began at): one that holds state this run
/// changed, not a copy of what it restored.
pub fn savepoint_beyond(
    control: &JobControl,
    name: Option<&str>,
    start: &[wrun::checkpoint::SourcePosition],
) -> Savepoint {
    let began = |p: &wrun::checkpoint::SourcePosition| {
        start
            .iter()
            .find(|s| s.vertex == p.vertex && s.subtask == p.subtask)
            .map_or(0, |s| s.position)
    };
    let mut name = name;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the job never ran");
        if control.status().state != JobState::Running {
            std::thread::yield_now();
            continue;
        }
        let Ok(rx) = control.trigger(Some(name.map(String::from)), None) else {
            continue;
        };
        // A name is taken by the first savepoint: retries go unnamed.
        name = None;
        let t = rx.recv().unwrap().expect("savepoint");
        let sp = t.savepoint.expect("a savepoint");
        if sp.checkpoint.sources.iter().any(|p| p.position > began(p)) {
            return sp;
        }
        // Too early: nothing read yet; go again.
    }
}

pub fn stop(control: &JobControl, mode: StopMode) -> Savepoint {
    let rx = control.trigger(Some(None), Some(mode)).expect("trigger");
    rx.recv()
        .unwrap()
        .expect("stop with savepoint")
        .savepoint
        .unwrap()
}

/// Per key, the counts (the number before any suffix) in output order.
pub fn counts(out: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, v) in read_jsonl(out) {
        let n = v.split(' ').next().unwrap().parse().unwrap();
        m.entry(k).or_default().push(n);
    }
    m
}

/// What an uninterrupted run of `count` events gives: per key, 1..=n.
fn assert_complete(out: &Path, count: u64) {
    let c = counts(out);
    let mut total = 0;
    for (k, v) in &c {
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "key {k}: counts lost, repeated or restarted"
        );
        total += v.len() as u64;
    }
    assert_eq!(total, count, "every event counted exactly once");
}

#[test]
fn swap_story_v2_continues_from_v1_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    // 1. counter v1 runs (paced, so it is still running when stopped).
    let run = start(
        dir.path(),
        &job(v1(), "counter", 2, 200_000, Some(20_000)),
        &d,
        RunOptions::default(),
    );
    savepoint_once_running(&run.control, None);
    // 2. stop with a savepoint: one barrier, nothing processed after it.
    let sp = stop(&run.control, StopMode::Suspend);
    let report = run.join().unwrap();
    assert_eq!(report.stopped_at.as_ref().map(|s| &s.id), Some(&sp.id));
    assert!(sp.stopped);
    let v1_lines = read_jsonl(&dir.path().join("out.jsonl")).len() as u64;
    let read: u64 = sp.checkpoint.sources.iter().map(|p| p.position).sum();
    assert_eq!(
        v1_lines, read,
        "v1's committed output is exactly what it read"
    );
    assert!(v1_lines > 0 && v1_lines < 200_000);
    let fmt = &sp.checkpoint.operators[0].state_format;
    assert_eq!(fmt, &Some(("wordcount".to_string(), 1)));

    // 3. v2 (different logic, same uid) resumes from the savepoint, unpaced.
    let sp = wrun::checkpoint::find(d.savepoints.as_ref(), &sp.id).unwrap();
    let run = start(
        dir.path(),
        &job(v2(), "counter", 2, 200_000, None),
        &d,
        RunOptions {
            restore: Some(sp.checkpoint.clone()),
            ..RunOptions::default()
        },
    );
    run.join().unwrap();
    let out = dir.path().join("out.jsonl");
    assert_complete(&out, 200_000);
    assert_v2_continued(&out, v1_lines as usize);
}

/// The output after v1's first `v1_lines` lines is v2's, and proves v2
/// continued v1's counts: a count includes v1's, and its "since v2" part
/// restarts at 1. v1's lines are untouched.
pub fn assert_v2_continued(out: &Path, v1_lines: usize) {
    let lines = read_jsonl(out);
    let mut continued = 0;
    for (_, v) in &lines[v1_lines..] {
        let (count, rest) = v.split_once(" (").expect("a v2 line");
        let since: u64 = rest.trim_end_matches(" since v2)").parse().unwrap();
        let count: u64 = count.parse().unwrap();
        assert!(since <= count);
        if since < count {
            continued += 1;
        }
    }
    assert!(continued > 0, "no v2 count continued from v1's");
    assert!(
        lines[..v1_lines].iter().all(|(_, v)| !v.contains("v2")),
        "v1's output is untouched"
    );
}

#[test]
fn rescale_1_to_3_to_2_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let total = 60_000;
    let run = start(
        dir.path(),
        &job(v1(), "counter", 1, total, Some(10_000)),
        &d,
        RunOptions::default(),
    );
    savepoint_once_running(&run.control, None);
    let sp1 = stop(&run.control, StopMode::Suspend);
    run.join().unwrap();

    let run = start(
        dir.path(),
        &job(v1(), "counter", 3, total, Some(10_000)),
        &d,
        RunOptions {
            restore: Some(sp1.checkpoint.clone()),
            ..RunOptions::default()
        },
    );
    let mid = savepoint_beyond(&run.control, None, &sp1.checkpoint.sources);
    assert!(mid.checkpoint.sources[0].position > sp1.checkpoint.sources[0].position);
    let sp2 = stop(&run.control, StopMode::Suspend);
    run.join().unwrap();
    assert_eq!(sp2.checkpoint.operators[0].parallelism, 3);

    let run = start(
        dir.path(),
        &job(v1(), "counter", 2, total, None),
        &d,
        RunOptions {
            restore: Some(sp2.checkpoint.clone()),
            ..RunOptions::default()
        },
    );
    run.join().unwrap();

    let golden_dir = tempfile::tempdir().unwrap();
    run_in(
        golden_dir.path(),
        &job(v1(), "counter", 1, total, None),
        None,
    )
    .unwrap();
    assert_eq!(
        sorted(read_jsonl(&dir.path().join("out.jsonl"))),
        sorted(read_jsonl(&golden_dir.path().join("out.jsonl"))),
        "the same output as an uninterrupted run"
    );
    assert_complete(&dir.path().join("out.jsonl"), total);
}

/// Stops a paced counter (`component`, uid `counter`) at a savepoint.
fn stopped_with(dir: &Path, d: &Data, component: &str, mode: StopMode) -> (Savepoint, JobReport) {
    let run = start(
        dir,
        &job(component, "counter", 2, 100_000, Some(20_000)),
        d,
        RunOptions::default(),
    );
    savepoint_once_running(&run.control, None);
    let sp = stop(&run.control, mode);
    (sp, run.join().unwrap())
}

/// Stops a paced v1 counter (uid `counter`) at a savepoint.
fn stopped_savepoint(dir: &Path, d: &Data) -> Savepoint {
    stopped_with(dir, d, v1(), StopMode::Suspend).0
}

/// Runs `toml` from savepoint `sp`.
fn resume(
    dir: &Path,
    toml: &str,
    d: &Data,
    sp: &Savepoint,
    allow: bool,
) -> anyhow::Result<JobReport> {
    start(
        dir,
        toml,
        d,
        RunOptions {
            restore: Some(sp.checkpoint.clone()),
            allow_non_restored_state: allow,
            ..RunOptions::default()
        },
    )
    .join()
}

#[test]
fn state_for_a_missing_uid_needs_allow_non_restored_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let sp = stopped_savepoint(dir.path(), &d);
    let renamed = job(v1(), "renamed-counter", 2, 100_000, None);

    let err = resume(dir.path(), &renamed, &d, &sp, false).unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains("uid 'counter'") && msg.contains("--allow-non-restored-state"),
        "{msg}"
    );

    let before = read_jsonl(&dir.path().join("out.jsonl")).len();
    resume(dir.path(), &renamed, &d, &sp, true).unwrap();
    // The new operator started empty: its first count of every key is 1.
    let lines = read_jsonl(&dir.path().join("out.jsonl"));
    let mut seen = HashSet::new();
    for (k, v) in &lines[before..] {
        if seen.insert(k.clone()) {
            assert_eq!(v, "1", "key {k} did not start empty");
        }
    }
}

#[test]
fn a_changed_max_parallelism_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let sp = stopped_savepoint(dir.path(), &d);
    let toml = job(v1(), "counter", 2, 100_000, None)
        .replace("max-parallelism = 16", "max-parallelism = 32");
    let err = resume(dir.path(), &toml, &d, &sp, false).unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains("max-parallelism 16") && msg.contains("cannot change"),
        "{msg}"
    );
}

#[test]
fn a_refused_state_format_is_an_error_at_resume() {
    // v2 wrote wordcount/2; v1 reads only wordcount/1 and says so.
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let (sp, _) = stopped_with(dir.path(), &d, v2(), StopMode::Suspend);
    let out_before = std::fs::read(dir.path().join("out.jsonl")).unwrap();
    let err = resume(
        dir.path(),
        &job(v1(), "counter", 2, 100_000, None),
        &d,
        &sp,
        false,
    )
    .unwrap_err();
    let msg = chain(&err);
    assert!(
        msg.contains("wordcount/2") && msg.contains("reads wordcount/1"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("out.jsonl")).unwrap(),
        out_before,
        "a refused restore writes nothing"
    );
}

#[test]
fn drain_closes_operators_before_the_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let (sp, report) = stopped_with(dir.path(), &d, v1(), StopMode::Drain);
    assert!(sp.drained && sp.stopped);
    assert_eq!(report.stopped_at.unwrap().id, sp.id);
    let read: u64 = sp.checkpoint.sources.iter().map(|p| p.position).sum();
    assert_eq!(
        read_jsonl(&dir.path().join("out.jsonl")).len() as u64,
        read,
        "everything read before the savepoint is committed"
    );
}

#[test]
fn export_import_into_a_fresh_data_dir_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let sp = stopped_savepoint(dir.path(), &d);
    let export = dir.path().join("exported");
    wrun::checkpoint::export(&sp, d.store.as_ref(), &export).unwrap();

    // Another machine: a fresh data dir, the exported directory, and the
    // output committed so far (the sink's file travels with the job).
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("out.jsonl"), other.path().join("out.jsonl")).unwrap();
    let od = data(other.path());
    let imported = wrun::checkpoint::import(
        &export,
        od.store.as_ref(),
        od.savepoints.as_ref(),
        Some("moved".into()),
    )
    .unwrap();
    assert_eq!(imported.id, sp.id);
    let found = wrun::checkpoint::find(od.savepoints.as_ref(), "moved").unwrap();
    start(
        other.path(),
        &job(v1(), "counter", 2, 100_000, None),
        &od,
        RunOptions {
            restore: Some(found.checkpoint),
            ..RunOptions::default()
        },
    )
    .join()
    .unwrap();
    assert_complete(&other.path().join("out.jsonl"), 100_000);
    // Exporting into a non-empty directory is refused.
    let err =
        anyhow::Error::from(wrun::checkpoint::export(&sp, d.store.as_ref(), &export).unwrap_err());
    let err = chain(&err);
    assert!(
        err.contains("cannot export into") && err.contains("not empty"),
        "{err}"
    );
}

/// A job whose second source has one event over two subtasks: one
/// subtask has nothing to read, the other one event; both end at once
/// while the paced generator goes on.
fn job_with_a_source_that_ends_early(rate: Option<u64>) -> String {
    job(v1(), "counter", 2, 100_000, rate).replace(
        "[[operator]]",
        r#"[[source]]
name = "once"
kind = "generator"
count = 1
keys = 1
parallelism = 2

[[edge]]
from = "once"
to = "count"
partition = "hash"

[[operator]]"#,
    )
}

#[test]
fn checkpoints_go_on_after_one_source_subtask_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let run = start(
        dir.path(),
        &job_with_a_source_that_ends_early(Some(20_000)),
        &d,
        RunOptions::default(),
    );
    // Savepoints until one records source "once" at its end (its one event
    // emitted). Before, a source subtask that reached its end told the
    // coordinator so, and no checkpoint could complete after it.
    let ended = |sp: &Savepoint| {
        sp.checkpoint
            .sources
            .iter()
            .filter(|p| p.vertex == "once")
            .map(|p| p.position)
            .sum::<u64>()
            == 1
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "source 'once' never ended");
        if ended(&savepoint_once_running(&run.control, None)) {
            break;
        }
    }
    // Both of its subtasks have ended (or are about to: a barrier already
    // in flight may still find one of them reading). The next savepoints
    // complete all the same, with its final positions.
    for _ in 0..3 {
        let sp = savepoint_once_running(&run.control, None);
        assert!(ended(&sp), "{:?}", sp.checkpoint.sources);
    }
    let sp = stop(&run.control, StopMode::Suspend);
    assert!(ended(&sp));
    run.join().unwrap();
    // Resumed (unpaced), the ended source stays ended and the rest is read.
    resume(
        dir.path(),
        &job_with_a_source_that_ends_early(None),
        &d,
        &sp,
        false,
    )
    .unwrap();
    assert_complete(&dir.path().join("out.jsonl"), 100_001);
}

#[test]
fn dispose_then_gc_frees_exactly_the_unshared_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let sp = stopped_savepoint(dir.path(), &d);
    // Resume, change state, and keep only the newest checkpoint.
    let toml = job(v1(), "counter", 2, 100_000, None).replace(
        "max-parallelism = 16",
        "max-parallelism = 16\n[checkpoint]\ninterval-ms = 5\nretain = 1",
    );
    let run = start(
        dir.path(),
        &toml,
        &d,
        RunOptions {
            restore: Some(sp.checkpoint.clone()),
            ..RunOptions::default()
        },
    );
    let later = savepoint_beyond(&run.control, None, &sp.checkpoint.sources);
    run.join().unwrap();
    // The savepoints taken to see a job running (before the stop, and
    // those the resumed job took before it had read anything) may hold
    // the very same chunks as the stop's, when no event came between them,
    // as on a loaded machine: dispose of them, so that what the stop's
    // savepoint shares is only with what the resumed job changed.
    for waited in d
        .savepoints
        .list()
        .unwrap()
        .iter()
        .filter(|o| o.id != sp.id && o.id != later.id)
    {
        wrun::checkpoint::dispose(d.store.as_ref(), d.savepoints.as_ref(), &waited.id).unwrap();
    }

    let referenced = |m: &wrun::checkpoint::CheckpointManifest| {
        m.chunks()
            .map(wrun::checkpoint::object_key)
            .collect::<HashSet<String>>()
    };
    // What still references chunks: every other savepoint, every checkpoint.
    let mut kept: HashSet<_> = HashSet::new();
    for other in d
        .savepoints
        .list()
        .unwrap()
        .iter()
        .filter(|o| o.id != sp.id)
    {
        kept.extend(referenced(&other.checkpoint));
    }
    for job in d.store.list_jobs().unwrap() {
        for id in d.store.list_checkpoints(&job).unwrap() {
            kept.extend(referenced(&d.store.get_manifest(&job, id).unwrap()));
        }
    }
    let expected: HashSet<_> = referenced(&sp.checkpoint)
        .difference(&kept)
        .cloned()
        .collect();
    assert!(!expected.is_empty(), "the savepoint has chunks of its own");
    let before: HashSet<_> = d
        .store
        .blobs()
        .list("segments/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(expected.is_subset(&before), "the savepoint kept its chunks");

    let (_, freed) =
        wrun::checkpoint::dispose(d.store.as_ref(), d.savepoints.as_ref(), &sp.id).unwrap();
    let freed: HashSet<_> = freed.into_iter().collect();
    assert_eq!(freed, expected);
    // What is left still restores.
    for c in later.checkpoint.chunks() {
        d.store.get_chunk(c).unwrap();
    }
}

#[test]
fn memory_savepoints_live_in_the_process_filesystem_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<CheckpointStore> =
        Arc::new(CheckpointStore::open_dir(&dir.path().join(".wrun/checkpoints")).unwrap());
    let mem = Data {
        store: store.clone(),
        savepoints: Arc::new(MemorySavepoints::default()),
    };
    let run = start(
        dir.path(),
        &job(v1(), "counter", 2, 100_000, Some(20_000)),
        &mem,
        RunOptions::default(),
    );
    let sp = savepoint_once_running(&run.control, None);
    assert!(sp.id.starts_with("mem-"), "{}", sp.id);
    assert!(wrun::checkpoint::find(mem.savepoints.as_ref(), &sp.id).is_ok());
    run.control.cancel();
    let _ = run.join();
    // A new process has a new, empty memory registry.
    let err = wrun::checkpoint::find(&MemorySavepoints::default(), &sp.id).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("memory savepoint") && msg.contains("filesystem"),
        "{msg}"
    );

    let fs = data(dir.path());
    let sp = stopped_savepoint(dir.path(), &fs);
    let reopened = FsSavepoints::open(&dir.path().join(".wrun/savepoints")).unwrap();
    assert_eq!(wrun::checkpoint::find(&reopened, &sp.id).unwrap(), sp);
}

#[test]
fn cancel_stops_without_restart_or_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path());
    let toml = job(v1(), "counter", 2, 1_000_000, Some(20_000)).replace(
        "max-parallelism = 16",
        "max-parallelism = 16\n[restart]\nattempts = 5\ndelay-ms = 1",
    );
    let run = start(dir.path(), &toml, &d, RunOptions::default());
    savepoint_once_running(&run.control, None);
    run.control.cancel();
    let control = run.control.clone();
    let err = run.join().unwrap_err();
    assert!(chain(&err).contains("cancelled"), "{}", chain(&err));
    assert_eq!(control.status().state, JobState::Cancelled);
    assert_eq!(control.status().restarts, 0);
}
