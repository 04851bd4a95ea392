//! Sinks: JSON lines to a file or stdout, or discard (for benchmarks).
//!
//! With checkpoints on, the file sink is exactly-once (two-phase commit):
//! events after barrier `n-1` go to `<file>.inprogress`; at barrier `n` that
//! part is synced and renamed `<file>.pending-<n>`; when checkpoint `n`
//! completes, pending parts up to `n` are appended to the file. The
//! checkpoint records how long the file was before part `n` and how long
//! part `n` is, so recovery can redo or undo a commit exactly.
//!
//! [`run`] is a sink subtask's loop: write batches, stage at barriers,
//! commit when the coordinator says a checkpoint completed.

use super::coordinator::{Ack, AckData};
use super::inputs::{Inputs, Next};
use super::{Counts, ExecError, Shared};
use crate::batch::{Batch, EventRef};
use crate::checkpoint::CheckpointManifest;
use crate::job::SinkKind;
use std::io::Write;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

/// What a sink subtask is connected to.
pub(super) struct SinkTask<'a> {
    pub(super) name: &'a str,
    pub(super) kind: &'a SinkKind,
    /// The vertex index, for metrics.
    pub(super) vertex: usize,
    pub(super) rx: Receiver<super::channel::Message>,
    /// Input channels (upstream subtasks over every in-edge).
    pub(super) inputs: usize,
    /// The checkpoint the job starts from.
    pub(super) restore: Option<&'a CheckpointManifest>,
    /// Where checkpoint acknowledgements go (checkpoints on).
    pub(super) ack: Option<Sender<Ack>>,
    /// Completed checkpoints, from the coordinator.
    pub(super) commit: Option<Receiver<u64>>,
    pub(super) metrics: &'a super::metrics::JobMetrics,
}

