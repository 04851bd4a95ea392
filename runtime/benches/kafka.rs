//! The Kafka benchmark (docs/benchmarks.md, "Kafka end to end"): a
//! Kafka-API broker of its own (nisshi, from `scripts/setup`) on a free
//! loopback port, then, in one run,
//!
//! 1. the broker's raw rates with the client wrun uses (librdkafka via
//!    rdkafka): a plain produce of the input records (idempotent producer,
//!    every record acknowledged) and a plain consume of them
//!    (`read_committed`, partitions assigned by hand, as wrun's source
//!    reads);
//! 2. `wrun run` of the keyed running sum (Rust Wasm, `keyed-sum`) from the
//!    input topic to an output topic, exactly-once with 1 s checkpoints
//!    (one transaction per checkpoint per sink subtask), at parallelism 1
//!    and 2 (the source reads the topic to its end: `bounded = true`),
//!    records/s from the job's wall time;
//! 3. the same job from the generator to the discard sink.
//!
//! `cargo bench -p wrun-runtime --bench kafka` (the broker: scripts/setup;
//! the `wrun` binary: WRUN, default target/release/wrun). Records:
//! WRUN_BENCH_KAFKA_RECORDS (default 500,000: the test broker stores every record in SQLite). Prints JSON lines and a
//! Markdown table.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;
const PARTITIONS: i32 = 2;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wrun = std::env::var("WRUN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/wrun"));
    let guest = PathBuf::from(wrun_test_guests::KEYED_SUM);
    let broker = root.join("target/toolchains/nisshi/bin/nisshi");
    for (what, p, how) in [
        (
            "the wrun binary",
            &wrun,
            "`cargo build --release --bin wrun` (or set WRUN)",
        ),
        ("the broker", &broker, "run scripts/setup"),
    ] {
        if !p.exists() {
            eprintln!("kafka bench: {what} {} is missing: {how}", p.display());
            std::process::exit(1);
        }
    }
    let n: u64 = std::env::var("WRUN_BENCH_KAFKA_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut server = Command::new(&broker)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .arg("--storage-engine")
        .arg(format!(
            "sqlite:///{}",
            dir.path().join("nisshi.db").display()
        ))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the broker");
    let addr = format!("127.0.0.1:{port}");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let version =
        std::fs::read_to_string(root.join("target/toolchains/nisshi/.version")).unwrap_or_default();
    let config = || {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &addr);
        c
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = config().create().unwrap();
    let make = |name: &str| {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let _ = rt.block_on(admin.delete_topics(&[name], &opts));
        let r = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))],
                &opts,
            ))
            .unwrap();
        for t in r {
            t.unwrap();
        }
    };
    make("in");

    // 1. Raw produce: the generator's keys and values.
    let produce_s = {
        let p: ThreadedProducer<DefaultProducerContext> = config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let t = Instant::now();
        for seq in 0..n {
            let mut b = wrun::batch::Batch::default();
            wrun::exec::generated(seq, KEYS, 0, &mut b);
            let e = b.get(0);
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to("in")
                .key(e.key.unwrap_or_default())
                .payload(e.value);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(600)).unwrap();
        t.elapsed().as_secs_f64()
    };
    // 1b. Raw consume, read_committed, by hand-assigned partitions.
    let consume_s = {
        let c: BaseConsumer = config()
            .set("group.id", "bench")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("in", p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let t = Instant::now();
        let mut got = 0u64;
        while got < n {
            if let Some(m) = c.poll(Duration::from_secs(30)) {
                m.unwrap();
                got += 1;
            }
        }
        t.elapsed().as_secs_f64()
    };
    let mut rows = vec![
        row(
            "raw produce (librdkafka, idempotent, all acknowledged)",
            n,
            produce_s,
            None,
        ),
        row(
            "raw consume (librdkafka, read_committed)",
            n,
            consume_s,
            None,
        ),
    ];

    let manifest = |p: u32, kafka: bool| -> String {
        let (source, sink) = if kafka {
            (
                format!(
                    "kind = \"kafka\"\nbootstrap-servers = [\"{addr}\"]\ntopics = [\"in\"]\nbounded = true\nparallelism = {p}"
                ),
                format!(
                    "kind = \"kafka\"\nbootstrap-servers = [\"{addr}\"]\ntopic = \"out\"\nparallelism = {p}"
                ),
            )
        } else {
            (
                format!("kind = \"generator\"\ncount = {n}\nkeys = {KEYS}\nparallelism = {p}"),
                "kind = \"discard\"".to_string(),
            )
        };
        format!(
            "version = 1\nname = \"kafka-bench\"\nparallelism = {p}\n[checkpoint]\ninterval-ms = 1000\n\n[[source]]\nname = \"in\"\n{source}\n\n[[operator]]\nname = \"sum\"\nuid = \"sum\"\ncomponent = {guest:?}\n\n[[sink]]\nname = \"out\"\n{sink}\n\n[[edge]]\nfrom = \"in\"\nto = \"sum\"\npartition = \"hash\"\n\n[[edge]]\nfrom = \"sum\"\nto = \"out\"\n"
        )
    };
    for p in [1u32, 2] {
        for kafka in [true, false] {
            if kafka {
                make("out");
            }
            let m = dir.path().join(format!("job-{p}-{kafka}.toml"));
            std::fs::write(&m, manifest(p, kafka)).unwrap();
            let data = dir.path().join(format!("data-{p}-{kafka}"));
            let t = Instant::now();
            let out = Command::new(&wrun)
                .arg("run")
                .arg(&m)
                .arg("--data-dir")
                .arg(&data)
                .env(
                    "WRUN_LOG",
                    std::env::var("WRUN_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .output()
                .unwrap();
            let s = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "wrun run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let label = if kafka {
                format!("wrun: Kafka -> keyed sum -> Kafka, exactly-once, p={p}")
            } else {
                format!("wrun: generator -> keyed sum -> discard, 1 s checkpoints, p={p}")
            };
            let written = kafka.then(|| {
                let c: BaseConsumer = config().create().unwrap();
                (0..PARTITIONS)
                    .map(|part| {
                        let (lo, hi) = c
                            .fetch_watermarks("out", part, Duration::from_secs(10))
                            .unwrap();
                        (hi - lo) as u64
                    })
                    .sum::<u64>()
            });
            // The high watermarks count the transactions' commit markers
            // too: at least n.
            if let Some(w) = written {
                assert!(
                    w >= n,
                    "the output topic holds {w} offsets, fewer than {n} records"
                );
            }
            rows.push(row(&label, n, s, written));
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    println!();
    println!(
        "nisshi {}, {n} records, {KEYS} keys, {PARTITIONS} partitions",
        version.trim()
    );
    println!("| run | records/s |");
    println!("|---|---|");
    for (label, rps) in &rows {
        println!("| {label} | {rps:.0} |");
    }
}

fn row(label: &str, n: u64, secs: f64, written: Option<u64>) -> (String, f64) {
    let rps = n as f64 / secs;
    println!(
        "{}",
        serde_json::json!({"run": label, "records": n, "seconds": secs, "records_per_s": rps, "written": written})
    );
    (label.to_string(), rps)
}
