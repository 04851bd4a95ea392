//! `wrun serve` end to end, through the real binary and a real server on
//! loopback: push → deploy → savepoint → stop → redeploy v2 from the
//! savepoint; `kill -9` and restart resumes the job; refusals (no token,
//! oversized upload, not a component); a job isolated from hostile ones;
//! `/metrics`.

use crate::common::*;
use crate::savepoint::{assert_v2_continued, counts, job, v1, v2};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wrun::api::Client;

/// A `wrun serve` child process; killed when dropped.
pub(crate) struct Serve {
    child: Child,
    data: PathBuf,
    url: String,
}

impl Serve {
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Serve {
        // Its log, beside the data directory, for when a test fails.
        std::fs::create_dir_all(data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let mut child = Command::new(wrun_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("WRUN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = wait_for_api(&mut child, data);
        Serve {
            child,
            data: data.to_path_buf(),
            url,
        }
    }

    pub(crate) fn client(&self) -> Client {
        let token = std::fs::read_to_string(self.data.join("api-token")).unwrap();
        Client::new(&self.url, token.trim())
    }

    /// Where its API (and dashboard) answers.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn d(&self) -> &str {
        self.data.to_str().unwrap()
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a job's status until `done` holds for it.
pub(crate) fn wait_job(c: &Client, job: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(s) = c.get(&format!("/v1/jobs/{job}"))
            && done(&s)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "job '{job}' never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["state"] == s
}

/// Every key counted 1..=n exactly once, `total` events in all.
fn assert_continued(out: &Path, total: usize) {
    let all = counts(out);
    for (k, v) in &all {
        let mut s = v.clone();
        s.sort();
        assert_eq!(
            s,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "key {k}: counts lost, repeated or restarted"
        );
    }
    assert_eq!(all.values().map(Vec::len).sum::<usize>(), total);
}

#[test]
fn push_deploy_savepoint_stop_and_redeploy_v2() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &["--max-module-mb", "1"]);
    let d = serve.d();
    let c = serve.client();

    // Push v1 by name; pushing the same bytes again is a no-op.
    let out = ok(
        dir.path(),
        &[
            "module",
            "push",
            v1(),
            "--name",
            "counter",
            "--version",
            "1",
            "--data-dir",
            d,
        ],
    );
    assert!(
        out.starts_with("pushed blake3:") && out.contains("counter@1"),
        "{out}"
    );
    let out = ok(dir.path(), &["module", "push", v1(), "--data-dir", d]);
    assert!(out.starts_with("already stored: blake3:"), "{out}");
    let out = ok(
        dir.path(),
        &["module", "inspect", "counter@1", "--data-dir", d],
    );
    assert!(
        out.contains("wrun:operator@0.2")
            && out.contains("stateful")
            && out.contains("wrun:operator/state@")
            && out.contains("state      wordcount v1")
            && out.contains("size "),
        "{out}"
    );
    let out = ok(dir.path(), &["module", "list", "--data-dir", d]);
    assert!(out.contains("counter@1"), "{out}");

    // Deploy v1 by name@version, paced so that it is still running when
    // stopped.
    std::fs::write(
        dir.path().join("v1.toml"),
        job("counter@1", "counter", 2, 200_000, Some(20_000)),
    )
    .unwrap();
    let out = ok(dir.path(), &["deploy", "v1.toml", "--data-dir", d]);
    assert!(out.contains("deployed job 'counts'"), "{out}");
    // Deploying it again while it runs is refused.
    let (code, _, err) = wrun(dir.path(), &["deploy", "v1.toml", "--data-dir", d]);
    assert_ne!(code, 0);
    assert!(err.contains("already running"), "{err}");

    let out = ok(
        dir.path(),
        &[
            "savepoint",
            "trigger",
            "counts",
            "--name",
            "early",
            "--data-dir",
            d,
        ],
    );
    assert!(out.contains("savepoint sp-counts-"), "{out}");
    let out = ok(dir.path(), &["job", "status", "counts", "--data-dir", d]);
    assert!(
        out.contains("state       running") && out.contains("NEW BYTES"),
        "{out}"
    );
    let metrics = c.get_text("/metrics").unwrap();
    assert!(
        metrics
            .contains("wrun_records_in_total{job=\"counts\",operator=\"count\",kind=\"operator\"}")
            && metrics.contains("wrun_last_checkpoint_id{job=\"counts\"}"),
        "{metrics}"
    );
    // The savepoint's checkpoint holds the counter's state.
    let size = metrics
        .lines()
        .find(|l| {
            l.starts_with("wrun_checkpoint_state_size_bytes{job=\"counts\",operator=\"count\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(size > Some(0), "{metrics}");
    for family in [
        "wrun_batch_latency_seconds_bucket{job=\"counts\",operator=\"count\"",
        "wrun_checkpoint_last_alignment_seconds{job=\"counts\",operator=\"count\"",
        "wrun_job_restarts_total{job=\"counts\"} 0",
        "wrun_last_checkpoint_duration_seconds{job=\"counts\"}",
    ] {
        assert!(metrics.contains(family), "{family}: {metrics}");
    }
    let out = ok(
        dir.path(),
        &[
            "job",
            "stop",
            "counts",
            "--savepoint",
            "--name",
            "upgrade",
            "--data-dir",
            d,
        ],
    );
    assert!(out.contains("job 'counts' stopped"), "{out}");
    wait_job(&c, "counts", "stopped", state_is("stopped"));
    let v1_lines = read_jsonl(&dir.path().join("out.jsonl")).len();
    assert!(
        v1_lines > 0 && v1_lines < 200_000,
        "v1 stopped mid-job: {v1_lines} lines"
    );

    // v2 by path (uploaded by deploy), at another parallelism, from the
    // savepoint: the counts continue.
    std::fs::write(
        dir.path().join("v2.toml"),
        job(v2(), "counter", 3, 200_000, None),
    )
    .unwrap();
    let (code, out, err) = wrun(
        dir.path(),
        &[
            "deploy",
            "v2.toml",
            "--from-savepoint",
            "upgrade",
            "--data-dir",
            d,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("from savepoint upgrade (checkpoint "), "{out}");
    assert!(
        err.contains("uploading") && err.contains("validated and compiled"),
        "{err}"
    );
    wait_job(&c, "counts", "finished", state_is("finished"));
    assert_continued(&dir.path().join("out.jsonl"), 200_000);
    assert_v2_continued(&dir.path().join("out.jsonl"), v1_lines);

    // Refusals. No token:
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .get(format!("{}/v1/modules", serve.url))
        .call()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = agent.get(format!("{}/metrics", serve.url)).call().unwrap();
    assert_eq!(r.status(), 401);
    // Over the size limit (1 MiB here): the server refuses (a 413, or a
    // broken connection when it answers while the client still sends),
    // and the CLI says so before sending.
    let big = dir.path().join("big.wasm");
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(2 << 20, 0);
    std::fs::write(&big, &bytes).unwrap();
    let token = std::fs::read_to_string(serve.data.join("api-token")).unwrap();
    match agent
        .post(format!("{}/v1/modules", serve.url))
        .header("Authorization", format!("Bearer {token}"))
        .send(&bytes[..])
    {
        Ok(r) => {
            assert_eq!(r.status(), 413);
            let v: Value = r.into_body().read_json().unwrap();
            assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
        }
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("oversized upload: {e}"),
    }
    let (code, _, err) = wrun(
        dir.path(),
        &["module", "push", big.to_str().unwrap(), "--data-dir", d],
    );
    assert_ne!(code, 0);
    assert!(err.contains("over the server's limit"), "{err}");
    // Not a component: text, a core module without a component type.
    let text = dir.path().join("v1.toml");
    let (code, _, err) = wrun(
        dir.path(),
        &["module", "push", text.to_str().unwrap(), "--data-dir", d],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not WebAssembly"), "{err}");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (code, _, err) = wrun(
        dir.path(),
        &["module", "push", core.to_str().unwrap(), "--data-dir", d],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("core WebAssembly module, and it cannot be made a component"),
        "{err}"
    );
    // A name@version is immutable; names and versions that would climb out
    // of the module store are refused.
    for (name, version, refusal) in [
        ("counter", "1", "already names"),
        ("../../x", "1", "invalid module"),
        ("counter", "../1", "invalid module"),
        (".hidden", "1", "invalid module"),
    ] {
        let (code, _, err) = wrun(
            dir.path(),
            &[
                "module",
                "push",
                v2(),
                "--name",
                name,
                "--version",
                version,
                "--data-dir",
                d,
            ],
        );
        assert_ne!(code, 0, "{name}@{version}");
        assert!(err.contains(refusal), "{name}@{version}: {err}");
    }
}

/// A core module with an embedded component type, as wit-bindgen emits
/// for wasm32-unknown-unknown, is componentized on upload.
#[test]
fn a_core_module_with_an_embedded_type_is_componentized() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let core = core_module("wordcount-counter");
    let out = ok(
        dir.path(),
        &[
            "module",
            "push",
            core.to_str().unwrap(),
            "--data-dir",
            serve.d(),
        ],
    );
    assert!(out.contains("componentized on upload"), "{out}");
}

/// The core module the guest build made a component of.
fn core_module(package: &str) -> PathBuf {
    let component = Path::new(guest(package));
    let target = component.parent().unwrap().parent().unwrap();
    target
        .join("wasm-guests/wasm32-unknown-unknown/guest")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

#[test]
fn kill_9_of_serve_then_a_restart_resumes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, &[]);
    let d = serve.d().to_string();
    let c = serve.client();
    let manifest = format!(
        "{}\n[checkpoint]\ninterval-ms = 50\n",
        job(v1(), "counter", 2, 40_000, Some(8_000))
    );
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", &d]);
    // Mid-job, with a checkpoint taken: kill -9.
    wait_job(&c, "counts", "checkpointed", |s| {
        s["last-checkpoint"].as_u64().is_some()
    });
    serve.kill9();

    let serve = Serve::start(&data, &[]);
    let c = serve.client();
    let s = wait_job(&c, "counts", "resumed", |s| {
        s["restored-from"].as_u64().is_some() || s["state"] == "finished"
    });
    assert!(
        s["restored-from"].as_u64().is_some(),
        "the job finished before the kill and so did not resume; slow it down: {s}"
    );
    // The checkpoint history survives the restart (from the kept manifests).
    let history = s["checkpoints"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|c| c["id"] == s["restored-from"] && c["full-bytes"].as_u64() > Some(0)),
        "{s}"
    );
    wait_job(&c, "counts", "finished", state_is("finished"));
    // Exactly once across the kill.
    assert_continued(&dir.path().join("out.jsonl"), 40_000);
    // A finished job stays finished across another restart.
    drop(serve);
    let serve = Serve::start(&data, &[]);
    let s = serve.client().get("/v1/jobs/counts").unwrap();
    assert_eq!(s["state"], "finished", "{s}");
}

/// Hostile jobs beside a counting one (deployed by module digest) on the
/// same `wrun serve`: one traps, one loops forever, one grows its memory
/// without bound, one asks for a state read larger than its memory. Each
/// fails with its own reason while the counting job keeps running (it is
/// long enough to outlive them all, and is stopped by the test), then
/// stops with a savepoint, every count exactly once.
#[test]
fn hostile_jobs_do_not_disturb_another() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let d = serve.d();
    let c = serve.client();
    // The counting job names its module by digest.
    let pushed = ok(dir.path(), &["module", "push", v1(), "--data-dir", d]);
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("blake3:"))
        .unwrap_or_else(|| panic!("no digest in: {pushed}"));
    let good = job(digest, "counter", 2, 10_000_000, Some(20_000));
    std::fs::create_dir(dir.path().join("good")).unwrap();
    std::fs::write(dir.path().join("good/job.toml"), &good).unwrap();
    ok(dir.path(), &["deploy", "good/job.toml", "--data-dir", d]);

    let hostile = [
        ("trapper", "trap-after", 500, "", "trapped in process"),
        (
            "looper",
            "loop-process",
            0,
            "[limits]\ncall-timeout-ms = 50",
            "timed out in process",
        ),
        (
            "hog",
            "alloc",
            1 << 20,
            "[limits]\nmemory-mb = 32",
            "memory limit exceeded",
        ),
        (
            "reader",
            "big-read",
            1 << 20,
            "[limits]\nmemory-mb = 64",
            "one call asked for more than",
        ),
    ];
    for (name, mode, n, limits, _) in hostile {
        let toml = generator_job(
            100_000,
            10,
            guest("chaos"),
            &format!("config = {{ mode = \"{mode}\", n = {n} }}"),
            "rebalance",
            limits,
        )
        .replace("name = \"test\"", &format!("name = \"{name}\""));
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("job.toml"), toml).unwrap();
        // It fails as it starts or soon after: deploy may report it.
        let _ = wrun(
            dir.path(),
            &["deploy", &format!("{name}/job.toml"), "--data-dir", d],
        );
    }
    for (name, _, _, _, reason) in hostile {
        let s = wait_job(&c, name, "failed", state_is("failed"));
        assert!(s["error"].as_str().unwrap().contains(reason), "{name}: {s}");
    }
    // The counting job never noticed: still running, still counting.
    let before = c.get("/v1/jobs/counts").unwrap();
    assert_eq!(before["state"], "running", "{before}");
    let metrics = c.get_text("/metrics").unwrap();
    assert!(
        metrics.contains(
            "wrun_guest_traps_total{job=\"trapper\",operator=\"op\",kind=\"operator\"} 1"
        ) && metrics.contains(
            "wrun_guest_traps_total{job=\"counts\",operator=\"count\",kind=\"operator\"} 0"
        ),
        "{metrics}"
    );
    let out = ok(dir.path(), &["job", "list", "--data-dir", d]);
    for (name, ..) in hostile {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains("failed")),
            "{out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("counts ") && l.contains("running")),
        "{out}"
    );
    ok(
        dir.path(),
        &["job", "stop", "counts", "--savepoint", "--data-dir", d],
    );
    let out = dir.path().join("good/out.jsonl");
    let lines = read_jsonl(&out).len();
    assert!(lines > 0, "the counting job counted nothing");
    assert_continued(&out, lines);
}

