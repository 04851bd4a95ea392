//! A one-node garage 2.5 (the S3-compatible object store `scripts/setup`
//! builds into `target/toolchains/garage`) for a test or a benchmark: on
//! free loopback ports, its metadata in SQLite in a temporary directory,
//! with a bucket `wrun` and a key for it written to a credentials file;
//! stopped by PID when dropped. Shared by the tests (`tests/all/s3.rs`)
//! and the benchmarks (`benches/support/storage.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wrun::blob::{S3Blobs, StateUrl};
use wrun::checkpoint::CheckpointStore;

const KEY_ID: &str = "GK0123456789abcdef01234567";
const KEY_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn garage_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("target/toolchains/garage/bin/garage");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup, which builds garage once per machine",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running (or stopped) garage.
pub struct Garage {
    child: Option<Child>,
    /// Its S3 API port.
    pub port: u16,
    /// The address its S3 API listens on.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Garage {
    /// Starts it on loopback and makes the bucket and the key.
    pub fn start() -> Garage {
        Garage::start_on("127.0.0.1")
    }

    /// Starts it with its S3 API on `host` (an address of this machine).
    pub fn start_on(host: &str) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (port, rpc) = (free_port(), free_port());
        let secret: String = (0..32u32)
            .map(|i| format!("{:02x}", (i * 37 + u32::from(rpc)) % 256))
            .collect();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"{host}:{port}\"\n\
                 root_domain = \".s3.garage\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut g = Garage {
            child: None,
            port,
            host: host.to_string(),
            dir,
        };
        g.start_again();
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", "wrun"]);
        g.cli(&["key", "import", "--yes", "-n", "wrun", KEY_ID, KEY_SECRET]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "wrun", "--key", "wrun",
        ]);
        std::fs::write(
            g.credentials(),
            format!(
                "[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {KEY_SECRET}\n"
            ),
        )
        .unwrap();
        g
    }

    /// Starts the server (again), on its ports and store, and waits until
    /// its S3 API accepts connections.
    pub fn start_again(&mut self) {
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start garage ({e}): run scripts/setup"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            assert!(Instant::now() < deadline, "garage did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the server (SIGKILL); its store stays for
    /// [`Garage::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// The state URL of `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://wrun/{prefix}?endpoint=http://{}:{}&region=garage&path-style=true&credentials-file={}",
            self.host,
            self.port,
            self.credentials().display()
        )
    }

    /// A checkpoint store on `prefix`.
    #[allow(dead_code)]
    pub fn store(&self, prefix: &str) -> CheckpointStore {
        CheckpointStore::open(&StateUrl::parse(&self.url(prefix)).unwrap()).unwrap()
    }

    /// The blobs under `prefix`.
    #[allow(dead_code)]
    pub fn blobs(&self, prefix: &str) -> S3Blobs {
        let StateUrl::S3(loc) = StateUrl::parse(&self.url(prefix)).unwrap() else {
            unreachable!()
        };
        S3Blobs::open(&loc).unwrap()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
