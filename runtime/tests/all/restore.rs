//! Restore rules through the `wrun` binary: state never lands on the
//! wrong operator. A vertex inserted before a stateful operator without a
//! uid takes no ID of another; a uid given to a module of another state
//! format is refused (unless that module declares the migration); each
//! refusal fails at once, naming the savepoint the user gave.

use crate::common::*;
use crate::savepoint::job;
use std::path::Path;

/// Runs the paced counter job of `toml` and stops it at savepoint `sp`.
fn savepoint_of(dir: &Path, toml: &str, sp: &str) {
    std::fs::write(dir.join("v1.toml"), toml).unwrap();
    let data = dir.join(".wrun");
    let mut child = spawn_run(dir, "v1.toml", &data);
    wait_for_api(&mut child, &data);
    // Some state first: a checkpoint that holds counts.
    ok(dir, &["checkpoint", "trigger", "counts"]);
    let out = ok(dir, &["stop", "counts", "--savepoint", "--name", sp]);
    assert!(out.contains("stopped"), "{out}");
    let status = wait_within(&mut child, COMMAND_DEADLINE);
    assert!(
        status.success(),
        "wrun run after stop --savepoint: {status}"
    );
}

/// `wrun run TOML --from-savepoint SP [extra]`: (exit code, stderr).
fn resume(dir: &Path, toml: &str, sp: &str, extra: &[&str]) -> (i32, String) {
    std::fs::write(dir.join("v2.toml"), toml).unwrap();
    let mut args = vec!["run", "v2.toml", "--from-savepoint", sp];
    args.extend(extra);
    let (code, _, err) = wrun(dir, &args);
    (code, err)
}

/// The counter job without a uid (`uid = "..."` dropped from the manifest).
fn without_uid(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.starts_with("uid = "))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `toml` with a restart policy that would restart a failed job (3 times,
/// 50 ms apart): without one (the default for a job with no `[checkpoint]`
/// table), a refusal fails the job at once whether or not it is retried,
/// so a test that says it is not retried could not fail.
fn with_restarts(toml: &str) -> String {
    format!("{toml}\n[restart]\nattempts = 3\ndelay-ms = 50\n")
}

/// The run's error is the restore refusal from `sp` and it failed at once:
/// never restarted (the supervisor's "(restart 1 of 3)" warning), and the
/// supervisor said why.
fn refused_without_restart(err: &str, sp: &str) {
    assert!(
        err.contains("error: job 'counts' failed")
            && err.contains(&format!("caused by: cannot restore from savepoint '{sp}'")),
        "the job's error is not the refusal: {err}"
    );
    assert!(!was_retried(err), "a refusal is not retried: {err}");
    assert!(
        err.contains("a restart cannot help"),
        "the supervisor says why it does not restart: {err}"
    );
}

/// A stateless tokenizer inserted between the generator and the counter.
fn with_tokenizer_before_count(toml: &str) -> String {
    toml.replacen(
        "[[edge]]\nfrom = \"gen\"\nto = \"count\"",
        &format!(
            "[[operator]]\nname = \"split\"\ncomponent = \"{}\"\n\n[[edge]]\nfrom = \"gen\"\nto = \"split\"\n\n[[edge]]\nfrom = \"split\"\nto = \"count\"",
            guest("wordcount-tokenizer")
        ),
        1,
    )
}

#[test]
fn an_inserted_vertex_never_takes_a_stateful_operators_state() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = without_uid(&job(
        guest("wordcount-counter"),
        "x",
        1,
        1_000_000,
        Some(20_000),
    ));
    savepoint_of(dir.path(), &v1, "before-insert");
    let v2 = with_restarts(&with_tokenizer_before_count(&without_uid(&job(
        guest("wordcount-counter"),
        "x",
        1,
        1_000,
        None,
    ))));
    assert!(v2.contains("name = \"split\""), "{v2}");
    let (code, err) = resume(dir.path(), &v2, "before-insert", &[]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("savepoint 'before-insert'")
            && err.contains("operator 'count' (no uid")
            && err.contains("Give stateful operators a `uid`"),
        "{err}"
    );
    refused_without_restart(&err, "before-insert");
    assert!(!err.contains("module swap"), "{err}");
}

#[test]
fn state_of_another_format_is_refused_unless_the_module_migrates_it() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = job(
        guest("wordcount-counter"),
        "counter",
        1,
        1_000_000,
        Some(20_000),
    );
    savepoint_of(dir.path(), &v1, "counts-v1");
    // The uid moves to an operator of another format (keyed-sum declares
    // `wrun-guest`): refused at once, naming both modules.
    let wrong = with_restarts(&job(guest("keyed-sum"), "counter", 1, 1_000, None));
    let (code, err) = resume(dir.path(), &wrong, "counts-v1", &[]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("cannot restore from savepoint 'counts-v1'")
            && err.contains("written in format 'wordcount'")
            && err.contains("declares format 'wrun-guest'")
            && err.contains("uid 'counter'"),
        "{err}"
    );
    refused_without_restart(&err, "counts-v1");
    // A module that declares it migrates `wordcount` gets the state.
    let migrates = job(guest("chaos"), "counter", 1, 1_000, None);
    let (code, err) = resume(dir.path(), &migrates, "counts-v1", &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn memory_savepoints_say_what_can_resume_after_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let toml = job(
        guest("wordcount-counter"),
        "counter",
        1,
        1_000_000,
        Some(20_000),
    ) + "\n[savepoints]\nbackend = \"memory\"\n";
    std::fs::write(dir.path().join("mem.toml"), &toml).unwrap();
    let data = dir.path().join(".wrun");
    let mut child = spawn_run(dir.path(), "mem.toml", &data);
    wait_for_api(&mut child, &data);
    let out = ok(
        dir.path(),
        &["stop", "counts", "--savepoint", "--name", "quick"],
    );
    assert!(out.contains("stopped"), "{out}");
    let (status, _, log) = wait_output_within(child, COMMAND_DEADLINE);
    assert!(
        status.success(),
        "wrun run after stop --savepoint: {status}: {log}"
    );
    assert!(
        log.contains("cannot resume the job") && !log.contains("resume with `wrun run"),
        "{log}"
    );
    // After the process, the name is gone, and the error says why it may be.
    let (code, err) = resume(dir.path(), &toml, "quick", &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no savepoint 'quick'") && err.contains("if it was a memory savepoint"),
        "{err}"
    );
}
