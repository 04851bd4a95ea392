//! NATS JetStream connectors against a real `nats-server -js` (Debian's
//! package, installed by `scripts/setup`), started by each test on a free
//! loopback port with its store in a temporary directory, and stopped by
//! PID: JetStream → counter → JetStream, exactly-once across SIGKILLs at
//! seeded points (inside checkpoints and inside the sink's publish), a
//! resume at another parallelism (splits re-assigned), a savepoint stop
//! and resume, a broker restart mid-job, and the errors a user meets; and
//! the options' behaviour: `start`, `key = "header:…"`, at-least-once
//! delivery, a token, a creds file (a server in JWT operator mode, its
//! keys and JWTs made with openssl) and TLS with a CA file.

use crate::common::*;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, stream};
use futures_util::StreamExt;
use serde_json::json;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A `nats-server -js` of this test's own, its store in a temporary
/// directory.
pub struct NatsServer {
    daemon: Daemon,
    host: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a server with extra arguments (`--user`, `--pass`, `--auth`,
    /// `--tls`, `-c`).
    pub fn start_with(args: &[&str]) -> NatsServer {
        NatsServer::start_on("127.0.0.1", args)
    }

    /// Starts a server listening on `host` (an address of this machine).
    pub fn start_on(host: &str, args: &[&str]) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("js");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let listen = host.to_string();
        let daemon = Daemon::start_on(
            host,
            "nats-server",
            Box::new(move |port| spawn_server(&listen, port, &store, &args)),
        );
        NatsServer {
            daemon,
            host: host.to_string(),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.daemon.port)
    }

    /// SIGKILL, then the same server again on the same port and store.
    pub fn kill_and_restart(&mut self) {
        self.daemon.kill_and_restart();
    }
}

