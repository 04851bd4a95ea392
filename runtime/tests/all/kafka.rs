//! Kafka connectors against a real Kafka-API broker: nisshi 0.7.0 (the
//! Rust broker once called tansu, installed by `scripts/setup` with `cargo
//! install` into `target/toolchains/nisshi`), started by each test on a
//! free loopback port with its SQLite store in a temporary directory, and
//! stopped by PID. Kafka → counter → Kafka with the transactional sink
//! across SIGKILLs at seeded points (inside checkpoints and inside the
//! sink's transactions); a savepoint stop, a module swap and a resume at
//! other parallelisms; new partitions; a broker restart mid-job; `kill -9`
//! of `wrun serve`; the manifest's options, each by what it does (where a
//! source starts, `key = "none"`, the sink's `partition` and
//! `transactional-id-prefix`, the SASL mechanisms); the errors a user
//! meets.
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    produce_at(addr, topic, records, None);
}

/// Like [`produce`], every record with the timestamp `ts` (its create
/// time, ms since the Unix epoch) when given, else the producer's clock.
fn produce_at(addr: &str, topic: &str, records: &[(String, String)], ts: Option<i64>) {
    let timed: Vec<(&String, &String, Option<i64>)> =
        records.iter().map(|(k, v)| (k, v, ts)).collect();
    produce_timed(addr, topic, &timed);
}

/// Produces `(key, value, timestamp)` records (partitioned by key), all
/// acknowledged; a record without a timestamp gets the producer's clock.
pub fn produce_timed(addr: &str, topic: &str, records: &[(&String, &String, Option<i64>)]) {
    let p: ThreadedProducer<DefaultProducerContext> =
        config(addr).set("linger.ms", "5").create().unwrap();
    for &(k, v, ts) in records {
        let mut rec = BaseRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_bytes());
        if let Some(t) = ts {
            rec = rec.timestamp(t);
        }
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
    key_values(read_partitions(addr, topic, &partitions_of(addr, topic)))
}

/// A record read back: its partition, its key (`None`: it has none) and
/// its value.
#[derive(Debug)]
struct Fetched {
    partition: i32,
    key: Option<String>,
    value: String,
}

