//! A sink subtask's loop ([`run`]): hands batches to its connector's
//! writer ([`crate::connect::SinkWriter`]), has it prepare at barriers
//! (what it hands back goes into the checkpoint), and has it commit when
//! the coordinator says a checkpoint's manifest is committed.

use super::coordinator::{Ack, AckData, Acks};
use super::inputs::{Inputs, Next};
use super::{Counts, ExecError, Shared};
use crate::checkpoint::{CheckpointManifest, CheckpointStore};
use crate::connect::{self, SinkRestore, SinkWriter, Staged};
use crate::job::SinkKind;
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// What a sink subtask is connected to.
pub(super) struct SinkTask<'a> {
    pub(super) name: &'a str,
    /// The job (message IDs of message sinks name it).
    pub(super) job: &'a str,
    pub(super) kind: &'a SinkKind,
    /// This subtask and the sink's parallelism.
    pub(super) subtask: u32,
    pub(super) parallelism: u32,
    /// The vertex index, for metrics.
    pub(super) vertex: usize,
    pub(super) rx: Receiver<super::channel::Message>,
    /// Input channels (upstream subtasks over every in-edge).
    pub(super) inputs: usize,
    /// The checkpoint the job starts from, and the store holding it.
    pub(super) restore: Option<(&'a CheckpointManifest, &'a CheckpointStore)>,
    /// The job's checkpoint interval, when checkpoints are on (a message
    /// sink checks its system's windows against it).
    pub(super) interval: Option<Duration>,
    /// Where checkpoint acknowledgements go (checkpoints on).
    pub(super) ack: Option<Acks>,
    /// Completed checkpoints, from the coordinator.
    pub(super) commit: Option<Receiver<u64>>,
    pub(super) metrics: &'a super::metrics::JobMetrics,
}

/// Runs a sink subtask until every input has ended (or a stop barrier).
pub(super) fn run(task: SinkTask<'_>, shared: &Shared) -> Result<Counts, ExecError> {
    let SinkTask {
        name,
        job,
        kind,
        subtask,
        parallelism,
        vertex: v,
        rx,
        inputs,
        restore,
        interval,
        ack,
        commit,
        metrics,
    } = task;
    let err = |e: connect::ConnectError| sink_err(name, e);
    let restored = match restore {
        Some((m, store)) => Some(restored(name, subtask, parallelism, m, store)?),
        None => None,
    };
    let open = SinkOpen {
        job,
        name,
        subtask,
        exactly_once: ack.is_some(),
        interval,
        restore: restored.as_ref(),
    };
    let mut sink = open_sink(kind, &open).map_err(err)?;
    let mut c = Counts::default();
    let mut inputs = Inputs::new(rx, inputs, metrics.vertex(v).subtask(subtask));
    loop {
        if let Some(commit) = &commit {
            while let Ok(id) = commit.try_recv() {
                sink.commit(id).map_err(err)?;
            }
        }
        match inputs.next(Duration::from_millis(20))? {
            Next::Batch(b) => {
                c.records_in += b.len() as u64;
                metrics.vertex(v).add_in(b.len());
                metrics.vertex(v).add_bytes(b.byte_len());
                sink.write(&b).map_err(err)?;
                metrics.vertex(v).set_connected(subtask, sink.connected());
                if let Some(born) = b.born() {
                    metrics
                        .vertex(v)
                        .end_to_end
                        .record(born.elapsed(), b.len() as u64);
                }
            }
            Next::Aligned(b) => {
                let id = b.id;
                metrics.vertex(v).alignment(inputs.last_alignment());
                let prepared = sink.prepare(id).map_err(err)?;
                if let Some(ack) = &ack {
                    let _ = ack.send(Ack::Done {
                        id,
                        data: AckData::Sink {
                            vertex: name.to_string(),
                            subtask,
                            prepared,
                        },
                    });
                }
                if b.stop.is_some() {
                    // Stop with a savepoint: commit what the savepoint
                    // covers, then end without finishing.
                    wait_commit(commit.as_ref(), shared, id, |c| sink.commit(c).map_err(err))?;
                    return Ok(c);
                }
                if b.end {
                    // The final checkpoint: the tail staged under it becomes
                    // visible only once its manifest is committed, so a
                    // crash anywhere here resumes from a checkpoint that
                    // stages it again (with the same IDs and groups).
                    wait_commit(commit.as_ref(), shared, id, |c| {
                        if c >= id {
                            crate::fault::crash_point("final-tail-commit");
                        }
                        sink.commit(c).map_err(err)
                    })?;
                    crate::fault::crash_point("final-tail-committed");
                    sink.finish().map_err(err)?;
                    return Ok(c);
                }
            }
            Next::Watermark(w) => metrics.vertex(v).set_watermark(subtask, w),
            Next::Idle => {
                metrics.vertex(v).set_connected(subtask, sink.connected());
                shared.check_cancel()?
            }
            Next::End => break,
        }
    }
    sink.finish().map_err(err)?;
    if let Some(ack) = &ack {
        let _ = ack.send(Ack::Finished);
    }
    Ok(c)
}

