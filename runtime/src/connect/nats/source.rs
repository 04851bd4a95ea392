//! The NATS JetStream source. Each split (the whole stream, or one subject
//! filter of it) is read by an ordered consumer from its next sequence; a
//! task per split on the connectors' runtime pulls messages into a bounded
//! channel (backpressure), and [`NatsReader::poll`] takes them from there
//! without ever waiting longer than it is told. A split's position is the
//! next stream sequence to read: a restore replays from the checkpointed
//! sequence. No server-side acknowledgements: the checkpoint is the truth.

use super::{NatsKey, NatsSource, NatsStart, block_on, connect, get_stream};
use crate::batch::Batch;
use crate::connect::event_time::json_timestamp;
use crate::connect::{
    ConnectError, Poll, Position, SourceAssignment, SourceReader, SplitPosition, SplitTime,
};
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a split's task sends the reader.
enum Item {
    Msg(Msg),
    /// A bounded split read everything the stream held.
    End(usize),
    Failed(ConnectError),
}

/// A message on its way from a split's task to the reader.
struct Msg {
    split: usize,
    seq: u64,
    key: Option<Vec<u8>>,
    payload: bytes::Bytes,
    /// Publish time, ms since the Unix epoch.
    time_ms: i64,
}

/// A split this subtask reads.
struct Split {
    name: String,
    /// The next sequence to hand out.
    next: u64,
    /// Messages the server holds beyond the last one delivered.
    pending: Arc<AtomicU64>,
    /// A bounded split that has read to the end.
    ended: bool,
    /// The event times read from it, for its watermark.
    time: SplitTime,
}

