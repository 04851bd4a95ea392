//! Network namespaces for a fleet test: a bridge on this machine with an
//! address of its own (where the test starts etcd, garage and NATS), and
//! one namespace per node, joined to the bridge by a veth pair. Cutting a
//! node's veth cuts it off from everything (etcd, the object store, the
//! broker, the other nodes) while its process runs on, as a network
//! partition would; healing it brings it back.
//!
//! Needs root (`ip netns add`); [`Net::new`] answers `None` where the
//! machine does not allow it, and the caller falls back to loopback.
//! Everything is removed when dropped; names carry the test process's PID,
//! and leftovers of processes no longer alive are removed on the next
//! start. Interface names stay within Linux's 15 characters.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A bridge and the namespaces on it.
pub struct Net {
    /// The subnet's third byte: 10.231.`net`.0/24.
    net: u32,
    bridge: String,
    tag: String,
    spaces: Vec<String>,
}

impl Net {
    /// A fresh bridge, or `None` where network namespaces are unavailable
    /// (not root, no `ip`).
    pub fn new() -> Option<Net> {
        Net::clean_stale();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}x{}", k % 100);
        let used = ip_out(&["-o", "addr"]);
        let net = (0..200)
            .map(|d| 20 + (pid + k * 13 + d) % 200)
            .find(|n| !used.contains(&format!("10.231.{n}.")))?;
        let n = Net {
            net,
            bridge: format!("wrb{tag}"),
            tag,
            spaces: Vec::new(),
        };
        let host = format!("{}/24", n.host());
        let made = ip(&["link", "add", &n.bridge, "type", "bridge"])
            .and_then(|_| ip(&["addr", "add", &host, "dev", &n.bridge]))
            .and_then(|_| ip(&["link", "set", &n.bridge, "up"]));
        match made {
            Ok(()) => Some(n),
            Err(e) => {
                eprintln!("network namespaces unavailable ({e}): nodes share loopback");
                None
            }
        }
    }

    /// This machine's address on the bridge: the servers listen there.
    pub fn host(&self) -> String {
        format!("10.231.{}.1", self.net)
    }

    /// Another address of this machine on the bridge (10.231.n.`k`, `k` in
    /// 2..10): a server there can be blocked from one namespace alone.
    pub fn add_host(&self, k: u8) -> String {
        let addr = format!("10.231.{}.{k}", self.net);
        ip(&["addr", "add", &format!("{addr}/24"), "dev", &self.bridge]).unwrap();
        addr
    }

    /// Namespace `i` can no longer reach `addr` (an `unreachable` route:
    /// each new connection is refused at once, as when a router answers
    /// that the host is down; open ones are reset, so none hangs until its
    /// request times out), the rest of its network unchanged.
    pub fn block(&self, i: usize, addr: &str) {
        let ns = format!("wrun-{}-{i}", self.tag);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "unreachable",
            &format!("{addr}/32"),
        ])
        .unwrap();
        let st = Command::new("ip")
            .args(["netns", "exec", &ns, "ss", "-K", "dst", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "ss -K in {ns}: {st:?}");
    }

    /// Makes namespace `i` and returns its name and address.
    pub fn add(&mut self, i: usize) -> (String, String) {
        let name = format!("wrun-{}-{i}", self.tag);
        let addr = format!("10.231.{}.{}", self.net, 10 + i);
        let (h, n) = (self.veth(i), format!("wvn{}-{i}", self.tag));
        let cidr = format!("{addr}/24");
        ip(&["netns", "add", &name])
            .and_then(|_| ip(&["link", "add", &h, "type", "veth", "peer", "name", &n]))
            .and_then(|_| ip(&["link", "set", &h, "master", &self.bridge, "up"]))
            .and_then(|_| ip(&["link", "set", &n, "netns", &name]))
            .and_then(|_| ip(&["-n", &name, "addr", "add", &cidr, "dev", &n]))
            .and_then(|_| ip(&["-n", &name, "link", "set", &n, "up"]))
            .and_then(|_| ip(&["-n", &name, "link", "set", "lo", "up"]))
            .unwrap_or_else(|e| panic!("cannot make namespace {name}: {e}"));
        self.spaces.push(name.clone());
        (name, addr)
    }

    fn veth(&self, i: usize) -> String {
        format!("wvh{}-{i}", self.tag)
    }

    /// Cuts namespace `i` off the bridge: packets in either direction are
    /// dropped, connections hang as over a dead link.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]).unwrap();
    }

    /// Joins namespace `i` to the bridge again.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "up"]).unwrap();
    }

    /// Removes the bridges and namespaces of test processes that are gone.
    fn clean_stale() {
        // A tag is `<pid>x<n>`: its process is alive or its leftovers go.
        let alive = |tag: &str| {
            let pid = tag.split('x').next().unwrap_or("");
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        };
        for line in ip_out(&["netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(rest) = name.strip_prefix("wrun-")
                && let Some((tag, _)) = rest.split_once('-')
                && !alive(tag)
            {
                let _ = ip(&["netns", "del", name]);
            }
        }
        for line in ip_out(&["-o", "link", "show", "type", "bridge"]).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            if let Some(tag) = name.strip_prefix("wrb")
                && !alive(tag)
            {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for s in &self.spaces {
            let _ = ip(&["netns", "del", s]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
