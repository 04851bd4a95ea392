//! The end of a bounded input (docs/checkpoints.md, "The end of a bounded
//! input"): the job takes a final checkpoint, the exactly-once file sink
//! stages the tail under it and commits it only after the final manifest.
//! The crash-point build of wrun is killed at each step of that end, with
//! periodic checkpoints before it and with the final checkpoint as the
//! job's first; `--resume` must then give an uninterrupted run's output,
//! and a `--resume` of the finished job must change nothing.
//! (The NATS and Kafka sinks' ends are killed in nats.rs and kafka.rs.)

use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const EVENTS: u64 = 20_000;

/// A counter over a generator into the exactly-once file sink, with
/// checkpoints every `interval_ms` (the generator paced so that periodic
/// checkpoints complete before the input ends, unless the interval is
/// longer than the whole job).
fn job(interval_ms: u64) -> String {
    generator_job(
        EVENTS,
        97,
        guest("wordcount-counter"),
        "uid = \"counter\"\nparallelism = 2",
        "hash",
        &format!("[checkpoint]\ninterval-ms = {interval_ms}\n[restart]\nattempts = 0"),
    )
    .replace("keys = 97\n", "keys = 97\nrate = 40000.0\n")
}

/// `wrun run job.toml --data-dir data [--resume]` in `dir`, by the build
/// `bin`, with `WRUN_CRASH_AT` when given.
fn run(dir: &Path, resume: bool, crash_at: Option<&str>) -> Command {
    let bin = if crash_at.is_some() {
        crash_bin()
    } else {
        wrun_bin()
    };
    let mut c = Command::new(bin);
    c.args(["run", "job.toml", "--data-dir"])
        .arg(dir.join("data"))
        .current_dir(dir)
        .env("WRUN_LOG", "warn")
        .env_remove("WRUN_CRASH_AT");
    if resume {
        c.arg("--resume");
    }
    if let Some(at) = crash_at {
        c.env("WRUN_CRASH_AT", at);
    }
    c
}

fn output(dir: &Path) -> Vec<(String, String)> {
    sorted(read_jsonl(&dir.join("out.jsonl")))
}

/// Resumes the job in `dir`: it succeeds, and says it had already
/// finished exactly when `finished` says so. Returns its stdout.
fn resume(dir: &Path, finished: bool, what: &str) -> String {
    let (code, out, err) = output_within(&mut run(dir, true, None), COMMAND_DEADLINE);
    assert_eq!(code, 0, "{what}: the resumed run failed: {err}");
    assert_eq!(
        out.contains("had already finished at checkpoint"),
        finished,
        "{what}: stdout {out:?}, stderr {err}"
    );
    out
}

fn golden() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), job(60_000)).unwrap();
    let (code, _, err) = output_within(&mut run(dir.path(), false, None), COMMAND_DEADLINE);
    assert_eq!(code, 0, "{err}");
    let golden = output(dir.path());
    assert_eq!(golden.len() as u64, EVENTS);
    // A resume of a job that finished cleanly runs nothing again.
    resume(dir.path(), true, "resume after a clean finish");
    assert_eq!(
        output(dir.path()),
        golden,
        "a resume after the finish wrote"
    );
    golden
}

#[test]
fn a_kill_at_each_step_of_the_end_then_resume_gives_the_golden_output() {
    let golden = golden();
    // (crash point, checkpoint interval, whether the resume finds the
    // final checkpoint). An interval of 60 s is longer than the job: the
    // final checkpoint is its first, and a kill before it resumes from the
    // start.
    let cases = [
        ("final-tail-staged", 25, false),
        ("final-tail-staged", 60_000, false),
        ("final-manifest-committed", 25, true),
        ("final-manifest-committed", 60_000, true),
        ("final-tail-commit", 60_000, true),
        ("final-tail-committed", 25, true),
    ];
    for (point, interval, finished) in cases {
        let what = format!("{point} (interval {interval} ms)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.toml"), job(interval)).unwrap();
        let mut child = run(dir.path(), false, Some(&format!("{point}:1")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_within(&mut child, COMMAND_DEADLINE);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{what}: wrun was not killed at the point ({status})"
        );
        resume(dir.path(), finished, &what);
        assert!(
            output(dir.path()) == golden,
            "{what}: the output differs from an uninterrupted run's"
        );
        // And once more: the job has finished, nothing changes.
        resume(dir.path(), true, &format!("{what}, second resume"));
        assert!(
            output(dir.path()) == golden,
            "{what}: the second resume wrote"
        );
    }
}
