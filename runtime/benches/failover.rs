//! The fleet's failover benchmark (docs/benchmarks.md, "Fleet failover"):
//! etcd, garage and a `nats-server -js` of its own on loopback, three
//! `wrun serve --cluster` nodes, and a job whose keyed state holds 1M keys
//! (generator → keyed sum in Rust Wasm → NATS, exactly-once, 1 s
//! checkpoints on garage). Each repetition `kill -9`s the node that runs
//! the job and measures, from the kill:
//! - **placed**: until a surviving node reports the job running there,
//!   restored from a checkpoint;
//! - **first output**: until the output stream grows again (the new
//!   owner's first committed checkpoint published its output: what a
//!   consumer waits for). The output count is read 500 ms after the
//!   kill, once what the dead owner had in flight has landed (a new owner
//!   cannot publish before a lease has passed).
//!
//! `cargo bench -p wrun-runtime --bench failover` (needs etcd, nats-server
//! and garage: scripts/setup; the `wrun` binary: WRUN, default
//! target/release/wrun). WRUN_BENCH_FAILOVER_KEYS (default 1,000,000),
//! WRUN_BENCH_FAILOVER_REPS (default 3), WRUN_BENCH_FAILOVER_TTL (the
//! lease, default 2 s: the fleet's). Prints JSON lines and a Markdown table.

use async_nats::jetstream::{self, stream};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wrun::api::Client;

#[path = "../tests/support/etcd.rs"]
mod etcd;
#[path = "../tests/support/garage.rs"]
mod garage;

struct Node {
    id: String,
    data: PathBuf,
    child: Option<Child>,
    url: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_node(wrun: &Path, n: &mut Node, cluster: &str, state: &str, ttl: u64) {
    std::fs::create_dir_all(&n.data).unwrap();
    let log = std::fs::File::create(n.data.with_extension("log")).unwrap();
    let _ = std::fs::remove_file(n.data.join("api.json"));
    let child = Command::new(wrun)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&n.data)
        .args([
            "--cluster",
            cluster,
            "--node-id",
            &n.id,
            "--state-url",
            state,
        ])
        .args(["--lease-ttl", &ttl.to_string()])
        .env("WRUN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let api = n.data.join("api.json");
    loop {
        if let Ok(b) = std::fs::read(&api)
            && let Ok(v) = serde_json::from_slice::<Value>(&b)
            && v["pid"].as_u64() == Some(u64::from(child.id()))
        {
            n.url = v["url"].as_str().unwrap().to_string();
            break;
        }
        assert!(Instant::now() < deadline, "node {} did not start", n.id);
        std::thread::sleep(Duration::from_millis(20));
    }
    n.child = Some(child);
}

fn client(n: &Node) -> Client {
    let token = std::fs::read_to_string(n.data.join("api-token")).unwrap();
    Client::new(&n.url, token.trim())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wrun = std::env::var("WRUN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/wrun"));
    if !wrun.exists() {
        eprintln!(
            "failover bench: the wrun binary {} is missing: `cargo build --release --bin wrun` (or set WRUN)",
            wrun.display()
        );
        std::process::exit(1);
    }
    let guest = PathBuf::from(wrun_test_guests::KEYED_SUM);
    let keys: u64 = env_or("WRUN_BENCH_FAILOVER_KEYS", 1_000_000);
    let reps: usize = env_or("WRUN_BENCH_FAILOVER_REPS", 3);
    let ttl: u64 = env_or("WRUN_BENCH_FAILOVER_TTL", 2);

