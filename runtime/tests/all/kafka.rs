//! Kafka connectors against a real Kafka-API broker: nisshi 0.7.0 (the
//! Rust broker once called tansu, installed by `scripts/setup` with `cargo
//! install` into `target/toolchains/nisshi`), started by each test on a
//! free loopback port with its SQLite store in a temporary directory, and
//! stopped by PID. Kafka → counter → Kafka with the transactional sink
//! across SIGKILLs at seeded points (inside checkpoints and inside the
//! sink's transactions); a savepoint stop, a module swap and a resume at
//! other parallelisms; new partitions; a broker restart mid-job; `kill -9`
//! of `wrun serve`; the errors a user meets.
//!
//! nisshi accepts transactions but does not isolate them: a
//! `read_committed` reader also sees the records of aborted transactions
//! (Kafka hides them). So where a crash leaves a transaction to abort,
//! the tests assert what holds on this broker — every expected record is
//! there and nothing else (no loss, no foreign record), and the recovery
//! both rewrote uncommitted groups and recognised committed ones by their
//! markers — and where nothing aborts (clean runs, stop with a savepoint
//! and resume), the exact output.

use crate::common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker binary `scripts/setup` installs.
fn nisshi() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/toolchains/nisshi/bin/nisshi");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup, which installs the Kafka-API broker the tests start",
        p.display()
    );
    p
}

/// A broker of this test's own, its SQLite store in a temporary directory.
pub struct Broker {
    daemon: Daemon,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(Vec::new())
    }

    /// Starts a broker with extra arguments (`--cert`, `--key`).
    pub fn start_with(args: Vec<String>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nisshi.db");
        let d = db.clone();
        let daemon = Daemon::start(
            "the Kafka broker",
            Box::new(move |port| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                spawn_broker(port, &d, &args)
            }),
        );
        Broker {
            daemon,
            db,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.daemon.port)
    }

    /// SIGKILL, then the same broker again on the same port and store.
    pub fn kill_and_restart(&mut self) {
        self.daemon.kill_and_restart();
    }

    /// Stops the broker and starts it again with `args`.
    pub fn restart_with(&mut self, args: &'static [&'static str]) {
        let d = self.db.clone();
        self.daemon
            .restart_as(Box::new(move |port| spawn_broker(port, &d, args)));
    }
}

fn spawn_broker(port: u16, db: &Path, args: &[&str]) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    Command::new(nisshi())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .arg("--storage-engine")
        .arg(format!("sqlite:///{}", db.display()))
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start nisshi ({e}): run scripts/setup, which installs it")
        })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

thread_local! {
    /// The CA file the helpers' clients trust, for a test whose broker
    /// talks TLS (set on the test's own thread).
    static TLS_CA: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

fn config(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr);
    TLS_CA.with(|t| {
        if let Some(ca) = &*t.borrow() {
            c.set("security.protocol", "ssl")
                .set("ssl.ca.location", ca.display().to_string());
        }
    });
    c
}

