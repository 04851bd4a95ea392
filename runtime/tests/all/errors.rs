//! Errors a user meets through the `wrun` binary: each is clear, names the
//! thing, exits non-zero, and never panics.

use crate::common::*;

fn assert_clean_failure(code: i32, stderr: &str) {
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");
    assert!(!stderr.contains("thread 'main' panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

#[test]
fn a_missing_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "nope.toml"]);
    assert_clean_failure(code, &err);
    assert!(err.contains("cannot read job manifest nope.toml"), "{err}");
}

#[test]
fn a_bad_manifest_points_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        "version = 1\nname = \"x\"\nparalelism = 3\n",
    )
    .unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_clean_failure(code, &err);
    assert!(
        err.contains("job.toml:3:1: unknown field `paralelism`"),
        "{err}"
    );
}

#[test]
fn a_duplicate_uid_names_both_operators() {
    let dir = tempfile::tempdir().unwrap();
    let ui = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ui/err-duplicate-uid.toml"
    );
    let (code, _, err) = wrun(dir.path(), &["validate", ui]);
    assert_clean_failure(code, &err);
    assert!(
        err.contains("duplicate uid \"same\": operators 'op' (line 8) and 'op2' (line 14)"),
        "{err}"
    );
}

#[test]
fn a_missing_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(1, 1, guest("chaos"), "", "forward", "").replace(
        "kind = \"generator\"\ncount = 1\nkeys = 1",
        "kind = \"file\"\npath = \"missing.txt\"",
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_clean_failure(code, &err);
    assert!(
        err.contains("source 'gen': cannot open input file ./missing.txt"),
        "{err}"
    );
}

#[test]
fn a_missing_component_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        generator_job(1, 1, "op.wasm", "", "forward", ""),
    )
    .unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_clean_failure(code, &err);
    assert!(err.contains("operator 'op'"), "{err}");
    assert!(err.contains("cannot read component ./op.wasm"), "{err}");
}

#[test]
fn a_guest_trap_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let op = "uid = \"chaos\"\nconfig = { mode = \"trap-after\", n = 3 }";
    std::fs::write(
        dir.path().join("job.toml"),
        generator_job(10, 1, guest("chaos"), op, "forward", ""),
    )
    .unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_clean_failure(code, &err);
    assert!(err.contains("job 'test' failed"), "{err}");
    assert!(
        err.contains("operator chaos[0] trapped in process: guest panicked at"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = wrun(dir.path(), &["run"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Usage"), "{err}");
}

#[test]
fn a_bad_parallelism_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        generator_job(1, 1, guest("chaos"), "", "forward", ""),
    )
    .unwrap();
    for p in ["0", "129"] {
        let (code, _, err) = wrun(dir.path(), &["run", "job.toml", "--parallelism", p]);
        assert_clean_failure(code, &err);
        assert!(
            err.contains(&format!(
                "--parallelism {p} must be between 1 and the job's max-parallelism 128"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_file_sink_creates_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let job = generator_job(
        5,
        1,
        guest("chaos"),
        "config = { mode = \"echo\" }",
        "forward",
        "",
    )
    .replace("path = \"out.jsonl\"", "path = \"nested/dir/out.jsonl\"");
    run_in(dir.path(), &job, None).unwrap();
    assert_eq!(
        read_jsonl(&dir.path().join("nested/dir/out.jsonl")).len(),
        5
    );
}

#[test]
fn resume_without_checkpoints_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        generator_job(1, 1, guest("chaos"), "", "forward", ""),
    )
    .unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml", "--resume"]);
    assert_clean_failure(code, &err);
    assert!(
        err.contains("--resume needs checkpoints, but job 'test' has no [checkpoint] table"),
        "{err}"
    );
}
