//! A fleet of `wrun serve` nodes on etcd (docs/fleet.md): membership by
//! lease, one scheduler by election, job records, assignments and
//! checkpoint commits in etcd, state in the shared object store.
//!
//! Who decides what:
//! - every node keeps its key `nodes/<id>` alive under a lease; a node
//!   whose lease expires (killed, cut off) is gone;
//! - the elected scheduler assigns each job that should run and has no
//!   live owner to a live node that is not draining (`schedule`), writing
//!   `owners/<job>` with the next ownership epoch;
//! - each node runs exactly the jobs `owners/` gives it at the epoch given,
//!   and stops any it no longer owns (`node`);
//! - an owner reserves checkpoint IDs and commits checkpoints through etcd
//!   transactions that compare `owners/<job>` to what it was given
//!   (`fence`): an owner that lost the job can never commit again.
//!
//! The etcd layout, under `/wrun/`:
//!
//! ```text
//! nodes/<id>        NodeInfo, under the node's lease
//! drain/<id>        present while the node drains, under its lease
//! scheduler/…       the election (etcd's own keys)
//! jobs/<job>        the job record (catalog::JobRecord)
//! owners/<job>      Owner: which node runs it, at which epoch
//! checkpoints/<job> Committed: the committed checkpoint IDs, the next free one
//! waiting/<job>     why the scheduler cannot place the job now (text),
//!                   under the scheduler's lease
//! api-token         the API token every node serves
//! ```

mod etcd;
mod fence;
mod node;
mod schedule;

pub use etcd::{Etcd, EtcdError};
pub use fence::EtcdFence;
pub use node::{DeployError, Host, Node, NodeView, Recorded};
pub use schedule::{Assignment, Placement, plan};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The prefix of every key wrun writes to etcd.
pub const ROOT: &str = "/wrun/";

pub(crate) fn key(kind: &str, name: &str) -> String {
    format!("{ROOT}{kind}/{name}")
}

/// How a `wrun serve` joins a fleet.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd endpoints, `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// This node's ID, unique in the fleet.
    pub node_id: String,
    /// How long a node may be silent before it counts as gone.
    pub lease_ttl: Duration,
    /// What this node declares it offers, for placement.
    pub cores: u32,
    /// The memory, in MiB, this node offers jobs; `None`: no limit.
    pub memory_mb: Option<u64>,
}

/// The default lease: a lost node's jobs move this long after it died. Two
/// seconds keeps failover under five (docs/benchmarks.md, row 28) and is
/// the shortest lease a default etcd grants (1.5 × its 1 s election
/// timeout, rounded up); a node renews it every 2/3 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);

/// The etcd endpoints of `--cluster` (`http://HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

/// Parses `--cluster etcd://HOST:PORT[,HOST:PORT…]` into endpoints.
pub fn parse_cluster_url(s: &str) -> Result<Endpoints, String> {
    let rest = s.strip_prefix("etcd://").ok_or_else(|| {
        format!("--cluster {s:?}: expected etcd://HOST:PORT[,HOST:PORT...], the etcd cluster the fleet keeps its membership and job records in")
    })?;
    let mut out = Vec::new();
    for hp in rest.trim_end_matches('/').split(',') {
        let ok = hp
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(format!(
                "--cluster {s:?}: {hp:?} is not HOST:PORT (etcd's client port, 2379 by default)"
            ));
        }
        out.push(format!("http://{hp}"));
    }
    Ok(Endpoints(out))
}

/// A node as registered in `nodes/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeInfo {
    /// Its ID.
    pub id: String,
    /// Where its API answers (`http://HOST:PORT`).
    pub api: String,
    /// The cores it declares (placement weighs jobs by them).
    pub cores: u32,
    /// The memory it declares, in MiB (placement fits jobs in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// When it joined (ms since the Unix epoch).
    pub joined_at_ms: u64,
}

/// Who runs a job, in `owners/<job>`: `node` at `epoch`. Every change of
/// owner raises the epoch; `node: None` is no one (the job ended, or its
/// node released it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Owner {
    /// The node, if any.
    pub node: Option<String>,
    /// The ownership epoch.
    pub epoch: u64,
    /// With no node: the node that gave the job back (it could not start
    /// it, or drained); placement prefers any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
}

/// A job's checkpoints as committed in `checkpoints/<job>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Committed {
    /// The lowest checkpoint ID no owner has reserved.
    pub next: u64,
    /// The committed IDs, the newest [`COMMITTED_KEPT`] of them.
    pub ids: Vec<u64>,
}

/// How many committed IDs a job's record keeps (more than any
/// `retain` in use: older manifests are gone anyway).
pub const COMMITTED_KEPT: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            parse_cluster_url("etcd://127.0.0.1:2379,10.0.0.2:2379")
                .unwrap()
                .0,
            vec!["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        for bad in ["127.0.0.1:2379", "etcd://host", "etcd://:1", "etcd://h:x"] {
            let e = parse_cluster_url(bad).unwrap_err();
            assert!(e.contains("--cluster"), "{e}");
        }
    }
}