/// Without a running wrun, `module push` stores into the data directory,
/// and `wrun run` resolves `name@version` from it.
#[test]
fn module_push_without_a_server_then_run_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = ok(
        dir.path(),
        &[
            "module",
            "push",
            v1(),
            "--name",
            "counter",
            "--version",
            "1",
            "--data-dir",
            d,
        ],
    );
    assert!(out.contains("counter@1"), "{out}");
    std::fs::write(
        dir.path().join("job.toml"),
        job("counter@1", "counter", 2, 1000, None),
    )
    .unwrap();
    ok(dir.path(), &["run", "job.toml", "--data-dir", d]);
    assert_continued(&dir.path().join("out.jsonl"), 1000);
    let (code, _, err) = wrun(
        dir.path(),
        &["module", "inspect", "counter@2", "--data-dir", d],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("wrun module push FILE --name counter --version 2"),
        "{err}"
    );
}

/// A clean stop (SIGTERM) cancels the jobs but keeps them `running` in
/// their records: the next start resumes them.
#[test]
fn sigterm_then_a_restart_resumes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, &[]);
    let d = serve.d().to_string();
    let c = serve.client();
    let manifest = format!(
        "{}\n[checkpoint]\ninterval-ms = 50\n",
        job(v1(), "counter", 1, 40_000, Some(8_000))
    );
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", &d]);
    wait_job(&c, "counts", "checkpointed", |s| {
        s["last-checkpoint"].as_u64().is_some()
    });
    // SAFETY: sends a signal to our own child process.
    unsafe {
        libc::kill(serve.child.id() as i32, libc::SIGTERM);
    }
    let status = wait_within(&mut serve.child, COMMAND_DEADLINE);
    assert!(status.success(), "wrun serve after SIGTERM: {status}");
    assert!(!data.join("api.json").exists(), "the endpoint is withdrawn");
    let record: Value =
        serde_json::from_slice(&std::fs::read(data.join("jobs/counts.json")).unwrap()).unwrap();
    assert_eq!(record["desired"], "running", "{record}");

    let serve = Serve::start(&data, &[]);
    let c = serve.client();
    let s = wait_job(&c, "counts", "resumed", |s| {
        s["restored-from"].as_u64().is_some() || s["state"] == "finished"
    });
    assert!(s["restored-from"].as_u64().is_some(), "{s}");
    wait_job(&c, "counts", "finished", state_is("finished"));
    assert_continued(&dir.path().join("out.jsonl"), 40_000);
}

