//! The server against its own contract: schemathesis (an OpenAPI tester,
//! installed by `scripts/setup` into `target/toolchains/schemathesis`,
//! pinned in `xtask/toolchains/schemathesis/`) generates requests from
//! docs/openapi.yaml, valid and invalid, sends them to a real `wrun serve`
//! on loopback with the bearer token, and checks every answer against the
//! file: documented status codes, content types, headers and body schemas,
//! no 500, invalid input refused. A bounded number of examples per
//! operation, a fixed seed, and a wall-clock limit this test enforces.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Examples per operation and phase: enough to reach every route with
/// valid, invalid and edge-case input, few enough for the suite.
const MAX_EXAMPLES: &str = "15";
/// Whole-run limit; the run takes well under a minute here.
const WALL_CLOCK: Duration = Duration::from_secs(300);

fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("WRUN_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("target/toolchains/schemathesis/bin/schemathesis")
}

/// A `wrun serve` on loopback; killed when dropped.
pub(crate) struct Serve {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
}

impl Serve {
    pub(crate) fn start(data: &Path) -> Serve {
        std::fs::create_dir_all(data).unwrap();
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let mut child = Command::new(wrun_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--max-module-mb", "1"])
            .arg("--data-dir")
            .arg(data)
            .env("WRUN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = wait_for_api(&mut child, data);
        let token = std::fs::read_to_string(data.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        Serve { child, url, token }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end, or kills it after `limit`: (exit code, output).
fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<i32>, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let child = cmd
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .expect("start schemathesis");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    let code = match rx.recv_timeout(limit) {
        Ok(status) => status.unwrap().code(),
        Err(_) => {
            // SAFETY: `pid` is our own child, not yet reaped (the waiter
            // has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            None
        }
    };
    waiter.join().unwrap();
    (
        code,
        std::fs::read_to_string(out.path()).unwrap_or_default(),
    )
}

/// Runs schemathesis over docs/openapi.yaml against `serve`, with `extra`
/// arguments (and a config file, when given); panics with its report when
/// it finds the server off its spec.
fn check(serve: &Serve, work: &Path, config: Option<&Path>, extra: &[&str]) {
    let st = schemathesis();
    assert!(
        st.is_file(),
        "{} is missing: run scripts/setup (it installs schemathesis from PyPI)",
        st.display()
    );
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let mut cmd = Command::new(&st);
    if let Some(c) = config {
        cmd.arg("--config-file").arg(c);
    }
    cmd.arg("run")
        .arg(&spec)
        .args(["--url", &serve.url])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", serve.token),
        ])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "13"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--checks", "all"])
        // A valid manifest, an exported savepoint directory or a stored
        // module cannot be described by a schema: valid-looking input to
        // those is refused with 400, which this check would count as a
        // failure.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(extra)
        .arg("--report-dir")
        .arg(work.join("report"))
        .env("NO_COLOR", "1")
        .current_dir(work);
    let (code, output) = run_bounded(cmd, WALL_CLOCK);
    println!("{output}");
    match code {
        Some(0) => {}
        Some(c) => {
            panic!("schemathesis found the server off its spec (exit {c}); its report is above")
        }
        None => panic!("schemathesis ran over {WALL_CLOCK:?}; its output is above"),
    }
}

#[test]
fn the_server_keeps_to_its_openapi_file() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"));
    // Every operation, with generated names and IDs (mostly unknown ones).
    // The event stream never ends by itself: the browser tests read it
    // (tests/all/dashboard.rs); its refusals are checked below.
    check(
        &serve,
        dir.path(),
        None,
        &["--exclude-path-regex", "^/v1/events"],
    );

    // The job routes again, for a job that exists: a small deployed job
    // (it finishes quickly, so triggers and cancel meet a job that is no
    // longer running as well as one that is).
    let c = wrun::api::Client::new(&serve.url, &serve.token);
    let bytes = std::fs::read(guest("wordcount-counter")).unwrap();
    let pushed = c.post_bytes("/v1/modules", &bytes).unwrap();
    let digest = pushed["module"]["digest"].as_str().unwrap().to_string();
    let manifest = generator_job(5, 2, &digest, "uid = \"c\"", "hash", "")
        .replace("name = \"test\"", "name = \"j\"");
    c.post(
        "/v1/jobs",
        &serde_json::json!({ "manifest": manifest, "base-dir": dir.path() }),
    )
    .unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"path.job\" = \"j\"\n").unwrap();
    check(
        &serve,
        dir.path(),
        Some(&config),
        &["--include-path-regex", "^/v1/jobs/\\{job\\}"],
    );
}