/// A sink subtask to reopen from a job's final checkpoint.
pub(super) struct Reopen<'a> {
    pub(super) name: &'a str,
    pub(super) job: &'a str,
    pub(super) kind: &'a SinkKind,
    pub(super) subtask: u32,
    pub(super) parallelism: u32,
    pub(super) restore: (&'a CheckpointManifest, &'a CheckpointStore),
    pub(super) interval: Option<Duration>,
}

/// Opens a sink subtask from a job's final checkpoint (which makes
/// visible what it staged, as after any crash), and closes it: the resume
/// of a job that had already finished.
pub(super) fn reopen_and_finish(r: Reopen<'_>) -> Result<(), ExecError> {
    let err = |e: connect::ConnectError| sink_err(r.name, e);
    let (m, store) = r.restore;
    let restored = restored(r.name, r.subtask, r.parallelism, m, store)?;
    let open = SinkOpen {
        job: r.job,
        name: r.name,
        subtask: r.subtask,
        exactly_once: true,
        interval: r.interval,
        restore: Some(&restored),
    };
    let mut sink = open_sink(r.kind, &open).map_err(err)?;
    sink.finish().map_err(err)
}

/// Waits until checkpoint `id` is committed (or the job is cancelled),
/// passing every commit on to `commit`.
fn wait_commit(
    rx: Option<&Receiver<u64>>,
    shared: &Shared,
    id: u64,
    mut commit: impl FnMut(u64) -> Result<(), ExecError>,
) -> Result<(), ExecError> {
    let Some(rx) = rx else {
        return Ok(());
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(c) => {
                commit(c)?;
                if c >= id {
                    return Ok(());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => shared.check_cancel()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ExecError::Disconnected);
            }
        }
    }
}

fn sink_err(name: &str, e: connect::ConnectError) -> ExecError {
    ExecError::Sink {
        vertex: name.to_string(),
        detail: e.detail,
        transient: e.transient,
    }
}

/// What a sink subtask is opened with.
pub(super) struct SinkOpen<'a> {
    pub(super) job: &'a str,
    pub(super) name: &'a str,
    pub(super) subtask: u32,
    /// Checkpoints are on: the sink must stage and commit.
    pub(super) exactly_once: bool,
    pub(super) interval: Option<Duration>,
    pub(super) restore: Option<&'a SinkRestore>,
}

impl SinkOpen<'_> {
    fn context(&self) -> connect::SinkContext<'_> {
        connect::SinkContext {
            job: self.job,
            sink: self.name,
            subtask: self.subtask,
            exactly_once: self.exactly_once,
            interval: self.interval,
            restore: self.restore,
        }
    }
}

/// Opens a sink subtask's writer.
pub(super) fn open_sink(
    kind: &SinkKind,
    o: &SinkOpen<'_>,
) -> Result<Box<dyn SinkWriter>, connect::ConnectError> {
    Ok(match kind {
        SinkKind::File { path } if o.exactly_once => {
            Box::new(connect::file::FileSink::create(path, o.restore)?)
        }
        SinkKind::File { path } => Box::new(connect::file::WriterSink::file(path)?),
        SinkKind::Stdout => Box::new(connect::file::WriterSink::stdout()),
        SinkKind::Discard => Box::new(connect::generator::DiscardSink),
        SinkKind::Nats(cfg) => Box::new(connect::nats::NatsWriter::open(cfg, &o.context())?),
        SinkKind::Kafka(cfg) => Box::new(connect::kafka::KafkaWriter::open(cfg, &o.context())?),
    })
}

/// What checkpoint `m` kept for subtask `subtask` of sink `name`: its own
/// state, and after a rescale that of the old subtasks it takes over (old
/// subtask `s` goes to `s mod parallelism`), with their staged data read
/// back from the store.
fn restored(
    name: &str,
    subtask: u32,
    parallelism: u32,
    m: &CheckpointManifest,
    store: &CheckpointStore,
) -> Result<SinkRestore, ExecError> {
    let mut r = SinkRestore {
        checkpoint: m.id.0,
        file: None,
        staged: Vec::new(),
        subtasks: Vec::new(),
    };
    for s in m.sinks.iter().filter(|s| s.vertex == name) {
        if s.subtask % parallelism.max(1) != subtask {
            continue;
        }
        r.subtasks.push(s.subtask);
        if s.subtask == subtask {
            r.file = Some((s.committed_bytes, s.staged_bytes));
        }
        for st in &s.staged {
            let bytes = store.get_chunk(st.loc()).map_err(|e| ExecError::Restore {
                id: m.id.0,
                detail: format!(
                    "sink '{name}': the data staged for checkpoint {} cannot be read: {}",
                    st.checkpoint,
                    crate::report::chain(&e)
                ),
            })?;
            r.staged.push(Staged {
                checkpoint: st.checkpoint,
                bytes: std::sync::Arc::from(&bytes[..]),
            });
        }
    }
    r.staged.sort_by_key(|s| s.checkpoint);
    Ok(r)
}
