//! A one-member etcd (Debian's etcd-server, which `scripts/setup`
//! installs) for a fleet test or benchmark: on free loopback ports, its
//! data in a temporary directory, stopped by PID when dropped. Shared by
//! the tests (`tests/all/fleet.rs`) and the benchmarks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running etcd.
pub struct Etcd {
    child: Child,
    /// Its client port.
    pub port: u16,
    /// The address it listens on.
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts it on loopback.
    pub fn start() -> Etcd {
        Etcd::start_on("127.0.0.1")
    }

    /// Starts it listening on `host` (an address of this machine).
    pub fn start_on(host: &str) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (port, peer) = (free_port(), free_port());
        let client = format!("http://{host}:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "wrun-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("wrun-test={peer_url}")])
            // A one-member cluster elects itself at once; a shorter
            // election timeout also allows leases of 1 s.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}): run scripts/setup, which installs Debian's etcd-server")
            });
        let e = Etcd {
            child,
            port,
            host: host.to_string(),
            _dir: dir,
        };
        e.wait_ready();
        e
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            let ok = rt.block_on(async {
                let mut c = etcd_client::Client::connect([self.endpoint()], None).await?;
                c.put("/wrun-test/ready", "1", None).await
            });
            if ok.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://HOST:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// What `wrun serve --cluster` takes.
    pub fn cluster_url(&self) -> String {
        format!("etcd://{}:{}", self.host, self.port)
    }

    /// The value of `key`, if any.
    #[allow(dead_code)]
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([self.endpoint()], None)
                .await
                .unwrap();
            let r = c.get(key, None).await.unwrap();
            r.kvs().first().map(|kv| kv.value().to_vec())
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
