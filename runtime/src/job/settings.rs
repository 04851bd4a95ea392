//! The validated job settings the rest of the runtime reads: sandbox
//! limits, checkpoints, savepoints and the restart policy, each with its
//! defaults. `manifest.rs` builds them from the `*Spec` structs that
//! mirror the TOML and checks them there; these never come straight from
//! serde (except [`SavepointBackend`], a plain choice of two).

use serde::Deserialize;

/// Per-subtask sandbox limits, from the manifest's `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory per subtask instance, in MiB.
    pub memory_mb: u64,
    /// Wall-clock limit of one guest call (one batch), in milliseconds.
    pub call_timeout_ms: u64,
    /// Most events one `process` call may return.
    pub max_output_events: u64,
    /// Most pending timers per subtask.
    pub max_timers: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 256,
            call_timeout_ms: 1000,
            max_output_events: 1_000_000,
            max_timers: 10_000_000,
        }
    }
}

/// Periodic checkpoints, from the manifest's `[checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointSettings {
    /// Time between checkpoint triggers, in ms.
    pub interval_ms: u64,
    /// A checkpoint not complete after this long is abandoned, in ms.
    pub timeout_ms: u64,
    /// Least time between the end of one checkpoint and the next trigger, in ms.
    pub min_pause_ms: u64,
    /// How many completed checkpoints to keep.
    pub retain: usize,
    /// How many checkpoints in a row may fail (a storage error or a
    /// timeout) before the job fails and restarts under its policy.
    pub tolerable_failures: u32,
}

/// Where savepoints are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointBackend {
    /// In the memory of the running wrun: lost when it stops.
    Memory,
    /// Files in a directory: survive restarts.
    Filesystem,
    /// Records in the state store beside the checkpoints (`--state-url`),
    /// which every node of a fleet reads: the default there. Not named in
    /// a manifest.
    Shared,
}

impl std::fmt::Display for SavepointBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SavepointBackend::Memory => "memory",
            SavepointBackend::Filesystem => "filesystem",
            SavepointBackend::Shared => "shared",
        })
    }
}

/// Where the job's savepoints go, from the manifest's `[savepoints]` table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointSettings {
    /// The backend.
    pub backend: SavepointBackend,
    /// The filesystem backend's directory; `None` means
    /// `<data-dir>/savepoints`.
    pub dir: Option<std::path::PathBuf>,
}

impl Default for SavepointSettings {
    fn default() -> Self {
        SavepointSettings {
            backend: SavepointBackend::Filesystem,
            dir: None,
        }
    }
}

/// What happens when a subtask fails, from the manifest's `[restart]` table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RestartPolicy {
    /// How many times the job restarts from its latest checkpoint before
    /// it fails for good.
    pub attempts: u32,
    /// Wait before the first restart, in ms; it doubles with each restart
    /// after that, up to `max_delay_ms` (exponential backoff).
    pub delay_ms: u64,
    /// The longest wait before a restart, in ms.
    pub max_delay_ms: u64,
}

impl RestartPolicy {
    /// The wait before restart `n` (from 1): `delay_ms` doubled `n - 1`
    /// times, at most `max_delay_ms`.
    pub fn delay(&self, n: u32) -> std::time::Duration {
        let doubled = self
            .delay_ms
            .saturating_mul(1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX));
        std::time::Duration::from_millis(doubled.min(self.max_delay_ms.max(self.delay_ms)))
    }
}

/// How a source makes watermarks, from its `watermark` table: bounded
/// out-of-orderness per split, with an idle timeout (docs/time.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct WatermarkStrategy {
    /// How late (in event time) an event may come after a later one and
    /// still be on time.
    pub out_of_orderness_ms: u64,
    /// A split without events for this long (processing time) is idle and
    /// holds no watermark back; `None`: never.
    pub idle_timeout_ms: Option<u64>,
    /// How often the source sends its watermark (processing time).
    pub interval_ms: u64,
}