/// `wrun job rescale`: refused while nothing would change or the new
/// parallelism is out of range (the job keeps running); then the job stops
/// at a savepoint and runs again from it at parallelism 3, every key
/// counted exactly once across the move.
#[test]
fn rescale_stops_at_a_savepoint_and_runs_again_wider() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let d = serve.d().to_string();
    let c = serve.client();
    // The counter takes the job's default parallelism (1).
    let manifest = format!(
        "{}\n[checkpoint]\ninterval-ms = 50\n",
        job(v1(), "counter", 1, 40_000, Some(8_000)).replace("parallelism = 1\n", "")
    );
    std::fs::write(dir.path().join("job.toml"), manifest).unwrap();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", &d]);
    wait_job(&c, "counts", "checkpointed", |s| {
        s["last-checkpoint"].as_u64().is_some()
    });
    let token = std::fs::read_to_string(serve.data.join("api-token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let refused = |p: u32, status: u16, says: &str| {
        let mut r = agent
            .post(format!("{}/v1/jobs/counts/rescale", serve.url()))
            .header("Authorization", format!("Bearer {}", token.trim()))
            .send_json(serde_json::json!({ "parallelism": p }))
            .unwrap();
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(r.status().as_u16(), status, "rescale to {p}: {body}");
        assert!(body.contains(says), "rescale to {p}: {body}");
    };
    refused(1, 409, "already runs at default parallelism 1");
    refused(17, 400, "max-parallelism 16");
    refused(0, 400, "at least 1");
    let (code, _, err) = wrun(
        dir.path(),
        &["job", "rescale", "nope", "-p", "2", "--data-dir", &d],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no job 'nope'"), "{err}");
    assert_eq!(c.get("/v1/jobs/counts").unwrap()["state"], "running");

    let out = ok(
        dir.path(),
        &["job", "rescale", "counts", "-p", "3", "--data-dir", &d],
    );
    assert!(
        out.contains("savepoint") && out.contains("deployed again from it at parallelism 3"),
        "{out}"
    );
    let graph = c.get("/v1/jobs/counts/graph").unwrap();
    let count = graph["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "count")
        .unwrap()
        .clone();
    assert_eq!(count["parallelism"], 3, "{graph}");
    let s = wait_job(&c, "counts", "finished", state_is("finished"));
    assert!(s["restored-from"].as_u64().is_some(), "{s}");
    assert_continued(&dir.path().join("out.jsonl"), 40_000);
}
