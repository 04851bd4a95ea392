//! The validated job graph: vertices (sources, operators, sinks), edges
//! with their partitioning, and the operator IDs that address state.

use super::settings::{CheckpointSettings, Limits, RestartPolicy, SavepointSettings};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The 16-byte ID that addresses an operator's state: the first 16 bytes
/// of blake3 of its `uid`, or, without a uid, a hash of its place in the
/// graph.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorId(pub [u8; 16]);

impl OperatorId {
    /// The ID of an explicit uid.
    pub fn from_uid(uid: &str) -> OperatorId {
        let h = blake3::hash(uid.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.as_bytes()[..16]);
        OperatorId(id)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for OperatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperatorId({})", self.to_hex())
    }
}

impl std::fmt::Display for OperatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for OperatorId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// How an operator's component is named in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentRef {
    /// A `.wasm` file, resolved against the manifest's directory.
    Path(PathBuf),
    /// A module in the module store, by `blake3:<hex>` digest.
    Digest(String),
    /// A module in the module store, by `name@version`.
    Named {
        /// The module name.
        name: String,
        /// Its version.
        version: String,
    },
}

impl ComponentRef {
    /// Parses a manifest's `component` value.
    pub fn parse(s: &str, base_dir: &Path) -> Result<ComponentRef, String> {
        if let Some(hex) = s.strip_prefix("blake3:") {
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!(
                    "`component` {s:?} is not a valid digest: expected blake3: and 64 lowercase hex digits"
                ));
            }
            return Ok(ComponentRef::Digest(hex.to_string()));
        }
        if s.ends_with(".wasm") || s.contains('/') || s.contains('\\') {
            let p = Path::new(s);
            return Ok(ComponentRef::Path(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }));
        }
        if let Some((name, version)) = s.split_once('@') {
            let ok = |x: &str| {
                !x.is_empty()
                    && x.len() <= 128
                    && x.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
                    && !x.starts_with('.')
            };
            if ok(name) && ok(version) {
                return Ok(ComponentRef::Named {
                    name: name.to_string(),
                    version: version.to_string(),
                });
            }
        }
        Err(format!(
            "`component` {s:?} is neither a path to a .wasm file, a blake3:<hex> digest, nor name@version"
        ))
    }
}

pub use crate::connect::file::SourceFormat;

/// What a source reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SourceKind {
    /// A file, read to its end.
    File(crate::connect::file::FileSource),
    /// A deterministic sequence of events.
    Generator(crate::connect::generator::Sequence),
    /// Standard input, read to its end.
    Stdin(crate::connect::file::StdinSource),
    /// A NATS JetStream stream.
    Nats(crate::connect::nats::NatsSource),
    /// Kafka topics.
    Kafka(crate::connect::kafka::KafkaSource),
}

impl SourceKind {
    /// Whether the source's positions are per split (re-assignable to any
    /// parallelism) rather than per subtask.
    pub fn has_splits(&self) -> bool {
        matches!(self, SourceKind::Nats(_) | SourceKind::Kafka(_))
    }
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SinkKind {
    /// A file of JSON lines.
    File {
        /// The file.
        path: PathBuf,
    },
    /// Standard output, JSON lines.
    Stdout,
    /// Counts and drops events (for benchmarks).
    Discard,
    /// Publishes to a NATS JetStream stream.
    Nats(crate::connect::nats::NatsSink),
    /// Writes to a Kafka topic.
    Kafka(crate::connect::kafka::KafkaSink),
}

/// How events travel along an edge between the subtasks of two vertices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// Subtask i sends to subtask i; both sides have the same parallelism.
    Forward,
    /// By the key's key group, so a key always reaches the same subtask.
    Hash,
    /// Round-robin over the downstream subtasks.
    Rebalance,
    /// Every event to every downstream subtask.
    Broadcast,
}

