//! The NATS JetStream sink.
//!
//! Exactly-once: what arrives between barriers `n-1` and `n` is kept as
//! checkpoint `n`'s *group* (the runtime stores it in checkpoint `n` as a
//! chunk); only when checkpoint `n`'s manifest is committed is the group
//! published, each message with `Nats-Msg-Id` =
//! `<job>/<sink>/<subtask>/<epoch>/<checkpoint>/<index>`, and the commit
//! counts as done once every PubAck has come back. After a crash, the
//! restored checkpoint's groups are published again with the same IDs: the
//! stream's duplicate window drops what had arrived (the PubAck says
//! `duplicate`). The epoch (random per opening of the sink) keeps a group
//! of a later run from reusing an ID that a group of an abandoned run
//! published (say, resuming from an older savepoint).
//!
//! At-least-once: messages are published as they arrive; a barrier waits
//! for every PubAck before the checkpoint counts it.

use super::{Delivery, NatsSink, block_on, connect, get_stream};
use crate::batch::Batch;
use crate::connect::codec::{Cursor, put};
use crate::connect::{ConnectError, Prepared, SinkContext, SinkWriter, Staged};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use std::time::Duration;

/// Group encoding: magic, version.
const MAGIC: &[u8; 4] = b"WRNS";
const VERSION: u8 = 1;
/// Publishes in flight before the sink waits for their PubAcks.
const IN_FLIGHT: usize = 4096;

/// A sink subtask's writer to a JetStream stream.
pub struct NatsWriter {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    subject: String,
    exactly_once: bool,
    /// `<job>/<sink>/<subtask>/<epoch>/`: message IDs start with it.
    id_prefix: String,
    /// The group being filled (exactly-once): encoded messages.
    current: Vec<u8>,
    current_count: u32,
    /// Groups staged at barriers and not yet published.
    pending: Vec<Staged>,
    /// PubAcks not yet awaited (at-least-once).
    acks: Vec<PublishAckFuture>,
    what: String,
    /// Republished messages the stream reported as duplicates.
    duplicates: u64,
}

impl NatsWriter {
    /// Connects, checks the stream (and its duplicate window against the
    /// checkpoint interval), and publishes what a restored checkpoint had
    /// staged and a crash may have left half published.
    pub fn open(cfg: &NatsSink, ctx: &SinkContext<'_>) -> Result<NatsWriter, ConnectError> {
        block_on(Self::open_async(cfg, ctx))?
    }

