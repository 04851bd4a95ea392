//! The NATS JetStream benchmark (docs/benchmarks.md, "NATS JetStream end to
//! end"): a `nats-server -js` of its own on a free loopback port, then, in
//! one run,
//!
//! 1. the broker's raw rates with the client wrun uses (async-nats): a
//!    plain produce of the input records (async publishes, every PubAck
//!    awaited) and a plain consume of them (an ordered consumer, as wrun's
//!    source reads);
//! 2. `wrun run` of the keyed running sum (Rust Wasm, `keyed-sum`) from the
//!    input stream to an output stream, exactly-once with 1 s checkpoints,
//!    at parallelism 1 and 2 (the source reads the stream to its end:
//!    `bounded = true`), records/s from the job's wall time;
//! 3. the same job from the generator to the discard sink, for the ratio
//!    against the job without the broker.
//!
//! `cargo bench -p wrun-runtime --bench nats` (needs `nats-server`:
//! scripts/setup; the `wrun` binary: WRUN, default target/release/wrun).
//! Records: WRUN_BENCH_NATS_RECORDS (default 2,000,000). Prints JSON lines
//! and a Markdown table.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, stream};
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wrun = std::env::var("WRUN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/wrun"));
    // The test guests' keyed sum (built by the wrun-test-guests build script).
    let guest = PathBuf::from(wrun_test_guests::KEYED_SUM);
    if !wrun.exists() {
        eprintln!(
            "nats bench: the wrun binary {} is missing: `cargo build --release --bin wrun` (or set WRUN)",
            wrun.display()
        );
        std::process::exit(1);
    }
    let n: u64 = std::env::var("WRUN_BENCH_NATS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start nats-server: run scripts/setup");
    let url = format!("nats://127.0.0.1:{port}");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let version = Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async { jetstream::new(async_nats::connect(&url).await.unwrap()) });
    let make = |name: &str, subjects: &str| {
        rt.block_on(async {
            let _ = js.delete_stream(name).await;
            js.create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                ..Default::default()
            })
            .await
            .unwrap();
        })
    };
    make("IN", "in.>");
    make("OUT", "out.>");

    // 1. Raw produce: the generator's keys and values, as JetStream messages.
    let produce_s = rt.block_on(async {
        let t = Instant::now();
        let mut acks = Vec::with_capacity(4096);
        for seq in 0..n {
            let mut b = wrun::batch::Batch::default();
            wrun::exec::generated(seq, KEYS, 0, &mut b);
            let e = b.get(0);
            let subject = format!("in.{}", String::from_utf8_lossy(e.key.unwrap_or_default()));
            acks.push(
                js.publish(subject, bytes::Bytes::copy_from_slice(e.value))
                    .await
                    .unwrap(),
            );
            if acks.len() >= 4096 {
                for a in acks.drain(..) {
                    a.await.unwrap();
                }
            }
        }
        for a in acks {
            a.await.unwrap();
        }
        t.elapsed().as_secs_f64()
    });
    // 1b. Raw consume with an ordered consumer.
    let consume_s = rt.block_on(async {
        let t = Instant::now();
        let s = js.get_stream("IN").await.unwrap();
        let mut msgs = s
            .create_consumer(OrderedConfig::default())
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();
        let mut got = 0u64;
        while got < n {
            msgs.next().await.unwrap().unwrap();
            got += 1;
        }
        t.elapsed().as_secs_f64()
    });
    let mut rows = vec![
        row(
            "raw produce (async-nats, PubAcks awaited)",
            n,
            produce_s,
            None,
        ),
        row(
            "raw consume (async-nats ordered consumer)",
            n,
            consume_s,
            None,
        ),
    ];

    // 2. and 3. The job.
    let manifest = |p: u32, nats: bool| -> String {
        let (source, sink) = if nats {
            (
                format!(
                    "kind = \"nats\"\nservers = [\"{url}\"]\nstream = \"IN\"\nbounded = true\nparallelism = {p}"
                ),
                format!(
                    "kind = \"nats\"\nservers = [\"{url}\"]\nstream = \"OUT\"\nsubject = \"out.{{key}}\"\nparallelism = {p}"
                ),
            )
        } else {
            (
                format!("kind = \"generator\"\ncount = {n}\nkeys = {KEYS}\nparallelism = {p}"),
                "kind = \"discard\"".to_string(),
            )
        };
        format!(
            "version = 1\nname = \"nats-bench\"\nparallelism = {p}\n[checkpoint]\ninterval-ms = 1000\n\n[[source]]\nname = \"in\"\n{source}\n\n[[operator]]\nname = \"sum\"\nuid = \"sum\"\ncomponent = {guest:?}\n\n[[sink]]\nname = \"out\"\n{sink}\n\n[[edge]]\nfrom = \"in\"\nto = \"sum\"\npartition = \"hash\"\n\n[[edge]]\nfrom = \"sum\"\nto = \"out\"\n"
        )
    };
    for p in [1u32, 2] {
        for nats in [true, false] {
            if nats {
                make("OUT", "out.>");
            }
            let m = dir.path().join(format!("job-{p}-{nats}.toml"));
            std::fs::write(&m, manifest(p, nats)).unwrap();
            let data = dir.path().join(format!("data-{p}-{nats}"));
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
                .env("RUST_BACKTRACE", "1")
                .stdout(Stdio::null())
                .output()
                .unwrap();
            let s = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "wrun run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let label = if nats {
                format!("wrun: JetStream -> keyed sum -> JetStream, exactly-once, p={p}")
            } else {
                format!("wrun: generator -> keyed sum -> discard, 1 s checkpoints, p={p}")
            };
            let written = if nats {
                Some(rt.block_on(async {
                    js.get_stream("OUT")
                        .await
                        .unwrap()
                        .info()
                        .await
                        .unwrap()
                        .state
                        .messages
                }))
            } else {
                None
            };
            if let Some(w) = written {
                assert_eq!(w, n, "the output stream holds {w} records, not {n}");
            }
            rows.push(row(&label, n, s, written));
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    println!();
    println!("{version}, {n} records, {KEYS} keys");
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
