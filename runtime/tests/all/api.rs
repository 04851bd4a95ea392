//! The savepoint workflow through the `wrun` binary and its control API on
//! loopback: run v1, trigger, list, stop with a savepoint, inspect and
//! dump, resume v2 from it, export/import, dispose; and the API's refusals.

use crate::common::*;
use crate::savepoint::{counts, job, v1, v2};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_run(dir: &Path, manifest: &str, data: &Path) -> Child {
    Command::new(wrun_bin())
        .args(["run", manifest, "--data-dir", data.to_str().unwrap()])
        .current_dir(dir)
        .env("WRUN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the running wrun to publish its API endpoint (a file, polled).
fn wait_for_api(child: &mut Child, data: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(data.join("api.json"))
            && let Ok(ep) = serde_json::from_str::<wrun::api::Endpoint>(&text)
        {
            return ep.url;
        }
        assert!(Instant::now() < deadline, "no API endpoint within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "wrun run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn savepoint_workflow_through_the_cli_and_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    std::fs::write(
        dir.path().join("v1.toml"),
        job(v1(), "counter", 2, 200_000, Some(20_000)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("v2.toml"),
        job(v2(), "counter", 3, 200_000, None),
    )
    .unwrap();
    let mut child = spawn_run(dir.path(), "v1.toml", &data);
    let url = wait_for_api(&mut child, &data);

    // Without the token, or with a wrong one, the API refuses.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent.get(format!("{url}/v1/jobs")).call().unwrap();
    assert_eq!(r.status(), 401);
    // Every method and route: nothing without the token.
    for (method, path) in [
        ("POST", "/v1/jobs/counts/savepoints"),
        ("POST", "/v1/jobs/counts/cancel"),
        ("POST", "/v1/jobs/counts/rescale"),
        ("POST", "/v1/savepoint-imports"),
        ("POST", "/v1/modules"),
        ("DELETE", "/v1/savepoints/x"),
        ("GET", "/v1/savepoints"),
        ("GET", "/metrics"),
    ] {
        let r = match method {
            "POST" => agent.post(format!("{url}{path}")).send("{}"),
            "DELETE" => agent.delete(format!("{url}{path}")).call(),
            _ => agent.get(format!("{url}{path}")).call(),
        }
        .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
    }
    let err = wrun::api::Client::new(&url, "not-the-token")
        .get("/v1/jobs")
        .unwrap_err();
    assert!(err.to_string().contains("wrong bearer token"), "{err}");
    // A body that is not what the route takes is a 4xx with a message.
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let r = agent
        .post(format!("{url}/v1/jobs/counts/savepoints"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(r#"{"stop": "explode"}"#)
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.into_body().read_json().unwrap();
    assert!(v["error"].as_str().unwrap().contains("explode"), "{v}");
    // An import directory that climbs out with `..` is refused.
    let r = agent
        .post(format!("{url}/v1/savepoint-imports"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(r#"{"dir": "/tmp/../etc"}"#)
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.into_body().read_json().unwrap();
    assert!(v["error"].as_str().unwrap().contains("without `..`"), "{v}");
    // An oversized body is refused before it is read whole: the client
    // gets a 413, or, when the server answers and closes while the client
    // is still sending, a broken connection.
    match agent
        .post(format!("{url}/v1/jobs/counts/savepoints"))
        .header("Authorization", format!("Bearer {token}"))
        .send(vec![b' '; 2 << 20])
    {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(ureq::Error::Io(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Err(e) => panic!("oversized body: {e}"),
    }
    let err = wrun::api::Client::new(&url, &token)
        .post("/v1/jobs/nope/savepoints", &serde_json::json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("no job 'nope'"), "{err}");

    // One wrun per data directory.
    let (code, _, err) = wrun(dir.path(), &["run", "v1.toml", "--data-dir", d]);
    assert_ne!(code, 0);
    assert!(err.contains("is in use by another wrun"), "{err}");

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
    let out = ok(
        dir.path(),
        &["checkpoint", "trigger", "counts", "--data-dir", d],
    );
    assert!(out.contains("of job 'counts' complete"), "{out}");
    let out = ok(dir.path(), &["job", "status", "counts", "--data-dir", d]);
    assert!(
        out.contains("state       running") && out.contains("NEW BYTES"),
        "{out}"
    );
    let out = ok(dir.path(), &["job", "list", "--data-dir", d]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("counts ") && l.contains("running")),
        "{out}"
    );
    let out = ok(dir.path(), &["checkpoint", "list", "--data-dir", d]);
    assert!(
        out.starts_with("JOB") && out.lines().any(|l| l.starts_with("counts ")),
        "{out}"
    );
    let out = ok(dir.path(), &["savepoint", "list", "--data-dir", d]);
    assert!(out.contains("early") && out.contains("filesystem"), "{out}");

    let out = ok(
        dir.path(),
        &[
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
    let status = wait_within(&mut child, COMMAND_DEADLINE);
    assert!(status.success(), "wrun run after stop: {status}");
    assert!(!data.join("api.json").exists(), "the endpoint is withdrawn");

    // Inspect: operators, uids, states, formats; the dump shows the counts
    // v1 committed last for each word.
    let out = ok(
        dir.path(),
        &["savepoint", "inspect", "upgrade", "--data-dir", d],
    );
    assert!(
        out.contains("uid counter")
            && out.contains("state format wordcount/1")
            && out.contains("count ")
            && out.contains("blake3:"),
        "{out}"
    );
    let dump = ok(
        dir.path(),
        &[
            "savepoint",
            "inspect",
            "upgrade",
            "--dump",
            "counter",
            "count",
            "--data-dir",
            d,
        ],
    );
    let committed = counts(&dir.path().join("out.jsonl"));
    let mut dumped = 0;
    for line in dump.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"]["utf8"].as_str().unwrap();
        let n = v["value"]["u64"].as_u64().unwrap();
        assert_eq!(Some(&n), committed[key].last(), "key {key}");
        dumped += 1;
    }
    assert_eq!(dumped, committed.len());

    // v2, at another parallelism, from the savepoint: counts continue.
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "run",
            "v2.toml",
            "--from-savepoint",
            "upgrade",
            "--data-dir",
            d,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let all = counts(&dir.path().join("out.jsonl"));
    for (k, v) in &all {
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (1..=v.len() as u64).collect::<Vec<_>>(), "key {k}");
    }
    assert_eq!(all.values().map(Vec::len).sum::<usize>(), 200_000);

    // Export, import elsewhere, dispose.
    let exported = dir.path().join("exported");
    let out = ok(
        dir.path(),
        &[
            "savepoint",
            "export",
            "upgrade",
            exported.to_str().unwrap(),
            "--data-dir",
            d,
        ],
    );
    assert!(out.contains("exported savepoint"), "{out}");
    let other = dir.path().join("other");
    let out = ok(
        dir.path(),
        &[
            "savepoint",
            "import",
            exported.to_str().unwrap(),
            "--name",
            "moved",
            "--data-dir",
            other.to_str().unwrap(),
        ],
    );
    assert!(out.contains("imported savepoint"), "{out}");
    let out = ok(
        dir.path(),
        &["savepoint", "list", "--data-dir", other.to_str().unwrap()],
    );
    assert!(out.contains("moved"), "{out}");
    let out = ok(
        dir.path(),
        &["savepoint", "dispose", "early", "--data-dir", d],
    );
    assert!(out.contains("disposed of savepoint"), "{out}");
    let out = ok(dir.path(), &["savepoint", "list", "--data-dir", d]);
    assert!(!out.contains("early") && out.contains("upgrade"), "{out}");

    // Bad input: clear errors, non-zero exits.
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "run",
            "v2.toml",
            "--from-savepoint",
            "mem-counts-1-abc",
            "--data-dir",
            d,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("memory savepoint"), "{err}");
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "savepoint",
            "trigger",
            "counts",
            "--name",
            "../escape",
            "--data-dir",
            d,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("invalid savepoint name"), "{err}");
    let (code, _, err) = wrun(
        dir.path(),
        &["stop", "counts", "--savepoint", "--data-dir", d],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no running wrun found"), "{err}");
}

/// The contract breaks issue #13 found against the binary: each refusal of
/// a real `wrun serve` is the documented JSON error, never axum's plain
/// text, and a bad job name is a 400, not a 500.
#[test]
fn refusals_of_a_real_server_are_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let serve = crate::openapi::Serve::start(&dir.path().join("data"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {}", serve.token);
    for (method, path, body, status) in [
        ("GET", "/v1/jobs/%FF%FE", "", 400),
        ("GET", "/v1/checkpoints?job=a&job=b", "", 400),
        ("GET", "/v1/checkpoints?job=../../x", "", 400),
        ("GET", "/v1/checkpoints?job=/etc", "", 400),
        ("GET", "/v1/checkpoints?nope=1", "", 400),
        ("GET", "/v1/modules?nope=1", "", 400),
        ("POST", "/v1/jobs", r#"["version = 1"]"#, 400),
        ("POST", "/v1/jobs/j/savepoints", "[null, null]", 400),
        (
            "POST",
            "/v1/savepoint-imports",
            r#"{"dir": "relative"}"#,
            400,
        ),
        ("GET", "/v1/requests/req-1", "", 404),
        ("GET", "/v2/nothing", "", 404),
        ("PUT", "/v1/jobs", "{}", 405),
    ] {
        let url = format!("{}{path}", serve.url);
        let mut r = match method {
            "POST" => agent.post(&url).header("Authorization", &auth).send(body),
            "PUT" => agent.put(&url).header("Authorization", &auth).send(body),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        }
        .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(ct, "application/json", "{method} {path}");
        let e: wrun::api::ErrorBody = r.body_mut().read_json().unwrap();
        assert!(!e.error.is_empty(), "{method} {path}");
        if path.contains("job=") {
            assert!(
                e.error.contains("invalid job name") || e.error.contains("duplicate"),
                "{method} {path}: {}",
                e.error
            );
        }
    }
}