    async fn open_async(cfg: &NatsSink, ctx: &SinkContext<'_>) -> Result<NatsWriter, ConnectError> {
        let client = connect(&cfg.connection, "wrun sink").await?;
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = get_stream(&js, &cfg.connection, &cfg.stream).await?;
        let what = format!("JetStream stream {:?}", cfg.stream);
        let info = stream.info().await.map_err(|e| {
            ConnectError::transient(format!("cannot read {what}: {}", crate::report::chain(&e)))
        })?;
        // Exactly-once publishes only what a completed checkpoint covers:
        // without periodic checkpoints an unbounded job would publish
        // nothing until it stops, so then the sink publishes as events
        // arrive (and a stop with a savepoint still waits for every PubAck).
        let exactly_once =
            ctx.exactly_once && ctx.interval.is_some() && cfg.delivery == Delivery::ExactlyOnce;
        if cfg.delivery == Delivery::ExactlyOnce && !exactly_once {
            tracing::warn!(
                "sink '{}': the job has no [checkpoint] table, so {what} gets the sink's output as it arrives (at-least-once); add [checkpoint] for exactly-once",
                ctx.sink
            );
        }
        if exactly_once {
            let window = info.config.duplicate_window;
            let need = ctx.interval.map_or(Duration::from_secs(10), |i| {
                (i * 2).max(Duration::from_secs(10))
            });
            if window < need {
                return Err(ConnectError::fatal(format!(
                    "{what} keeps message IDs for {} ms (its duplicate window), too short for exactly-once delivery with this job's checkpoints: a recovery republishes up to a checkpoint interval of messages, which the window must still remember. Give the stream a duplicate window of at least {} ms (`nats stream edit {} --dupe-window {}s`), or use `delivery = \"at-least-once\"`",
                    window.as_millis(),
                    need.as_millis(),
                    cfg.stream,
                    need.as_secs().max(1),
                )));
            }
        }
        let epoch = {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b)
                .map_err(|e| ConnectError::fatal(format!("cannot draw the sink's epoch: {e}")))?;
            hex::encode(b)
        };
        let mut w = NatsWriter {
            client,
            js,
            subject: cfg.subject.clone(),
            exactly_once,
            id_prefix: format!("{}/{}/{}/{epoch}/", ctx.job, ctx.sink, ctx.subtask),
            current: Vec::new(),
            current_count: 0,
            pending: Vec::new(),
            acks: Vec::new(),
            what,
            duplicates: 0,
        };
        if let Some(r) = ctx.restore {
            let mut total = 0u64;
            for s in &r.staged {
                total += w.publish_group(&s.bytes).await?;
            }
            if total > 0 {
                tracing::info!(
                    "{}: republished {total} messages the restored checkpoint staged; {} of them the stream had already (duplicates, dropped)",
                    w.what,
                    w.duplicates
                );
            }
        }
        Ok(w)
    }

    /// The subject of an event with `key`.
    fn subject_for(&self, key: Option<&[u8]>) -> Result<String, ConnectError> {
        if !self.subject.contains("{key}") {
            return Ok(self.subject.clone());
        }
        let key = key.ok_or_else(|| {
            ConnectError::fatal(format!(
                "subject {:?} takes the event's key, and an event has none",
                self.subject
            ))
        })?;
        let k = std::str::from_utf8(key)
            .ok()
            .filter(|k| {
                !k.is_empty()
                    && !k.starts_with('.')
                    && !k.ends_with('.')
                    && !k.contains("..")
                    && !k.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
            })
            .ok_or_else(|| {
                ConnectError::fatal(format!(
                    "key {:?} cannot be part of subject {:?}: a subject token must be UTF-8 without spaces, '*' or '>' (use a fixed subject, or a key that is a valid token)",
                    String::from_utf8_lossy(key),
                    self.subject
                ))
            })?;
        Ok(self.subject.replace("{key}", k))
    }

    /// Publishes a group (from [`encode`]), awaiting every PubAck. Returns
    /// how many messages it published.
    async fn publish_group(&mut self, bytes: &[u8]) -> Result<u64, ConnectError> {
        let g = decode(bytes).map_err(|e| {
            ConnectError::fatal(format!(
                "{}: a staged group of messages is corrupt ({e}); the checkpoint cannot be restored",
                self.what
            ))
        })?;
        let mut acks = Vec::new();
        for (i, (subject, payload)) in g.messages.iter().enumerate() {
            crate::fault::crash_point("nats-sink-publish");
            let id = format!("{}{}", g.prefix, i);
            let msg = PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(payload))
                .message_id(id);
            acks.push(self.send(subject, msg).await?);
            if acks.len() >= IN_FLIGHT {
                self.await_acks(std::mem::take(&mut acks)).await?;
            }
        }
        self.await_acks(acks).await?;
        Ok(g.messages.len() as u64)
    }

    async fn send(
        &self,
        subject: &str,
        msg: PublishMessage,
    ) -> Result<PublishAckFuture, ConnectError> {
        self.js
            .send_publish(subject.to_string(), msg)
            .await
            .map_err(|e| {
                ConnectError::transient(format!(
                    "{}: publishing to {subject:?} failed: {}",
                    self.what,
                    crate::report::chain(&e)
                ))
            })
    }

    async fn await_acks(&mut self, acks: Vec<PublishAckFuture>) -> Result<(), ConnectError> {
        for a in acks {
            let ack = a.await.map_err(|e| {
                ConnectError::transient(format!(
                    "{}: a publish was not acknowledged: {}",
                    self.what,
                    crate::report::chain(&e)
                ))
            })?;
            if ack.duplicate {
                self.duplicates += 1;
            }
            crate::fault::crash_point("nats-sink-acked");
        }
        Ok(())
    }

    /// Closes the current group as checkpoint `checkpoint`'s (nothing to
    /// keep when it is empty).
    fn stage(&mut self, checkpoint: u64) {
        if self.current_count == 0 {
            return;
        }
        let prefix = format!("{}{checkpoint}/", self.id_prefix);
        let bytes = encode(&prefix, self.current_count, &self.current);
        self.current.clear();
        self.current_count = 0;
        self.pending.push(Staged {
            checkpoint,
            bytes: bytes.into(),
        });
    }

    async fn commit_async(&mut self, checkpoint: u64) -> Result<(), ConnectError> {
        while let Some(g) = self.pending.first() {
            if g.checkpoint > checkpoint {
                break;
            }
            let bytes = g.bytes.clone();
            self.publish_group(&bytes).await?;
            crate::fault::crash_point("nats-sink-committed");
            self.pending.remove(0);
        }
        Ok(())
    }
}

