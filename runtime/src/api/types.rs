//! The request and response bodies of the API, shared by the server and
//! [`super::Client`], so both sides agree on one shape (docs/openapi.yaml
//! describes the same).

use crate::checkpoint::Savepoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person to act on.
    pub error: String,
    /// Its causes, outermost first; empty when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Info {
    /// wrun's version.
    pub version: String,
    /// `embedded` (`wrun run`) or `serve`.
    pub mode: String,
    /// The WIT world operators must target.
    pub wit: String,
    /// Largest module upload, when there is a module store.
    pub max_module_bytes: Option<usize>,
    /// The serving process.
    pub pid: u32,
}

/// Where an asynchronous request is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RequestStatus {
    /// The request ID.
    pub id: String,
    /// The job.
    pub job: String,
    /// `checkpoint`, `savepoint` or `stop`.
    pub kind: String,
    /// `in-progress`, `completed` or `failed`.
    pub status: String,
    /// The checkpoint taken, once completed.
    pub checkpoint: Option<u64>,
    /// The savepoint taken, once completed.
    pub savepoint: Option<SavepointSummary>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A savepoint as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointSummary {
    /// Its ID.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// The job.
    pub job: String,
    /// The checkpoint it pins.
    pub checkpoint: u64,
    /// `memory` or `filesystem`.
    pub backend: String,
    /// When it completed (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether the job stopped at it.
    pub stopped: bool,
    /// Bytes of state it references.
    pub bytes: u64,
    /// Where it is stored.
    pub location: String,
}

impl SavepointSummary {
    /// The summary of `sp`, stored at `location`.
    pub fn of(sp: &Savepoint, location: String) -> SavepointSummary {
        SavepointSummary {
            id: sp.id.clone(),
            name: sp.name.clone(),
            job: sp.job().to_string(),
            checkpoint: sp.checkpoint.id.0,
            backend: sp.backend.to_string(),
            created_at_ms: sp.created_at_ms,
            stopped: sp.stopped,
            bytes: sp.checkpoint.full_bytes,
            location,
        }
    }
}

/// The body of `POST /v1/jobs`: a manifest to deploy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeployRequest {
    /// The job.toml text.
    pub manifest: String,
    /// Where it came from, for error messages.
    #[serde(default)]
    pub manifest_path: Option<String>,
    /// The directory relative paths in the manifest (file sources and
    /// sinks) are resolved against; absolute.
    #[serde(default)]
    pub base_dir: Option<PathBuf>,
    /// Default parallelism of operators that do not set their own.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Digests (`blake3:<hex>`) of operators whose manifest `component` is
    /// a path, by operator name: the CLI uploads the files first.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// Start from this savepoint (ID, name or exported directory).
    #[serde(default)]
    pub from_savepoint: Option<String>,
    /// With `from_savepoint`: drop state of operators the job lacks.
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

/// The body of `POST /v1/jobs/{job}/rescale`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RescaleRequest {
    /// The new default parallelism: of every operator that does not set
    /// its own in the manifest (as `wrun deploy --parallelism`).
    pub parallelism: u32,
}

/// The body of `POST /v1/jobs/{job}/savepoints`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SavepointRequest {
    /// A name for the savepoint.
    #[serde(default)]
    pub name: Option<String>,
    /// Stop the job at the savepoint.
    #[serde(default)]
    pub stop: Option<crate::exec::StopMode>,
}

/// The body of `POST /v1/savepoint-imports`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImportRequest {
    /// The exported savepoint directory; absolute.
    pub dir: PathBuf,
    /// A name to register it under.
    #[serde(default)]
    pub name: Option<String>,
}

/// `202 Accepted` for a trigger: the request to poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Accepted {
    /// Poll `GET /v1/requests/{request-id}`.
    pub request_id: String,
}

/// `GET /v1/jobs` (also read by a node of a fleet from its peers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// Every job of this process (in a fleet, of every node).
    pub jobs: Vec<crate::exec::JobStatus>,
    /// Per job that runs: its widest vertex's parallelism and its
    /// throughput, by name.
    #[serde(default)]
    pub summaries: BTreeMap<String, JobSummary>,
}

/// A running job at a glance (the dashboard's jobs page).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobSummary {
    /// Its widest vertex's parallelism.
    pub parallelism: u32,
    /// The records its sources read per second (the last second), once
    /// the server has sampled it twice.
    pub records_per_s: Option<f64>,
}

/// `POST /v1/jobs/{job}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cancelled {
    /// The job cancelled.
    pub cancelled: String,
}

/// `GET /v1/modules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleList {
    /// Every module in the store.
    pub modules: Vec<crate::module::ModuleInfo>,
}

/// A row of `GET /v1/checkpoints`: a checkpoint, or one whose manifest
/// cannot be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CheckpointRow {
    /// A readable checkpoint.
    Ok(CheckpointInfo),
    /// A checkpoint whose manifest is unreadable.
    Unreadable(UnreadableCheckpoint),
}

/// A checkpoint as `GET /v1/checkpoints` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointInfo {
    /// The job.
    pub job: String,
    /// Its ID.
    pub id: u64,
    /// When it was triggered (ms since the Unix epoch).
    pub triggered_at_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Bytes of state it references.
    pub full_bytes: u64,
    /// Bytes it wrote.
    pub new_bytes: u64,
}

/// A checkpoint whose manifest cannot be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnreadableCheckpoint {
    /// The job.
    pub job: String,
    /// Its ID.
    pub id: u64,
    /// Why it cannot be read.
    pub error: String,
}

/// `GET /v1/checkpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointList {
    /// Oldest first, job by job.
    pub checkpoints: Vec<CheckpointRow>,
}

/// `GET /v1/savepoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavepointList {
    /// Every savepoint in every registry.
    pub savepoints: Vec<SavepointSummary>,
}

/// `DELETE /v1/savepoints/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Disposed {
    /// The savepoint disposed.
    pub disposed: String,
    /// Chunks no checkpoint or savepoint referenced any more.
    pub freed_chunks: usize,
}
