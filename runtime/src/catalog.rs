//! Job records: what `wrun serve` knows of each deployed job (its
//! manifest, pinned modules, where it started from, what it should be
//! doing), behind a small [`Catalog`] trait. A single node keeps them as
//! files in its data directory ([`FileCatalog`]); a fleet keeps them in
//! etcd (`fleet::EtcdCatalog`), where every node reads the same ones.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a deployed job should be doing, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Desired {
    /// Run it (and resume it after a restart of `wrun serve`, or on
    /// another node when its node is lost).
    Running,
    /// It stopped at a savepoint.
    Stopped,
    /// Its input ended.
    Finished,
    /// A user cancelled it.
    Cancelled,
    /// It failed for good.
    Failed,
}

/// A deployed job, as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobRecord {
    /// The job.
    pub name: String,
    /// The manifest text as deployed.
    pub manifest: String,
    /// Where it came from (for messages).
    pub manifest_path: String,
    /// Relative paths in the manifest resolve against this.
    pub base_dir: PathBuf,
    /// The default parallelism given at deploy.
    pub parallelism: Option<u32>,
    /// The most linear memory its Wasm instances may take, in MiB
    /// (`limits.memory-mb` × operator subtasks): what placement fits.
    #[serde(default)]
    pub memory_mb: u64,
    /// Every operator's module, pinned by digest (`blake3:<hex>`) at deploy.
    pub modules: BTreeMap<String, String>,
    /// The savepoint it was deployed from (its ID).
    pub from_savepoint: Option<String>,
    /// `--allow-non-restored-state` at deploy.
    pub allow_non_restored_state: bool,
    /// Checkpoints of this job up to this ID predate the deployment.
    pub checkpoint_floor: u64,
    /// When it was deployed (ms since the Unix epoch).
    pub deployed_at_ms: u64,
    /// What it should be doing.
    pub desired: Desired,
    /// Why it failed.
    pub error: Option<String>,
    /// The savepoint it stopped at.
    pub stopped_at: Option<String>,
}

/// Where job records are kept.
pub trait Catalog: Send + Sync {
    /// Every readable record, by name. (An unreadable one is logged and
    /// left out: that job is not resumed until it is fixed.)
    fn records(&self) -> anyhow::Result<Vec<JobRecord>>;
    /// Writes `r`, replacing the record of that name.
    fn save(&self, r: &JobRecord) -> anyhow::Result<()>;
}

/// Records as files `<data dir>/jobs/<name>.json`.
#[derive(Debug)]
pub struct FileCatalog {
    dir: PathBuf,
}

impl FileCatalog {
    /// The records in `dir`.
    pub fn new(dir: PathBuf) -> FileCatalog {
        FileCatalog { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }
}

impl Catalog for FileCatalog {
    fn records(&self) -> anyhow::Result<Vec<JobRecord>> {
        let dir = &self.dir;
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => anyhow::bail!("cannot read {}: {e}", dir.display()),
        };
        for e in entries {
            let path = e?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().to_string());
            if !name.is_some_and(|n| n.ends_with(".json") && !n.starts_with('.')) {
                continue;
            }
            let text = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().to_string());
            match serde_json::from_slice::<JobRecord>(&text) {
                Ok(r) if Some(&r.name) == stem.as_ref() => out.push(r),
                Ok(r) => tracing::error!(
                    "job record {} names job {:?}, not the one its file name says; that job is not resumed: fix or remove the file",
                    path.display(),
                    r.name
                ),
                Err(e) => tracing::error!(
                    "job record {} is unreadable ({e}); that job is not resumed: fix or remove the file",
                    path.display()
                ),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn save(&self, r: &JobRecord) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(r)?;
        crate::module::write_atomic(&self.path(&r.name), &bytes)?;
        Ok(())
    }
}