/// A source subtask's reader of a JetStream stream.
pub struct NatsReader {
    client: async_nats::Client,
    splits: Vec<Split>,
    /// The JSON pointer of the event time in the payload (`None`: the
    /// message's publish time).
    timestamp: Option<String>,
    stream: String,
    bounded: bool,
    rx: mpsc::Receiver<Item>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for NatsReader {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A split's stable name: `stream/<stream>`, or `stream/<stream>/<filter>`.
fn split_name(stream: &str, filter: Option<&str>) -> String {
    match filter {
        None => format!("stream/{stream}"),
        Some(f) => format!("stream/{stream}/{f}"),
    }
}

impl NatsReader {
    /// Connects, checks the stream, and starts the ordered consumers of
    /// the splits assigned to this subtask.
    pub fn open(cfg: &NatsSource, a: &SourceAssignment) -> Result<NatsReader, ConnectError> {
        block_on(Self::open_async(cfg, a))?
    }

    async fn open_async(
        cfg: &NatsSource,
        a: &SourceAssignment,
    ) -> Result<NatsReader, ConnectError> {
        let client = connect(&cfg.connection, "wrun source").await?;
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = get_stream(&js, &cfg.connection, &cfg.stream).await?;
        let info = stream.info().await.map_err(|e| {
            ConnectError::transient(format!(
                "cannot read JetStream stream {:?}: {}",
                cfg.stream,
                crate::report::chain(&e)
            ))
        })?;
        let last = info.state.last_sequence;
        let filters: Vec<Option<String>> = if cfg.subjects.is_empty() {
            vec![None]
        } else {
            cfg.subjects.iter().cloned().map(Some).collect()
        };
        let start = match &cfg.start {
            NatsStart::First => DeliverPolicy::All,
            NatsStart::New => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            NatsStart::Sequence(s) => DeliverPolicy::ByStartSequence {
                start_sequence: (*s).max(1),
            },
            NatsStart::Time(t) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::parse(
                    t,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| ConnectError::fatal(format!("start time {t:?}: {e}")))?,
            },
        };
        let (tx, rx) = mpsc::channel(8192);
        let mut splits = Vec::new();
        let mut tasks = Vec::new();
        for (i, filter) in filters.iter().enumerate() {
            if !a.owns(i) {
                continue;
            }
            let name = split_name(&cfg.stream, filter.as_deref());
            let policy = match a.restored_split(&name) {
                Some(next) => DeliverPolicy::ByStartSequence {
                    start_sequence: next.max(1),
                },
                None => start,
            };
            let next = match &policy {
                DeliverPolicy::ByStartSequence { start_sequence } => *start_sequence,
                _ => 1,
            };
            let pending = Arc::new(AtomicU64::new(0));
            let task = SplitTask {
                index: splits.len(),
                stream: stream.clone(),
                filter: filter.clone().unwrap_or_default(),
                key: cfg.key.clone(),
                policy,
                pending: pending.clone(),
                tx: tx.clone(),
                what: format!("JetStream stream {:?}", cfg.stream),
                bounded: cfg.bounded,
            };
            tasks.push(tokio::spawn(task.run()));
            splits.push(Split {
                time: SplitTime::new(&name),
                name,
                next,
                pending,
                ended: false,
            });
        }
        Ok(NatsReader {
            client,
            splits,
            timestamp: cfg.timestamp.clone(),
            stream: cfg.stream.clone(),
            bounded: cfg.bounded,
            rx,
            tasks,
        })
    }

    /// Takes an item from a split's task; `true` if it was an event.
    fn take(&mut self, item: Item, batch: &mut Batch) -> Result<bool, ConnectError> {
        match item {
            Item::Msg(m) => {
                let ts = match &self.timestamp {
                    None => m.time_ms,
                    Some(ptr) => serde_json::from_slice::<serde_json::Value>(&m.payload)
                        .map_err(|e| format!("not valid JSON: {e}"))
                        .and_then(|v| json_timestamp(&v, ptr))
                        .map_err(|e| {
                            ConnectError::fatal(format!(
                                "message {} of JetStream stream {:?}: {e} (the source's `timestamp`); fix the message or the setting",
                                m.seq, self.stream
                            ))
                        })?,
                };
                batch.push(m.key.as_deref(), &m.payload, Some(ts));
                let s = &mut self.splits[m.split];
                s.next = s.next.max(m.seq + 1);
                s.time.saw(Some(ts));
                Ok(true)
            }
            Item::End(i) => {
                self.splits[i].ended = true;
                Ok(false)
            }
            Item::Failed(e) => Err(e),
        }
    }

    fn ended(&self) -> bool {
        self.splits.iter().all(|s| s.ended)
    }
}

impl SourceReader for NatsReader {
    fn poll(
        &mut self,
        batch: &mut Batch,
        room: usize,
        _now: Duration,
        wait: Duration,
    ) -> Result<Poll, ConnectError> {
        if self.splits.is_empty() {
            if self.bounded {
                return Ok(Poll::End);
            }
            // More subtasks than splits: this one idles (and still answers
            // barriers), it does not stall the job.
            std::thread::sleep(wait);
            return Ok(Poll::Idle { until: None });
        }
        let mut added = 0;
        while added < room && !self.ended() {
            let item = match self.rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) if added == 0 => {
                    match block_on(async { tokio::time::timeout(wait, self.rx.recv()).await })? {
                        Ok(Some(item)) => item,
                        Ok(None) | Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            if self.take(item, batch)? {
                added += 1;
            }
        }
        Ok(if added > 0 {
            Poll::Ready
        } else if self.ended() {
            Poll::End
        } else {
            Poll::Idle { until: None }
        })
    }

    fn position(&self) -> Position {
        Position::Splits(
            self.splits
                .iter()
                .map(|s| SplitPosition {
                    split: s.name.clone(),
                    next: s.next,
                })
                .collect(),
        )
    }

    fn split_times(&self) -> Option<Vec<SplitTime>> {
        Some(
            self.splits
                .iter()
                .map(|s| SplitTime {
                    ended: s.ended,
                    ..s.time.clone()
                })
                .collect(),
        )
    }

    fn connected(&self) -> Option<bool> {
        Some(self.client.connection_state() == async_nats::connection::State::Connected)
    }

    fn lag(&self) -> Vec<(String, u64)> {
        self.splits
            .iter()
            .map(|s| (s.name.clone(), s.pending.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Pulls one split's messages into the reader's channel. When the consumer
/// fails (the server went away, the stream was changed under it), it is
/// recreated from the sequence after the last one forwarded, with backoff,
/// so a broker restart loses and duplicates nothing.
struct SplitTask {
    index: usize,
    stream: async_nats::jetstream::stream::Stream,
    filter: String,
    key: NatsKey,
    policy: DeliverPolicy,
    pending: Arc<AtomicU64>,
    tx: mpsc::Sender<Item>,
    what: String,
    bounded: bool,
}

impl SplitTask {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let consumer = self
                .stream
                .create_consumer(OrderedConfig {
                    filter_subject: self.filter.clone(),
                    deliver_policy: self.policy,
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(c) => {
                    if self.bounded && c.cached_info().num_pending == 0 {
                        let _ = self.tx.send(Item::End(self.index)).await;
                        return;
                    }
                    c.messages().await.map_err(|e| crate::report::chain(&e))
                }
                Err(e) => Err(crate::report::chain(&e)),
            };
            match messages {
                Ok(mut messages) => {
                    while let Some(m) = messages.next().await {
                        let m = match m {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::warn!(
                                    "{}: reading failed, resuming: {}",
                                    self.what,
                                    crate::report::chain(&e)
                                );
                                break;
                            }
                        };
                        backoff = Duration::from_millis(50);
                        let Ok(info) = m.info() else { continue };
                        let seq = info.stream_sequence;
                        self.pending.store(info.pending, Ordering::Relaxed);
                        let time_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
                        let key = match &self.key {
                            NatsKey::Subject => Some(m.subject.as_bytes().to_vec()),
                            NatsKey::Header(h) => m
                                .headers
                                .as_ref()
                                .and_then(|hs| hs.get(h.as_str()))
                                .map(|v| v.as_str().as_bytes().to_vec()),
                            NatsKey::None => None,
                        };
                        let msg = Msg {
                            split: self.index,
                            seq,
                            key,
                            payload: m.payload.clone(),
                            time_ms,
                        };
                        if self.tx.send(Item::Msg(msg)).await.is_err() {
                            return; // The reader is gone.
                        }
                        self.policy = DeliverPolicy::ByStartSequence {
                            start_sequence: seq + 1,
                        };
                        if self.bounded && info.pending == 0 {
                            let _ = self.tx.send(Item::End(self.index)).await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("{}: cannot start a consumer, retrying: {e}", self.what);
                    if e.contains("not found") {
                        let _ = self
                            .tx
                            .send(Item::Failed(ConnectError::fatal(format!(
                                "{} is gone from the server: {e}",
                                self.what
                            ))))
                            .await;
                        return;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