pub fn create_topic(addr: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(addr).create().unwrap();
    let r = rt().block_on(admin.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
    for t in r.unwrap() {
        t.unwrap();
    }
}

/// Produces `(key, value)` records (partitioned by key), all acknowledged.
pub fn produce(addr: &str, topic: &str, records: &[(String, String)]) {
    let p: ThreadedProducer<DefaultProducerContext> =
        config(addr).set("linger.ms", "5").create().unwrap();
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_bytes());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Every committed record of a topic (`read_committed`), as (key, value).
pub fn read_topic(addr: &str, topic: &str) -> Vec<(String, String)> {
    let c: BaseConsumer = config(addr)
        .set("group.id", "wrun-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut eof = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < parts.len() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

fn sorted_topic(addr: &str, topic: &str) -> Vec<(String, String)> {
    let mut v = read_topic(addr, topic);
    v.sort();
    v
}

/// Every golden record is in `got`, and nothing else is (duplicates may
/// be: the records of transactions the broker aborted, which nisshi does
/// not hide from `read_committed` readers).
fn assert_nothing_lost(got: &[(String, String)], golden: &[(String, String)], what: &str) {
    let got: std::collections::BTreeSet<_> = got.iter().collect();
    let want: std::collections::BTreeSet<_> = golden.iter().collect();
    let missing = want.difference(&got).count();
    let foreign = got.difference(&want).count();
    assert!(
        missing == 0 && foreign == 0,
        "{what}: {missing} expected records are missing, {foreign} records are not expected"
    );
}

fn distinct_len(addr: &str, topic: &str) -> usize {
    let v: std::collections::BTreeSet<_> = read_topic(addr, topic).into_iter().collect();
    v.len()
}

fn committed_len(addr: &str, topic: &str) -> usize {
    read_topic(addr, topic).len()
}

/// A broker of the test's own with topics `in` (`partitions`) and `out` (2).
fn with_topics(partitions: i32) -> (Broker, String) {
    let b = Broker::start();
    let addr = b.addr();
    create_topic(&addr, "in", partitions);
    create_topic(&addr, "out", 2);
    (b, addr)
}

type Records = Vec<(String, String)>;

/// Seeded words as keys, and the golden output: each word's running
/// counts 1..n, once each.
fn input(n: usize, words: u64) -> (Records, Records) {
    let mut x = 11u64;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut recs = Vec::new();
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = format!("w{}", (x >> 33) % words);
        *counts.entry(w.clone()).or_default() += 1;
        recs.push((w, format!("m{i}")));
    }
    let mut golden = Vec::new();
    for (k, n) in counts {
        for c in 1..=n {
            golden.push((k.clone(), c.to_string()));
        }
    }
    golden.sort();
    (recs, golden)
}

fn job(addr: &str, source_par: u32, op_par: u32, bounded: bool, component: &str) -> String {
    format!(
        r#"version = 1
name = "test"
[checkpoint]
interval-ms = 50
[restart]
attempts = 0

[[source]]
name = "in"
kind = "kafka"
bootstrap-servers = ["{addr}"]
topics = ["in"]
group-id = "wrun-test"
parallelism = {source_par}
bounded = {bounded}

[[operator]]
name = "count"
uid = "counter"
component = "{component}"
parallelism = {op_par}

[[sink]]
name = "out"
kind = "kafka"
bootstrap-servers = ["{addr}"]
topic = "out"

[[edge]]
from = "in"
to = "count"
partition = "hash"

[[edge]]
from = "count"
to = "out"
partition = "rebalance"
"#
    )
}

fn counter() -> &'static str {
    guest("wordcount-counter")
}

/// How many records the sink's log says it wrote again after a crash.
fn rewritten_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" were committed before the crash; ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// How many staged records the log says had been committed before the
/// crash (found by the marker, not written again).
fn kept_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" were committed before the crash")?;
            before.rsplit_once("staged, ")?.1.trim().parse::<u64>().ok()
        })
        .sum()
}

/// Seed `s` kills at point `s % POINTS.len()`.
const POINTS: &[&str] = &[
    "processing",
    "checkpoint-chunks",
    "checkpoint-sink-staged",
    "checkpoint-manifest",
    "checkpoint-committed",
    "kafka-sink-produce",
    "kafka-sink-commit",
    "kafka-sink-committed",
];

#[test]
fn kafka_to_kafka_loses_nothing_across_sigkill_at_seeded_points_and_recovers_each_transaction() {
    #[cfg(not(feature = "fault-injection"))]
    panic!("the crash test needs the fault-injection feature");
    let seeds: Vec<u64> = match std::env::var("WRUN_CRASH_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..POINTS.len() as u64).collect(),
    };
    let (mut rewritten, mut kept) = (0, 0);
    for seed in seeds {
        let (r, k) = crash_once(seed);
        rewritten += r;
        kept += k;
    }
    // Both recovery paths ran: a transaction the crash left uncommitted
    // was written again, and one that had committed was recognised.
    assert!(rewritten > 0, "no recovery wrote a staged group again");
    assert!(kept > 0, "no recovery found a committed group's marker");
}

