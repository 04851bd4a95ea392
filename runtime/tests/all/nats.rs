//! NATS JetStream connectors against a real `nats-server -js` (Debian's
//! package, installed by `scripts/setup`), started by each test on a free
//! loopback port with its store in a temporary directory, and stopped by
//! PID: JetStream → counter → JetStream, exactly-once across SIGKILLs at
//! seeded points (inside checkpoints and inside the sink's publish), a
//! resume at another parallelism (splits re-assigned), a savepoint stop
//! and resume, a broker restart mid-job, and the errors a user meets.

use crate::common::*;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, stream};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server -js` of this test's own, its store in a temporary
/// directory.
pub struct NatsServer {
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a server with extra arguments (`--user`, `--pass`).
    pub fn start_with(args: &[&str]) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("js");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let daemon = Daemon::start(
            "nats-server",
            Box::new(move |port| spawn_server(port, &store, &args)),
        );
        NatsServer { daemon, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.daemon.port)
    }

    /// SIGKILL, then the same server again on the same port and store.
    pub fn kill_and_restart(&mut self) {
        self.daemon.kill_and_restart();
    }
}

fn spawn_server(port: u16, store: &Path, args: &[String]) -> Child {
    Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start nats-server ({e}): run scripts/setup, which installs it")
        })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Creates a stream.
pub fn create_stream(url: &str, name: &str, subjects: &[&str], dupe_window: Duration) {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            duplicate_window: dupe_window,
            ..Default::default()
        })
        .await
        .unwrap();
    })
}

/// Publishes `(subject, payload)` messages, each acknowledged.
pub fn publish(url: &str, messages: &[(String, String)]) {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        let mut acks = Vec::new();
        for (s, p) in messages {
            acks.push(js.publish(s.clone(), p.clone().into()).await.unwrap());
            if acks.len() >= 1000 {
                for a in acks.drain(..) {
                    a.await.unwrap();
                }
            }
        }
        for a in acks {
            a.await.unwrap();
        }
    })
}

/// Every message of a stream, in order.
pub fn read_stream(url: &str, name: &str) -> Vec<(String, String)> {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream(name).await.unwrap();
        let n = s.info().await.unwrap().state.messages;
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        let c = s
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c.messages().await.unwrap();
        while (out.len() as u64) < n {
            let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
                .await
                .expect("the stream's messages did not arrive")
                .unwrap()
                .unwrap();
            out.push((
                m.subject.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
        }
        out
    })
}

fn stream_len(url: &str, name: &str) -> u64 {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        js.get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    })
}

/// A server of the test's own with the streams IN (`in.>`) and OUT
/// (`out.>`), both with a 2-minute duplicate window.
fn with_streams() -> (NatsServer, String) {
    let nats = NatsServer::start();
    let url = nats.url();
    create_stream(&url, "IN", &["in.>"], Duration::from_secs(120));
    create_stream(&url, "OUT", &["out.>"], Duration::from_secs(120));
    (nats, url)
}

/// Seeded words on `in.<group>.<word>`, and the golden output: each key's
/// running counts 1..n, once each, on `out.<key>`.
/// `(subject, payload)` messages.
type Messages = Vec<(String, String)>;

fn input(n: usize, groups: &[&str]) -> (Messages, Messages) {
    let mut x = 7u64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut msgs = Vec::new();
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let g = groups[(x >> 60) as usize % groups.len()];
        let subject = format!("in.{g}.w{}", (x >> 33) % 41);
        *counts.entry(subject.clone()).or_default() += 1;
        msgs.push((subject, format!("m{i}")));
    }
    let mut golden = Vec::new();
    for (k, n) in counts {
        for c in 1..=n {
            golden.push((format!("out.{k}"), c.to_string()));
        }
    }
    golden.sort();
    (msgs, golden)
}

fn job(url: &str, source_par: u32, op_par: u32, subjects: &[&str], bounded: bool) -> String {
    let subjects = subjects
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"version = 1
name = "test"
[checkpoint]
interval-ms = 25
[restart]
attempts = 0

[[source]]
name = "in"
kind = "nats"
servers = ["{url}"]
stream = "IN"
subjects = [{subjects}]
parallelism = {source_par}
bounded = {bounded}

[[operator]]
name = "count"
uid = "counter"
component = "{component}"
parallelism = {op_par}

[[sink]]
name = "out"
kind = "nats"
servers = ["{url}"]
stream = "OUT"
subject = "out.{{key}}"

[[edge]]
from = "in"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "out"
partition = "rebalance"
"#,
        component = guest("wordcount-counter"),
    )
}

/// How many republished messages the sink's log says the stream dropped as
/// duplicates.
fn duplicates_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("republished ")?;
            let (_, rest) = rest.split_once("; ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

fn sorted_stream(url: &str, name: &str) -> Vec<(String, String)> {
    let mut v = read_stream(url, name);
    v.sort();
    v
}

/// Seed `s` kills at point `s % POINTS.len()`.
const POINTS: &[&str] = &[
    "processing",
    "checkpoint-chunks",
    "checkpoint-sink-staged",
    "checkpoint-manifest",
    "checkpoint-committed",
    "nats-sink-publish",
    "nats-sink-acked",
    "nats-sink-committed",
];

#[test]
fn jetstream_to_jetstream_is_exactly_once_across_sigkill_at_seeded_points() {
    #[cfg(not(feature = "fault-injection"))]
    panic!("the crash test needs the fault-injection feature");
    let seeds: Vec<u64> = match std::env::var("WRUN_CRASH_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..POINTS.len() as u64).collect(),
    };
    let mut duplicates = 0;
    for seed in seeds {
        duplicates += crash_once(seed);
    }
    assert!(
        duplicates > 0,
        "no republish after a crash was answered as a duplicate: the crash points inside the sink's publish prove nothing"
    );
}

/// One seed: returns the duplicates the server reported on the resume.
fn crash_once(seed: u64) -> u64 {
    let point = POINTS[(seed % POINTS.len() as u64) as usize];
    let (_nats, url) = with_streams();
    let (msgs, golden) = input(4000, &["a"]);
    publish(&url, &msgs);
    let dir = tempfile::tempdir().unwrap();
    // The first run reads an unbounded stream: it never ends by itself, so
    // it is sure to reach the crash point.
    std::fs::write(dir.path().join("run.toml"), job(&url, 1, 2, &[], false)).unwrap();
    std::fs::write(dir.path().join("resume.toml"), job(&url, 1, 2, &[], true)).unwrap();
    let nth = match point {
        "nats-sink-publish" | "nats-sink-acked" => 2 + seed % 50,
        "processing" => 0,
        // The first group holds most of the output, and later ones are
        // few: each reaches the point at the first pass.
        "nats-sink-committed" | "checkpoint-sink-staged" => 1,
        _ => 1 + seed % 3,
    };
    let at = format!("{point}:{nth}");
    run_until_killed(dir.path(), point, &at, || stream_len(&url, "OUT") >= 100);
    let out = wrun_run_cmd(dir.path(), "resume.toml", &["--resume"], None)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "seed {seed} ({at}): the resumed run failed: {log}"
    );
    let got = sorted_stream(&url, "OUT");
    assert!(
        got == golden,
        "seed {seed} ({at}): the output stream holds {} messages, the golden output {} (rerun: WRUN_CRASH_SEED={seed})",
        got.len(),
        golden.len()
    );
    let d = duplicates_in(&log);
    if point == "nats-sink-acked" || point == "nats-sink-committed" {
        assert!(
            d > 0,
            "seed {seed} ({at}): the republish found no duplicate: {log}"
        );
    }
    d
}

#[test]
fn a_resume_at_another_parallelism_reassigns_the_splits() {
    let (_nats, url) = with_streams();
    let groups = ["a", "b", "c"];
    let (msgs, golden) = input(3000, &groups);
    publish(&url, &msgs);
    let subjects = ["in.a.>", "in.b.>", "in.c.>"];
    let dir = tempfile::tempdir().unwrap();
    // Two subtasks over three splits, killed after their second checkpoint.
    std::fs::write(
        dir.path().join("run.toml"),
        job(&url, 2, 2, &subjects, false),
    )
    .unwrap();
    let status = wrun_run_cmd(dir.path(), "run.toml", &[], Some("checkpoint-committed:2"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    // Four subtasks over three splits (one idles), counter at 3.
    std::fs::write(
        dir.path().join("resume.toml"),
        job(&url, 4, 3, &subjects, true),
    )
    .unwrap();
    wrun_run_ok(dir.path(), "resume.toml", &["--resume"]);
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}

#[test]
fn stop_with_a_savepoint_swap_the_module_and_resume_at_another_parallelism() {
    let (_nats, url) = with_streams();
    let (msgs, golden) = input(3000, &["a", "b"]);
    let (first, rest) = msgs.split_at(1500);
    publish(&url, first);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let subjects = ["in.a.>", "in.b.>"];
    std::fs::write(
        dir.path().join("run.toml"),
        job(&url, 2, 2, &subjects, false),
    )
    .unwrap();
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    let api = wait_for_api(&mut child, &data);
    // Everything published so far has its effect out; then stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_len(&url, "OUT") < 1500 {
        assert!(Instant::now() < deadline, "the first half did not come out");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The connector metrics: bytes read and written, and each split's lag
    // (nothing left to read).
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let metrics = wrun::api::Client::new(&api, token.trim())
        .get_text("/metrics")
        .unwrap();
    for want in [
        "wrun_connector_bytes_total{job=\"test\",operator=\"in\",kind=\"source\"}",
        "wrun_connector_bytes_total{job=\"test\",operator=\"out\",kind=\"sink\"}",
        "wrun_source_lag_records{job=\"test\",operator=\"in\",split=\"stream/IN/in.a.>\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
    assert!(
        !metrics.contains(
            "wrun_connector_bytes_total{job=\"test\",operator=\"in\",kind=\"source\"} 0\n"
        ),
        "{metrics}"
    );
    let d = data.to_str().unwrap();
    ok(
        dir.path(),
        &[
            "stop",
            "test",
            "--savepoint",
            "--name",
            "half",
            "--data-dir",
            d,
        ],
    );
    assert!(child.wait().unwrap().success());
    assert_eq!(stream_len(&url, "OUT"), 1500);
    let shown = ok(
        dir.path(),
        &["savepoint", "inspect", "half", "--data-dir", d],
    );
    assert!(shown.contains("stream/IN/in.a.>"), "{shown}");
    // More input while the job is down, then counter v2 at parallelism 3.
    publish(&url, rest);
    std::fs::write(
        dir.path().join("resume.toml"),
        job(&url, 3, 3, &subjects, true)
            .replace(guest("wordcount-counter"), guest("wordcount-counter-v2")),
    )
    .unwrap();
    ok(
        dir.path(),
        &[
            "run",
            "resume.toml",
            "--from-savepoint",
            "half",
            "--data-dir",
            d,
        ],
    );
    // v2's counts continue v1's: each count once.
    let (counts, continued) = v2_counts(&sorted_stream(&url, "OUT"));
    assert_eq!(counts, golden);
    assert!(continued > 0, "no v2 count continued from v1's");
}

#[test]
fn the_broker_killed_and_restarted_mid_job_loses_and_duplicates_nothing() {
    let (mut nats, url) = with_streams();
    let (msgs, golden) = input(3000, &["a"]);
    let (first, rest) = msgs.split_at(1000);
    publish(&url, first);
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        job(&url, 1, 2, &[], false).replace("attempts = 0", "attempts = 20\ndelay-ms = 100");
    std::fs::write(dir.path().join("run.toml"), manifest).unwrap();
    let data = dir.path().join("data");
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    wait_for_api(&mut child, &data);
    let wait_out = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while stream_len(&url, "OUT") < n {
            assert!(Instant::now() < deadline, "output stuck below {n}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_out(500);
    nats.kill_and_restart();
    publish(&url, rest);
    wait_out(3000);
    let d = data.to_str().unwrap();
    ok(
        dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", d],
    );
    let _ = child.wait();
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}

/// `wrun run` of `manifest` fails, within 30 s: its error output.
fn fails(dir: &Path, manifest: &str) -> String {
    run_fails(dir, manifest, Duration::from_secs(30))
}

#[test]
fn bad_connections_streams_credentials_and_windows_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens there.
    let nobody = format!("nats://127.0.0.1:{}", free_port());
    let err = fails(dir.path(), &job(&nobody, 1, 1, &[], true));
    assert!(
        err.contains(&nobody) && err.contains("cannot connect"),
        "{err}"
    );

    let nats = NatsServer::start();
    let url = nats.url();
    // No stream IN.
    let err = fails(dir.path(), &job(&url, 1, 1, &[], true));
    // (the source or the sink, whichever opens first, names its stream)
    assert!(
        (err.contains("\"IN\" does not exist") || err.contains("\"OUT\" does not exist"))
            && err.contains("create it"),
        "{err}"
    );
    // A duplicate window too short for the checkpoints.
    create_stream(&url, "IN", &["in.>"], Duration::from_secs(120));
    create_stream(&url, "OUT", &["out.>"], Duration::from_secs(1));
    let err = fails(dir.path(), &job(&url, 1, 1, &[], true));
    assert!(
        err.contains("duplicate window") && err.contains("at-least-once"),
        "{err}"
    );

    // A secret written into the manifest is refused before anything runs.
    let err = fails(
        dir.path(),
        &job(&url, 1, 1, &[], true).replace(
            "stream = \"IN\"",
            "stream = \"IN\"\nuser = \"u\"\npassword = \"hunter2\"",
        ),
    );
    assert!(err.contains("never the secret itself"), "{err}");
    assert!(!err.contains("hunter2"), "the secret was echoed: {err}");

    // Wrong credentials.
    let secured = NatsServer::start_with(&["--user", "wrun", "--pass", "right"]);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    let m = job(&secured.url(), 1, 1, &[], true).replace(
        "stream = \"IN\"",
        &format!(
            "stream = \"IN\"\nuser = \"wrun\"\npassword = {{ file = {:?} }}",
            pw.display()
        ),
    );
    let err = fails(dir.path(), &m);
    assert!(
        err.contains("uthorization") && err.contains("check the user"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the secret was echoed: {err}");
}

#[test]
fn validate_shows_secrets_only_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    let m = job("nats://127.0.0.1:4222", 1, 1, &[], true).replace(
        "stream = \"IN\"",
        "stream = \"IN\"\nuser = \"u\"\npassword = { env = \"WRUN_TEST_NATS_PASSWORD\" }",
    );
    std::fs::write(dir.path().join("job.toml"), m).unwrap();
    let out = Command::new(wrun_bin())
        .args(["validate", "job.toml"])
        .current_dir(dir.path())
        .env("WRUN_TEST_NATS_PASSWORD", "hunter2")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_parallel_sink_and_an_idle_source_subtask_give_the_exact_output() {
    let (_nats, url) = with_streams();
    let (msgs, golden) = input(5000, &["a"]);
    publish(&url, &msgs);
    let dir = tempfile::tempdir().unwrap();
    // One split, two source subtasks (one idles and ends at once), the sink
    // at parallelism 2 behind a forward edge.
    let m = job(&url, 2, 2, &[], true)
        .replace(
            "subject = \"out.{key}\"",
            "subject = \"out.{key}\"\nparallelism = 2",
        )
        .replace("partition = \"rebalance\"", "partition = \"forward\"");
    std::fs::write(dir.path().join("run.toml"), m).unwrap();
    let out = wrun_run_cmd(dir.path(), "run.toml", &[], None)
        .env("WRUN_LOG", "info,wrun=debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}

/// The same exactly-once guarantee through `wrun serve`: `kill -9` of serve
/// mid-job, a restart resumes the job from its checkpoint, more input
/// arrives, and the output stream holds each count once.
#[test]
fn kill_9_of_serve_mid_job_then_a_restart_is_exactly_once() {
    use crate::serve::{Serve, wait_job};
    let (_nats, url) = with_streams();
    let (msgs, golden) = input(3000, &["a"]);
    let (first, rest) = msgs.split_at(2000);
    publish(&url, first);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("job.toml"), job(&url, 1, 2, &[], false)).unwrap();
    let serve = Serve::start(&data, &[]);
    let d = serve.d().to_string();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", &d]);
    let c = serve.client();
    wait_job(&c, "test", "checkpointed", |s| {
        s["last-checkpoint"].as_u64().is_some()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_len(&url, "OUT") < 500 {
        assert!(Instant::now() < deadline, "no output within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    serve.kill9();
    publish(&url, rest);
    let serve = Serve::start(&data, &[]);
    let c = serve.client();
    let s = wait_job(&c, "test", "resumed", |s| {
        s["restored-from"].as_u64().is_some()
    });
    assert_eq!(s["state"], "running", "{s}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while stream_len(&url, "OUT") < golden.len() as u64 {
        assert!(Instant::now() < deadline, "the output did not complete");
        std::thread::sleep(Duration::from_millis(5));
    }
    ok(
        dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", &d],
    );
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}
