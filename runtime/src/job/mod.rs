//! Job manifests (`job.toml`, in `manifest.rs`), their validation into
//! the settings (`settings.rs`) and the job graph with its operator IDs
//! (`graph.rs`). Pure: reads no files but the manifest it is given.

mod graph;
mod manifest;
mod settings;

pub use graph::{
    ComponentRef, Edge, JobGraph, OperatorId, Partition, SinkKind, SourceFormat, SourceKind,
    Vertex, VertexKind,
};
pub use manifest::{ManifestError, parse_manifest};
pub use settings::{
    CheckpointSettings, Limits, RestartPolicy, SavepointBackend, SavepointSettings,
    WatermarkStrategy,
};