impl SinkWriter for NatsWriter {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectError> {
        if self.exactly_once {
            for e in batch.iter() {
                let subject = self.subject_for(e.key)?;
                put(&mut self.current, subject.as_bytes());
                put(&mut self.current, e.value);
                self.current_count += 1;
            }
            return Ok(());
        }
        block_on(async {
            for e in batch.iter() {
                let subject = self.subject_for(e.key)?;
                let msg = PublishMessage::build().payload(bytes::Bytes::copy_from_slice(e.value));
                let ack = self.send(&subject, msg).await?;
                self.acks.push(ack);
                if self.acks.len() >= IN_FLIGHT {
                    let acks = std::mem::take(&mut self.acks);
                    self.await_acks(acks).await?;
                }
            }
            Ok(())
        })?
    }

    fn prepare(&mut self, checkpoint: u64) -> Result<Prepared, ConnectError> {
        if !self.exactly_once {
            let acks = std::mem::take(&mut self.acks);
            block_on(self.await_acks(acks))??;
            return Ok(Prepared::default());
        }
        self.stage(checkpoint);
        Ok(Prepared {
            file: None,
            staged: self.pending.clone(),
        })
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectError> {
        if !self.exactly_once {
            return Ok(());
        }
        block_on(self.commit_async(checkpoint))?
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        if !self.exactly_once {
            let acks = std::mem::take(&mut self.acks);
            return block_on(self.await_acks(acks))?;
        }
        // The end of the input: no checkpoint will cover what came since
        // the last barrier, and nothing will replay it; it is final.
        self.stage(u64::MAX);
        block_on(self.commit_async(u64::MAX))?
    }

    fn connected(&self) -> Option<bool> {
        Some(self.client.connection_state() == async_nats::connection::State::Connected)
    }
}

/// A group: magic, version, the ID prefix, the count, then each message's
/// subject and payload (u32 little-endian lengths).
fn encode(prefix: &str, count: u32, messages: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.len() + prefix.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put(&mut out, prefix.as_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(messages);
    out
}

struct Decoded<'a> {
    prefix: String,
    messages: Vec<(String, &'a [u8])>,
}

fn decode(b: &[u8]) -> Result<Decoded<'_>, String> {
    let mut c = Cursor::new(b);
    if c.take(4)? != MAGIC || c.take(1)? != [VERSION] {
        return Err("not a wrun NATS group (magic or version)".into());
    }
    let prefix = c.string("prefix")?;
    let count = c.u32()?;
    let mut messages = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let subject = c.string("subject")?;
        messages.push((subject, c.bytes()?));
    }
    if c.left() > 0 {
        return Err(format!("{} bytes after the last message", c.left()));
    }
    Ok(Decoded { prefix, messages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_and_corruption_is_caught() {
        let mut m = Vec::new();
        put(&mut m, b"counts.a");
        put(&mut m, b"1");
        put(&mut m, b"counts.b");
        put(&mut m, b"");
        let g = encode("j/s/0/e/7/", 2, &m);
        let d = decode(&g).unwrap();
        assert_eq!(d.prefix, "j/s/0/e/7/");
        assert_eq!(
            d.messages,
            vec![
                ("counts.a".to_string(), &b"1"[..]),
                ("counts.b".to_string(), &b""[..])
            ]
        );
        for cut in 0..g.len() {
            assert!(decode(&g[..cut]).is_err(), "{cut}");
        }
        let mut bad = g.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
    }
}
