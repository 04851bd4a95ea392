//! Sources: read a file or stdin (lines or JSON lines), or generate a
//! deterministic sequence, in batches onto the out-edges.

use super::channel::{Barrier, Outputs};
use super::coordinator::{Ack, AckData};
use super::{ExecError, Shared};
use crate::checkpoint::SourcePosition;
use crate::job::{SourceFormat, SourceKind};
use crate::sandbox::Event;
use std::io::BufRead;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

/// Runs subtask `index` of a source until its input ends.
/// A source subtask's link to the checkpoint coordinator, and where to
/// start when restored.
pub(super) struct SourceCtl {
    pub(super) trigger: Option<Receiver<Barrier>>,
    pub(super) ack: Option<Sender<Ack>>,
    /// Lines (file) or events of this subtask's sequence (generator) that a
    /// restored checkpoint already covers.
    pub(super) start: u64,
}

impl SourceCtl {
    /// Answers pending checkpoint triggers: record `position`, then send the
    /// barrier after everything emitted so far. Returns `true` when the
    /// barrier stops the job: the source must emit nothing more.
    fn poll(
        &self,
        vertex: &str,
        subtask: u32,
        position: u64,
        outputs: &mut Outputs,
    ) -> Result<bool, ExecError> {
        let (Some(trigger), Some(ack)) = (&self.trigger, &self.ack) else {
            return Ok(false);
        };
        while let Ok(b) = trigger.try_recv() {
            outputs.flush()?;
            let _ = ack.send(Ack::Done {
                id: b.id,
                data: AckData::Source(SourcePosition {
                    vertex: vertex.to_string(),
                    subtask,
                    position,
                }),
            });
            outputs.barrier(b)?;
            if b.stop.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn finished(&self) {
        if let Some(ack) = &self.ack {
            let _ = ack.send(Ack::Finished);
        }
    }
}

pub(super) fn run(
    name: &str,
    kind: &SourceKind,
    index: u32,
    parallelism: u32,
    mut outputs: Outputs,
    shared: &Shared,
    ctl: &SourceCtl,
) -> Result<u64, ExecError> {
    let err = |detail: String| ExecError::Source {
        vertex: name.to_string(),
        detail,
    };
    let poll = |pos: u64, o: &mut Outputs| ctl.poll(name, index, pos, o);
    let mut stopped = false;
    let n = match kind {
        SourceKind::File { path, format, key } => {
            let file = std::fs::File::open(path)
                .map_err(|e| err(format!("cannot open input file {}: {e}", path.display())))?;
            let reader = std::io::BufReader::with_capacity(1 << 16, file);
            read_lines(
                reader,
                *format,
                key.as_deref(),
                ctl.start,
                &mut outputs,
                shared,
                &poll,
                &|line, detail| err(format!("{} line {line}: {detail}", path.display())),
                &mut stopped,
            )?
        }
        SourceKind::Stdin { format, key } => {
            // Stdin cannot be replayed: a restored job reads on from where
            // stdin is now.
            let stdin = std::io::stdin();
            read_lines(
                stdin.lock(),
                *format,
                key.as_deref(),
                0,
                &mut outputs,
                shared,
                &poll,
                &|line, detail| err(format!("stdin line {line}: {detail}")),
                &mut stopped,
            )?
        }
        SourceKind::Generator {
            count,
            keys,
            rate,
            seed,
        } => {
            let started = Instant::now();
            let per_sec = rate.map(|r| r / f64::from(parallelism));
            // Event i of this subtask is sequence number index + i * parallelism.
            let mut produced = ctl.start;
            let mut seq =
                u64::from(index).saturating_add(ctl.start.saturating_mul(u64::from(parallelism)));
            let mut batch = Vec::with_capacity(1024);
            let mut emitted = 0u64;
            while seq < *count {
                shared.check_cancel()?;
                batch.push(generated(seq, *keys, *seed));
                seq += u64::from(parallelism);
                produced += 1;
                emitted += 1;
                if batch.len() == 1024 || seq >= *count {
                    outputs.emit(std::mem::take(&mut batch))?;
                    if poll(produced, &mut outputs)? {
                        stopped = true;
                        break;
                    }
                    if let Some(r) = per_sec {
                        // Pace to the rate: wait until this many events are due.
                        let due = Duration::from_secs_f64(emitted as f64 / r);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            outputs.flush()?;
                            std::thread::sleep(wait);
                        }
                    }
                }
            }
            emitted
        }
    };
    if stopped {
        // Stopped at a savepoint barrier: no end-of-input downstream (the
        // operators must not close), no "finished" to the coordinator.
        return Ok(n);
    }
    outputs.end()?;
    ctl.finished();
    Ok(n)
}

/// Event `seq` of a generator: key `key-<k>` with `k` a seeded mix of
/// `seq` modulo the key count, value `seq % 1000` as decimal text.
pub fn generated(seq: u64, keys: u64, seed: u64) -> Event {
    let k = splitmix64(seq ^ seed.rotate_left(17)) % keys.max(1);
    Event {
        key: Some(format!("key-{k}").into_bytes()),
        value: (seq % 1000).to_string().into_bytes(),
        timestamp: None,
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

#[allow(clippy::too_many_arguments)]
fn read_lines(
    mut reader: impl BufRead,
    format: SourceFormat,
    key: Option<&str>,
    skip: u64,
    outputs: &mut Outputs,
    shared: &Shared,
    poll: &dyn Fn(u64, &mut Outputs) -> Result<bool, ExecError>,
    err: &dyn Fn(u64, String) -> ExecError,
    stopped: &mut bool,
) -> Result<u64, ExecError> {
    // `n` counts lines read, which is the position a checkpoint records.
    let mut n = 0u64;
    let mut emitted = 0u64;
    let mut line = Vec::new();
    let mut batch = Vec::with_capacity(1024);
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| err(n + 1, format!("read failed: {e}")))?;
        if read == 0 {
            break;
        }
        n += 1;
        if n <= skip {
            continue;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let event = match format {
            SourceFormat::Lines => Some(Event {
                key: None,
                value: line.clone(),
                timestamp: None,
            }),
            SourceFormat::Json if line.iter().all(u8::is_ascii_whitespace) => None,
            SourceFormat::Json => {
                let v: serde_json::Value = serde_json::from_slice(&line)
                    .map_err(|e| err(n, format!("not valid JSON: {e}")))?;
                let key = match key {
                    None => None,
                    Some(ptr) => match v.pointer(ptr) {
                        Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
                        Some(serde_json::Value::Null) | None => {
                            return Err(err(n, format!("no key at JSON pointer {ptr:?}")));
                        }
                        Some(other) => Some(other.to_string().into_bytes()),
                    },
                };
                Some(Event {
                    key,
                    value: line.clone(),
                    timestamp: None,
                })
            }
        };
        if let Some(e) = event {
            batch.push(e);
            emitted += 1;
        }
        // Flush when the batch is full, or when no more input is buffered
        // (an interactive stdin should not wait for a full batch).
        if batch.len() >= 1024 || reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
            shared.check_cancel()?;
            outputs.emit(std::mem::take(&mut batch))?;
            outputs.flush()?;
            if poll(n, outputs)? {
                *stopped = true;
                return Ok(emitted);
            }
        }
    }
    outputs.emit(batch)?;
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generator_is_deterministic_and_covers_keys() {
        let a: Vec<_> = (0..1000).map(|s| super::generated(s, 10, 7)).collect();
        let b: Vec<_> = (0..1000).map(|s| super::generated(s, 10, 7)).collect();
        assert_eq!(a, b);
        let keys: std::collections::HashSet<_> = a.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys.len(), 10);
    }
}