/// Runs a sink subtask until every input has ended (or a stop barrier).
pub(super) fn run(task: SinkTask<'_>, shared: &Shared) -> Result<Counts, ExecError> {
    let SinkTask {
        name,
        kind,
        vertex: v,
        rx,
        inputs,
        restore,
        ack,
        commit,
        metrics,
    } = task;
    let sink_state = restore.and_then(|m| {
        m.sinks
            .iter()
            .find(|k| k.vertex == name)
            .map(|k| (m.id.0, k))
    });
    let mut sink = Sink::open(name, kind, ack.is_some(), sink_state)?;
    let mut c = Counts::default();
    let mut inputs = Inputs::new(rx, inputs);
    loop {
        if let Some(commit) = &commit {
            while let Ok(id) = commit.try_recv() {
                sink.commit(name, id)?;
            }
        }
        match inputs.next(Duration::from_millis(20))? {
            Next::Batch(b) => {
                c.records_in += b.len() as u64;
                metrics.vertex(v).add_in(b.len());
                sink.write(name, &b)?;
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
                let state = sink.barrier(name, id)?;
                if let Some(ack) = &ack {
                    let _ = ack.send(Ack::Done {
                        id,
                        data: AckData::Sink(state),
                    });
                }
                if b.stop.is_some() {
                    // Stop with a savepoint: commit what the savepoint
                    // covers, then end without finishing.
                    wait_commit(commit.as_ref(), shared, id, |c| sink.commit(name, c))?;
                    return Ok(c);
                }
            }
            Next::Idle => shared.check_cancel()?,
            Next::End => break,
        }
    }
    sink.finish(name)?;
    if let Some(ack) = &ack {
        let _ = ack.send(Ack::Finished);
    }
    Ok(c)
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

/// An open sink.
pub(super) enum Sink {
    Writer(Box<dyn Write + Send>, String),
    Staged(Staged),
    Discard,
}

/// The exactly-once file sink's state.
pub(super) struct Staged {
    path: std::path::PathBuf,
    part: std::io::BufWriter<std::fs::File>,
    part_bytes: u64,
    /// Parts staged at barriers and not yet committed: (checkpoint, file, bytes).
    pending: Vec<(u64, std::path::PathBuf, u64)>,
    /// Length of the output file once every pending part is committed.
    committed: u64,
}

fn sink_err(name: &str, detail: String) -> ExecError {
    ExecError::Sink {
        vertex: name.to_string(),
        detail,
    }
}

fn sibling(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    std::path::PathBuf::from(s)
}

impl Staged {
    /// Opens the sink, first bringing the output file to exactly what
    /// checkpoint `restore` (its id and the sink's state in it) committed,
    /// or empty when there is none.
    fn open(
        name: &str,
        path: &std::path::Path,
        restore: Option<(u64, &crate::checkpoint::SinkState)>,
    ) -> Result<Staged, ExecError> {
        let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
            sink_err(name, format!("{what} {}: {e}", p.display()))
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut leftovers: Vec<(u64, std::path::PathBuf)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = n
                    .strip_prefix(&format!("{file_name}.pending-"))
                    .and_then(|i| i.parse::<u64>().ok())
                {
                    leftovers.push((id, e.path()));
                }
            }
        }
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let target = match restore {
            None => 0,
            Some((id, s)) => {
                let want = s.committed_bytes + s.staged_bytes;
                if len < want {
                    // The commit of the restored checkpoint's part did not
                    // finish: redo it from the part file.
                    // The part is named by its checkpoint; its length must
                    // be what the checkpoint recorded, or it is incomplete.
                    let part = leftovers
                        .iter()
                        .find(|(pid, _)| *pid == id)
                        .map(|(_, p)| p.clone());
                    let part = part.ok_or_else(|| {
                        sink_err(name, format!("cannot restore {}: it holds {len} bytes, the checkpoint committed {want}, and the staged part {} is gone", path.display(), sibling(path, &format!(".pending-{id}")).display()))
                    })?;
                    let part_len = std::fs::metadata(&part)
                        .map(|m| m.len())
                        .map_err(|e| io("cannot read", &part, e))?;
                    if part_len != s.staged_bytes {
                        return Err(sink_err(
                            name,
                            format!(
                                "cannot restore {}: the staged part {} holds {part_len} bytes, the checkpoint recorded {}",
                                path.display(),
                                part.display(),
                                s.staged_bytes
                            ),
                        ));
                    }
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(path)
                        .map_err(|e| io("cannot open", path, e))?;
                    f.set_len(s.committed_bytes.min(len))
                        .map_err(|e| io("cannot truncate", path, e))?;
                    drop(f);
                    append(path, &part).map_err(|e| io("cannot commit into", path, e))?;
                }
                want
            }
        };
        // Undo what later (uncompleted) checkpoints or the run after the
        // restored checkpoint wrote.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("cannot create output file", path, e))?;
        f.set_len(target)
            .map_err(|e| io("cannot truncate", path, e))?;
        f.sync_all().map_err(|e| io("cannot sync", path, e))?;
        for (_, p) in leftovers {
            let _ = std::fs::remove_file(p);
        }
        let part_path = sibling(path, ".inprogress");
        let part =
            std::fs::File::create(&part_path).map_err(|e| io("cannot create", &part_path, e))?;
        Ok(Staged {
            path: path.to_path_buf(),
            part: std::io::BufWriter::with_capacity(1 << 16, part),
            part_bytes: 0,
            pending: Vec::new(),
            committed: target,
        })
    }

    /// Barrier `id`: stage the part written since the last one.
    fn stage(&mut self, name: &str, id: u64) -> Result<crate::checkpoint::SinkState, ExecError> {
        let io = |what: &str, e: std::io::Error| sink_err(name, format!("{what}: {e}"));
        self.part
            .flush()
            .map_err(|e| io("writing the staged part", e))?;
        self.part
            .get_ref()
            .sync_all()
            .map_err(|e| io("syncing the staged part", e))?;
        let from = sibling(&self.path, ".inprogress");
        let to = sibling(&self.path, &format!(".pending-{id}"));
        std::fs::rename(&from, &to).map_err(|e| io("staging the part", e))?;
        let committed_before: u64 = self.committed + self.pending.iter().map(|p| p.2).sum::<u64>();
        let state = crate::checkpoint::SinkState {
            vertex: name.to_string(),
            committed_bytes: committed_before,
            staged_bytes: self.part_bytes,
        };
        self.pending.push((id, to, self.part_bytes));
        let part = std::fs::File::create(&from).map_err(|e| io("creating the next part", e))?;
        self.part = std::io::BufWriter::with_capacity(1 << 16, part);
        self.part_bytes = 0;
        Ok(state)
    }

    /// Checkpoint `id` completed: commit the parts staged up to it.
    fn commit(&mut self, name: &str, id: u64) -> Result<(), ExecError> {
        while let Some((pid, part, bytes)) = self.pending.first().cloned() {
            if pid > id {
                break;
            }
            super::fault::crash_point("sink-commit");
            append(&self.path, &part).map_err(|e| {
                sink_err(
                    name,
                    format!("committing into {}: {e}", self.path.display()),
                )
            })?;
            let _ = std::fs::remove_file(&part);
            self.committed += bytes;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// End of input: everything written is final.
    fn finish(&mut self, name: &str) -> Result<(), ExecError> {
        self.stage(name, u64::MAX)?;
        self.commit(name, u64::MAX)?;
        let _ = std::fs::remove_file(sibling(&self.path, ".inprogress"));
        Ok(())
    }
}

/// Appends a part file to the output and syncs it.
fn append(path: &std::path::Path, part: &std::path::Path) -> std::io::Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    let mut src = std::fs::File::open(part)?;
    std::io::copy(&mut src, &mut out)?;
    out.sync_all()
}

