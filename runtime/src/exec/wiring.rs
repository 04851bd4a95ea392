//! The channels of one attempt of a job: data channels along the graph's
//! edges (bounded, with the edge's partitioner at the sending end) and the
//! checkpoint control channels (triggers to sources, commits to sources and
//! sinks).

use super::channel::{self, CHANNEL_BATCHES, Message, Output, Outputs};
use super::load::Link;
use super::metrics::JobMetrics;
use crate::job::{JobGraph, Partition, VertexKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

/// What one subtask is connected to.
pub(super) struct Ports {
    /// Where its output goes (one [`Output`] per outgoing edge).
    pub outputs: Outputs,
    /// Its input, if the vertex has inputs.
    pub rx: Option<Receiver<Message>>,
    /// How many input channels feed `rx` (edges times upstream subtasks).
    pub inputs: usize,
    /// Checkpoint triggers (sources).
    pub trigger: Option<Receiver<channel::Barrier>>,
    /// Completed checkpoints to commit (sources and sinks).
    pub commit: Option<Receiver<u64>>,
}

/// Every subtask's ports, to be taken once each, and the coordinator's
/// ends of the control channels.
pub(super) struct Wiring {
    ports: HashMap<(usize, u32), Ports>,
    /// Checkpoint triggers, one per source subtask.
    pub triggers: Vec<Sender<channel::Barrier>>,
    /// Commit notices, one per source and sink subtask.
    pub commits: Vec<Sender<u64>>,
    /// Subtasks in all.
    pub tasks: usize,
}

impl Wiring {
    pub(super) fn new(graph: &JobGraph, metrics: &Arc<JobMetrics>) -> Wiring {
        let n = graph.vertices.len();
        // Input channels: one receiver per subtask of every vertex with
        // inputs. Channel indices at a receiver: edges in order, then
        // upstream subtask.
        let mut senders: Vec<Vec<SyncSender<Message>>> = vec![Vec::new(); n];
        let mut receivers: Vec<Vec<Receiver<Message>>> = (0..n).map(|_| Vec::new()).collect();
        let mut input_count = vec![0usize; n];
        // By edge index: two edges may join the same vertices (from an
        // operator's main output and from a named one).
        let mut chan_base: HashMap<usize, u32> = HashMap::new();
        for (v, vertex) in graph.vertices.iter().enumerate() {
            if matches!(vertex.kind, VertexKind::Source(_)) {
                continue;
            }
            let cap = CHANNEL_BATCHES * graph.inputs(v).count().max(1);
            for s in 0..vertex.parallelism {
                let (tx, rx) = sync_channel(cap);
                metrics.vertex(v).subtask(s).reset_queue(cap);
                senders[v].push(tx);
                receivers[v].push(rx);
            }
            let mut base = 0u32;
            for (i, e) in graph.edges.iter().enumerate().filter(|(_, e)| e.to == v) {
                chan_base.insert(i, base);
                // A forward edge connects subtask i to subtask i alone: one
                // input channel per subtask, not one per upstream subtask (a
                // subtask would wait for ends and barriers that never come).
                let up = if e.partition == Partition::Forward {
                    1
                } else {
                    graph.vertices[e.from].parallelism
                };
                input_count[v] += up as usize;
                base += up;
            }
        }
        let outputs_for = |v: usize, subtask: u32| -> Outputs {
            let out_edges = || graph.edges.iter().enumerate().filter(|(_, e)| e.from == v);
            Outputs(
                out_edges()
                    .map(|(i, e)| {
                        let base = chan_base[&i];
                        let to = &graph.vertices[e.to];
                        let from = metrics.vertex(v).subtask(subtask);
                        let link = |to: usize| {
                            let tx = senders[e.to][to].clone();
                            Link::new(tx, metrics.vertex(e.to).subtask(to as u32), from.clone())
                        };
                        let targets: Vec<(Link, u32)> = if e.partition == Partition::Forward {
                            vec![(link(subtask as usize), base)]
                        } else {
                            (0..senders[e.to].len())
                                .map(|to| (link(to), base + subtask))
                                .collect()
                        };
                        let from = match &e.output {
                            Some(o) => format!("{}.{o}", graph.vertices[v].name),
                            None => graph.vertices[v].name.clone(),
                        };
                        let edge = format!("'{from}' -> '{}'", to.name);
                        Output::new(
                            e.partition,
                            targets,
                            graph.max_parallelism,
                            graph.batch_size,
                            edge,
                            subtask as usize,
                        )
                    })
                    .collect(),
                Some((metrics.clone(), v)),
                out_edges().map(|(_, e)| e.output.clone()).collect(),
            )
        };

        let mut w = Wiring {
            ports: HashMap::new(),
            triggers: Vec::new(),
            commits: Vec::new(),
            tasks: 0,
        };
        for (v, vertex) in graph.vertices.iter().enumerate() {
            let mut rxs = std::mem::take(&mut receivers[v]).into_iter();
            for s in 0..vertex.parallelism {
                w.tasks += 1;
                let (trigger, commit) = match vertex.kind {
                    VertexKind::Source(_) => (Some(w.trigger()), Some(w.commit())),
                    VertexKind::Sink(_) => (None, Some(w.commit())),
                    VertexKind::Operator { .. } => (None, None),
                };
                let ports = Ports {
                    outputs: outputs_for(v, s),
                    rx: rxs.next(),
                    inputs: input_count[v],
                    trigger,
                    commit,
                };
                w.ports.insert((v, s), ports);
            }
        }
        // The wiring keeps no data senders: once every upstream subtask
        // ends, its channels close.
        drop(senders);
        w
    }

    fn trigger(&mut self) -> Receiver<channel::Barrier> {
        let (tx, rx) = channel();
        self.triggers.push(tx);
        rx
    }

    fn commit(&mut self) -> Receiver<u64> {
        let (tx, rx) = channel();
        self.commits.push(tx);
        rx
    }

    /// Subtask `s` of vertex `v`'s ports (once).
    pub(super) fn take(&mut self, v: usize, s: u32) -> Ports {
        self.ports.remove(&(v, s)).unwrap_or(Ports {
            outputs: Outputs(Vec::new(), None, Vec::new()),
            rx: None,
            inputs: 0,
            trigger: None,
            commit: None,
        })
    }
}
