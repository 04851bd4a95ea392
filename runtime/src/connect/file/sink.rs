//! The file and stdout sinks: JSON lines.
//!
//! With checkpoints on, the file sink is exactly-once (two-phase commit):
//! events after barrier `n-1` go to `<file>.inprogress`; at barrier `n` that
//! part is synced and renamed `<file>.pending-<n>`; when checkpoint `n`
//! completes, pending parts up to `n` are appended to the file. The
//! checkpoint records how long the file was before part `n` and how long
//! part `n` is, so recovery can redo or undo a commit exactly.

use crate::batch::{Batch, EventRef};
use crate::connect::{ConnectError, Prepared, SinkRestore, SinkWriter};
use std::io::Write;

/// The exactly-once file sink's state.
pub struct FileSink {
    path: std::path::PathBuf,
    part: std::io::BufWriter<std::fs::File>,
    part_bytes: u64,
    /// Parts staged at barriers and not yet committed: (checkpoint, file, bytes).
    pending: Vec<(u64, std::path::PathBuf, u64)>,
    /// Length of the output file once every pending part is committed.
    committed: u64,
}

fn sink_err(detail: String) -> ConnectError {
    ConnectError::fatal(detail)
}

fn sibling(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    std::path::PathBuf::from(s)
}

impl FileSink {
    /// Opens the sink, first bringing the output file to exactly what
    /// checkpoint `restore` (its id and the sink's state in it) committed,
    /// or empty when there is none.
    fn open(
        path: &std::path::Path,
        restore: Option<(u64, (u64, u64))>,
    ) -> Result<FileSink, ConnectError> {
        let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
            sink_err(format!("{what} {}: {e}", p.display()))
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
                let (committed_bytes, staged_bytes) = s;
                let want = committed_bytes + staged_bytes;
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
                        sink_err(format!("cannot restore {}: it holds {len} bytes, the checkpoint committed {want}, and the staged part {} is gone", path.display(), sibling(path, &format!(".pending-{id}")).display()))
                    })?;
                    let part_len = std::fs::metadata(&part)
                        .map(|m| m.len())
                        .map_err(|e| io("cannot read", &part, e))?;
                    if part_len != staged_bytes {
                        return Err(sink_err(format!(
                            "cannot restore {}: the staged part {} holds {part_len} bytes, the checkpoint recorded {}",
                            path.display(),
                            part.display(),
                            staged_bytes
                        )));
                    }
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(path)
                        .map_err(|e| io("cannot open", path, e))?;
                    f.set_len(committed_bytes.min(len))
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
        Ok(FileSink {
            path: path.to_path_buf(),
            part: std::io::BufWriter::with_capacity(1 << 16, part),
            part_bytes: 0,
            pending: Vec::new(),
            committed: target,
        })
    }

    /// Barrier `id`: stage the part written since the last one.
    fn stage(&mut self, id: u64) -> Result<(u64, u64), ConnectError> {
        let io = |what: &str, e: std::io::Error| sink_err(format!("{what}: {e}"));
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
        let state = (committed_before, self.part_bytes);
        self.pending.push((id, to, self.part_bytes));
        let part = std::fs::File::create(&from).map_err(|e| io("creating the next part", e))?;
        self.part = std::io::BufWriter::with_capacity(1 << 16, part);
        self.part_bytes = 0;
        Ok(state)
    }

    /// Checkpoint `id` completed: commit the parts staged up to it.
    fn commit_parts(&mut self, id: u64) -> Result<(), ConnectError> {
        while let Some((pid, part, bytes)) = self.pending.first().cloned() {
            if pid > id {
                break;
            }
            crate::fault::crash_point("sink-commit");
            append(&self.path, &part)
                .map_err(|e| sink_err(format!("committing into {}: {e}", self.path.display())))?;
            let _ = std::fs::remove_file(&part);
            self.committed += bytes;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// End of input: everything written is final.
    fn finish_parts(&mut self) -> Result<(), ConnectError> {
        self.stage(u64::MAX)?;
        self.commit_parts(u64::MAX)?;
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

impl FileSink {
    /// Opens the exactly-once file sink at `path` (creating its directory),
    /// first bringing the file to exactly what the restored checkpoint
    /// committed.
    pub fn create(
        path: &std::path::Path,
        restore: Option<&SinkRestore>,
    ) -> Result<FileSink, ConnectError> {
        create_parent(path)?;
        let restore = restore.map(|r| (r.checkpoint, r.file.unwrap_or((0, 0))));
        FileSink::open(path, restore)
    }

    fn write_buf(&mut self, buf: &[u8]) -> Result<(), ConnectError> {
        self.part_bytes += buf.len() as u64;
        self.part.write_all(buf).map_err(|e| {
            sink_err(format!(
                "writing the staged part of {}: {e}",
                self.path.display()
            ))
        })
    }
}

impl SinkWriter for FileSink {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectError> {
        let buf = json_lines(batch);
        self.write_buf(&buf)
    }

    fn prepare(&mut self, checkpoint: u64) -> Result<Prepared, ConnectError> {
        Ok(Prepared {
            file: Some(self.stage(checkpoint)?),
            staged: Vec::new(),
        })
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectError> {
        self.commit_parts(checkpoint)
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        self.finish_parts()
    }
}

fn create_parent(path: &std::path::Path) -> Result<(), ConnectError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            sink_err(format!(
                "cannot create output directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// A sink that writes JSON lines to a stream (stdout, or a file without
/// checkpoints): flushed at barriers and at the end, nothing to commit.
pub struct WriterSink {
    out: Box<dyn Write + Send>,
    target: String,
}

impl WriterSink {
    /// Standard output, a line at a time.
    pub fn stdout() -> WriterSink {
        WriterSink {
            out: Box::new(std::io::LineWriter::new(std::io::stdout())),
            target: "stdout".into(),
        }
    }

    /// `path`, created (or truncated).
    pub fn file(path: &std::path::Path) -> Result<WriterSink, ConnectError> {
        create_parent(path)?;
        let f = std::fs::File::create(path)
            .map_err(|e| sink_err(format!("cannot create output file {}: {e}", path.display())))?;
        Ok(WriterSink {
            out: Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
            target: path.display().to_string(),
        })
    }

    fn flush(&mut self) -> Result<(), ConnectError> {
        self.out
            .flush()
            .map_err(|e| sink_err(format!("writing {}: {e}", self.target)))
    }
}

impl SinkWriter for WriterSink {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectError> {
        let buf = json_lines(batch);
        self.out
            .write_all(&buf)
            .map_err(|e| sink_err(format!("writing {}: {e}", self.target)))
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Prepared, ConnectError> {
        self.flush()?;
        Ok(Prepared::default())
    }

    fn commit(&mut self, _checkpoint: u64) -> Result<(), ConnectError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        self.flush()
    }
}

fn json_lines(batch: &Batch) -> Vec<u8> {
    let mut buf = Vec::with_capacity(batch.byte_len() + batch.len() * 24);
    for e in batch.iter() {
        json_line(e, &mut buf);
    }
    buf
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
        for (id, want) in [(3u64, "committed\nAAAA"), (4, "committed\nBBBB")] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out.jsonl");
            std::fs::write(&out, "committed\n").unwrap();
            // Two staged parts of the same length: only the id tells them apart.
            std::fs::write(dir.path().join("out.jsonl.pending-3"), "AAAA").unwrap();
            std::fs::write(dir.path().join("out.jsonl.pending-4"), "BBBB").unwrap();
            let restore = SinkRestore {
                checkpoint: id,
                file: Some((10, 4)),
                ..SinkRestore::default()
            };
            let mut sink = FileSink::create(&out, Some(&restore)).unwrap();
            sink.finish().unwrap();
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
        let restore = SinkRestore {
            checkpoint: 5,
            file: Some((10, 4)),
            ..SinkRestore::default()
        };
        let err = FileSink::create(&out, Some(&restore))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("holds 2 bytes, the checkpoint recorded 4"),
            "{err}"
        );
    }
}
