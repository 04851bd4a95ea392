//! Sources and sinks through real jobs: JSON lines with a key pointer,
//! stdin to stdout through the binary, and the compile cache on disk.

use crate::common::*;
use std::io::Write;

#[test]
fn json_lines_source_takes_keys_from_a_pointer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clicks.jsonl"),
        "{\"user\":{\"id\":\"ann\"},\"page\":1}\n\n{\"user\":{\"id\":\"bob\"}}\n{\"user\":{\"id\":7}}\n{\"user\":{\"id\":\"ann\"}}\n",
    )
    .unwrap();
    let job = generator_job(1, 1, guest("wordcount-counter"), "uid = \"c\"", "hash", "").replace(
        "kind = \"generator\"\ncount = 1\nkeys = 1",
        "kind = \"file\"\npath = \"clicks.jsonl\"\nformat = \"json\"\nkey = \"/user/id\"",
    );
    run_in(dir.path(), &job, None).unwrap();
    let got = sorted(read_jsonl(&dir.path().join("out.jsonl")));
    let want: Vec<(String, String)> = [("7", "1"), ("ann", "1"), ("ann", "2"), ("bob", "1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        got, want,
        "a non-string key is its JSON text; blank lines are skipped"
    );
}

#[test]
fn a_json_line_without_the_key_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\":\"a\"}\n{\"other\":1}\n",
    )
    .unwrap();
    let job = generator_job(1, 1, guest("chaos"), "", "forward", "").replace(
        "kind = \"generator\"\ncount = 1\nkeys = 1",
        "kind = \"file\"\npath = \"in.jsonl\"\nformat = \"json\"\nkey = \"/id\"",
    );
    let err = chain(&run_in(dir.path(), &job, None).unwrap_err());
    assert!(
        err.contains("in.jsonl line 2: no key at JSON pointer \"/id\""),
        "{err}"
    );
}

#[test]
fn stdin_to_stdout_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        "version = 1\nname = \"pipe\"\n[[source]]\nname = \"in\"\nkind = \"stdin\"\n[[operator]]\nname = \"tok\"\ncomponent = \"{}\"\n[[sink]]\nname = \"out\"\nkind = \"stdout\"\n[[edge]]\nfrom = \"in\"\nto = \"tok\"\n[[edge]]\nfrom = \"tok\"\nto = \"out\"\n",
        guest("wordcount-tokenizer")
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let mut child = std::process::Command::new(wrun_bin())
        .args(["run", "job.toml"])
        .current_dir(dir.path())
        .env("WRUN_LOG", "warn")
        .env("WRUN_DATA_DIR", dir.path().join(".wrun"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello wrun\nhello\n")
        .unwrap();
    let (status, stdout, err) = wait_output_within(child, COMMAND_DEADLINE);
    assert!(status.success(), "{err}");
    assert_eq!(
        stdout,
        "{\"key\":\"hello\",\"value\":\"\"}\n{\"key\":\"wrun\",\"value\":\"\"}\n{\"key\":\"hello\",\"value\":\"\"}\n"
    );
}

/// A quiet stdin holds nothing back: a line reaches the sink without
/// more input, a checkpoint completes and a cancel ends the job while the
/// source has nothing to read.
#[test]
fn a_quiet_stdin_neither_holds_events_back_nor_blocks_the_job() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        "version = 1\nname = \"pipe\"\n[[source]]\nname = \"in\"\nkind = \"stdin\"\n[[operator]]\nname = \"tok\"\ncomponent = \"{}\"\n[[sink]]\nname = \"out\"\nkind = \"stdout\"\n[[edge]]\nfrom = \"in\"\nto = \"tok\"\n[[edge]]\nfrom = \"tok\"\nto = \"out\"\n",
        guest("wordcount-tokenizer")
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let data = dir.path().join(".wrun");
    let mut child = std::process::Command::new(wrun_bin())
        .args(["run", "job.toml"])
        .current_dir(dir.path())
        .env("WRUN_LOG", "warn")
        .env("WRUN_DATA_DIR", &data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"quiet\n").unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the line is held back until more input comes");
    assert_eq!(first, "{\"key\":\"quiet\",\"value\":\"\"}");
    // stdin stays open and silent.
    let out = ok(dir.path(), &["checkpoint", "trigger", "pipe"]);
    assert!(out.contains("complete"), "{out}");
    ok(dir.path(), &["stop", "pipe"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cancel did not reach a source waiting on stdin"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success(), "a cancelled run exits non-zero");
    drop(stdin);
}

#[test]
fn a_stateful_operator_without_uid_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        generator_job(3, 1, guest("wordcount-counter"), "", "hash", ""),
    )
    .unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("operator 'op' keeps keyed state but has no `uid`"),
        "{err}"
    );
    let with_uid = generator_job(
        3,
        1,
        guest("wordcount-counter"),
        "uid = \"counter\"",
        "hash",
        "",
    );
    std::fs::write(dir.path().join("job.toml"), with_uid).unwrap();
    let (code, _, err) = wrun(dir.path(), &["run", "job.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("has no `uid`"), "{err}");
}

#[test]
fn compiled_components_are_cached_on_disk_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || wrun::sandbox::SandboxConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let bytes = std::fs::read(guest("keyed-sum")).unwrap();
    let digest = wrun::module::Digest::of(&bytes).hex();
    wrun::sandbox::Sandbox::new(cfg())
        .unwrap()
        .load(&bytes)
        .unwrap();
    let cached: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.ends_with(format!("{digest}.cwasm")))
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "one artifact, under a directory keyed by the engine config"
    );
    // A second sandbox (a new process, in effect) loads the artifact; a
    // corrupt artifact is ignored and recompiled, never trusted.
    wrun::sandbox::Sandbox::new(cfg())
        .unwrap()
        .load(&bytes)
        .unwrap();
    std::fs::write(&cached[0], b"garbage").unwrap();
    let m = wrun::sandbox::Sandbox::new(cfg())
        .unwrap()
        .load(&bytes)
        .unwrap();
    assert!(m.imports_state);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}