/// The partition numbers of a topic.
fn partitions_of(addr: &str, topic: &str) -> Vec<i32> {
    let c: BaseConsumer = config(addr)
        .set("group.id", "wrun-test-reader")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

/// Every committed record (`read_committed`) of these partitions of a
/// topic, each assigned by number and read from its start to its end.
fn read_partitions(addr: &str, topic: &str, parts: &[i32]) -> Vec<Fetched> {
    let c: BaseConsumer = config(addr)
        .set("group.id", "wrun-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
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
            Some(Ok(m)) => out.push(Fetched {
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The (key, value) of records read back, no key as "".
fn key_values(records: Vec<Fetched>) -> Records {
    records
        .into_iter()
        .map(|r| (r.key.unwrap_or_default(), r.value))
        .collect()
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
    let mut recs = Vec::new();
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = format!("w{}", (x >> 33) % words);
        recs.push((w, format!("m{i}")));
    }
    let golden = counts_of(&recs);
    (recs, golden)
}

/// What the counter writes for `records` when it starts with no state:
/// each key's running counts 1..n, once each, sorted.
fn counts_of(records: &[(String, String)]) -> Records {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, _) in records {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    let mut golden = Vec::new();
    for (k, n) in counts {
        for c in 1..=n {
            golden.push((k.to_string(), c.to_string()));
        }
    }
    golden.sort();
    golden
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

/// `manifest` (of [`job`]) with `lines` added to its source.
fn in_source(manifest: &str, lines: &str) -> String {
    let at = "group-id = \"wrun-test\"";
    manifest.replacen(at, &format!("{at}\n{lines}"), 1)
}

/// `manifest` (of [`job`]) with `lines` added to its sink.
fn in_sink(manifest: &str, lines: &str) -> String {
    let at = "topic = \"out\"";
    manifest.replacen(at, &format!("{at}\n{lines}"), 1)
}

/// `manifest` (of [`job`]) with SASL credentials on its source and sink:
/// `user`, the password in `password_file`, and `mechanism` when given
/// (else the default, SCRAM-SHA-512).
fn with_sasl(manifest: &str, user: &str, password_file: &Path, mechanism: Option<&str>) -> String {
    let mechanism = mechanism
        .map(|m| format!("sasl-mechanism = \"{m}\"\n"))
        .unwrap_or_default();
    manifest.replace(
        "bootstrap-servers",
        &format!(
            "user = \"{user}\"\npassword = {{ file = {:?} }}\n{mechanism}bootstrap-servers",
            password_file.display()
        ),
    )
}

/// Writes `manifest` to `dir/run.toml` and runs it to its end: `wrun run`
/// must succeed.
fn run_to_end(dir: &Path, manifest: &str) {
    std::fs::write(dir.join("run.toml"), manifest).unwrap();
    wrun_run_ok(dir, "run.toml", &[]);
}

/// Waits (60 s at most) until `topic` holds at least `n` records.
fn wait_for_records(addr: &str, topic: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_len(addr, topic) < n {
        assert!(Instant::now() < deadline, "{topic} stuck below {n} records");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The offsets consumer group `group` has committed for these partitions
/// of `topic`, in their order (`None` where it has none).
fn group_offsets(addr: &str, group: &str, topic: &str, parts: &[i32]) -> Vec<Option<i64>> {
    let c: BaseConsumer = config(addr).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    parts
        .iter()
        .map(|p| {
            let offset = got.find_partition(topic, *p).map(|e| e.offset());
            match offset {
                Some(Offset::Offset(n)) => Some(n),
                _ => None,
            }
        })
        .collect()
}

/// Polls [`group_offsets`] (60 s at most) until `done` says yes: those
/// offsets.
fn wait_group_offsets(
    addr: &str,
    group: &str,
    topic: &str,
    parts: &[i32],
    done: impl Fn(&[Option<i64>]) -> bool,
) -> Vec<Option<i64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = group_offsets(addr, group, topic, parts);
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s, group {group:?} has committed {got:?} for {topic} {parts:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of the offsets a group committed.
fn total(offsets: &[Option<i64>]) -> i64 {
    offsets.iter().flatten().sum()
}

/// Creates user `name` with a SCRAM credential for `mechanism` (nisshi's
/// names: `scram256`, `scram512`), while the broker at `addr` does not
/// require authentication yet.
fn create_user(addr: &str, name: &str, password: &str, mechanism: &str) {
    let (code, _, err) = output_within(
        Command::new(nisshi())
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://{addr}"))
            .args(["--mechanism", mechanism, name, password]),
        COMMAND_DEADLINE,
    );
    assert_eq!(code, 0, "{err}");
}

/// How many records the sink's log says it wrote again after a crash.
fn rewritten_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" were committed already; ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// How many staged records the log says had been committed before the
/// crash (found by the marker, not written again).
fn kept_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" were committed already")?;
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

/// Killed at each seeded point of a running job, then resumed: nothing is
/// lost and no foreign record appears, and the log shows both recoveries
/// at work (groups written again, groups found committed by their marker).
/// The output is compared as a set, not counted: a running exactly-once
/// sink always has a transaction open (records go into it as they come),
/// so every kill here leaves one for the resume to abort, and nisshi shows
/// aborted records to `read_committed` readers. Counts are compared where
/// nothing is left to abort: the end-of-input test below (killed after the
/// tail's commit), the stop-with-savepoint and offsets tests.
#[test]
fn kafka_to_kafka_loses_nothing_across_sigkill_at_seeded_points_and_recovers_each_transaction() {
    // The crashing runs launch the crash-point build, checked to have them.
    crash_bin();
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
    let (code, _, log) = output_within(
        &mut wrun_run_cmd(dir.path(), "resume.toml", &["--resume"], None),
        COMMAND_DEADLINE,
    );
    assert!(
        code == 0,
        "seed {seed} ({at}): the resumed run failed (exit {code}): {log}"
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
    let status = wait_within(&mut child, COMMAND_DEADLINE);
    assert!(
        status.success(),
        "wrun run after stop --savepoint must exit 0: {status}"
    );
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
    stop_with_savepoint(dir.path(), &data, &mut child);
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

/// `start = "latest"`: a fresh job starts at each partition's end, so it
/// reads only what is produced after it started. Its first checkpoint
/// already records the ends as its positions (the group receives them:
/// the 400 records there before the job), and its output counts only the
/// 400 records produced later.
#[test]
fn start_latest_reads_only_what_is_produced_after_the_job_started() {
    let (_broker, addr) = with_topics(2);
    let (recs, _) = input(800, 13);
    let (before, after) = recs.split_at(400);
    produce(&addr, "in", before);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let m = in_source(&job(&addr, 1, 1, false, counter()), "start = \"latest\"");
    std::fs::write(dir.path().join("run.toml"), m).unwrap();
    let mut child = spawn_run(dir.path(), "run.toml", &data);
    wait_for_api(&mut child, &data);
    // The source has opened, and resolved its start, once a checkpoint
    // has committed its positions to the group.
    let at_start = wait_group_offsets(&addr, "wrun-test", "in", &[0, 1], |o| {
        o.iter().all(Option::is_some)
    });
    assert_eq!(total(&at_start), 400, "where the job started: {at_start:?}");
    produce(&addr, "in", after);
    let golden = counts_of(after);
    wait_for_records(&addr, "out", golden.len());
    stop_with_savepoint(dir.path(), &data, &mut child);
    assert_eq!(sorted_topic(&addr, "out"), golden);
}

/// `start = "timestamp:<ms>"`: a fresh job starts at the first record at
/// or after the time. Two batches whose create times are a minute apart;
/// the start is the later batch's time, so the job counts that batch
/// only. (One partition: for a partition with no record at or after the
/// time, nisshi answers offset 0 where Kafka answers the end, so every
/// partition must hold a later record.)
#[test]
fn start_timestamp_reads_from_the_first_record_at_or_after_the_time() {
    let (_broker, addr) = with_topics(1);
    let (recs, _) = input(600, 11);
    let (old, new) = recs.split_at(300);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let now = i64::try_from(now.as_millis()).unwrap();
    let (old_at, new_at) = (now - 120_000, now - 60_000);
    produce_at(&addr, "in", old, Some(old_at));
    produce_at(&addr, "in", new, Some(new_at));
    let dir = tempfile::tempdir().unwrap();
    let start = format!("start = \"timestamp:{new_at}\"");
    run_to_end(
        dir.path(),
        &in_source(&job(&addr, 1, 1, true, counter()), &start),
    );
    assert_eq!(sorted_topic(&addr, "out"), counts_of(new));
}

/// Two jobs of group `wrun-test`, each with a data directory of its own:
/// the first (bounded, the default start) counts `first` into `out`, and
/// its offsets reach the group; then `rest` is produced, and the second,
/// fresh (no checkpoint), with `start`, reads `in` to its end and writes
/// `out2`. What the second wrote, sorted.
fn second_job_with_start(
    start: &str,
    first: &[(String, String)],
    rest: &[(String, String)],
) -> Records {
    let (_broker, addr) = with_topics(2);
    create_topic(&addr, "out2", 2);
    produce(&addr, "in", first);
    let one = tempfile::tempdir().unwrap();
    run_to_end(one.path(), &job(&addr, 1, 1, true, counter()));
    assert_eq!(
        sorted_topic(&addr, "out"),
        counts_of(first),
        "the first job"
    );
    // Its end (the final checkpoint) reaches the group.
    let n = i64::try_from(first.len()).unwrap();
    wait_group_offsets(&addr, "wrun-test", "in", &[0, 1], |o| total(o) == n);
    produce(&addr, "in", rest);
    let two = tempfile::tempdir().unwrap();
    let m = in_source(
        &job(&addr, 1, 1, true, counter()),
        &format!("start = \"{start}\""),
    )
    .replace("topic = \"out\"", "topic = \"out2\"");
    run_to_end(two.path(), &m);
    sorted_topic(&addr, "out2")
}

/// `start = "earliest"`: a fresh job reads every partition from its
/// earliest offset, even where its group has committed offsets (an
/// earlier job's): it counts the whole topic.
#[test]
fn start_earliest_reads_from_the_beginning_whatever_the_group_committed() {
    let (recs, golden) = input(800, 13);
    let (first, rest) = recs.split_at(400);
    assert_eq!(second_job_with_start("earliest", first, rest), golden);
}

/// `start = "group-offsets"`: a fresh job starts where its group's
/// committed offsets say, so it continues after what an earlier job of
/// that group read: it counts only the records produced since.
#[test]
fn start_group_offsets_continues_after_what_the_group_committed() {
    let (recs, _) = input(800, 13);
    let (first, rest) = recs.split_at(400);
    assert_eq!(
        second_job_with_start("group-offsets", first, rest),
        counts_of(rest)
    );
}

/// `key = "none"`: events have no key (not an empty one), whatever the
/// records' keys (every record has one here). An echoing operator hands
/// them on, and the sink writes every value in a record without a key;
/// the counter job, whose `hash` edge needs keys, fails naming the
/// keyless event.
#[test]
fn source_key_none_gives_events_without_a_key() {
    let (_broker, addr) = with_topics(2);
    let (recs, _) = input(300, 7);
    produce(&addr, "in", &recs);
    let dir = tempfile::tempdir().unwrap();
    let echo = in_source(&job(&addr, 1, 1, true, guest("chaos")), "key = \"none\"")
        .replace(
            "uid = \"counter\"",
            "uid = \"echo\"\nconfig = { mode = \"echo\" }",
        )
        .replacen("partition = \"hash\"", "partition = \"rebalance\"", 1);
    run_to_end(dir.path(), &echo);
    let got = read_partitions(&addr, "out", &[0, 1]);
    let keyed: Vec<&Fetched> = got.iter().filter(|r| r.key.is_some()).collect();
    assert!(
        keyed.is_empty(),
        "{} records have a key, such as {:?}",
        keyed.len(),
        keyed.first()
    );
    let mut values: Vec<&str> = got.iter().map(|r| r.value.as_str()).collect();
    values.sort_unstable();
    let mut want: Vec<&str> = recs.iter().map(|(_, v)| v.as_str()).collect();
    want.sort_unstable();
    assert_eq!(values, want);
    // The counter job: its `hash` edge refuses an event without a key.
    let other = tempfile::tempdir().unwrap();
    let counting = in_source(&job(&addr, 1, 1, true, counter()), "key = \"none\"");
    let err = run_fails(other.path(), &counting, COMMAND_DEADLINE);
    assert!(
        err.contains("an event without a key reached a `hash` edge"),
        "{err}"
    );
}

/// `partition = 1` on the sink: every record goes to partition 1 of `out`
/// (it has two), whatever its key, and the output is whole.
#[test]
fn sink_partition_writes_every_record_to_that_partition() {
    let (_broker, addr) = with_topics(2);
    let (recs, golden) = input(600, 13);
    produce(&addr, "in", &recs);
    let dir = tempfile::tempdir().unwrap();
    run_to_end(
        dir.path(),
        &in_sink(&job(&addr, 1, 2, true, counter()), "partition = 1"),
    );
    let got = read_partitions(&addr, "out", &[0, 1]);
    let elsewhere: Vec<&Fetched> = got.iter().filter(|r| r.partition != 1).collect();
    assert!(
        elsewhere.is_empty(),
        "{} records are not in partition 1, such as {:?}",
        elsewhere.len(),
        elsewhere.first()
    );
    assert_eq!(sorted(key_values(got)), golden);
}

/// `transactional-id-prefix`: sink subtask `i` writes with transactional
/// ID `<prefix>.<i>`, seen through the commit markers (each transaction
/// commits an offset on `out`/0 for the group named like its ID): both
/// subtasks' groups hold one, a checkpoint number in its low 40 bits, and
/// the groups of the default IDs (`wrun.test.out.<i>`) hold none.
#[test]
fn transactional_id_prefix_names_the_sink_s_transactional_ids() {
    let (_broker, addr) = with_topics(2);
    let (recs, golden) = input(600, 13);
    produce(&addr, "in", &recs);
    let dir = tempfile::tempdir().unwrap();
    let m = in_sink(
        &job(&addr, 1, 2, true, counter()),
        "parallelism = 2\ntransactional-id-prefix = \"counts-eo\"",
    );
    run_to_end(dir.path(), &m);
    assert_eq!(sorted_topic(&addr, "out"), golden);
    for i in 0..2 {
        let marker = group_offsets(&addr, &format!("counts-eo.{i}"), "out", &[0])[0];
        let checkpoint = marker.map(|offset| offset & ((1 << 40) - 1));
        assert!(
            checkpoint.is_some_and(|c| c >= 1),
            "no commit marker in group counts-eo.{i}: {marker:?}"
        );
        let default = group_offsets(&addr, &format!("wrun.test.out.{i}"), "out", &[0])[0];
        assert_eq!(default, None, "a commit marker in group wrun.test.out.{i}");
    }
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
    let log = drain_stderr(&mut child);
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
    stop_with_savepoint(dir.path(), &data, &mut child);
    // The kill was seen and lived through: the client lost its connection
    // (and reconnected, or the job restarted), not a run that never noticed.
    let log = log.join().unwrap();
    assert!(
        log.contains("connection lost"),
        "no lost connection in the log: {log}"
    );
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

/// `wrun run` of `manifest` fails, within 10 s: its error output.
fn fails(dir: &Path, manifest: &str) -> String {
    run_fails(dir, manifest, Duration::from_secs(10))
}

#[test]
fn bad_addresses_topics_credentials_and_timeouts_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Each row of docs/connectors.md's Kafka failure table: the message,
    // the exit code, whether it was retried, and the row's time bound.
    // Nobody listens there: a restart can help (the broker may come up):
    // two attempts of at most ~10 s each.
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = fails_as_documented(
        dir.path(),
        &job(&nobody, 1, 1, true, counter()),
        &[&nobody, "is the broker running"],
        true,
        Duration::from_secs(25),
    );
    assert!(
        !err.contains("Connection refused (os error 111): Connection refused"),
        "the cause is repeated: {err}"
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
    // No topic `in`: not retried, at once.
    let err = fails_as_documented(
        dir.path(),
        &job(&addr, 1, 1, true, counter()),
        &["does not exist", "create it"],
        false,
        Duration::from_secs(10),
    );
    assert!(
        err.contains("\"in\" does not exist") || err.contains("\"out\" does not exist"),
        "{err}"
    );

    // Wrong SCRAM credentials: the user is made while the broker is open,
    // then it requires authentication.
    create_topic(&addr, "in", 1);
    create_topic(&addr, "out", 1);
    create_user(&addr, "wrun", "right", "scram512");
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
    // Wrong credentials: not retried, and at once (the client reports the
    // refusal within milliseconds; no metadata timeout is waited out).
    let err = fails_as_documented(
        dir.path(),
        &secured(&pw),
        &[&addr, "check the SASL mechanism"],
        false,
        Duration::from_secs(5),
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

/// `sasl-mechanism` against nisshi with `--authentication` (set up as in
/// the test above). User `wrun` has a SCRAM-SHA-256 and a SCRAM-SHA-512
/// credential, with other passwords. `"SCRAM-SHA-256"` with its password:
/// the job runs, its output exact. That password under the default
/// mechanism, SCRAM-SHA-512: refused like a wrong one (so the mechanism
/// picks the credential). `"PLAIN"`: nisshi 0.7.0 has no PLAIN (its SASL
/// library is built with the SCRAM mechanisms and OAUTHBEARER only), and
/// the job fails at once, not retried, saying the PLAIN handshake failed
/// and to check the SASL mechanism.
#[test]
fn sasl_mechanism_scram_sha_256_runs_and_plain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = tempfile::tempdir().unwrap();
    let mut broker = Broker::start();
    let addr = broker.addr();
    create_topic(&addr, "in", 2);
    create_topic(&addr, "out", 2);
    let (recs, golden) = input(300, 7);
    produce(&addr, "in", &recs);
    create_user(&addr, "wrun", "right-512", "scram512");
    create_user(&addr, "wrun", "right-256", "scram256");
    broker.restart_with(&["--authentication"]);
    let (pw256, pw512) = (dir.path().join("pw256"), dir.path().join("pw512"));
    std::fs::write(&pw256, "right-256\n").unwrap();
    std::fs::write(&pw512, "right-512\n").unwrap();
    let base = job(&addr, 1, 1, true, counter());
    let secured =
        |password: &Path, mechanism: Option<&str>| with_sasl(&base, "wrun", password, mechanism);
    run_to_end(dir.path(), &secured(&pw256, Some("SCRAM-SHA-256")));
    let err = fails_as_documented(
        refused.path(),
        &secured(&pw256, None),
        &[&addr, "check the SASL mechanism"],
        false,
        Duration::from_secs(5),
    );
    assert!(!err.contains("right-256"), "the secret was echoed: {err}");
    // nisshi answers a handshake for a mechanism it lacks by closing the
    // connection; librdkafka reports the handshake's failure as an
    // authentication error ("SASL PLAIN mechanism handshake failed: …"),
    // which the job does not retry.
    let err = fails_as_documented(
        refused.path(),
        &secured(&pw512, Some("PLAIN")),
        &[
            &addr,
            "SASL PLAIN mechanism handshake failed",
            "check the SASL mechanism",
        ],
        false,
        Duration::from_secs(10),
    );
    assert!(!err.contains("right-512"), "the secret was echoed: {err}");
    // The output, read with the broker open again (the test's reader has
    // no credentials).
    broker.restart_with(&[]);
    assert_eq!(sorted_topic(&addr, "out"), golden);
}

#[test]
fn validate_shows_kafka_secrets_only_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    let m = job("127.0.0.1:9092", 1, 1, true, counter()).replace(
        "topics = [\"in\"]",
        "topics = [\"in\"]\nuser = \"u\"\npassword = { env = \"WRUN_TEST_KAFKA_PASSWORD\" }",
    );
    std::fs::write(dir.path().join("job.toml"), m).unwrap();
    let (code, out, err) = output_within(
        Command::new(wrun_bin())
            .args(["validate", "job.toml"])
            .current_dir(dir.path())
            .env("WRUN_TEST_KAFKA_PASSWORD", "hunter2"),
        COMMAND_DEADLINE,
    );
    let text = format!("{out}{err}");
    assert_eq!(code, 0, "{text}");
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (scripts/setup installs it)");
    let (status, _, err) = wait_output_within(made, COMMAND_DEADLINE);
    assert!(status.success(), "{err}");
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
    // The system's CAs do not know the broker's certificate: the job's to
    // fix, so not retried, and at once (no metadata timeout waited out).
    let m = job(&addr, 1, 1, true, counter())
        .replace("bootstrap-servers", "tls = true\nbootstrap-servers");
    fails_as_documented(
        dir.path(),
        &m,
        &[
            &addr,
            "SSL",
            "check the brokers' TLS certificate and tls-ca-file",
        ],
        false,
        Duration::from_secs(5),
    );
}

/// The end of a bounded input: the crash-point build is killed at each
/// step of the final checkpoint; `--resume` loses nothing and adds no
/// foreign record, a second `--resume` of the finished job writes nothing,
/// and where no transaction was left to abort (killed after the tail's
/// commit) the output is exact, counted. (Where the kill leaves the tail's
/// transaction open, the resume aborts it and writes the tail again: on
/// Kafka `read_committed` readers never see the aborted copy; nisshi shows
/// it, so there the count is not checked. See "Tested against" in
/// docs/connectors.md.)
#[test]
fn a_bounded_job_killed_at_each_step_of_its_end_loses_nothing() {
    for point in END_POINTS {
        let (_broker, addr) = with_topics(2);
        let (recs, golden) = input(1000, 37);
        produce(&addr, "in", &recs);
        let dir = tempfile::tempdir().unwrap();
        // The checkpoint interval is longer than the job: the final
        // checkpoint is its first, so the whole output is the tail.
        let m =
            job(&addr, 1, 2, true, counter()).replace("interval-ms = 50", "interval-ms = 60000");
        std::fs::write(dir.path().join("run.toml"), &m).unwrap();
        let mut after_first = 0;
        kill_at_end_then_resume_twice(dir.path(), point, |round| {
            let got = sorted_topic(&addr, "out");
            assert_nothing_lost(&got, &golden, &format!("{point}, {round} resume"));
            if round == "first" {
                after_first = got.len();
                if point == "final-tail-committed" {
                    assert_eq!(
                        got.len(),
                        golden.len(),
                        "{point}: duplicates after the resume"
                    );
                }
            } else {
                assert_eq!(got.len(), after_first, "{point}: the second resume wrote");
            }
        });
    }
}
