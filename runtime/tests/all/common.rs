//! Shared helpers: one sandbox (and compile cache) for the whole binary,
//! manifests built from snippets, output readers, and the `wrun` binary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wrun::exec::{JobReport, RunOptions};
use wrun::module::ModuleStore;
use wrun::sandbox::{Sandbox, SandboxConfig};

/// The sandbox every test shares, with a compile cache that outlives runs.
/// `WRUN_TEST_LOG=debug` (a tracing filter) shows the runtime's log.
pub fn sandbox() -> &'static Sandbox {
    if let Ok(filter) = std::env::var("WRUN_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        // scripts/test points WRUN_CACHE_DIR at the machine's cache, which
        // the `wrun` processes the tests start use too.
        let cache = std::env::var_os("WRUN_CACHE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache"));
        Sandbox::new(SandboxConfig {
            cache_dir: Some(cache),
            ..SandboxConfig::default()
        })
        .expect("sandbox")
    })
}

/// A guest component's path by package name.
pub fn guest(name: &str) -> &'static str {
    wrun_test_guests::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no guest {name}"))
}

/// Parses and runs a manifest whose relative paths resolve in `dir`.
pub fn run_in(dir: &Path, toml: &str, parallelism: Option<u32>) -> anyhow::Result<JobReport> {
    run_with(dir, toml, parallelism, &RunOptions::default())
}

/// Like [`run_in`], with options.
pub fn run_with(
    dir: &Path,
    toml: &str,
    parallelism: Option<u32>,
    opts: &RunOptions,
) -> anyhow::Result<JobReport> {
    let graph = wrun::job::parse_manifest(toml, "job.toml", dir, parallelism)?;
    let store = ModuleStore::new(&dir.join(".wrun"));
    let modules = wrun::module::load_modules(&graph, &store, sandbox())?;
    Ok(wrun::exec::run_job(&graph, sandbox(), &modules, opts)?)
}

/// Like [`run_with`], under the job's restart policy.
pub fn run_supervised(dir: &Path, toml: &str, opts: &RunOptions) -> anyhow::Result<JobReport> {
    let graph = wrun::job::parse_manifest(toml, "job.toml", dir, None)?;
    let store = ModuleStore::new(&dir.join(".wrun"));
    let modules = wrun::module::load_modules(&graph, &store, sandbox())?;
    Ok(wrun::exec::run_supervised(
        &graph,
        sandbox(),
        &modules,
        opts,
    )?)
}

/// The whole error chain as one string.
pub fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// (key, value) of every line of a JSON-lines sink file.
pub fn read_jsonl(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap_or_default().to_string(),
                v["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Sorted lines, for multiset comparison.
pub fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// A manifest: a generator of `count` events over `keys` keys into one
/// operator with the given extra lines, into a file sink `out.jsonl`.
pub fn generator_job(
    count: u64,
    keys: u64,
    component: &str,
    op_extra: &str,
    partition: &str,
    job_extra: &str,
) -> String {
    format!(
        r#"version = 1
name = "test"
{job_extra}

[[source]]
name = "gen"
kind = "generator"
count = {count}
keys = {keys}

[[operator]]
name = "op"
component = "{component}"
{op_extra}

[[sink]]
name = "out"
kind = "file"
path = "out.jsonl"

[[edge]]
from = "gen"
to = "op"
partition = "{partition}"

[[edge]]
from = "op"
to = "out"
partition = "rebalance"
"#
    )
}

/// The `wrun` binary.
pub fn wrun_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wrun"))
}

/// The crash-point build of wrun (`wrun-crash`, tests/crash-wrun), which
/// every test that sets `WRUN_CRASH_AT` launches. Built here, once per test
/// process, with cargo (a no-op when it is up to date), so that a crash
/// test never launches a stale one (`cargo test -p wrun-runtime` alone does
/// not build it); then checked to say it has its crash points, so that a
/// crash test never runs a binary that cannot crash and then fails for a
/// reason it cannot name.
pub fn crash_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = wrun_bin().with_file_name("wrun-crash");
            // target/<profile>/wrun: build into the same target directory
            // with the same profile.
            let profile_dir = bin.parent().ok_or("no target directory")?;
            let target_dir = profile_dir.parent().ok_or("no target directory")?;
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build
                .args(["build", "-p", "wrun-crash", "--bin", "wrun-crash", "--manifest-path"])
                .arg(&workspace)
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let (code, _, err) = output_within(&mut build, std::time::Duration::from_secs(1800));
            if code != 0 {
                return Err(format!("cannot build wrun-crash: {err}"));
            }
            let (code, v, err) = output_within(
                std::process::Command::new(&bin).arg("--version"),
                COMMAND_DEADLINE,
            );
            if code == 0 && v.contains("crash points") {
                Ok(bin)
            } else {
                Err(format!(
                    "{} has no crash points (it says {v:?}; {err})",
                    bin.display()
                ))
            }
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "{e}: the crash tests launch the crash-point build of wrun (`cargo build -p wrun-crash`)"
            )
        })
}