/// What a vertex is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VertexKind {
    /// Produces events.
    Source(SourceKind),
    /// Runs a Wasm component.
    Operator {
        /// Its component.
        component: ComponentRef,
        /// Its config as JSON bytes.
        #[serde(serialize_with = "as_json_text")]
        config: Vec<u8>,
    },
    /// Consumes events.
    Sink(SinkKind),
}

fn as_json_text<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

/// One vertex of the job graph.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Vertex {
    /// Its name in the manifest.
    pub name: String,
    /// Its uid, when given.
    pub uid: Option<String>,
    /// The ID its state is addressed by.
    pub id: OperatorId,
    /// How many subtasks run it.
    pub parallelism: u32,
    /// What it is.
    pub kind: VertexKind,
    /// A source's watermark strategy; `None`: it sends no watermarks
    /// before its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<super::settings::WatermarkStrategy>,
}

impl JobGraph {
    /// The most linear memory the job's Wasm instances may take, in MiB:
    /// `limits.memory-mb` for each operator subtask.
    pub fn memory_mb(&self) -> u64 {
        let subtasks: u64 = self
            .vertices
            .iter()
            .filter(|v| matches!(v.kind, VertexKind::Operator { .. }))
            .map(|v| u64::from(v.parallelism))
            .sum();
        self.limits.memory_mb.saturating_mul(subtasks)
    }
}

impl Vertex {
    /// The uid if given, else the name: what a guest's context calls it.
    pub fn display_uid(&self) -> &str {
        self.uid.as_deref().unwrap_or(&self.name)
    }
}

/// An edge between two vertices (indices into [`JobGraph::vertices`]).
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    /// Upstream vertex.
    pub from: usize,
    /// Downstream vertex.
    pub to: usize,
    /// Partitioning.
    pub partition: Partition,
    /// The upstream operator's named output it reads (`from = "op.late"`),
    /// or `None` for the main output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A validated job: a DAG whose every operator and sink is fed and whose
/// IDs are fixed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobGraph {
    /// The job's name.
    pub name: String,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Events per batch across the Wasm boundary.
    pub batch_size: usize,
    /// How long a partial batch waits for more events, in ms.
    pub linger_ms: u64,
    /// Per-subtask sandbox limits.
    pub limits: Limits,
    /// Periodic checkpoints, when enabled.
    pub checkpoint: Option<CheckpointSettings>,
    /// Restarts after a failure.
    pub restart: RestartPolicy,
    /// Where savepoints go.
    pub savepoints: SavepointSettings,
    /// Where checkpoints live (`[state] url`), when the manifest says;
    /// `--state-url` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::blob::StateUrl>,
    /// Vertices in topological order (sources first).
    pub vertices: Vec<Vertex>,
    /// Edges.
    pub edges: Vec<Edge>,
}

impl JobGraph {
    /// The vertex called `name`.
    pub fn vertex(&self, name: &str) -> Option<(usize, &Vertex)> {
        self.vertices
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == name)
    }

    /// Edges into vertex `v`.
    pub fn inputs(&self, v: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.to == v)
    }

    /// Edges out of vertex `v`.
    pub fn outputs(&self, v: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.from == v)
    }
}

/// Which field of an `[[edge]]` an error is about.
pub(super) enum EdgeField {
    From,
    To,
    Partition,
}

pub(super) struct Builder {
    g: JobGraph,
}

impl Builder {
    pub(super) fn new(
        name: String,
        max_parallelism: u32,
        batch_size: usize,
        linger_ms: u64,
        limits: Limits,
    ) -> Builder {
        Builder {
            g: JobGraph {
                name,
                max_parallelism,
                batch_size,
                linger_ms,
                limits,
                checkpoint: None,
                restart: RestartPolicy {
                    attempts: 0,
                    delay_ms: 1000,
                    max_delay_ms: 30_000,
                },
                savepoints: SavepointSettings::default(),
                state: None,
                vertices: Vec::new(),
                edges: Vec::new(),
            },
        }
    }

