//! Sources: read a file or stdin (lines or JSON lines), or generate a
//! deterministic sequence, in batches onto the out-edges.
//!
//! A source never waits on data alone: between events it waits on its
//! control channel (checkpoint barriers) until the next event is due or a
//! partial batch's linger ends, and looks at the cancel flag at least every
//! [`CANCEL_POLL`]; so barriers, cancel and failure reach it within a
//! bounded time whatever its rate. A file is read as fast as the disk
//! allows (with barriers between batches). Stdin is read by a thread of
//! its own into a bounded channel, so the source never blocks in a read:
//! when no line is waiting it sends its partial batch, answers barriers and
//! looks at the cancel flag at least every [`CANCEL_POLL`].

use super::channel::{Barrier, Outputs};
use super::clock::Clock;
use super::coordinator::{Ack, AckData};
use super::{ExecError, Shared};
use crate::batch::Batch;
use crate::checkpoint::SourcePosition;
use crate::job::{SourceFormat, SourceKind};
use std::io::BufRead;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// The longest a source waits in real time without looking at the cancel
/// flag: cancel and job failure reach a waiting source within this.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A source subtask's link to the checkpoint coordinator and the job's
/// clock, and where to start when restored.
pub(super) struct SourceCtl<'a> {
    /// Checkpoint barriers from the coordinator: the control channel a
    /// source waits on between events.
    pub(super) trigger: Option<Receiver<Barrier>>,
    pub(super) ack: Option<Sender<Ack>>,
    /// Lines (file) or events of this subtask's sequence (generator) that a
    /// restored checkpoint already covers.
    pub(super) start: u64,
    /// The job's clock: pacing and linger deadlines are on it.
    pub(super) clock: &'a dyn Clock,
    /// How long a partial batch may wait before it is sent (`linger-ms`).
    pub(super) linger: Duration,
    /// Events per batch (`batch.size`).
    pub(super) batch_size: usize,
}

impl SourceCtl<'_> {
    /// Passes barrier `b` on: records `position` (everything emitted so
    /// far), then puts the barrier after it on every out-edge. Returns
    /// `true` when the barrier stops the job: the source must emit nothing
    /// more.
    fn pass(
        &self,
        vertex: &str,
        subtask: u32,
        position: u64,
        b: Barrier,
        outputs: &mut Outputs,
    ) -> Result<bool, ExecError> {
        outputs.flush()?;
        if let Some(ack) = &self.ack {
            let _ = ack.send(Ack::Done {
                id: b.id,
                data: AckData::Source(SourcePosition {
                    vertex: vertex.to_string(),
                    subtask,
                    position,
                }),
            });
        }
        outputs.barrier(b)?;
        Ok(b.stop.is_some())
    }

    /// Answers pending checkpoint triggers without waiting (see
    /// [`SourceCtl::pass`]).
    fn poll(
        &self,
        vertex: &str,
        subtask: u32,
        position: u64,
        outputs: &mut Outputs,
    ) -> Result<bool, ExecError> {
        self.poll_with(vertex, subtask, position, &mut Batch::default(), outputs)
    }

    /// Waits until `deadline` on the job's clock for a control message:
    /// returns the barrier that came, or `None` at the deadline. Never
    /// blocks longer than [`CANCEL_POLL`] without looking at the cancel
    /// flag, so a cancelled or failed job stops a waiting source promptly,
    /// whatever the source's rate.
    fn wait(&self, deadline: Duration, shared: &Shared) -> Result<Option<Barrier>, ExecError> {
        loop {
            shared.check_cancel()?;
            let real = self.clock.real_wait(deadline);
            if real.is_zero() {
                return Ok(None);
            }
            let slice = real.min(CANCEL_POLL);
            match &self.trigger {
                Some(rx) if self.ack.is_some() => match rx.recv_timeout(slice) {
                    Ok(b) => return Ok(Some(b)),
                    Err(RecvTimeoutError::Timeout) => {}
                    // The coordinator is gone: no more barriers, only time.
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(slice),
                },
                _ => std::thread::sleep(slice),
            }
        }
    }

    fn finished(&self) {
        if let Some(ack) = &self.ack {
            let _ = ack.send(Ack::Finished);
        }
    }
}

