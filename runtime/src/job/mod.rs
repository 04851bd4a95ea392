//! Job manifests (`job.toml`), their validation, the job graph and
//! operator IDs. Pure: reads no files but the manifest it is given.

mod graph;
mod manifest;

pub use graph::{
    ComponentRef, Edge, JobGraph, OperatorId, Partition, SinkKind, SourceFormat, SourceKind,
    Vertex, VertexKind,
};
pub use manifest::{
    CheckpointSettings, Limits, ManifestError, RestartPolicy, SavepointBackend, SavepointSettings,
    parse_manifest,
};