/// One seed: (records written again, records found committed) on resume.
fn crash_once(seed: u64) -> (u64, u64) {
    let point = POINTS[(seed % POINTS.len() as u64) as usize];
    let (_broker, addr) = with_topics(3);
    let (recs, golden) = input(3000, 37);
    produce(&addr, "in", &recs);
    let dir = tempfile::tempdir().unwrap();
    // The first run is unbounded: it never ends by itself, so it is sure
    // to reach the crash point.
    std::fs::write(
        dir.path().join("run.toml"),
        job(&addr, 2, 2, false, counter()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("resume.toml"),
        job(&addr, 2, 2, true, counter()),
    )
    .unwrap();
    let nth = match point {
        "kafka-sink-produce" => 2 + seed % 50,
        "processing" => 0,
        "kafka-sink-commit" | "kafka-sink-committed" | "checkpoint-sink-staged" => 1,
        _ => 1 + seed % 3,
    };
    let at = format!("{point}:{nth}");
    run_until_killed(dir.path(), point, &at, || {
        committed_len(&addr, "out") >= 100
    });
    let out = wrun_run_cmd(dir.path(), "resume.toml", &["--resume"], None)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "seed {seed} ({at}): the resumed run failed: {log}"
    );
    let got = sorted_topic(&addr, "out");
    assert_nothing_lost(
        &got,
        &golden,
        &format!("seed {seed} ({at}), rerun: WRUN_CRASH_SEED={seed}"),
    );
    (rewritten_in(&log), kept_in(&log))
}

/// The at-least-once sink (an idempotent producer, flushed at barriers):
/// killed mid-job and resumed, every record is there (some twice).
#[test]
fn at_least_once_loses_nothing_across_a_sigkill() {
    let (_broker, addr) = with_topics(2);
    let (recs, golden) = input(3000, 19);
    produce(&addr, "in", &recs);
    let dir = tempfile::tempdir().unwrap();
    let m = |bounded| {
        job(&addr, 1, 2, bounded, counter()).replace(
            "topic = \"out\"",
            "topic = \"out\"\ndelivery = \"at-least-once\"",
        )
    };
    std::fs::write(dir.path().join("run.toml"), m(false)).unwrap();
    std::fs::write(dir.path().join("resume.toml"), m(true)).unwrap();
    run_until_killed(dir.path(), "processing", "processing:0", || {
        committed_len(&addr, "out") >= 300
    });
    wrun_run_ok(dir.path(), "resume.toml", &["--resume"]);
    assert_nothing_lost(&sorted_topic(&addr, "out"), &golden, "at-least-once");
}