impl Sink {
    pub(super) fn open(
        name: &str,
        kind: &SinkKind,
        exactly_once: bool,
        restore: Option<(u64, &crate::checkpoint::SinkState)>,
    ) -> Result<Sink, ExecError> {
        Ok(match kind {
            SinkKind::File { path } if exactly_once => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        sink_err(
                            name,
                            format!("cannot create output directory {}: {e}", dir.display()),
                        )
                    })?;
                }
                Sink::Staged(Staged::open(name, path, restore)?)
            }
            SinkKind::File { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| ExecError::Sink {
                        vertex: name.to_string(),
                        detail: format!("cannot create output directory {}: {e}", dir.display()),
                    })?;
                }
                let f = std::fs::File::create(path).map_err(|e| ExecError::Sink {
                    vertex: name.to_string(),
                    detail: format!("cannot create output file {}: {e}", path.display()),
                })?;
                Sink::Writer(
                    Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
                    path.display().to_string(),
                )
            }
            SinkKind::Stdout => Sink::Writer(
                Box::new(std::io::LineWriter::new(std::io::stdout())),
                "stdout".into(),
            ),
            SinkKind::Discard => Sink::Discard,
        })
    }

    pub(super) fn write(&mut self, name: &str, batch: &Batch) -> Result<(), ExecError> {
        if let Sink::Discard = self {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(batch.byte_len() + batch.len() * 24);
        for e in batch.iter() {
            json_line(e, &mut buf);
        }
        match self {
            Sink::Writer(w, target) => w
                .write_all(&buf)
                .map_err(|e| sink_err(name, format!("writing {target}: {e}"))),
            Sink::Staged(s) => {
                s.part_bytes += buf.len() as u64;
                s.part.write_all(&buf).map_err(|e| {
                    sink_err(
                        name,
                        format!("writing the staged part of {}: {e}", s.path.display()),
                    )
                })
            }
            Sink::Discard => Ok(()),
        }
    }

    /// Barrier `id` reached the sink: stage (exactly-once file) or flush.
    pub(super) fn barrier(
        &mut self,
        name: &str,
        id: u64,
    ) -> Result<Option<crate::checkpoint::SinkState>, ExecError> {
        match self {
            Sink::Staged(s) => s.stage(name, id).map(Some),
            Sink::Writer(w, target) => w
                .flush()
                .map(|()| None)
                .map_err(|e| sink_err(name, format!("writing {target}: {e}"))),
            Sink::Discard => Ok(None),
        }
    }

    /// Checkpoint `id` completed.
    pub(super) fn commit(&mut self, name: &str, id: u64) -> Result<(), ExecError> {
        match self {
            Sink::Staged(s) => s.commit(name, id),
            _ => Ok(()),
        }
    }

    pub(super) fn finish(&mut self, name: &str) -> Result<(), ExecError> {
        if let Sink::Staged(s) = self {
            return s.finish(name);
        }
        if let Sink::Writer(w, target) = self {
            w.flush().map_err(|e| ExecError::Sink {
                vertex: name.to_string(),
                detail: format!("writing {target}: {e}"),
            })?;
        }
        Ok(())
    }
}

/// `{"key":…,"value":…}` (plus `"timestamp"` when set). Bytes that are
/// UTF-8 become JSON strings; others become `{"hex":"…"}`.
pub fn json_line(e: EventRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"key\":");
    match e.key {
        Some(k) => bytes_json(k, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value\":");
    bytes_json(e.value, out);
    if let Some(ts) = e.timestamp {
        out.extend_from_slice(format!(",\"timestamp\":{ts}").as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

fn bytes_json(b: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            // serde_json's string escaping; writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Err(_) => {
            out.extend_from_slice(b"{\"hex\":\"");
            out.extend_from_slice(hex::encode(b).as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let mut out = Vec::new();
        json_line(
            EventRef {
                key: Some(b"a\"b"),
                value: b"1",
                timestamp: Some(5),
            },
            &mut out,
        );
        json_line(
            EventRef {
                key: None,
                value: &[0xff],
                timestamp: None,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"key\":\"a\\\"b\",\"value\":\"1\",\"timestamp\":5}\n{\"key\":null,\"value\":{\"hex\":\"ff\"}}\n"
        );
    }

    #[test]
    fn recovery_recommits_the_part_of_the_restored_checkpoint_by_id() {
        use crate::checkpoint::SinkState;
        for (id, want) in [(3u64, "committed\nAAAA"), (4, "committed\nBBBB")] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out.jsonl");
            std::fs::write(&out, "committed\n").unwrap();
            // Two staged parts of the same length: only the id tells them apart.
            std::fs::write(dir.path().join("out.jsonl.pending-3"), "AAAA").unwrap();
            std::fs::write(dir.path().join("out.jsonl.pending-4"), "BBBB").unwrap();
            let state = SinkState {
                vertex: "out".into(),
                committed_bytes: 10,
                staged_bytes: 4,
            };
            let kind = SinkKind::File { path: out.clone() };
            let mut sink = Sink::open("out", &kind, true, Some((id, &state))).unwrap();
            sink.finish("out").unwrap();
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                want,
                "checkpoint {id}"
            );
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left.len(), 1, "{left:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        std::fs::write(&out, "committed\n").unwrap();
        std::fs::write(dir.path().join("out.jsonl.pending-5"), "BB").unwrap();
        let state = SinkState {
            vertex: "out".into(),
            committed_bytes: 10,
            staged_bytes: 4,
        };
        let err = Sink::open(
            "out",
            &SinkKind::File { path: out },
            true,
            Some((5, &state)),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("holds 2 bytes, the checkpoint recorded 4"),
            "{err}"
        );
    }
}
