//! The file and stdin sources. A file source is one split: the file, read
//! from its start to its end; its position is the number of lines read.
//! Stdin cannot be replayed: a restored job reads on from where stdin is.

use super::{FileSource, StdinSource};
use crate::batch::Batch;
use crate::connect::event_time::json_timestamp;
use crate::connect::{ConnectError, Poll, Position, SourceReader};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

/// How a file or stdin source reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// Each line is an event value; events have no key.
    Lines,
    /// Each line is a JSON value; the key comes from a JSON pointer.
    Json,
}

/// Turns lines into events.
struct LineDecoder {
    format: SourceFormat,
    key: Option<String>,
    /// The JSON pointer of the event time.
    timestamp: Option<String>,
    /// Lines read: the position a checkpoint records.
    lines: u64,
}

impl LineDecoder {
    /// Appends line number `self.lines` to `batch`, unless it is blank
    /// JSON; `what` names the input in errors.
    fn push(&self, mut line: Vec<u8>, batch: &mut Batch, what: &str) -> Result<(), ConnectError> {
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let n = self.lines;
        let (key, ts) = match self.format {
            SourceFormat::Lines => (None, None),
            SourceFormat::Json if line.iter().all(u8::is_ascii_whitespace) => return Ok(()),
            SourceFormat::Json => {
                let v: serde_json::Value = serde_json::from_slice(&line).map_err(|e| {
                    ConnectError::fatal(format!("{what} line {n}: not valid JSON: {e}"))
                })?;
                let key = match &self.key {
                    None => None,
                    Some(ptr) => match v.pointer(ptr) {
                        Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
                        Some(serde_json::Value::Null) | None => {
                            return Err(ConnectError::fatal(format!(
                                "{what} line {n}: no key at JSON pointer {ptr:?}"
                            )));
                        }
                        Some(other) => Some(other.to_string().into_bytes()),
                    },
                };
                let ts = match &self.timestamp {
                    None => None,
                    Some(ptr) => Some(
                        json_timestamp(&v, ptr)
                            .map_err(|e| ConnectError::fatal(format!("{what} line {n}: {e}")))?,
                    ),
                };
                (key, ts)
            }
        };
        batch.push(key.as_deref(), &line, ts);
        Ok(())
    }
}

/// Reads a file to its end.
pub struct FileReader {
    path: PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    decoder: LineDecoder,
}

impl FileReader {
    /// Opens the source's file, skipping the `skip` lines a restored
    /// checkpoint covers.
    pub fn open(src: &FileSource, skip: u64) -> Result<FileReader, ConnectError> {
        let path = &src.path;
        let file = std::fs::File::open(path).map_err(|e| {
            ConnectError::fatal(format!("cannot open input file {}: {e}", path.display()))
        })?;
        let mut r = FileReader {
            path: path.to_path_buf(),
            reader: std::io::BufReader::with_capacity(1 << 16, file),
            decoder: LineDecoder {
                format: src.format,
                key: src.key.clone(),
                timestamp: src.timestamp.clone(),
                lines: 0,
            },
        };
        let mut line = Vec::new();
        while r.decoder.lines < skip {
            line.clear();
            if r.read(&mut line)? == 0 {
                break;
            }
            r.decoder.lines += 1;
        }
        Ok(r)
    }

    fn read(&mut self, line: &mut Vec<u8>) -> Result<usize, ConnectError> {
        self.reader.read_until(b'\n', line).map_err(|e| {
            ConnectError::fatal(format!(
                "{} line {}: read failed: {e}",
                self.path.display(),
                self.decoder.lines + 1
            ))
        })
    }
}

impl SourceReader for FileReader {
    fn poll(
        &mut self,
        batch: &mut Batch,
        room: usize,
        _now: Duration,
        _wait: Duration,
    ) -> Result<Poll, ConnectError> {
        let start = batch.len();
        while batch.len() - start < room {
            let mut line = Vec::new();
            if self.read(&mut line)? == 0 {
                return Ok(if batch.len() > start {
                    Poll::Ready
                } else {
                    Poll::End
                });
            }
            self.decoder.lines += 1;
            let what = self.path.display().to_string();
            self.decoder.push(line, batch, &what)?;
        }
        Ok(Poll::Ready)
    }

    fn position(&self) -> Position {
        Position::Offset(self.decoder.lines)
    }
}

/// Reads stdin. A thread of its own reads a line at a time into a bounded
/// channel (backpressure: it waits while the channel is full), so the
/// source never blocks in a read. The thread ends at the end of stdin or
/// when the source is gone; while stdin is silent it waits in its read,
/// which ends with the process.
pub struct StdinReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    decoder: LineDecoder,
    ended: bool,
}

impl StdinReader {
    /// Starts reading stdin.
    pub fn open(src: &StdinSource) -> Result<StdinReader, ConnectError> {
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
            })
            .map_err(|e| ConnectError::fatal(format!("cannot read stdin: {e}")))?;
        Ok(StdinReader {
            rx,
            decoder: LineDecoder {
                format: src.format,
                key: src.key.clone(),
                timestamp: src.timestamp.clone(),
                lines: 0,
            },
            ended: false,
        })
    }
}

impl SourceReader for StdinReader {
    fn poll(
        &mut self,
        batch: &mut Batch,
        room: usize,
        _now: Duration,
        wait: Duration,
    ) -> Result<Poll, ConnectError> {
        if self.ended {
            return Ok(Poll::End);
        }
        let start = batch.len();
        while batch.len() - start < room {
            let got = if batch.len() == start {
                self.rx.recv_timeout(wait)
            } else {
                self.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            };
            match got {
                Ok(Ok(line)) => {
                    self.decoder.lines += 1;
                    self.decoder.push(line, batch, "stdin")?;
                }
                Ok(Err(e)) => {
                    return Err(ConnectError::fatal(format!(
                        "stdin line {}: read failed: {e}",
                        self.decoder.lines + 1
                    )));
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    break;
                }
            }
        }
        Ok(if batch.len() > start {
            Poll::Ready
        } else if self.ended {
            Poll::End
        } else {
            Poll::Idle { until: None }
        })
    }

    fn position(&self) -> Position {
        Position::Offset(self.decoder.lines)
    }
}
