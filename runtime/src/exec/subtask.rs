//! One subtask of one attempt: what a source, an operator or a sink
//! subtask's thread runs, from its [`Ports`] and what every subtask of the
//! attempt shares ([`Attempt`]).

use super::clock::Clock;
use super::coordinator::Acks;
use super::job::RunOptions;
use super::restore::restore_operator;
use super::wiring::Ports;
use super::{Counts, ExecError, OperatorLogic, Shared, metrics, operator, sink, source};
use crate::checkpoint::{CheckpointManifest, CheckpointStore};
use crate::job::{JobGraph, Vertex, VertexKind};
use crate::sandbox::{CallLimits, OperatorInstance, OperatorModule, Sandbox, SubtaskInfo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What every subtask of one attempt shares.
pub(super) struct Attempt<'a> {
    pub graph: &'a JobGraph,
    pub sandbox: &'a Sandbox,
    pub modules: &'a HashMap<usize, Arc<OperatorModule>>,
    pub opts: &'a RunOptions,
    pub shared: &'a Shared,
    pub metrics: &'a Arc<metrics::JobMetrics>,
    pub clock: &'a dyn Clock,
    /// The checkpoint this attempt starts from.
    pub restore: Option<&'a CheckpointManifest>,
    /// Where `restore`'s chunks are.
    pub restore_store: Option<&'a Arc<CheckpointStore>>,
    /// Whether this attempt takes checkpoints (periodic or on request).
    pub checkpointing: bool,
    pub linger: Duration,
    pub limits: CallLimits,
}

impl Attempt<'_> {
    /// Runs subtask `s` of vertex `v` to its end.
    pub(super) fn run(
        &self,
        v: usize,
        s: u32,
        ports: Ports,
        ack: Option<Acks>,
    ) -> Result<Counts, ExecError> {
        let vertex = &self.graph.vertices[v];
        match &vertex.kind {
            VertexKind::Source(kind) => {
                let ctl = source::SourceCtl {
                    trigger: ports.trigger,
                    ack,
                    start: self.source_start(vertex, s),
                    clock: self.clock,
                    linger: self.linger,
                    batch_size: self.graph.batch_size,
                    metrics: self.metrics.vertex(v),
                    committed: ports.commit,
                    recorded: Default::default(),
                    final_checkpoint: self.checkpointing && self.graph.checkpoint.is_some(),
                    watermark: vertex.watermark,
                };
                let out = source::run(
                    &vertex.name,
                    kind,
                    s,
                    vertex.parallelism,
                    ports.outputs,
                    self.shared,
                    &ctl,
                )?;
                Ok(Counts {
                    records_in: 0,
                    records_out: out,
                })
            }
            VertexKind::Sink(kind) => sink::run(
                sink::SinkTask {
                    name: &vertex.name,
                    job: &self.graph.name,
                    kind,
                    subtask: s,
                    parallelism: vertex.parallelism,
                    vertex: v,
                    rx: ports.rx.ok_or(ExecError::Disconnected)?,
                    inputs: ports.inputs,
                    restore: self.restore.zip(self.restore_store.map(|s| s.as_ref())),
                    interval: self
                        .graph
                        .checkpoint
                        .as_ref()
                        .filter(|_| self.checkpointing)
                        .map(|c| Duration::from_millis(c.interval_ms)),
                    ack,
                    commit: ports.commit,
                    metrics: self.metrics,
                },
                self.shared,
            ),
            VertexKind::Operator { config, .. } => self.operator(v, s, config, ports, ack),
        }
    }

    /// Where source subtask `s` starts: its offset and its splits'
    /// positions in the restored checkpoint.
    fn source_start(&self, vertex: &Vertex, s: u32) -> Option<source::Restored> {
        self.restore.map(|m| {
            let mine = m.sources.iter().filter(|p| p.vertex == vertex.name);
            source::Restored {
                offset: mine
                    .clone()
                    .find(|p| p.subtask == s)
                    .map_or(0, |p| p.position),
                splits: mine
                    .flat_map(|p| p.splits.iter())
                    .map(|sp| crate::connect::SplitPosition {
                        split: sp.split.clone(),
                        next: sp.next,
                    })
                    .collect(),
            }
        })
    }

    fn operator(
        &self,
        v: usize,
        s: u32,
        config: &[u8],
        ports: Ports,
        ack: Option<Acks>,
    ) -> Result<Counts, ExecError> {
        let (graph, opts) = (self.graph, self.opts);
        let vertex = &graph.vertices[v];
        let rx = ports.rx.ok_or(ExecError::Disconnected)?;
        let r = restore_operator(
            graph,
            v,
            s,
            self.restore,
            self.restore_store,
            opts.restore_label.as_deref(),
        )?;
        let info = SubtaskInfo {
            uid: vertex.display_uid().to_string(),
            subtask_index: s,
            parallelism: vertex.parallelism,
            max_parallelism: graph.max_parallelism,
            config: config.to_vec(),
            restored: r.restored,
            restored_format: r.format,
        };
        let module = self.modules.get(&v);
        let format_check = r.written_by.clone().map(|w| operator::FormatCheck {
            operator: match &vertex.uid {
                Some(uid) => format!("'{}' (uid '{uid}')", vertex.name),
                None => format!("'{}' (no uid)", vertex.name),
            },
            written: w,
            module: module.map(|m| m.digest.to_string()).unwrap_or_default(),
            migrates_from: module.map(|m| m.migrates_from.clone()).unwrap_or_default(),
        });
        let logic: Box<dyn OperatorLogic> = match opts.native.get(&vertex.name) {
            Some(factory) => factory(&info, r.state),
            None => {
                let module = module.ok_or_else(|| {
                    ExecError::Panicked(
                        format!("{}[{s}]", vertex.name),
                        "operator module not loaded".into(),
                    )
                })?;
                Box::new(OperatorInstance::instantiate(
                    self.sandbox,
                    module,
                    &info,
                    self.limits,
                    r.state,
                )?)
            }
        };
        let fail_after = opts
            .fail_point
            .as_ref()
            .filter(|f| f.vertex == vertex.name && s == 0)
            .map(|f| f.after_records);
        let l = operator::Loop {
            logic,
            info,
            rx,
            inputs: ports.inputs,
            outputs: ports.outputs,
            batch_size: graph.batch_size,
            linger: self.linger,
            vertex: v,
            ack,
            restore: r.operator_state,
            format_check,
            fail_after,
            metrics: self.metrics.clone(),
            clock: self.clock,
            watermark: None,
            side_names: Vec::new(),
        };
        l.run(self.shared)
    }
}