    let etcd = etcd::Etcd::start();
    let garage = garage::Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nats = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start nats-server: run scripts/setup");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async { jetstream::new(async_nats::connect(&url).await.unwrap()) });
    rt.block_on(async {
        js.create_stream(stream::Config {
            name: "OUT".into(),
            subjects: vec!["out".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let out_len = || -> u64 {
        rt.block_on(async {
            js.get_stream("OUT")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
        })
    };

    let state = garage.url("failover");
    let cluster = etcd.cluster_url();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            id: format!("n{i}"),
            data: dir.path().join(format!("n{i}")),
            child: None,
            url: String::new(),
        })
        .collect();
    for n in &mut nodes {
        start_node(&wrun, n, &cluster, &state, ttl);
    }
    // Keys fill at the paced rate; the output is one record per event.
    let rate = 100_000u64;
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            "version = 1\nname = \"failover\"\n[checkpoint]\ninterval-ms = 1000\n\n\
             [[source]]\nname = \"gen\"\nkind = \"generator\"\ncount = 1000000000000\nkeys = {keys}\nevents-per-second = {rate}\n\n\
             [[operator]]\nname = \"sum\"\nuid = \"sum\"\ncomponent = {guest:?}\n\n\
             [[sink]]\nname = \"out\"\nkind = \"nats\"\nservers = [\"{url}\"]\nstream = \"OUT\"\nsubject = \"out\"\n\n\
             [[edge]]\nfrom = \"gen\"\nto = \"sum\"\npartition = \"hash\"\n\n[[edge]]\nfrom = \"sum\"\nto = \"out\"\n"
        ),
    )
    .unwrap();
    let st = Command::new(&wrun)
        .args(["deploy", "job.toml", "--data-dir"])
        .arg(&nodes[0].data)
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "deploy failed");
    let fill = Duration::from_secs(keys / rate + 3);
    eprintln!(
        "failover bench: {keys} keys at {rate} events/s: filling the state for {} s",
        fill.as_secs()
    );
    std::thread::sleep(fill);

    let mut rows = Vec::new();
    for rep in 0..reps {
        let live: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].child.is_some())
            .collect();
        let via = live[0];
        let s = client(&nodes[via]).get("/v1/jobs/failover").unwrap();
        let owner = s["node"].as_str().unwrap().to_string();
        let state_bytes = s["checkpoints"]
            .as_array()
            .and_then(|c| c.last())
            .and_then(|c| c["full-bytes"].as_u64())
            .unwrap_or(0);
        let oi = nodes.iter().position(|n| n.id == owner).unwrap();
        let other = live.iter().copied().find(|&i| i != oi).unwrap();
        // Let a checkpoint's output land, then kill.
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        if let Some(mut c) = nodes[oi].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // Publishes the dead owner had in flight land within moments; no
        // new owner can publish before a lease has passed.
        std::thread::sleep(Duration::from_millis(500));
        let before = out_len();
        let c = client(&nodes[other]);
        let mut placed = None;
        let first_output;
        loop {
            if placed.is_none()
                && let Ok(s) = c.get("/v1/jobs/failover")
                && s["node"].as_str().is_some_and(|n| n != owner)
                && s["state"] == "running"
                && s["restored-from"].as_u64().is_some()
            {
                placed = Some(killed.elapsed());
            }
            if out_len() > before {
                first_output = killed.elapsed();
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "no output 120 s after the kill"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let placed = placed.unwrap_or(first_output);
        println!(
            "{{\"bench\":\"failover\",\"rep\":{rep},\"keys\":{keys},\"lease-ttl-s\":{ttl},\"state-bytes\":{state_bytes},\"placed-ms\":{},\"first-output-ms\":{}}}",
            placed.as_millis(),
            first_output.as_millis()
        );
        rows.push((state_bytes, placed, first_output));
        // Bring the killed node back as a spare for the next repetition.
        start_node(&wrun, &mut nodes[oi], &cluster, &state, ttl);
        std::thread::sleep(Duration::from_secs(3));
    }
    println!(
        "\n| rep | state (last checkpoint) | lease TTL | kill → running elsewhere | kill → first output |"
    );
    println!("|---|---|---|---|---|");
    for (i, (bytes, placed, out)) in rows.iter().enumerate() {
        println!(
            "| {} | {:.1} MB | {ttl} s | {:.2} s | {:.2} s |",
            i + 1,
            *bytes as f64 / 1e6,
            placed.as_secs_f64(),
            out.as_secs_f64()
        );
    }
    for n in &mut nodes {
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let _ = nats.kill();
    let _ = nats.wait();
}
