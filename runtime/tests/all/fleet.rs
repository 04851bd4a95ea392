//! A fleet of `wrun serve` nodes, each a process of its own in a network
//! namespace of its own, on a real etcd (Debian's etcd-server) and a real
//! S3 server (garage), with jobs reading and writing NATS JetStream
//! exactly-once (docs/fleet.md). The servers listen on a bridge that joins
//! the namespaces (`support/netns.rs`); where namespaces are unavailable
//! (not root) everything shares loopback. All started by the tests on free
//! ports and stopped by PID:
//! - `kill -9` of the node that runs a job: the job resumes on another
//!   node from its last committed checkpoint, the output exactly once;
//! - `kill -9` of the scheduler: another node takes over and the fleet
//!   keeps placing deploys;
//! - the owner's network cut (its veth down; SIGSTOP where there are no
//!   namespaces): the job moves; when the link comes back the old owner
//!   has given the job up and rejoins, and it committed nothing, proven by
//!   the output, etcd's committed IDs and the manifests in the store;
//! - the owner paused (SIGSTOP, as a long stall would): the job moves, and
//!   when the old owner wakes mid-step its fence refuses every commit,
//!   proven by its log, by etcd's committed checkpoints and by the output;
//! - a drain moves a job with a savepoint; a node that does not run the
//!   job streams its events (from the owner) and rescales it; a savepoint
//!   taken on one node resumes through another.

use crate::common::*;
use crate::nats;
use crate::serve::wait_job;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wrun::api::Client;

#[path = "../support/etcd.rs"]
mod etcd;
#[path = "../support/netns.rs"]
mod netns;
use crate::nats::NatsServer;
use crate::s3::Garage;
use etcd::Etcd;
use netns::Net;

/// One node: a `wrun serve --cluster` process.
struct Node {
    id: String,
    data: PathBuf,
    child: Option<Child>,
    url: String,
    /// Its network namespace and address there, if namespaced.
    ns: Option<(String, String)>,
    /// Arguments of its own (`--memory-mb`).
    args: Vec<String>,
}

/// etcd, garage, NATS and the nodes (declared in the order they stop,
/// after the nodes: the bridge last).
struct Fleet {
    etcd: Etcd,
    garage: Garage,
    _nats: NatsServer,
    /// The NATS server's URL, with the streams IN and OUT.
    nats: String,
    state: String,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    net: Option<Net>,
}

/// The lease the tests' nodes keep: a lost node's jobs move after it.
const LEASE_TTL_S: &str = "2";

impl Fleet {
    fn start(n: usize) -> Fleet {
        Fleet::start_with(vec![Vec::new(); n])
    }

    /// A fleet whose node `i` gets the extra arguments `args[i]`.
    fn start_with(args: Vec<Vec<&str>>) -> Fleet {
        let mut net = Net::new();
        let host = net.as_ref().map_or("127.0.0.1".into(), Net::host);
        let etcd = Etcd::start_on(&host);
        // The store on an address of its own, which a test can block
        // from one node.
        let store_host = net.as_ref().map_or(host.clone(), |n| n.add_host(2));
        let garage = Garage::start_on(&store_host);
        let state = garage.url("fleet");
        let (nats_server, nats) = nats::with_streams_on(NatsServer::start_on(&host, &[]));
        let dir = tempfile::tempdir().unwrap();
        let n = args.len();
        let nodes = args
            .into_iter()
            .enumerate()
            .map(|(i, args)| {
                let id = format!("n{i}");
                Node {
                    data: dir.path().join(&id),
                    id,
                    child: None,
                    url: String::new(),
                    ns: net.as_mut().map(|net| net.add(i)),
                    args: args.into_iter().map(String::from).collect(),
                }
            })
            .collect();
        let mut f = Fleet {
            etcd,
            garage,
            _nats: nats_server,
            nats,
            state,
            nodes,
            dir,
            net,
        };
        for i in 0..n {
            f.spawn(i);
        }
        f
    }