    pub(super) fn policies(
        &mut self,
        checkpoint: Option<CheckpointSettings>,
        restart: RestartPolicy,
        savepoints: SavepointSettings,
    ) {
        self.g.checkpoint = checkpoint;
        self.g.restart = restart;
        self.g.savepoints = savepoints;
    }

    pub(super) fn state(&mut self, url: Option<crate::blob::StateUrl>) {
        self.g.state = url;
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.g
            .vertices
            .iter()
            .map(|v| format!("'{}'", v.name))
            .collect()
    }

    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.g.vertices.iter().position(|v| v.name == name)
    }

    pub(super) fn vertex_name(&self, i: usize) -> &str {
        &self.g.vertices[i].name
    }

    pub(super) fn uid_owner(&self, uid: &str) -> Option<usize> {
        self.g
            .vertices
            .iter()
            .position(|v| v.uid.as_deref() == Some(uid))
    }

    pub(super) fn vertex(
        &mut self,
        name: String,
        uid: Option<String>,
        parallelism: u32,
        kind: VertexKind,
    ) -> Result<(), String> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(format!(
                "vertex name {name:?} must be 1-128 bytes of printable characters"
            ));
        }
        if self.find(&name).is_some() {
            return Err(format!(
                "duplicate vertex name '{name}': sources, operators and sinks share one namespace"
            ));
        }
        let id = uid
            .as_deref()
            .map(OperatorId::from_uid)
            .unwrap_or(OperatorId([0; 16]));
        self.g.vertices.push(Vertex {
            name,
            uid,
            id,
            parallelism,
            kind,
            watermark: None,
        });
        Ok(())
    }

    /// Gives the last vertex added (a source) its watermark strategy.
    pub(super) fn watermark(&mut self, w: Option<super::settings::WatermarkStrategy>) {
        if let Some(v) = self.g.vertices.last_mut() {
            v.watermark = w;
        }
    }

    pub(super) fn edge(
        &mut self,
        from: usize,
        output: Option<String>,
        to: usize,
        partition: Option<Partition>,
    ) -> Result<(), (EdgeField, String)> {
        let (f, t) = (&self.g.vertices[from], &self.g.vertices[to]);
        if let Some(o) = &output
            && !matches!(f.kind, VertexKind::Operator { .. })
        {
            return Err((
                EdgeField::From,
                format!(
                    "'{}.{o}' names output '{o}' of '{}', but only operators have named outputs",
                    f.name, f.name
                ),
            ));
        }
        if matches!(t.kind, VertexKind::Source(_)) {
            return Err((
                EdgeField::To,
                format!("edge into source '{}': sources have no inputs", t.name),
            ));
        }
        if matches!(f.kind, VertexKind::Sink(_)) {
            return Err((
                EdgeField::From,
                format!("edge out of sink '{}': sinks have no outputs", f.name),
            ));
        }
        if from == to {
            return Err((
                EdgeField::To,
                format!(
                    "edge from '{}' to itself: a job graph has no cycles",
                    f.name
                ),
            ));
        }
        if self
            .g
            .edges
            .iter()
            .any(|e| e.from == from && e.to == to && e.output == output)
        {
            let from_name = match &output {
                Some(o) => format!("{}.{o}", f.name),
                None => f.name.clone(),
            };
            return Err((
                EdgeField::To,
                format!("duplicate edge from '{from_name}' to '{}'", t.name),
            ));
        }
        let partition = partition.unwrap_or(if f.parallelism == t.parallelism {
            Partition::Forward
        } else {
            Partition::Rebalance
        });
        if partition == Partition::Forward && f.parallelism != t.parallelism {
            return Err((
                EdgeField::Partition,
                format!(
                    "a `forward` edge needs equal parallelism on both sides, but '{}' has {} and '{}' has {}; use `rebalance` or `hash`",
                    f.name, f.parallelism, t.name, t.parallelism
                ),
            ));
        }
        self.g.edges.push(Edge {
            from,
            to,
            partition,
            output,
        });
        Ok(())
    }

    /// Checks the shape, orders vertices topologically and fixes IDs.
    pub(super) fn finish(mut self) -> Result<JobGraph, (Option<usize>, String)> {
        let n = self.g.vertices.len();
        if !self
            .g
            .vertices
            .iter()
            .any(|v| matches!(v.kind, VertexKind::Source(_)))
        {
            return Err((
                None,
                "the job has no source: declare at least one [[source]]".into(),
            ));
        }
        if !self
            .g
            .vertices
            .iter()
            .any(|v| matches!(v.kind, VertexKind::Sink(_)))
        {
            return Err((
                None,
                "the job has no sink: declare at least one [[sink]]".into(),
            ));
        }
        for (i, v) in self.g.vertices.iter().enumerate() {
            let ins = self.g.edges.iter().filter(|e| e.to == i).count();
            let outs = self
                .g
                .edges
                .iter()
                .filter(|e| e.from == i && e.output.is_none())
                .count();
            match v.kind {
                VertexKind::Source(_) if outs == 0 => {
                    return Err((
                        Some(i),
                        format!("source '{}' feeds nothing: add an [[edge]] from it", v.name),
                    ));
                }
                VertexKind::Operator { .. } | VertexKind::Sink(_) if ins == 0 => {
                    return Err((
                        Some(i),
                        format!("'{}' has no input: add an [[edge]] into it", v.name),
                    ));
                }
                VertexKind::Operator { .. } if outs == 0 => {
                    return Err((
                        Some(i),
                        format!(
                            "operator '{}' feeds nothing from its main output: add an [[edge]] from '{}' to a sink",
                            v.name, v.name
                        ),
                    ));
                }
                _ => {}
            }
        }
        // Kahn's algorithm, taking the lowest manifest index first, so the
        // order (and with it every derived ID) depends only on the manifest.
        let mut indeg: Vec<usize> = (0..n)
            .map(|i| self.g.edges.iter().filter(|e| e.to == i).count())
            .collect();
        let mut order = Vec::with_capacity(n);
        let mut done = vec![false; n];
        while order.len() < n {
            let Some(next) = (0..n).find(|&i| !done[i] && indeg[i] == 0) else {
                // The vertices left all sit on or behind a cycle; name only
                // those that can reach themselves.
                let reaches = |from: usize, to: usize| {
                    let mut seen = vec![false; n];
                    let mut stack = vec![from];
                    while let Some(v) = stack.pop() {
                        for e in self.g.edges.iter().filter(|e| e.from == v) {
                            if e.to == to {
                                return true;
                            }
                            if !seen[e.to] {
                                seen[e.to] = true;
                                stack.push(e.to);
                            }
                        }
                    }
                    false
                };
                let cyc: Vec<String> = (0..n)
                    .filter(|&i| !done[i] && reaches(i, i))
                    .map(|i| format!("'{}'", self.g.vertices[i].name))
                    .collect();
                return Err((
                    None,
                    format!("the job graph has a cycle through {}", cyc.join(", ")),
                ));
            };
            done[next] = true;
            order.push(next);
            for e in self.g.edges.iter().filter(|e| e.from == next) {
                indeg[e.to] -= 1;
            }
        }
        let mut new_index = vec![0; n];
        for (pos, &old) in order.iter().enumerate() {
            new_index[old] = pos;
        }
        let mut vertices: Vec<Option<Vertex>> = std::mem::take(&mut self.g.vertices)
            .into_iter()
            .map(Some)
            .collect();
        self.g.vertices = order
            .iter()
            .map(|&i| vertices[i].take().expect("each vertex is taken once"))
            .collect();
        for e in &mut self.g.edges {
            e.from = new_index[e.from];
            e.to = new_index[e.to];
        }
        self.g.edges.sort_by_key(|e| (e.from, e.to));
        // IDs of vertices without uid: a hash of the vertex's kind, its
        // name and the IDs of its inputs: what identifies it, not where it
        // sits, so inserting a vertex elsewhere in the graph never hands
        // one operator's ID (and state) to another.
        for i in 0..n {
            if self.g.vertices[i].uid.is_some() {
                continue;
            }
            let mut h = blake3::Hasher::new();
            h.update(b"wrun/vertex-id/v2\0");
            h.update(match self.g.vertices[i].kind {
                VertexKind::Source(_) => b"source\0",
                VertexKind::Operator { .. } => b"operator\0",
                VertexKind::Sink(_) => b"sink\0",
            });
            h.update(&(self.g.vertices[i].name.len() as u64).to_le_bytes());
            h.update(self.g.vertices[i].name.as_bytes());
            let mut inputs: Vec<[u8; 16]> = self
                .g
                .edges
                .iter()
                .filter(|e| e.to == i)
                .map(|e| self.g.vertices[e.from].id.0)
                .collect();
            inputs.sort();
            for id in inputs {
                h.update(&id);
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&h.finalize().as_bytes()[..16]);
            self.g.vertices[i].id = OperatorId(id);
        }
        Ok(self.g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(extra_operator: bool) -> std::collections::BTreeMap<String, OperatorId> {
        let mut toml = String::from(
            "version = 1\nname = \"j\"\n[[source]]\nname = \"in\"\nkind = \"generator\"\ncount = 1\n\
             [[operator]]\nname = \"count\"\ncomponent = \"c.wasm\"\n\
             [[sink]]\nname = \"out\"\nkind = \"stdout\"\n",
        );
        if extra_operator {
            toml.push_str(
                "[[operator]]\nname = \"parse\"\ncomponent = \"p.wasm\"\n\
                 [[edge]]\nfrom = \"in\"\nto = \"parse\"\n[[edge]]\nfrom = \"parse\"\nto = \"count\"\n",
            );
        } else {
            toml.push_str("[[edge]]\nfrom = \"in\"\nto = \"count\"\n");
        }
        toml.push_str("[[edge]]\nfrom = \"count\"\nto = \"out\"\n");
        let g = super::super::parse_manifest(&toml, "job.toml", Path::new("/"), None).unwrap();
        g.vertices.iter().map(|v| (v.name.clone(), v.id)).collect()
    }

    #[test]
    fn auto_ids_come_from_name_kind_and_inputs_not_position() {
        let (a, b) = (ids(false), ids(false));
        assert_eq!(a, b, "the same manifest gives the same IDs");
        let with_parse = ids(true);
        // A new vertex between the source and the counter changes the
        // counter's inputs, so its ID changes (its state is then refused
        // or mapped by uid), but no vertex takes another one's ID.
        assert_ne!(with_parse["count"], a["count"]);
        assert_eq!(with_parse["in"], a["in"]);
        let before: std::collections::BTreeSet<_> = a.values().collect();
        assert!(
            !before.contains(&with_parse["parse"]),
            "the inserted vertex takes no old ID"
        );
    }

    #[test]
    fn uid_ids_are_blake3_prefixes() {
        let id = OperatorId::from_uid("counter");
        assert_eq!(id.0, blake3::hash(b"counter").as_bytes()[..16]);
    }

    #[test]
    fn component_refs() {
        let base = Path::new("/m");
        assert_eq!(
            ComponentRef::parse("op.wasm", base),
            Ok(ComponentRef::Path("/m/op.wasm".into()))
        );
        assert_eq!(
            ComponentRef::parse("counter@1.2.0", base),
            Ok(ComponentRef::Named {
                name: "counter".into(),
                version: "1.2.0".into()
            })
        );
        let d = "a".repeat(64);
        assert_eq!(
            ComponentRef::parse(&format!("blake3:{d}"), base),
            Ok(ComponentRef::Digest(d))
        );
        assert!(ComponentRef::parse("blake3:xyz", base).is_err());
        assert!(ComponentRef::parse("counter", base).is_err());
        assert!(
            ComponentRef::parse("../x@1", base).is_ok_and(|r| matches!(r, ComponentRef::Path(_)))
        );
    }
}