fn spawn_server(host: &str, port: u16, store: &Path, args: &[String]) -> Child {
    Command::new("nats-server")
        .args(["-js", "-a", host, "-p", &port.to_string(), "-sd"])
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

/// How the helpers' clients authenticate and verify the server, for a
/// test whose server wants a token or a creds file, or talks TLS.
#[derive(Clone, Default)]
struct ClientAuth {
    token: Option<String>,
    creds: Option<PathBuf>,
    /// The CA file to verify the server's TLS certificate by.
    ca: Option<PathBuf>,
}

thread_local! {
    /// The helpers' [`ClientAuth`], set on the test's own thread (the
    /// helpers' runtime runs on the thread that calls them).
    static CLIENT_AUTH: RefCell<ClientAuth> = RefCell::default();
}

/// Makes the helpers connect as `auth` says, on this test's thread.
fn client_auth(auth: ClientAuth) {
    CLIENT_AUTH.with(|a| *a.borrow_mut() = auth);
}

/// A client of the test's server, as [`CLIENT_AUTH`] says.
async fn client(url: &str) -> async_nats::Client {
    let auth = CLIENT_AUTH.with(|a| a.borrow().clone());
    let mut opts = match &auth.creds {
        Some(c) => async_nats::ConnectOptions::with_credentials_file(c)
            .await
            .unwrap(),
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(t) = auth.token {
        opts = opts.token(t);
    }
    if let Some(ca) = auth.ca {
        opts = opts.add_root_certificates(ca).require_tls(true);
    }
    opts.connect(url).await.unwrap()
}

/// Creates a stream.
pub fn create_stream(url: &str, name: &str, subjects: &[&str], dupe_window: Duration) {
    rt().block_on(async {
        let js = jetstream::new(client(url).await);
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
    publish_with(url, messages, None);
}

/// Like [`publish`]; with `header` = `(name, values)`, message `i` has
/// the header `name: values[i]`.
fn publish_with(url: &str, messages: &[(String, String)], header: Option<(&str, &[String])>) {
    rt().block_on(async {
        let js = jetstream::new(client(url).await);
        let mut acks = Vec::new();
        for (i, (s, p)) in messages.iter().enumerate() {
            let payload = bytes::Bytes::from(p.clone());
            let ack = match header {
                Some((name, values)) => {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert(name, values[i].as_str());
                    js.publish_with_headers(s.clone(), h, payload).await
                }
                None => js.publish(s.clone(), payload).await,
            };
            acks.push(ack.unwrap());
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
        let js = jetstream::new(client(url).await);
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

pub(crate) fn stream_len(url: &str, name: &str) -> u64 {
    rt().block_on(async {
        let js = jetstream::new(client(url).await);
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
pub(crate) fn with_streams() -> (NatsServer, String) {
    with_streams_on(NatsServer::start())
}

/// `nats` with the streams of [`with_streams`], and its URL.
pub(crate) fn with_streams_on(nats: NatsServer) -> (NatsServer, String) {
    let url = nats.url();
    create_stream(&url, "IN", &["in.>"], Duration::from_secs(120));
    create_stream(&url, "OUT", &["out.>"], Duration::from_secs(120));
    (nats, url)
}

/// Seeded words on `in.<group>.<word>`, and the golden output: each key's
/// running counts 1..n, once each, on `out.<key>`.
/// `(subject, payload)` messages.
type Messages = Vec<(String, String)>;

pub(crate) fn input(n: usize, groups: &[&str]) -> (Messages, Messages) {
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

pub(crate) fn job(
    url: &str,
    source_par: u32,
    op_par: u32,
    subjects: &[&str],
    bounded: bool,
) -> String {
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

pub(crate) fn sorted_stream(url: &str, name: &str) -> Vec<(String, String)> {
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
    // The crashing runs launch the crash-point build, checked to have them.
    crash_bin();
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
    let (code, _, log) = output_within(
        &mut wrun_run_cmd(dir.path(), "resume.toml", &["--resume"], None),
        COMMAND_DEADLINE,
    );
    assert!(
        code == 0,
        "seed {seed} ({at}): the resumed run failed (exit {code}): {log}"
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
    let mut child = wrun_run_cmd(dir.path(), "run.toml", &[], Some("checkpoint-committed:2"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_within(&mut child, COMMAND_DEADLINE);
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
    let status = wait_within(&mut child, COMMAND_DEADLINE);
    assert!(
        status.success(),
        "wrun run after stop --savepoint must exit 0: {status}"
    );
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
    let log = drain_stderr(&mut child);
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
    stop_with_savepoint(dir.path(), &data, &mut child);
    // The kill was seen and lived through: the client lost its connection
    // (and reconnected, or the job restarted), not a run that never noticed.
    let log = log.join().unwrap();
    assert!(
        log.contains("connection lost"),
        "no lost connection in the log: {log}"
    );
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}

/// `wrun run` of `manifest` fails, within 10 s: its error output.
fn fails(dir: &Path, manifest: &str) -> String {
    run_fails(dir, manifest, Duration::from_secs(10))
}

#[test]
fn bad_connections_streams_credentials_and_windows_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Each row of docs/connectors.md's NATS failure table: the message,
    // the exit code, whether it was retried, and the row's time bound.
    // Nobody listens there: a restart can help (the server may come up):
    // two attempts of at most ~5 s each.
    let nobody = format!("nats://127.0.0.1:{}", free_port());
    fails_as_documented(
        dir.path(),
        &job(&nobody, 1, 1, &[], true),
        &[&nobody, "cannot connect", "is the server running"],
        true,
        Duration::from_secs(15),
    );

    let nats = NatsServer::start();
    let url = nats.url();
    // No stream IN: not retried, at once.
    // (the source or the sink, whichever opens first, names its stream)
    let err = fails_as_documented(
        dir.path(),
        &job(&url, 1, 1, &[], true),
        &["does not exist", "create it"],
        false,
        Duration::from_secs(10),
    );
    assert!(
        err.contains("\"IN\" does not exist") || err.contains("\"OUT\" does not exist"),
        "{err}"
    );
    // A duplicate window too short for the checkpoints: not retried.
    create_stream(&url, "IN", &["in.>"], Duration::from_secs(120));
    create_stream(&url, "OUT", &["out.>"], Duration::from_secs(1));
    fails_as_documented(
        dir.path(),
        &job(&url, 1, 1, &[], true),
        &["duplicate window", "at-least-once"],
        false,
        Duration::from_secs(10),
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
    // Wrong credentials: not retried, at once, the cause said once.
    let err = fails_as_documented(
        dir.path(),
        &m,
        &["uthorization", "check the user"],
        false,
        Duration::from_secs(10),
    );
    assert!(!err.contains("wrong"), "the secret was echoed: {err}");
    // (The client library logs the refusal itself; what wrun says is the
    // error it prints last.)
    let said: Vec<&str> = err.lines().filter(|l| l.contains("caused by:")).collect();
    assert_eq!(
        said.join("\n").matches("uthorization violation").count(),
        1,
        "the cause is repeated: {err}"
    );
}

#[test]
fn validate_shows_secrets_only_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    let m = job("nats://127.0.0.1:4222", 1, 1, &[], true).replace(
        "stream = \"IN\"",
        "stream = \"IN\"\nuser = \"u\"\npassword = { env = \"WRUN_TEST_NATS_PASSWORD\" }",
    );
    std::fs::write(dir.path().join("job.toml"), m).unwrap();
    let (code, out, err) = output_within(
        Command::new(wrun_bin())
            .args(["validate", "job.toml"])
            .current_dir(dir.path())
            .env("WRUN_TEST_NATS_PASSWORD", "hunter2"),
        COMMAND_DEADLINE,
    );
    let text = format!("{out}{err}");
    assert_eq!(code, 0, "{text}");
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
    let (code, _, err) = output_within(
        wrun_run_cmd(dir.path(), "run.toml", &[], None).env("WRUN_LOG", "info,wrun=debug"),
        COMMAND_DEADLINE,
    );
    assert_eq!(code, 0, "{err}");
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

/// The end of a bounded input: the crash-point build is killed at each
/// step of the final checkpoint (the tail staged, the final manifest
/// committed, before and after the tail's publish); `--resume` then leaves
/// the output stream exactly the golden one (the tail republished with the
/// same message IDs, the repeats dropped), and a second `--resume` of the
/// finished job publishes nothing.
#[test]
fn a_bounded_job_killed_at_each_step_of_its_end_is_exactly_once() {
    for point in END_POINTS {
        let (_nats, url) = with_streams();
        let (msgs, golden) = input(3000, &["a"]);
        publish(&url, &msgs);
        let dir = tempfile::tempdir().unwrap();
        // The checkpoint interval is longer than the job: the final
        // checkpoint is its first, so the whole output is the tail.
        let m = job(&url, 1, 2, &[], true).replace("interval-ms = 25", "interval-ms = 60000");
        std::fs::write(dir.path().join("run.toml"), &m).unwrap();
        kill_at_end_then_resume_twice(dir.path(), point, |round| {
            let got = sorted_stream(&url, "OUT");
            assert!(
                got == golden,
                "{point}, {round} resume: the output stream holds {} messages, the golden output {}",
                got.len(),
                golden.len()
            );
        });
    }
}

/// `manifest` (a [`job`]) with `lines` added to the connection whose
/// stream is `stream`: `IN`, the source's, or `OUT`, the sink's.
fn connection_with(manifest: &str, stream: &str, lines: &str) -> String {
    let at = format!("stream = \"{stream}\"");
    manifest.replace(&at, &format!("{at}\n{lines}"))
}

/// `manifest` with `lines` added to both connections, the source's and
/// the sink's.
fn connections_with(manifest: &str, lines: &str) -> String {
    connection_with(&connection_with(manifest, "IN", lines), "OUT", lines)
}

/// A [`job`] at parallelism 1 whose source starts at `start`.
fn starting_at(url: &str, start: &str, bounded: bool) -> String {
    job(url, 1, 1, &[], bounded).replace("bounded = ", &format!("start = {start:?}\nbounded = "))
}

/// Messages in each batch of [`two_batches`].
const BATCH: usize = 300;

/// A server with the streams IN and OUT, and two batches published to IN
/// (on `in.a.…`, then on `in.b.…`), with a wall-clock time between them:
/// (server, URL, that time, the golden output of both batches, of the
/// second alone).
fn two_batches() -> (NatsServer, String, SystemTime, Messages, Messages) {
    let (nats, url) = with_streams();
    let (first, mut both) = input(BATCH, &["a"]);
    let (second, golden) = input(BATCH, &["b"]);
    publish(&url, &first);
    // The server stored every message of the first batch before it
    // acknowledged it, so before this time; the second is published after.
    let between = SystemTime::now();
    publish(&url, &second);
    both.extend(golden.iter().cloned());
    both.sort();
    (nats, url, between, both, golden)
}

/// `start` of a job that is not restored: `first` reads the whole stream,
/// `sequence:N` from stream sequence N (the second batch's first), and
/// `time:<RFC 3339>` from the first message stored at or after the time
/// (a time between the batches): the counts in the output stream are
/// exactly those of the messages each start covers.
#[test]
fn start_first_sequence_and_time_choose_where_a_fresh_job_reads() {
    for start in ["first", "sequence", "time"] {
        let (_nats, url, between, both, second) = two_batches();
        let (start, want) = match start {
            "first" => ("first".to_string(), both),
            "sequence" => (format!("sequence:{}", BATCH + 1), second),
            _ => (
                format!("time:{}", humantime::format_rfc3339_nanos(between)),
                second,
            ),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run.toml"), starting_at(&url, &start, true)).unwrap();
        wrun_run_ok(dir.path(), "run.toml", &[]);
        let got = sorted_stream(&url, "OUT");
        assert!(
            got == want,
            "start = {start:?}: the output stream holds {} counts, the golden output {}",
            got.len(),
            want.len()
        );
    }
}

/// Waits until the running job's `/metrics` (its API at `api`, its data
/// directory `data`) holds `want`.
fn wait_for_metric(api: &str, data: &Path, want: &str) {
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let c = wrun::api::Client::new(api, token.trim());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = c.get_text("/metrics").unwrap();
        if metrics.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {want} within 60 s:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `start = "new"`: a job started after the first batch reads only the
/// second, published once its source is open (it reports its
/// connection); the output stream holds the second batch's counts alone.
#[test]
fn start_new_reads_only_what_is_published_after_the_job_starts() {
    let (_nats, url) = with_streams();
    let (first, _) = input(BATCH, &["a"]);
    let (second, golden) = input(BATCH, &["b"]);
    publish(&url, &first);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("run.toml"), starting_at(&url, "new", false)).unwrap();
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    let api = wait_for_api(&mut child, &data);
    wait_for_metric(
        &api,
        &data,
        "wrun_connector_connected{job=\"test\",operator=\"in\",subtask=\"0\"} 1",
    );
    publish(&url, &second);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_len(&url, "OUT") < golden.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the second batch did not come out"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop_with_savepoint(dir.path(), &data, &mut child);
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}

/// `key = "header:Customer-Id"`: each event's key is that header's value,
/// not the subject, so the counter counts per customer: the output stream
/// holds `out.c<j>` with each customer's counts 1..100.
#[test]
fn a_header_key_counts_per_header_value() {
    let (_nats, url) = with_streams();
    let n = 300;
    let msgs: Messages = (0..n)
        .map(|i| (format!("in.a.w{}", i % 7), format!("m{i}")))
        .collect();
    let customers: Vec<String> = (0..n).map(|i| format!("c{}", i % 3)).collect();
    publish_with(&url, &msgs, Some(("Customer-Id", customers.as_slice())));
    let mut golden: Messages = (0..3)
        .flat_map(|c| (1..=n / 3).map(move |k| (format!("out.c{c}"), k.to_string())))
        .collect();
    golden.sort();
    let dir = tempfile::tempdir().unwrap();
    let m = connection_with(
        &job(&url, 1, 2, &[], true),
        "IN",
        "key = \"header:Customer-Id\"",
    );
    std::fs::write(dir.path().join("run.toml"), m).unwrap();
    wrun_run_ok(dir.path(), "run.toml", &[]);
    assert_eq!(sorted_stream(&url, "OUT"), golden);
}

/// `delivery = "at-least-once"` publishes as events arrive, without
/// message IDs, so the output stream's duplicate window does not matter
/// (1 s, which exactly-once refuses, is fine); killed mid-job and
/// resumed, every golden count is in the output stream (some twice) and
/// nothing else is.
#[test]
fn at_least_once_delivers_everything_across_a_sigkill() {
    let nats = NatsServer::start();
    let url = nats.url();
    create_stream(&url, "IN", &["in.>"], Duration::from_secs(120));
    create_stream(&url, "OUT", &["out.>"], Duration::from_secs(1));
    let (msgs, golden) = input(3000, &["a"]);
    publish(&url, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let m = |bounded| {
        job(&url, 1, 2, &[], bounded).replace(
            "subject = \"out.{key}\"",
            "subject = \"out.{key}\"\ndelivery = \"at-least-once\"",
        )
    };
    std::fs::write(dir.path().join("run.toml"), m(false)).unwrap();
    std::fs::write(dir.path().join("resume.toml"), m(true)).unwrap();
    run_until_killed(dir.path(), "processing", "processing:0", || {
        stream_len(&url, "OUT") >= 300
    });
    wrun_run_ok(dir.path(), "resume.toml", &["--resume"]);
    let got: BTreeSet<_> = read_stream(&url, "OUT").into_iter().collect();
    let want: BTreeSet<_> = golden.into_iter().collect();
    assert!(
        got == want,
        "{} golden counts are missing, {} counts are not golden",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
}

/// Publishes input to IN, runs `manifest` (a bounded [`job`] on `url`) in
/// `dir` with the environment variables `env`, and checks that it ends
/// well with the golden output in OUT.
fn runs_end_to_end(dir: &Path, url: &str, manifest: &str, env: &[(&str, &str)]) {
    let (msgs, golden) = input(500, &["a"]);
    publish(url, &msgs);
    std::fs::write(dir.join("run.toml"), manifest).unwrap();
    let mut run = wrun_run_cmd(dir, "run.toml", &[], None);
    run.envs(env.iter().copied());
    let (code, _, log) = output_within(&mut run, COMMAND_DEADLINE);
    assert_eq!(code, 0, "{log}");
    assert_eq!(sorted_stream(url, "OUT"), golden);
}

/// `token`, by reference: against a server started with `--auth`, a job
/// whose source reads the token from an environment variable and whose
/// sink reads it from a file runs end to end; a wrong token fails the job
/// at once as an authorization error, not retried, the token never shown.
#[test]
fn a_token_by_reference_is_accepted_and_a_wrong_one_is_refused() {
    const TOKEN: &str = "the-right-token";
    client_auth(ClientAuth {
        token: Some(TOKEN.into()),
        ..ClientAuth::default()
    });
    let (_nats, url) = with_streams_on(NatsServer::start_with(&["--auth", TOKEN]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let by_file = format!("token = {{ file = {:?} }}", file.display());
    let m = connection_with(
        &connection_with(
            &job(&url, 1, 1, &[], true),
            "IN",
            "token = { env = \"WRUN_TEST_NATS_TOKEN\" }",
        ),
        "OUT",
        &by_file,
    );
    runs_end_to_end(dir.path(), &url, &m, &[("WRUN_TEST_NATS_TOKEN", TOKEN)]);

    std::fs::write(&file, "a-wrong-token\n").unwrap();
    let bad = tempfile::tempdir().unwrap();
    let err = fails_as_documented(
        bad.path(),
        &connections_with(&job(&url, 1, 1, &[], true), &by_file),
        &["uthorization", "check the user"],
        false,
        Duration::from_secs(10),
    );
    assert!(
        !err.contains("a-wrong-token"),
        "the token was echoed: {err}"
    );
}

/// Runs `openssl` with the words of `args`, then each `(flag, file)`
/// (scripts/setup installs it).
fn openssl(args: &str, files: &[(&str, &Path)]) {
    let mut c = Command::new("openssl");
    c.args(args.split_whitespace());
    for (flag, file) in files {
        c.arg(flag).arg(file);
    }
    let (code, _, err) = output_within(&mut c, COMMAND_DEADLINE);
    assert_eq!(code, 0, "openssl {args} {files:?}: {err}");
}

/// `p` as an argument.
fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The NKey prefix byte of an operator (its public key starts with `O`).
const OPERATOR: u8 = 14 << 3;
/// The NKey prefix byte of an account (`A…`).
const ACCOUNT: u8 = 0;
/// The NKey prefix byte of a user (`U…`).
const USER: u8 = 20 << 3;

/// An Ed25519 key made by openssl (in place of `nsc`): its PKCS#8 file,
/// which openssl signs with, and its raw seed and public key.
struct NKey {
    der: PathBuf,
    seed: Vec<u8>,
    public: Vec<u8>,
    /// [`OPERATOR`], [`ACCOUNT`] or [`USER`].
    kind: u8,
}

impl NKey {
    fn new(dir: &Path, name: &str, kind: u8) -> NKey {
        let der = dir.join(format!("{name}.der"));
        let public = dir.join(format!("{name}.pub.der"));
        openssl(
            "genpkey -algorithm ed25519 -outform DER",
            &[("-out", der.as_path())],
        );
        let files = [("-in", der.as_path()), ("-out", public.as_path())];
        openssl("pkey -inform DER -pubout -outform DER", &files);
        // Ed25519's PKCS#8 and SubjectPublicKeyInfo end with the 32 bytes.
        let last32 = |p: &Path| {
            let b = std::fs::read(p).unwrap();
            b[b.len() - 32..].to_vec()
        };
        NKey {
            seed: last32(&der),
            public: last32(&public),
            der,
            kind,
        }
    }

    /// The public key as NATS writes it (`O…`, `A…`, `U…`).
    fn public(&self) -> String {
        nkey_text(&[self.kind], &self.public)
    }

    /// The seed as NATS writes it (`SU…` for a user).
    fn seed(&self) -> String {
        let k = self.kind;
        nkey_text(&[(18 << 3) | (k >> 5), (k & 31) << 3], &self.seed)
    }

    /// An Ed25519 signature of `data` by this key.
    fn sign(&self, data: &str) -> Vec<u8> {
        let (msg, sig) = (
            self.der.with_extension("msg"),
            self.der.with_extension("sig"),
        );
        std::fs::write(&msg, data).unwrap();
        let files = [
            ("-inkey", self.der.as_path()),
            ("-in", msg.as_path()),
            ("-out", sig.as_path()),
        ];
        openssl("pkeyutl -sign -rawin -keyform DER", &files);
        std::fs::read(&sig).unwrap()
    }

    /// A NATS JWT (v2) of `nats` claims about `subject`, signed by this key.
    fn jwt(&self, subject: &NKey, nats: serde_json::Value) -> String {
        let b64 = |b: &[u8]| encode_bits(b, 6, BASE64URL);
        let iat = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "jti": subject.public(), "iat": iat, "iss": self.public(),
            "name": "wrun-test", "sub": subject.public(), "nats": nats,
        });
        let header: &[u8] = br#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
        let signed = format!("{}.{}", b64(header), b64(claims.to_string().as_bytes()));
        format!("{signed}.{}", b64(&self.sign(&signed)))
    }
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `bytes` in groups of `bits` bits (the last padded with zeros), each a
/// letter of `alphabet`: base32 (5) or base64url (6), without padding.
fn encode_bits(bytes: &[u8], bits: u32, alphabet: &[u8]) -> String {
    let mask = (1u32 << bits) - 1;
    let (mut acc, mut held, mut out) = (0u32, 0u32, String::new());
    for b in bytes {
        acc = ((acc << 8) | u32::from(*b)) & 0xffff;
        held += 8;
        while held >= bits {
            held -= bits;
            out.push(char::from(alphabet[((acc >> held) & mask) as usize]));
        }
    }
    if held > 0 {
        out.push(char::from(
            alphabet[((acc << (bits - held)) & mask) as usize],
        ));
    }
    out
}

/// An NKey as NATS writes it: base32 of `prefix`, `key`, and the CRC-16
/// (XMODEM, little-endian) of both.
fn nkey_text(prefix: &[u8], key: &[u8]) -> String {
    let mut raw = [prefix, key].concat();
    let mut crc = 0u16;
    for b in &raw {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    raw.extend(crc.to_le_bytes());
    encode_bits(&raw, 5, BASE32)
}

/// What `nsc` would set up, made with openssl: a server in JWT operator
/// mode (an operator, its system account and an account with JetStream,
/// in a memory resolver) and the creds file of a user of that account;
/// also the creds file of a user of an account the server does not know.
fn operator_mode(dir: &Path) -> (NatsServer, PathBuf, PathBuf) {
    let key = |name, kind| NKey::new(dir, name, kind);
    let (op, sys, acc) = (
        key("op", OPERATOR),
        key("sys", ACCOUNT),
        key("acc", ACCOUNT),
    );
    let (rogue, user) = (key("rogue", ACCOUNT), key("user", USER));
    // Unlimited (-1); JetStream is on for an account with storage limits.
    let limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    let mut js = limits.clone();
    for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
        js[k] = json!(-1);
    }
    let account =
        |limits: serde_json::Value| json!({"limits": limits, "type": "account", "version": 2});
    let op_jwt = dir.join("op.jwt");
    let claims = json!({"system_account": sys.public(), "type": "operator", "version": 2});
    std::fs::write(&op_jwt, op.jwt(&op, claims)).unwrap();
    let conf = dir.join("server.conf");
    let text = format!(
        "operator: {:?}\nsystem_account: {}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {}: {:?}\n  {}: {:?}\n}}\n",
        op_jwt.display(),
        sys.public(),
        sys.public(),
        op.jwt(&sys, account(limits)),
        acc.public(),
        op.jwt(&acc, account(js)),
    );
    std::fs::write(&conf, text).unwrap();
    let creds = |issuer: &NKey, name: &str| {
        let claims = json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        let path = dir.join(name);
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            issuer.jwt(&user, claims),
            user.seed()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let nats = NatsServer::start_with(&["-c", arg(&conf)]);
    (
        nats,
        creds(&acc, "user.creds"),
        creds(&rogue, "rogue.creds"),
    )
}

/// `creds-file`: against a server in JWT operator mode, a job whose source
/// and sink authenticate by the creds file of a user of a JetStream
/// account runs end to end; the creds file of a user of an account the
/// server does not know is an authorization error, not retried; a missing
/// or malformed creds file is an error naming the file, not retried.
#[test]
fn a_creds_file_authenticates_against_an_operator_mode_server() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, creds, rogue) = operator_mode(dir.path());
    client_auth(ClientAuth {
        creds: Some(creds.clone()),
        ..ClientAuth::default()
    });
    let (_nats, url) = with_streams_on(nats);
    let with = |c: &Path| {
        connections_with(
            &job(&url, 1, 1, &[], true),
            &format!("creds-file = {:?}", c.display()),
        )
    };
    runs_end_to_end(dir.path(), &url, &with(creds.as_path()), &[]);

    let bad = tempfile::tempdir().unwrap();
    fails_as_documented(
        bad.path(),
        &with(rogue.as_path()),
        &["uthorization", "check the user"],
        false,
        Duration::from_secs(10),
    );
    let missing = bad.path().join("missing.creds");
    let garbled = bad.path().join("garbled.creds");
    std::fs::write(&garbled, "not a creds file\n").unwrap();
    for (c, says) in [
        (&missing, "No such file"),
        (&garbled, "cannot parse user JWT"),
    ] {
        let shown = c.display().to_string();
        fails_as_documented(
            bad.path(),
            &with(c.as_path()),
            &["cannot read the NATS credentials file", &shown, says],
            false,
            Duration::from_secs(10),
        );
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, made as kafka.rs's
/// `tls_with_a_ca_file` makes its own but marked as no CA: rustls (the
/// NATS client's TLS) refuses a CA certificate as a server's own
/// (`CaUsedAsEndEntity`), and `openssl req -x509` makes a CA one unless
/// told otherwise.
fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
         -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE",
        &[("-keyout", key.as_path()), ("-out", cert.as_path())],
    );
    (cert, key)
}

/// TLS: a server with a self-signed certificate (`--tls`); a job whose
/// source and sink verify it by `tls-ca-file` runs end to end; without
/// the CA file (the system's CAs) the handshake fails, naming the server
/// and the certificate.
#[test]
fn tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    client_auth(ClientAuth {
        ca: Some(cert.clone()),
        ..ClientAuth::default()
    });
    let (_nats, url) = with_streams_on(NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        arg(&cert),
        "--tlskey",
        arg(&key),
    ]));
    let m = connections_with(
        &job(&url, 1, 1, &[], true),
        &format!("tls-ca-file = {:?}", cert.display()),
    );
    runs_end_to_end(dir.path(), &url, &m, &[]);

    let bad = tempfile::tempdir().unwrap();
    // Without the CA: the job's to fix, so not retried, and at once.
    fails_as_documented(
        bad.path(),
        &job(&url, 1, 1, &[], true),
        &[
            &url,
            "invalid peer certificate",
            "check the server's TLS certificate",
        ],
        false,
        Duration::from_secs(10),
    );
}