#[test]
fn stop_with_a_savepoint_swap_the_module_and_resume_at_other_parallelisms() {
    // Four partitions: two source subtasks (more partitions than
    // subtasks), then six (fewer: two idle).
    let (_broker, addr) = with_topics(4);
    let (recs, golden) = input(3000, 29);
    let (first, rest) = recs.split_at(1500);
    produce(&addr, "in", first);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("run.toml"),
        job(&addr, 2, 2, false, counter()),
    )
    .unwrap();
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    let api = wait_for_api(&mut child, &data);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_len(&addr, "out") < 1500 {
        assert!(Instant::now() < deadline, "the first half did not come out");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let metrics = wrun::api::Client::new(&api, token.trim())
        .get_text("/metrics")
        .unwrap();
    for want in [
        "wrun_connector_bytes_total{job=\"test\",operator=\"in\",kind=\"source\"}",
        "wrun_connector_connected{job=\"test\",operator=\"in\",subtask=\"0\"} 1",
        "wrun_connector_connected{job=\"test\",operator=\"out\",subtask=\"0\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
    let d = data.to_str().unwrap();
    let status = ok(dir.path(), &["job", "status", "test", "--data-dir", d]);
    assert!(
        status.contains("connector   in[0] connected")
            && status.contains("connector   out[0] connected"),
        "{status}"
    );
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
    let v1_out = sorted_topic(&addr, "out");
    assert_eq!(v1_out.len(), 1500);
    let shown = ok(
        dir.path(),
        &["savepoint", "inspect", "half", "--data-dir", d],
    );
    assert!(
        shown.contains("topic/in/0") && shown.contains("topic/in/3"),
        "{shown}"
    );
    // More input while the job is down, then counter v2 at parallelism 3,
    // the source at 6.
    produce(&addr, "in", rest);
    std::fs::write(
        dir.path().join("resume.toml"),
        job(&addr, 6, 3, true, guest("wordcount-counter-v2")),
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
    let all = sorted_topic(&addr, "out");
    let (counts, continued) = v2_counts(&all);
    assert_eq!(counts, golden, "each count once, v1's then v2's");
    assert_eq!(all.len() - v1_out.len(), 1500, "v2 wrote the second half");
    assert!(continued > 0, "no v2 count continued from v1's");
}

/// The offsets of completed checkpoints (the stop's savepoint last) reach
/// the consumer group, with the source looking for new partitions every
/// 100 ms meanwhile. (nisshi cannot add partitions to a topic, so a new
/// partition being picked up is not exercised here.)
#[test]
fn offsets_of_completed_checkpoints_reach_the_consumer_group() {
    let (_broker, addr) = with_topics(3);
    let (recs, golden) = input(1200, 13);
    let (first, rest) = recs.split_at(600);
    produce(&addr, "in", first);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let m = job(&addr, 2, 1, false, counter()).replace(
        "group-id = \"wrun-test\"",
        "group-id = \"wrun-test\"\npartition-discovery-ms = 100",
    );
    std::fs::write(dir.path().join("run.toml"), m).unwrap();
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    wait_for_api(&mut child, &data);
    let wait_out = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_len(&addr, "out") < n {
            assert!(Instant::now() < deadline, "output stuck below {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_out(600);
    produce(&addr, "in", rest);
    wait_out(1200);
    let d = data.to_str().unwrap();
    ok(
        dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", d],
    );
    let _ = child.wait();
    assert_eq!(sorted_topic(&addr, "out"), golden);
    // The group's committed offsets (monitoring) cover the input.
    let c: BaseConsumer = config(&addr).set("group.id", "wrun-test").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("in", p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let total: i64 = got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 1200, "{got:?}");
}

#[test]
fn the_broker_killed_and_restarted_mid_job_loses_nothing() {
    let (mut broker, addr) = with_topics(2);
    let (recs, golden) = input(3000, 31);
    let (first, rest) = recs.split_at(1000);
    produce(&addr, "in", first);
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        job(&addr, 1, 2, false, counter()).replace("attempts = 0", "attempts = 50\ndelay-ms = 200");
    std::fs::write(dir.path().join("run.toml"), manifest).unwrap();
    let data = dir.path().join("data");
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    wait_for_api(&mut child, &data);
    let wait_out = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed_len(&addr, "out") < n {
            assert!(Instant::now() < deadline, "output stuck below {n}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_out(500);
    broker.kill_and_restart();
    produce(&addr, "in", rest);
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct_len(&addr, "out") < golden.len() {
        assert!(Instant::now() < deadline, "the output did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = data.to_str().unwrap();
    ok(
        dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", d],
    );
    let _ = child.wait();
    assert_nothing_lost(&sorted_topic(&addr, "out"), &golden, "broker restart");
}

/// Through `wrun serve`: `kill -9` of serve mid-job, a restart resumes the
/// job from its checkpoint, more input arrives, the output holds every
/// count (once each, but for the records of the transaction the kill left
/// open, which nisshi shows after the abort).
#[test]
fn kill_9_of_serve_mid_job_then_a_restart_loses_nothing() {
    use crate::serve::{Serve, wait_job};
    let (_broker, addr) = with_topics(2);
    let (recs, golden) = input(3000, 23);
    let (first, rest) = recs.split_at(2000);
    produce(&addr, "in", first);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("job.toml"),
        job(&addr, 2, 2, false, counter()),
    )
    .unwrap();
    let serve = Serve::start(&data, &[]);
    let d = serve.d().to_string();
    ok(dir.path(), &["deploy", "job.toml", "--data-dir", &d]);
    let c = serve.client();
    wait_job(&c, "test", "checkpointed", |s| {
        s["last-checkpoint"].as_u64().is_some()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_len(&addr, "out") < 500 {
        assert!(Instant::now() < deadline, "no output within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    serve.kill9();
    produce(&addr, "in", rest);
    let serve = Serve::start(&data, &[]);
    let c = serve.client();
    let s = wait_job(&c, "test", "resumed", |s| {
        s["restored-from"].as_u64().is_some()
    });
    assert_eq!(s["state"], "running", "{s}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while distinct_len(&addr, "out") < golden.len() {
        assert!(Instant::now() < deadline, "the output did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(
        dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", &d],
    );
    assert_nothing_lost(&sorted_topic(&addr, "out"), &golden, "kill -9 of serve");
}

/// `wrun run` of `manifest` fails, within 45 s: its error output.
fn fails(dir: &Path, manifest: &str) -> String {
    run_fails(dir, manifest, Duration::from_secs(45))
}

#[test]
fn bad_addresses_topics_credentials_and_timeouts_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens there.
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = fails(dir.path(), &job(&nobody, 1, 1, true, counter()));
    assert!(
        err.contains(&nobody) && err.contains("is the broker running"),
        "{err}"
    );

    // A transaction timeout the checkpoints outlast: refused before
    // anything runs, by `validate` too.
    let m = job(&nobody, 1, 1, true, counter()).replace(
        "topic = \"out\"",
        "topic = \"out\"\ntransaction-timeout-ms = 30000",
    );
    let err = fails(dir.path(), &m);
    assert!(
        err.contains("transaction-timeout-ms") && err.contains("60050"),
        "{err}"
    );
    std::fs::write(dir.path().join("short.toml"), &m).unwrap();
    let (code, _, err) = wrun(dir.path(), &["validate", "short.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("too short"), "{err}");

    // A secret in the manifest or in `properties` is refused, not echoed.
    let m = job(&nobody, 1, 1, true, counter()).replace(
        "topics = [\"in\"]",
        "topics = [\"in\"]\nuser = \"u\"\npassword = \"hunter2\"",
    );
    let err = fails(dir.path(), &m);
    assert!(
        err.contains("never the secret itself") && !err.contains("hunter2"),
        "{err}"
    );
    let m = job(&nobody, 1, 1, true, counter()).replace(
        "topics = [\"in\"]",
        "topics = [\"in\"]\nproperties = { \"sasl.password\" = \"hunter2\" }",
    );
    let err = fails(dir.path(), &m);
    assert!(
        err.contains("by reference") && !err.contains("hunter2"),
        "{err}"
    );

    let mut broker = Broker::start();
    let addr = broker.addr();
    // No topic `in`.
    let err = fails(dir.path(), &job(&addr, 1, 1, true, counter()));
    assert!(
        (err.contains("\"in\" does not exist") || err.contains("\"out\" does not exist"))
            && err.contains("create it"),
        "{err}"
    );

    // Wrong SCRAM credentials: the user is made while the broker is open,
    // then it requires authentication.
    create_topic(&addr, "in", 1);
    create_topic(&addr, "out", 1);
    let made = Command::new(nisshi())
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://{addr}"))
        .args(["wrun", "right"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    broker.restart_with(&["--authentication"]);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    let secured = |pw_file: &Path| {
        job(&addr, 1, 1, true, counter()).replace(
            "bootstrap-servers",
            &format!(
                "user = \"wrun\"\npassword = {{ file = {:?} }}\nbootstrap-servers",
                pw_file.display()
            ),
        )
    };
    let err = fails(dir.path(), &secured(&pw));
    assert!(
        err.contains(&addr) && err.contains("check the SASL mechanism"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the secret was echoed: {err}");
    // The right password, by file: the (empty) job runs and ends.
    std::fs::write(&pw, "right\n").unwrap();
    std::fs::write(dir.path().join("good.toml"), secured(&pw)).unwrap();
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "run",
            "good.toml",
            "--data-dir",
            dir.path().join("data2").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn validate_shows_kafka_secrets_only_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    let m = job("127.0.0.1:9092", 1, 1, true, counter()).replace(
        "topics = [\"in\"]",
        "topics = [\"in\"]\nuser = \"u\"\npassword = { env = \"WRUN_TEST_KAFKA_PASSWORD\" }",
    );
    std::fs::write(dir.path().join("job.toml"), m).unwrap();
    let out = Command::new(wrun_bin())
        .args(["validate", "job.toml"])
        .current_dir(dir.path())
        .env("WRUN_TEST_KAFKA_PASSWORD", "hunter2")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("hunter2") && text.contains("WRUN_TEST_KAFKA_PASSWORD"),
        "{text}"
    );
}

/// `wrun deploy` refuses a job whose topic or stream does not exist,
/// before it runs (Kafka and NATS alike).
#[test]
fn deploy_refuses_a_missing_topic_or_stream() {
    use crate::serve::Serve;
    let broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "in", 1);
    let nats = crate::nats::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let d = serve.d().to_string();
    // No topic `out`.
    std::fs::write(
        dir.path().join("kafka.toml"),
        job(&addr, 1, 1, false, counter()),
    )
    .unwrap();
    let (code, _, err) = wrun(dir.path(), &["deploy", "kafka.toml", "--data-dir", &d]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("sink 'out'") && err.contains("\"out\" does not exist"),
        "{err}"
    );
    // No stream `IN`.
    let m = job(&addr, 1, 1, false, counter()).replacen(
        "kind = \"kafka\"\nbootstrap-servers",
        &format!(
            "kind = \"nats\"\nservers = [\"{}\"]\nstream = \"IN\"\n#",
            nats.url()
        ),
        1,
    );
    let m = m.replacen("topics = [\"in\"]\ngroup-id = \"wrun-test\"\n", "", 1);
    std::fs::write(dir.path().join("nats.toml"), &m).unwrap();
    let (code, _, err) = wrun(dir.path(), &["deploy", "nats.toml", "--data-dir", &d]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("\"IN\" does not exist"), "{m}\n{err}");
    // Nothing was deployed.
    let list = ok(dir.path(), &["job", "list", "--data-dir", &d]);
    assert!(!list.contains("test"), "{list}");
}

/// TLS: a broker with a self-signed certificate for 127.0.0.1; the job
/// verifies it by `tls-ca-file` (source and sink), exactly-once; without
/// the CA (`tls = true`, the system's CAs) the handshake fails clearly.
#[test]
fn tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let broker = Broker::start_with(vec![
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]);
    let addr = broker.addr();
    TLS_CA.with(|t| *t.borrow_mut() = Some(cert.clone()));
    create_topic(&addr, "in", 2);
    create_topic(&addr, "out", 2);
    let (recs, golden) = input(500, 7);
    produce(&addr, "in", &recs);
    let m = job(&addr, 1, 1, true, counter()).replace(
        "bootstrap-servers",
        &format!(
            "tls-ca-file = {:?}\nbootstrap-servers",
            cert.display().to_string()
        ),
    );
    std::fs::write(dir.path().join("run.toml"), m).unwrap();
    wrun_run_ok(dir.path(), "run.toml", &[]);
    assert_eq!(sorted_topic(&addr, "out"), golden);
    // The system's CAs do not know the broker's certificate.
    let m = job(&addr, 1, 1, true, counter())
        .replace("bootstrap-servers", "tls = true\nbootstrap-servers");
    let err = fails(dir.path(), &m);
    assert!(err.contains(&addr) && err.contains("SSL"), "{err}");
}