    /// Adds a node with extra arguments `args`, started; returns its index.
    fn add(&mut self, args: &[&str]) -> usize {
        let i = self.nodes.len();
        let id = format!("n{i}");
        self.nodes.push(Node {
            data: self.dir.path().join(&id),
            id,
            child: None,
            url: String::new(),
            ns: self.net.as_mut().map(|net| net.add(i)),
            args: args.iter().map(|a| a.to_string()).collect(),
        });
        self.spawn(i);
        i
    }

    /// Starts node `i` (again).
    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.data.with_extension("log"))
            .unwrap();
        let (mut cmd, listen) = match &n.ns {
            Some((ns, addr)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(wrun_bin());
                (c, format!("{addr}:0"))
            }
            None => (Command::new(wrun_bin()), "127.0.0.1:0".to_string()),
        };
        let mut child = cmd
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(&n.data)
            .args(["--cluster", &self.etcd.cluster_url()])
            .args(["--node-id", &n.id])
            .args(["--state-url", &self.state])
            .args(["--lease-ttl", LEASE_TTL_S, "--cores", "2"])
            .args(&n.args)
            .env("WRUN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        n.url = wait_for_api(&mut child, &n.data);
        n.child = Some(child);
    }

    fn d(&self, i: usize) -> &str {
        self.nodes[i].data.to_str().unwrap()
    }

    fn client(&self, i: usize) -> Client {
        let token = std::fs::read_to_string(self.nodes[i].data.join("api-token")).unwrap();
        Client::new(&self.nodes[i].url, token.trim())
    }

    fn index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].data.with_extension("log")).unwrap_or_default()
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].child.as_ref().unwrap().id();
        let st = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Cuts node `i` off the network (its veth down), or pauses it where
    /// there are no namespaces: either way it stops renewing its lease.
    fn cut(&self, i: usize) {
        match &self.net {
            Some(net) => net.cut(i),
            None => self.signal(i, "-STOP"),
        }
    }

    /// Undoes [`Fleet::cut`].
    fn heal(&self, i: usize) {
        match &self.net {
            Some(net) => net.heal(i),
            None => self.signal(i, "-CONT"),
        }
    }

    /// The nodes as `GET /v1/nodes` on node `via` lists them.
    fn node_list(&self, via: usize) -> Vec<Value> {
        self.client(via).get("/v1/nodes").unwrap()["nodes"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until node `via` sees a scheduler other than `not`.
    fn scheduler(&self, via: usize, not: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self
                .node_list(via)
                .into_iter()
                .find(|n| n["scheduler"] == true)
                .and_then(|n| n["id"].as_str().map(String::from));
            if let Some(s) = s
                && Some(s.as_str()) != not
            {
                return s;
            }
            assert!(Instant::now() < deadline, "no scheduler elected");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The committed checkpoint IDs of `job` in etcd.
    fn committed(&self, job: &str) -> Vec<u64> {
        let v: Value = self
            .etcd
            .get(&format!("/wrun/checkpoints/{job}"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(Value::Null);
        v["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = &mut n.child {
                // A paused node must be woken to die.
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(n.data.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- node {} (last lines) ---", n.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn wait_output(url: &str, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while nats::stream_len(url, "OUT") < n as u64 {
        assert!(
            Instant::now() < deadline,
            "{what}: the output did not reach {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first `job` event of `GET /v1/events?job=J` on node `i`.
fn first_job_event(f: &Fleet, i: usize, job: &str) -> Value {
    use std::io::BufRead;
    let token = std::fs::read_to_string(f.nodes[i].data.join("api-token")).unwrap();
    let mut r = ureq::get(format!("{}/v1/events?job={job}", f.nodes[i].url))
        .header("authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    let mut lines = std::io::BufReader::new(r.body_mut().as_reader()).lines();
    while let Some(Ok(l)) = lines.next() {
        if l == "event: job" {
            let data = lines.next().unwrap().unwrap();
            return serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        }
        assert!(!l.starts_with("event: error"), "{l}");
    }
    panic!("the event stream of node {i} ended without a job event");
}

fn write_job(dir: &Path, url: &str) {
    std::fs::write(dir.join("job.toml"), nats::job(url, 1, 2, &[], false)).unwrap();
}

/// Deploys `job.toml` through node `via` and returns the node it runs on,
/// once it has a checkpoint there.
fn deploy(f: &Fleet, via: usize, extra: &[&str]) -> String {
    let mut args = vec!["deploy", "job.toml", "--data-dir", f.d(via)];
    args.extend_from_slice(extra);
    let out = ok(f.dir.path(), &args);
    assert!(out.contains("on node n"), "{out}");
    let s = wait_job(&f.client(via), "test", "checkpointed on a node", |s| {
        s["last-checkpoint"].as_u64().is_some() && s["node"].is_string() && s["state"] == "running"
    });
    s["node"].as_str().unwrap().to_string()
}

#[test]
fn kill_9_of_the_owner_moves_the_job_to_another_node_exactly_once() {
    let mut f = Fleet::start(3);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(3000, &["a"]);
    let (first, rest) = msgs.split_at(2000);
    nats::publish(&url, first);
    write_job(f.dir.path(), &url);
    let owner = deploy(&f, 0, &[]);
    wait_output(&url, 500, "before the kill");
    let i = f.index(&owner);
    f.kill9(i);
    let killed = Instant::now();
    nats::publish(&url, rest);
    let other = (i + 1) % 3;
    let s = wait_job(&f.client(other), "test", "resumed on another node", |s| {
        s["node"].as_str().is_some_and(|n| n != owner)
            && s["state"] == "running"
            && s["restored-from"].as_u64().is_some()
    });
    eprintln!(
        "the job moved from {owner} to {} in {} ms",
        s["node"],
        killed.elapsed().as_millis()
    );
    wait_output(&url, golden.len(), "after the move");
    // Any node lists the fleet's jobs and where they run, and its nodes.
    let list = ok(f.dir.path(), &["job", "list", "--data-dir", f.d(other)]);
    let line = list.lines().find(|l| l.starts_with("test ")).unwrap();
    assert!(
        line.contains("running") && line.contains(s["node"].as_str().unwrap()),
        "{list}"
    );
    let nodes = ok(f.dir.path(), &["node", "list", "--data-dir", f.d(other)]);
    assert_eq!(
        nodes.lines().count(),
        3,
        "a header and the two live nodes:\n{nodes}"
    );
    assert!(!nodes.contains(&format!("\n{owner} ")), "{nodes}");
    ok(
        f.dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", f.d(other)],
    );
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
}

#[test]
fn the_scheduler_killed_another_takes_over_and_deploys_go_on() {
    let mut f = Fleet::start(3);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(1000, &["a"]);
    nats::publish(&url, &msgs);
    let first = f.scheduler(0, None);
    let i = f.index(&first);
    f.kill9(i);
    let via = (i + 1) % 3;
    let next = f.scheduler(via, Some(&first));
    assert_ne!(next, first);
    // The fleet still places a new job, on a live node.
    write_job(f.dir.path(), &url);
    let on = deploy(&f, via, &[]);
    assert_ne!(on, first);
    wait_output(&url, golden.len(), "on the new scheduler's fleet");
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
    // A node restarted with its old ID joins again.
    f.spawn(i);
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.node_list(via).len() < 3 {
        assert!(Instant::now() < deadline, "{first} did not join again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The owner's network cut while its process runs on: it cannot renew its
/// lease, reach the store or the broker; the job moves. When the link
/// comes back, the old owner has stopped the job (it lost its lease) and
/// rejoins as a node without it; its in-flight requests may land late,
/// but nothing it wrote is committed: the output is exact, etcd's
/// committed IDs are the new owner's, and every manifest in the store
/// above the last ID committed before the cut is committed.
#[test]
fn an_owner_whose_network_is_cut_loses_the_job_and_commits_nothing_when_it_comes_back() {
    let f = Fleet::start(3);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(3000, &["a"]);
    let (first, rest) = msgs.split_at(1500);
    nats::publish(&url, first);
    write_job(f.dir.path(), &url);
    let owner = deploy(&f, 0, &[]);
    wait_output(&url, 300, "before the cut");
    let i = f.index(&owner);
    let other = (i + 1) % 3;
    f.cut(i);
    let cut = Instant::now();
    nats::publish(&url, rest);
    let s = wait_job(&f.client(other), "test", "moved", |s| {
        s["node"].as_str().is_some_and(|n| n != owner)
            && s["state"] == "running"
            && s["restored-from"].as_u64().is_some()
    });
    eprintln!(
        "the job moved from {owner} (cut off) to {} in {} ms",
        s["node"],
        cut.elapsed().as_millis()
    );
    let new_owner = s["node"].as_str().unwrap().to_string();
    wait_output(&url, golden.len(), "on the new owner");
    let before = f.committed("test");
    f.heal(i);
    // Back on the network, the old owner finds its lease gone: it has
    // stopped the job and joins again as a node that runs nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(f.log(i).contains("lost the fleet's lease")
        && f.log(i).contains("joined the fleet again"))
    {
        assert!(
            Instant::now() < deadline,
            "the old owner never rejoined:\n{}",
            f.log(i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while f.node_list(other).len() < 3 {
        assert!(Instant::now() < deadline, "{owner} is not listed again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = f.client(i).get("/v1/jobs/test").unwrap();
    assert_eq!(s["node"].as_str(), Some(new_owner.as_str()), "{s}");
    // Stop through the rejoined node (forwarded to the owner): after it,
    // every manifest in the store is a commit of the new owner's or one
    // from before the cut.
    ok(
        f.dir.path(),
        &["stop", "test", "--savepoint", "--data-dir", f.d(i)],
    );
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
    let committed = f.committed("test");
    let last_before = *before.iter().max().unwrap();
    assert!(
        committed
            .iter()
            .all(|id| before.contains(id) || *id > last_before),
        "{before:?} then {committed:?}"
    );
    let stored = f.garage.store("fleet").list_checkpoints("test").unwrap();
    let uncommitted: Vec<_> = stored
        .iter()
        .map(|id| id.0)
        .filter(|id| *id > last_before && !committed.contains(id))
        .collect();
    assert!(
        uncommitted.is_empty(),
        "manifests no one committed: {uncommitted:?} (committed {committed:?})"
    );
}

/// The owner paused (SIGSTOP) as a stalled process would be: etcd, the
/// store and the other nodes see what a cut network shows them (no
/// keep-alive, no answer), and it resumes mid-step, the case fencing
/// exists for: a process that goes on writing after it lost its job.
#[test]
fn an_owner_paused_loses_the_job_and_commits_nothing_when_it_wakes() {
    let f = Fleet::start(2);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(3000, &["a"]);
    let (first, rest) = msgs.split_at(1500);
    nats::publish(&url, first);
    write_job(f.dir.path(), &url);
    let owner = deploy(&f, 0, &[]);
    wait_output(&url, 300, "before the pause");
    let i = f.index(&owner);
    let other = 1 - i;
    f.signal(i, "-STOP");
    nats::publish(&url, rest);
    wait_job(&f.client(other), "test", "moved", |s| {
        s["node"].as_str().is_some_and(|n| n != owner)
            && s["state"] == "running"
            && s["restored-from"].as_u64().is_some()
    });
    wait_output(&url, golden.len(), "on the new owner");
    let before = f.committed("test");
    f.signal(i, "-CONT");
    // The old owner wakes mid-job: its next reservation or commit meets
    // the new epoch, and it stops the job without writing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f.log(i).contains("has another owner than this node")
        && !f.log(i).contains("another node owns the job now")
    {
        assert!(
            Instant::now() < deadline,
            "the old owner never noticed:\n{}",
            f.log(i)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let new_owner_only = f.committed("test");
    assert!(
        new_owner_only
            .iter()
            .all(|id| before.contains(id) || *id > *before.iter().max().unwrap()),
        "{before:?} then {new_owner_only:?}"
    );
    // Whatever the old owner tried, it committed nothing: the log names
    // each refused ID, none of which is committed.
    for line in f.log(i).lines().filter(|l| {
        l.contains("cannot commit checkpoint") || l.contains("cannot reserve checkpoint")
    }) {
        let id: u64 = line
            .split("checkpoint ")
            .last()
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(!f.committed("test").contains(&id), "{line}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
    let s = f.client(other).get("/v1/jobs/test").unwrap();
    assert_eq!(s["node"].as_str(), Some(f.nodes[other].id.as_str()), "{s}");
}

/// A node that cannot reach the object store (a route to it blocked in its
/// namespace; etcd and NATS still reachable) cannot start the job it is
/// given: it gives the job back, and the scheduler places it on another
/// node, where it runs exactly once. Needs network namespaces (root).
#[test]
fn a_node_that_cannot_reach_the_store_gives_its_job_back_and_another_runs_it() {
    let f = Fleet::start(2);
    let Some(net) = &f.net else {
        eprintln!("skipped: needs network namespaces (run as root)");
        return;
    };
    net.block(0, &f.garage.host);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(500, &["a"]);
    nats::publish(&url, &msgs);
    write_job(f.dir.path(), &url);
    // Both nodes are idle: placement picks n0 first (the lower ID).
    let on = deploy(&f, 1, &[]);
    assert_eq!(on, "n1", "the job runs where the store is reachable");
    let log = f.log(0);
    assert!(
        log.contains("cannot start the job here") && log.contains("job=test"),
        "n0 was given the job first and gave it back:\n{log}"
    );
    wait_output(&url, golden.len(), "on n1");
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
}

/// A node stopped cleanly (SIGTERM) revokes its lease on the way out: it is
/// gone from etcd the moment it exits (not a TTL later), and its job moves
/// and resumes exactly once.
#[test]
fn a_node_stopped_cleanly_leaves_at_once_and_its_job_moves() {
    let mut f = Fleet::start(2);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(2000, &["a"]);
    let (first, rest) = msgs.split_at(1000);
    nats::publish(&url, first);
    write_job(f.dir.path(), &url);
    let owner = deploy(&f, 0, &[]);
    wait_output(&url, 200, "before the stop");
    let i = f.index(&owner);
    f.signal(i, "-TERM");
    let mut child = f.nodes[i].child.take().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the node did not stop within 60 s:\n{}", f.log(i)));
    assert!(status.success(), "a clean stop exits 0: {status:?}");
    assert_eq!(
        f.etcd.get(&format!("/wrun/nodes/{owner}")),
        None,
        "the node's key went with its revoked lease, before any TTL"
    );
    assert!(f.log(i).contains("left the fleet"), "{}", f.log(i));
    nats::publish(&url, rest);
    let other = 1 - i;
    wait_job(&f.client(other), "test", "moved after the stop", |s| {
        s["node"].as_str().is_some_and(|n| n != owner) && s["state"] == "running"
    });
    wait_output(&url, golden.len(), "after the move");
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
}

/// Nodes that declare too little memory for a job leave it waiting, with
/// the reason in its status; a node with room that joins takes it.
#[test]
fn a_job_waits_for_a_node_with_the_memory_it_needs() {
    let mut f = Fleet::start_with(vec![vec!["--memory-mb", "300"]; 2]);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(500, &["a"]);
    nats::publish(&url, &msgs);
    // Two counter subtasks of 256 MiB each: 512 MiB.
    write_job(f.dir.path(), &url);
    let out = ok(f.dir.path(), &["deploy", "job.toml", "--data-dir", f.d(0)]);
    assert!(out.contains("deployed"), "{out}");
    let s = wait_job(&f.client(1), "test", "waiting", |s| {
        s["waiting"].is_string()
    });
    let why = s["waiting"].as_str().unwrap();
    assert!(
        why.contains("needs 512 MiB") && why.contains("free is 300 MiB, on n0"),
        "{why}"
    );
    assert_eq!(s["state"], "starting", "{s}");
    let status = ok(
        f.dir.path(),
        &["job", "status", "test", "--data-dir", f.d(0)],
    );
    assert!(
        status.contains("waiting     for a node: needs 512 MiB"),
        "{status}"
    );
    let list = ok(f.dir.path(), &["node", "list", "--data-dir", f.d(0)]);
    assert!(list.contains("300 MiB"), "{list}");
    // A roomy node joins: the job goes there, and the reason is gone.
    let big = f.add(&["--memory-mb", "1024"]);
    let s = wait_job(&f.client(0), "test", "placed on the new node", |s| {
        s["node"] == f.nodes[big].id.as_str() && s["state"] == "running"
    });
    assert!(s.get("waiting").is_none(), "{s}");
    wait_output(&url, golden.len(), "on the roomy node");
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
}

#[test]
fn a_drain_moves_the_job_with_a_savepoint_and_a_savepoint_resumes_through_another_node() {
    let f = Fleet::start(3);
    let url = f.nats.clone();
    let (msgs, golden) = nats::input(3000, &["a"]);
    let (a, rest) = msgs.split_at(1000);
    let (b, c) = rest.split_at(1000);
    nats::publish(&url, a);
    // The counter takes the job's default parallelism (1), so that a
    // rescale changes it.
    std::fs::write(
        f.dir.path().join("job.toml"),
        nats::job(&url, 1, 2, &[], false).replace("parallelism = 2\n", ""),
    )
    .unwrap();
    let owner = deploy(&f, 0, &[]);
    wait_output(&url, 300, "before the drain");
    let out = ok(
        f.dir.path(),
        &["node", "drain", &owner, "--data-dir", f.d(0)],
    );
    assert!(out.contains("runs no job now"), "{out}");
    nats::publish(&url, b);
    let s = wait_job(&f.client(0), "test", "moved off the drained node", |s| {
        s["node"].as_str().is_some_and(|n| n != owner) && s["state"] == "running"
    });
    let moved_to = s["node"].as_str().unwrap().to_string();
    // A node that does not run the job streams its events from the node
    // that does (the dashboard's job page on any node).
    let other = (0..3).find(|&k| f.nodes[k].id != moved_to).unwrap();
    let ev = first_job_event(&f, other, "test");
    assert_eq!(ev["status"]["node"], moved_to.as_str(), "{ev}");
    assert_eq!(
        ev["metrics"]["vertices"].as_array().unwrap().len(),
        3,
        "{ev}"
    );
    // A request forwarded once is never forwarded again: with the header,
    // a node that never ran the job answers for itself.
    let never = (0..3)
        .find(|&k| f.nodes[k].id != moved_to && f.nodes[k].id != owner)
        .unwrap();
    let token = std::fs::read_to_string(f.nodes[never].data.join("api-token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let graph = |forwarded: bool| {
        let mut r = agent
            .get(format!("{}/v1/jobs/test/graph", f.nodes[never].url))
            .header("authorization", &format!("Bearer {}", token.trim()));
        if forwarded {
            r = r.header("x-wrun-forwarded", "1");
        }
        r.call().unwrap().status().as_u16()
    };
    assert_eq!(graph(false), 200, "forwarded to the owner");
    assert_eq!(graph(true), 404, "answered here, not forwarded again");
    // Rescaled through that node: the owner stops it at a savepoint and
    // deploys it again; the fleet places the wider job.
    let out = ok(
        f.dir.path(),
        &[
            "job",
            "rescale",
            "test",
            "-p",
            "3",
            "--data-dir",
            f.d(other),
        ],
    );
    assert!(
        out.contains("deployed again from it at parallelism 3"),
        "{out}"
    );
    let s = wait_job(&f.client(other), "test", "running again", |s| {
        s["state"] == "running" && s["node"].is_string()
    });
    let g = f.client(other).get("/v1/jobs/test/graph").unwrap();
    assert_eq!(g["vertices"][1]["parallelism"], 3, "{g}");
    // The job list through a node that does not run it: the owner's status
    // (with its start) and its summary (the dashboard's jobs page).
    let runs = s["node"].as_str().unwrap().to_string();
    let elsewhere = (0..3).find(|&k| f.nodes[k].id != runs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = f.client(elsewhere).get("/v1/jobs").unwrap();
        let job = l["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "test")
            .cloned();
        if job.as_ref().is_some_and(|j| j["started-at-ms"].is_u64())
            && l["summaries"]["test"]["parallelism"] == 3
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no summary of the job through another node: {l}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sps = ok(f.dir.path(), &["savepoint", "list", "--data-dir", f.d(0)]);
    assert!(
        sps.contains("test"),
        "the drain's savepoint is listed: {sps}"
    );
    assert!(
        f.node_list(0)
            .iter()
            .any(|n| n["id"] == owner.as_str() && n["draining"] == true),
        "the drained node stays in the fleet, draining"
    );
    // Stop at a named savepoint through one node, deploy from it through
    // another: the fleet shares savepoints.
    let via = f.index(&owner);
    ok(
        f.dir.path(),
        &[
            "stop",
            "test",
            "--savepoint",
            "--name",
            "moved",
            "--data-dir",
            f.d(via),
        ],
    );
    nats::publish(&url, c);
    let third = (0..3)
        .find(|&k| k != via && f.nodes[k].id != moved_to)
        .unwrap();
    let on = deploy(&f, third, &["--from-savepoint", "moved"]);
    assert_ne!(on, owner, "a draining node takes no job");
    wait_output(&url, golden.len(), "after the savepoint");
    assert_eq!(nats::sorted_stream(&url, "OUT"), golden);
}

#[test]
fn a_fleet_refuses_what_it_cannot_run_with_a_clear_error() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let cluster = etcd.cluster_url();
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--cluster",
            &cluster,
            "--node-id",
            "a",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--cluster needs --state-url"), "{err}");
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--cluster",
            "127.0.0.1:2379",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("etcd://HOST:PORT"), "{err}");
    let state = dir.path().join("state");
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--cluster",
            &cluster,
            "--node-id",
            "a/b",
            "--state-url",
            state.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--node-id"), "{err}");
    // etcd not there: a clear error, not a hang.
    let port = free_port();
    let (code, _, err) = wrun(
        dir.path(),
        &[
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--cluster",
            &format!("etcd://127.0.0.1:{port}"),
            "--node-id",
            "a",
            "--state-url",
            state.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("is etcd running there?"), "{err}");
    // A plain serve has no nodes.
    let plain = crate::serve::Serve::start(&dir.path().join("plain"), &[]);
    let e = plain.client().get("/v1/nodes").unwrap_err().to_string();
    assert!(e.contains("not in a fleet"), "{e}");
}

/// The fence itself on a real etcd, step by step: an owner reserves and
/// commits while its owner record stands; once the scheduler has written
/// the next epoch, its every reservation and commit is refused as fenced
/// and the committed state is what the new owner left.
#[test]
fn the_fence_refuses_an_owner_whose_epoch_has_passed() {
    use wrun::exec::{Fence, FenceError};
    use wrun::fleet::{EtcdFence, Owner};
    let e = Etcd::start();
    let etcd = std::sync::Arc::new(
        wrun::fleet::Etcd::connect(&[e.endpoint()], Duration::from_secs(5)).unwrap(),
    );
    let put = |key: &str, value: Vec<u8>| {
        let mut c = etcd.client();
        let key = key.to_string();
        etcd.block(async move { c.put(key, value, None).await })
            .unwrap();
    };
    let owner = |node: &str, epoch| {
        serde_json::to_vec(&Owner {
            node: Some(node.into()),
            epoch,
            left: None,
        })
        .unwrap()
    };
    put("/wrun/owners/j", owner("a", 1));
    let a = EtcdFence::new(etcd.clone(), "j", owner("a", 1), 1);
    assert_eq!(a.committed().unwrap().1, 0);
    a.reserve(5).unwrap();
    a.commit(5).unwrap();
    a.reserve(6).unwrap();
    let (ids, next) = a.committed().unwrap();
    assert_eq!((ids.into_iter().collect::<Vec<_>>(), next), (vec![5], 7));
    // The scheduler moves the job to b.
    put("/wrun/owners/j", owner("b", 2));
    let b = EtcdFence::new(etcd.clone(), "j", owner("b", 2), 2);
    let (_, next) = b.committed().unwrap();
    assert_eq!(next, 7, "b never uses an ID a reserved");
    assert!(matches!(a.commit(6), Err(FenceError::Fenced(_))));
    assert!(matches!(a.reserve(7), Err(FenceError::Fenced(_))));
    b.reserve(7).unwrap();
    b.commit(7).unwrap();
    let (ids, next) = b.committed().unwrap();
    assert_eq!((ids.into_iter().collect::<Vec<_>>(), next), (vec![5, 7], 8));
    // etcd gone: the fence cannot answer, which is not "fenced".
    drop(e);
    assert!(matches!(b.reserve(8), Err(FenceError::Unavailable(_))));
}
