//! A running job's graph as the API (and the dashboard) shows it: each
//! vertex with its kind, connector, parallelism and, for operators, the
//! module behind it (digest, WIT world, named outputs; the state format it
//! declares is in the job's metrics, known once a subtask opened); each
//! edge with its partitioner.
//! Built once per job from the validated graph and its loaded modules.

use crate::job::{ComponentRef, JobGraph, Partition, SinkKind, SourceKind, VertexKind};
use crate::sandbox::OperatorModule;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The job's graph.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobPlan {
    /// Vertices in topological order (sources first).
    pub vertices: Vec<PlanVertex>,
    /// Edges, by vertex index.
    pub edges: Vec<PlanEdge>,
}

/// One vertex.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlanVertex {
    /// Its name in the manifest.
    pub name: String,
    /// Its uid, when the manifest gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `source`, `operator` or `sink`.
    pub kind: &'static str,
    /// A source's or sink's connector (`kafka`, `nats`, `file`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<&'static str>,
    /// Subtasks.
    pub parallelism: u32,
    /// An operator's module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<PlanModule>,
}

/// The module behind an operator.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlanModule {
    /// How the manifest names it (a path, `name@version` or a digest).
    pub component: String,
    /// `blake3:<hex>` of the component.
    pub digest: String,
    /// The world it implements, `wrun:operator@<version>`.
    pub world: String,
    /// Its named outputs besides the main one.
    pub outputs: Vec<String>,
    /// The state format it declares (`name vN`), when known before a
    /// subtask opens it (`wrun:operator@0.2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_format: Option<String>,
}

/// One edge.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlanEdge {
    /// Upstream vertex index.
    pub from: usize,
    /// Downstream vertex index.
    pub to: usize,
    /// How events are spread over the downstream subtasks.
    pub partition: Partition,
    /// The upstream operator's named output, if not the main one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn source_connector(k: &SourceKind) -> &'static str {
    match k {
        SourceKind::File(_) => "file",
        SourceKind::Generator(_) => "generator",
        SourceKind::Stdin(_) => "stdin",
        SourceKind::Nats(_) => "nats",
        SourceKind::Kafka(_) => "kafka",
    }
}

fn sink_connector(k: &SinkKind) -> &'static str {
    match k {
        SinkKind::File { .. } => "file",
        SinkKind::Stdout => "stdout",
        SinkKind::Discard => "discard",
        SinkKind::Nats(_) => "nats",
        SinkKind::Kafka(_) => "kafka",
    }
}

fn component_text(c: &ComponentRef) -> String {
    match c {
        ComponentRef::Path(p) => p.display().to_string(),
        ComponentRef::Digest(d) => format!("blake3:{}", d.trim_start_matches("blake3:")),
        ComponentRef::Named { name, version } => format!("{name}@{version}"),
    }
}

impl JobPlan {
    /// The plan of `graph`, whose operator vertex `i` runs `modules[i]`.
    pub fn new(graph: &JobGraph, modules: &HashMap<usize, Arc<OperatorModule>>) -> JobPlan {
        let vertices = graph
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (kind, connector, module) = match &v.kind {
                    VertexKind::Source(k) => ("source", Some(source_connector(k)), None),
                    VertexKind::Sink(k) => ("sink", Some(sink_connector(k)), None),
                    VertexKind::Operator { component, .. } => (
                        "operator",
                        None,
                        modules.get(&i).map(|m| PlanModule {
                            component: component_text(component),
                            digest: format!("blake3:{}", m.digest.hex()),
                            world: format!("wrun:operator@{}", m.wit_version),
                            outputs: m.outputs.clone(),
                            state_format: m
                                .format
                                .as_ref()
                                .map(|f| format!("{} v{}", f.name, f.version)),
                        }),
                    ),
                };
                PlanVertex {
                    name: v.name.clone(),
                    uid: v.uid.clone(),
                    kind,
                    connector,
                    parallelism: v.parallelism,
                    module,
                }
            })
            .collect();
        let edges = graph
            .edges
            .iter()
            .map(|e| PlanEdge {
                from: e.from,
                to: e.to,
                partition: e.partition,
                output: e.output.clone(),
            })
            .collect();
        JobPlan { vertices, edges }
    }
}