/// Runs subtask `index` of a source until its input ends (or a barrier
/// stops the job).
pub(super) fn run(
    name: &str,
    kind: &SourceKind,
    index: u32,
    parallelism: u32,
    mut outputs: Outputs,
    shared: &Shared,
    ctl: &SourceCtl<'_>,
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
            let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
            let mut next = |_: bool| -> std::io::Result<Line> {
                let mut line = Vec::new();
                Ok(match reader.read_until(b'\n', &mut line)? {
                    0 => Line::End,
                    _ => Line::Data(line),
                })
            };
            read_lines(
                &mut next,
                *format,
                key.as_deref(),
                ctl.start,
                ctl.batch_size,
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
            let rx = stdin_lines().map_err(|e| err(format!("cannot read stdin: {e}")))?;
            let mut next = |wait: bool| -> std::io::Result<Line> {
                let got = if wait {
                    rx.recv_timeout(CANCEL_POLL)
                } else {
                    rx.try_recv().map_err(|e| match e {
                        std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        std::sync::mpsc::TryRecvError::Disconnected => {
                            RecvTimeoutError::Disconnected
                        }
                    })
                };
                match got {
                    Ok(line) => line.map(Line::Data),
                    Err(RecvTimeoutError::Timeout) => Ok(Line::Idle),
                    Err(RecvTimeoutError::Disconnected) => Ok(Line::End),
                }
            };
            read_lines(
                &mut next,
                *format,
                key.as_deref(),
                0,
                ctl.batch_size,
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
        } => generate(
            name,
            index,
            parallelism,
            Sequence {
                count: *count,
                keys: *keys,
                seed: *seed,
                per_sec: rate.map(|r| r / f64::from(parallelism)),
            },
            &mut outputs,
            shared,
            ctl,
            &mut stopped,
        )?,
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

/// What a generator subtask produces.
struct Sequence {
    count: u64,
    keys: u64,
    seed: u64,
    /// This subtask's share of `rate`, when paced.
    per_sec: Option<f64>,
}

/// The generator loop. Unpaced, it fills batches as fast as it can and
/// answers barriers between them. Paced, it emits the events due by the
/// clock, sends a partial batch once it has lingered `linger`, and waits
/// on its control channel until the next event is due or the batch's
/// linger ends, so a barrier never waits for a batch to fill.
#[allow(clippy::too_many_arguments)]
fn generate(
    name: &str,
    index: u32,
    parallelism: u32,
    s: Sequence,
    outputs: &mut Outputs,
    shared: &Shared,
    ctl: &SourceCtl<'_>,
    stopped: &mut bool,
) -> Result<u64, ExecError> {
    let clock = ctl.clock;
    let started = clock.now();
    let step = u64::from(parallelism);
    // Event i of this subtask is sequence number index + i * parallelism.
    let mut produced = ctl.start;
    let mut seq = u64::from(index).saturating_add(ctl.start.saturating_mul(step));
    let batch_size = ctl.batch_size.max(1);
    let mut batch = Batch::with_capacity(batch_size.min(1024), 0);
    let mut emitted = 0u64;
    // When the oldest event of the partial batch must be sent.
    let mut linger_until: Option<Duration> = None;
    // Event `i` of this run is due `i / per_sec` seconds after the start.
    let due_at = |i: u64, r: f64| {
        started.saturating_add(Duration::try_from_secs_f64(i as f64 / r).unwrap_or(Duration::MAX))
    };
    while seq < s.count {
        shared.check_cancel()?;
        let now = clock.now();
        while seq < s.count
            && batch.len() < batch_size
            && s.per_sec.is_none_or(|r| due_at(emitted, r) <= now)
        {
            if batch.is_empty() {
                batch.mark_born(Some(std::time::Instant::now()));
            }
            generated(seq, s.keys, s.seed, &mut batch);
            seq = seq.saturating_add(step);
            produced += 1;
            emitted += 1;
            if linger_until.is_none() {
                linger_until = Some(now.saturating_add(ctl.linger));
            }
        }
        let send =
            batch.len() >= batch_size || seq >= s.count || linger_until.is_some_and(|l| l <= now);
        if send && !batch.is_empty() {
            outputs.emit(batch.take())?;
            linger_until = None;
            if s.per_sec.is_some() {
                outputs.flush()?;
            }
        }
        // Everything produced is emitted here, unless a partial batch is
        // lingering; a barrier puts that batch before itself.
        if ctl.poll_with(name, index, produced, &mut batch, outputs)? {
            *stopped = true;
            break;
        }
        if let Some(r) = s.per_sec
            && seq < s.count
        {
            // Wake when the next batch starts, or when the partial one
            // is full or has lingered long enough: not once per event.
            let deadline = match linger_until {
                None => due_at(emitted, r),
                Some(l) => {
                    let room = batch_size.saturating_sub(batch.len()).max(1) as u64;
                    l.min(due_at(emitted + room - 1, r))
                }
            };
            if let Some(b) = ctl.wait(deadline, shared)? {
                outputs.emit(batch.take())?;
                linger_until = None;
                if ctl.pass(name, index, produced, b, outputs)? {
                    *stopped = true;
                    break;
                }
            }
        }
    }
    if !*stopped && !batch.is_empty() {
        outputs.emit(batch)?;
    }
    Ok(emitted)
}

impl SourceCtl<'_> {
    /// [`SourceCtl::poll`] for a source holding a partial `batch`: when a
    /// barrier is pending, the batch goes out first, so the recorded
    /// position covers exactly what precedes the barrier.
    fn poll_with(
        &self,
        vertex: &str,
        subtask: u32,
        position: u64,
        batch: &mut Batch,
        outputs: &mut Outputs,
    ) -> Result<bool, ExecError> {
        let (Some(trigger), Some(_)) = (&self.trigger, &self.ack) else {
            return Ok(false);
        };
        while let Ok(b) = trigger.try_recv() {
            outputs.emit(batch.take())?;
            if self.pass(vertex, subtask, position, b, outputs)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Appends event `seq` of a generator to `batch`: key `key-<k>` with `k` a
/// seeded mix of `seq` modulo the key count, value `seq % 1000` as decimal
/// text.
pub fn generated(seq: u64, keys: u64, seed: u64, batch: &mut Batch) {
    let k = splitmix64(seq ^ seed.rotate_left(17)) % keys.max(1);
    let mut digits = itoa::Buffer::new();
    batch.push_with(
        None,
        |buf| {
            buf.extend_from_slice(b"key-");
            buf.extend_from_slice(digits.format(k).as_bytes());
            true
        },
        |buf| buf.extend_from_slice(itoa::Buffer::new().format(seq % 1000).as_bytes()),
    );
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

#[allow(clippy::too_many_arguments)]
/// What a line reader has next.
enum Line {
    /// A line, with its line ending.
    Data(Vec<u8>),
    /// No line is waiting now (only stdin says this).
    Idle,
    /// The input ended.
    End,
}

/// Reads stdin on a thread of its own, a line at a time, into a bounded
/// channel (backpressure: the thread waits while the channel is full). The
/// thread ends at the end of stdin or when the source is gone; while stdin
/// is silent it waits in its read, which ends with the process.
fn stdin_lines() -> std::io::Result<Receiver<std::io::Result<Vec<u8>>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    std::thread::Builder::new()
        .name("wrun stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            loop {
                let mut line = Vec::new();
                let r = lock.read_until(b'\n', &mut line);
                let done = !matches!(r, Ok(n) if n > 0);
                let sent = match r {
                    Ok(0) => break,
                    Ok(_) => tx.send(Ok(line)),
                    Err(e) => tx.send(Err(e)),
                };
                if sent.is_err() || done {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// The line-reading loop of the file and stdin sources. `next(wait)` gives
/// the next line; with `wait`, a reader that can be idle may wait a little
/// (at most [`CANCEL_POLL`]) for one. On `Idle` the partial batch is sent,
/// and cancel and barriers are looked at, so a quiet input never holds
/// events back or keeps a barrier waiting.
#[allow(clippy::too_many_arguments)]
fn read_lines(
    next: &mut dyn FnMut(bool) -> std::io::Result<Line>,
    format: SourceFormat,
    key: Option<&str>,
    skip: u64,
    batch_size: usize,
    outputs: &mut Outputs,
    shared: &Shared,
    poll: &dyn Fn(u64, &mut Outputs) -> Result<bool, ExecError>,
    err: &dyn Fn(u64, String) -> ExecError,
    stopped: &mut bool,
) -> Result<u64, ExecError> {
    // `n` counts lines read, which is the position a checkpoint records.
    let mut n = 0u64;
    let mut emitted = 0u64;
    let batch_size = batch_size.max(1);
    let mut batch = Batch::with_capacity(batch_size.min(1024), 0);
    let mut idle = false;
    loop {
        let mut line = match next(idle).map_err(|e| err(n + 1, format!("read failed: {e}")))? {
            Line::End => break,
            Line::Idle => {
                idle = true;
                shared.check_cancel()?;
                if !batch.is_empty() {
                    outputs.emit(batch.take())?;
                    outputs.flush()?;
                }
                if poll(n, outputs)? {
                    *stopped = true;
                    return Ok(emitted);
                }
                continue;
            }
            Line::Data(line) => {
                idle = false;
                line
            }
        };
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
        let key = match format {
            SourceFormat::Lines => Some(None),
            SourceFormat::Json if line.iter().all(u8::is_ascii_whitespace) => None,
            SourceFormat::Json => {
                let v: serde_json::Value = serde_json::from_slice(&line)
                    .map_err(|e| err(n, format!("not valid JSON: {e}")))?;
                Some(match key {
                    None => None,
                    Some(ptr) => match v.pointer(ptr) {
                        Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
                        Some(serde_json::Value::Null) | None => {
                            return Err(err(n, format!("no key at JSON pointer {ptr:?}")));
                        }
                        Some(other) => Some(other.to_string().into_bytes()),
                    },
                })
            }
        };
        if let Some(key) = key {
            if batch.is_empty() {
                batch.mark_born(Some(std::time::Instant::now()));
            }
            batch.push(key.as_deref(), &line, None);
            emitted += 1;
        }
        if batch.len() >= batch_size {
            shared.check_cancel()?;
            outputs.emit(batch.take())?;
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
        let (mut a, mut b) = (super::Batch::default(), super::Batch::default());
        (0..1000).for_each(|s| super::generated(s, 10, 7, &mut a));
        (0..1000).for_each(|s| super::generated(s, 10, 7, &mut b));
        assert!(a.iter().eq(b.iter()));
        let keys: std::collections::HashSet<_> = a.iter().map(|e| e.key).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(a.get(7).value, b"7");
    }
}