/// Runs `c` to its end, at most `within`: (exit code, stdout, stderr).
/// Past the deadline the child is killed and the test fails with what it
/// printed, so no test waits on a child process for ever.
pub fn output_within(
    c: &mut std::process::Command,
    within: std::time::Duration,
) -> (i32, String, String) {
    use std::io::Read;
    let mut child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out.join().unwrap(), err.join().unwrap());
            panic!("{c:?} did not end within {within:?}; stdout:\n{out}\nstderr:\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

/// How long any one `wrun` command a test runs to its end may take.
pub const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits for `child` to end, at most `within`: its exit status. Like
/// `Child::wait`, it first closes the child's stdin. Past the deadline the
/// child is killed and the test fails, so no test waits on a child process
/// for ever.
pub fn wait_within(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> std::process::ExitStatus {
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process {} did not end within {within:?}", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Like `Child::wait_with_output`, at most `within` (see [`wait_within`]):
/// (exit status, stdout, stderr), each empty unless piped.
pub fn wait_output_within(
    mut child: std::process::Child,
    within: std::time::Duration,
) -> (std::process::ExitStatus, String, String) {
    fn read(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = std::io::Read::read_to_end(&mut r, &mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    }
    let out = read(child.stdout.take());
    let err = read(child.stderr.take());
    let status = wait_within(&mut child, within);
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Runs `wrun` with arguments in `dir`: (exit code, stdout, stderr). Its
/// data directory is `dir/.wrun` unless `--data-dir` says otherwise, so
/// tests that run at the same time never share one.
pub fn wrun(dir: &Path, args: &[&str]) -> (i32, String, String) {
    output_within(
        std::process::Command::new(wrun_bin())
            .args(args)
            .current_dir(dir)
            .env("WRUN_LOG", "warn")
            .env("NO_COLOR", "1")
            .env("WRUN_DATA_DIR", dir.join(".wrun")),
        COMMAND_DEADLINE,
    )
}

/// Runs `wrun` and asserts it succeeds; its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = wrun(dir, args);
    assert_eq!(code, 0, "wrun {args:?}: {err}");
    out
}

/// Starts `wrun run MANIFEST --data-dir DATA` in `dir`, its log piped.
pub fn spawn_run(dir: &Path, manifest: &str, data: &Path) -> std::process::Child {
    spawn_wrun(
        dir,
        &["run", manifest, "--data-dir", data.to_str().unwrap()],
    )
}

/// Starts `wrun ARGS` in `dir`, its log piped.
pub fn spawn_wrun(dir: &Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(wrun_bin())
        .args(args)
        .current_dir(dir)
        .env("WRUN_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the running `wrun run` or `wrun serve` to publish its API
/// endpoint (a file, polled); panics with its log if it ends first.
pub fn wait_for_api(child: &mut std::process::Child, data: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // This process's endpoint (a killed one's may still be there).
        if let Ok(text) = std::fs::read_to_string(data.join("api.json"))
            && let Ok(ep) = serde_json::from_str::<wrun::api::Endpoint>(&text)
            && ep.pid == child.id()
        {
            return ep.url;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no API endpoint within 60 s"
        );
        if child.try_wait().unwrap().is_some() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("wrun run ended early: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A free loopback port (bound, then released).
/// Waits up to `within` for `child` to exit; `None` (and the child killed)
/// if it did not.
pub fn wait_exit(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a test starts its server on a port.
pub type Spawn = Box<dyn Fn(u16) -> std::process::Child>;

/// A server process a test started (a broker): on a free loopback port,
/// stopped by PID when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub port: u16,
    host: String,
    spawn: Spawn,
    what: &'static str,
}

impl Daemon {
    /// Starts `what` with `spawn` on a free port and waits until it
    /// accepts connections.
    pub fn start(what: &'static str, spawn: Spawn) -> Daemon {
        Daemon::start_on("127.0.0.1", what, spawn)
    }

    /// [`Daemon::start`] for a server that `spawn` makes listen on `host`
    /// (an address of this machine).
    pub fn start_on(host: &str, what: &'static str, spawn: Spawn) -> Daemon {
        let port = free_port();
        let child = spawn(port);
        let d = Daemon {
            child,
            port,
            host: host.to_string(),
            spawn,
            what,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not start on port {}",
                self.what,
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// SIGKILL, then the same server again on the same port (and store).
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = (self.spawn)(self.port);
        self.wait_ready();
    }

    /// Stops the server and starts it again on its port with `spawn`.
    pub fn restart_as(&mut self, spawn: Spawn) {
        self.spawn = spawn;
        self.kill_and_restart();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wrun run MANIFEST --data-dir DIR/data` in `dir` with an info log piped
/// (and `WRUN_CRASH_AT`, when given).
pub fn wrun_run_cmd(
    dir: &Path,
    manifest: &str,
    extra: &[&str],
    crash_at: Option<&str>,
) -> std::process::Command {
    let bin = if crash_at.is_some() {
        crash_bin()
    } else {
        wrun_bin()
    };
    let mut c = std::process::Command::new(bin);
    c.args(["run", manifest, "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .current_dir(dir)
        .env("WRUN_LOG", "info")
        .env_remove("WRUN_CRASH_AT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(at) = crash_at {
        c.env("WRUN_CRASH_AT", at);
    }
    c
}

/// Runs `wrun run run.toml` in `dir` until it is killed: at crash point
/// `at` (`point:nth`), or, for `processing`, by SIGKILL once `has_output`
/// says some output is out. Panics unless it died of SIGKILL within 60 s.
pub fn run_until_killed(dir: &Path, point: &str, at: &str, has_output: impl Fn() -> bool) {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let mut child = wrun_run_cmd(dir, "run.toml", &[], (point != "processing").then_some(at))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    if point == "processing" {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !has_output() {
            assert!(Instant::now() < deadline, "{at}: no output within 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
    }
    // The run never ends by itself: it must die at the point.
    let status = wait_exit(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{at}: wrun did not reach the crash point within 60 s"));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{at}: wrun was not killed ({status})"
    );
}

/// `(key, value)` output of counter v1 then v2, sorted with v2's values
/// (`<count> (<n> since v2)`) cut to their count; and how many v2 counts
/// continued v1's (a count above its "since v2" part).
pub fn v2_counts(all: &[(String, String)]) -> (Vec<(String, String)>, usize) {
    let mut continued = 0;
    let mut counts: Vec<(String, String)> = all
        .iter()
        .map(|(k, v)| match v.split_once(" (") {
            Some((c, rest)) => {
                let since: u64 = rest.trim_end_matches(" since v2)").parse().unwrap();
                if since < c.parse::<u64>().unwrap() {
                    continued += 1;
                }
                (k.clone(), c.to_string())
            }
            None => (k.clone(), v.clone()),
        })
        .collect();
    counts.sort();
    (counts, continued)
}

/// [`wrun_run_cmd`] run to its end; panics with its log unless it
/// succeeds. Returns the log.
pub fn wrun_run_ok(dir: &Path, manifest: &str, extra: &[&str]) -> String {
    let (code, _, log) = output_within(
        &mut wrun_run_cmd(dir, manifest, extra, None),
        COMMAND_DEADLINE,
    );
    assert!(code == 0, "wrun run {manifest} {extra:?} failed: {log}");
    log
}

/// `wrun run` of `manifest` (written to `dir/bad.toml`) must fail, within
/// `within` (a clear error, no hang): its error output.
pub fn run_fails(dir: &Path, manifest: &str, within: std::time::Duration) -> String {
    std::fs::write(dir.join("bad.toml"), manifest).unwrap();
    let started = std::time::Instant::now();
    let data = dir.join("data");
    let (code, _, err) = wrun(
        dir,
        &["run", "bad.toml", "--data-dir", data.to_str().unwrap()],
    );
    assert_ne!(code, 0, "{err}");
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
    err
}

/// Whether a failed `wrun run`'s log shows that the job was restarted
/// under its `[restart]` policy (the supervisor's warning).
pub fn was_retried(err: &str) -> bool {
    err.contains("(restart 1 of")
}

/// A row of a failure table in docs/connectors.md, checked: `wrun run` of
/// `manifest` fails with exit code non-zero, within `within` (the row's
/// bound), its error output holding every one of `says`; restarted under
/// `[restart]` exactly when `retried`. The manifest's `attempts = 0` is
/// made `attempts = 1` (50 ms apart), so a retry shows. Returns the error
/// output.
pub fn fails_as_documented(
    dir: &Path,
    manifest: &str,
    says: &[&str],
    retried: bool,
    within: std::time::Duration,
) -> String {
    let m = manifest.replace("attempts = 0", "attempts = 1\ndelay-ms = 50");
    let err = run_fails(dir, &m, within);
    for s in says {
        assert!(err.contains(s), "expected {s:?} in: {err}");
    }
    assert_eq!(
        was_retried(&err),
        retried,
        "restarted: expected {retried}: {err}"
    );
    err
}

/// Reads a running child's piped stderr on a thread of its own (so a long
/// log never fills the pipe and blocks the child): the whole log, once the
/// child has ended.
pub fn drain_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut log = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut log);
        }
        log
    })
}

/// The crash points of the end of a bounded input (docs/reliability.md),
/// in the order a job passes them.
pub const END_POINTS: [&str; 4] = [
    "final-tail-staged",
    "final-manifest-committed",
    "final-tail-commit",
    "final-tail-committed",
];

/// Runs `run.toml` in `dir` with the crash-point build until it dies at
/// `point` (its first passage), then resumes it twice with `--resume`:
/// each resume must succeed, and say the job had already finished exactly
/// when the final manifest was committed before the kill (the second
/// always). `check(round)` ("first", "second") checks the output after
/// each resume.
pub fn kill_at_end_then_resume_twice(dir: &Path, point: &str, mut check: impl FnMut(&str)) {
    use std::os::unix::process::ExitStatusExt;
    let at = format!("{point}:1");
    let mut child = wrun_run_cmd(dir, "run.toml", &[], Some(&at))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_within(&mut child, COMMAND_DEADLINE);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{at}: {status}");
    let finished = point != "final-tail-staged";
    for round in ["first", "second"] {
        let (code, out, log) = output_within(
            &mut wrun_run_cmd(dir, "run.toml", &["--resume"], None),
            COMMAND_DEADLINE,
        );
        assert_eq!(code, 0, "{at}, {round} resume: {log}");
        assert_eq!(
            out.contains("had already finished at checkpoint"),
            finished || round == "second",
            "{at}, {round} resume: {out} {log}"
        );
        check(round);
    }
}

/// `wrun stop test --savepoint` of the job running in `child` (data
/// directory `data`), then the job's exit, which must be 0.
pub fn stop_with_savepoint(dir: &Path, data: &Path, child: &mut std::process::Child) {
    ok(
        dir,
        &[
            "stop",
            "test",
            "--savepoint",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let status = wait_within(child, COMMAND_DEADLINE);
    assert!(
        status.success(),
        "the job's exit after the stop with a savepoint must be 0: {status:?}"
    );
}
