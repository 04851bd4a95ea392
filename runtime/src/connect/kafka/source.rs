//! The Kafka source. Its splits are the partitions of its topics; this
//! subtask's partitions are assigned to one consumer by hand (no group
//! rebalancing: the split assignment is the runtime's), each from its
//! restored offset or its start. A split's position is the next offset to
//! read. After a checkpoint completes, the offsets it recorded are
//! committed to the consumer group, if one is named, for monitoring only.
//! New partitions are looked for every `partition-discovery-ms` and read
//! from their earliest offset.

use super::{
    Context, Health, KafkaKey, KafkaSource, KafkaStart, START_TIMEOUT, client_config, partitions,
    split_index, split_name,
};
use crate::batch::Batch;
use crate::connect::{
    ConnectError, Poll, Position, SourceAssignment, SourceReader, SplitPosition, SplitTime,
};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A partition this subtask reads.
struct Split {
    topic: String,
    partition: i32,
    name: String,
    /// The next offset to hand out.
    next: i64,
    /// Bounded: the partition's end offset when the source started.
    end: i64,
    /// A bounded split that has read to its end.
    ended: bool,
    /// The event times read from it, for its watermark.
    time: SplitTime,
}

/// A source subtask's reader of Kafka partitions.
pub struct KafkaReader {
    consumer: BaseConsumer<Context>,
    health: Arc<Health>,
    splits: Vec<Split>,
    cfg: KafkaSource,
    assignment: SourceAssignment,
    next_discovery: Option<Instant>,
    what: String,
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        if self.cfg.group_id.is_some() {
            // Give the last asynchronous offset commit (a stop's, say) a
            // moment to reach the broker before the consumer closes.
            for _ in 0..4 {
                let _ = self.consumer.poll(Duration::from_millis(50));
            }
        }
    }
}

impl KafkaReader {
    /// Connects, looks the topics up, and assigns this subtask's
    /// partitions from their restored offsets or the source's start.
    pub fn open(cfg: &KafkaSource, a: &SourceAssignment) -> Result<KafkaReader, ConnectError> {
        let mut cc = client_config(&cfg.connection, "wrun-source")?;
        // The group only receives commits (monitoring): no subscription,
        // no rebalancing, no automatic commits.
        cc.set(
            "group.id",
            cfg.group_id.as_deref().unwrap_or("wrun-unused-group"),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "enable.partition.eof",
            if cfg.bounded { "true" } else { "false" },
        )
        .set("queued.max.messages.kbytes", "16384");
        if !cfg.connection.properties.contains_key("isolation.level") {
            // Read what transactional producers committed only (what
            // exactly-once sinks, wrun's among them, write).
            cc.set("isolation.level", "read_committed");
        }
        let ctx = Context::new(&cfg.connection);
        let health = ctx.health.clone();
        let consumer: BaseConsumer<Context> = cc.create_with_context(ctx).map_err(|e| {
            ConnectError::fatal(format!(
                "cannot create a Kafka consumer: {e} (check `properties`)"
            ))
        })?;
        let what = format!("Kafka topic(s) {}", cfg.topics.join(", "));
        let mut r = KafkaReader {
            consumer,
            health,
            splits: Vec::new(),
            cfg: cfg.clone(),
            assignment: a.clone(),
            next_discovery: cfg.partition_discovery.map(|d| Instant::now() + d),
            what,
        };
        r.discover(true)?;
        Ok(r)
    }

    /// Looks up the topics' partitions and adds the ones this subtask owns
    /// that it does not read yet (`first`: at open, where the source's
    /// start applies; later ones start at their earliest offset).
    fn discover(&mut self, first: bool) -> Result<(), ConnectError> {
        let mut new = Vec::new();
        for topic in &self.cfg.topics {
            let ps = partitions(
                self.consumer.client(),
                &self.health,
                topic,
                START_TIMEOUT,
                // Only at open is nothing assigned yet, so only then may
                // `drain` serve the client's queue between requests.
                first,
                &|| self.drain(),
            )?;
            for p in ps {
                if !self.assignment.owns(split_index(topic, p)) {
                    continue;
                }
                if self
                    .splits
                    .iter()
                    .any(|s| s.topic == *topic && s.partition == p)
                {
                    continue;
                }
                new.push((topic.clone(), p));
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        for (topic, p) in new {
            let name = split_name(&topic, p);
            let next = match self.assignment.restored_split(&name) {
                Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
                None if !first => self.low_watermark(&topic, p)?,
                None => self.start_offset(&topic, p)?,
            };
            if !first {
                tracing::info!(
                    "{}: new partition {name}, read from offset {next}",
                    self.what
                );
            }
            let end = if self.cfg.bounded {
                self.watermarks(&topic, p)?.1
            } else {
                i64::MAX
            };
            self.splits.push(Split {
                topic,
                partition: p,
                time: SplitTime::new(&name),
                name,
                next,
                end,
                ended: next >= end,
            });
        }
        self.assign()
    }

    /// (Re)assigns every split from its next offset.
    fn assign(&self) -> Result<(), ConnectError> {
        let mut tpl = TopicPartitionList::new();
        for s in &self.splits {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.next))
                .map_err(|e| ConnectError::fatal(format!("{}: {e}", self.what)))?;
        }
        self.consumer.assign(&tpl).map_err(|e| {
            ConnectError::fatal(format!("{}: cannot assign partitions: {e}", self.what))
        })
    }

    /// Serves the consumer's queued events (its log and errors say why a
    /// request failed). Only before a start-up error: a record it takes is
    /// dropped, and the job fails anyway.
    fn drain(&self) {
        for _ in 0..5 {
            let _ = self.consumer.poll(Duration::from_millis(20));
        }
    }

    fn start_error(&self, doing: &str, e: &KafkaError) -> ConnectError {
        self.drain();
        self.health.start_error(doing, e)
    }

    fn watermarks(&self, topic: &str, p: i32) -> Result<(i64, i64), ConnectError> {
        let w = self
            .consumer
            .fetch_watermarks(topic, p, START_TIMEOUT)
            .map_err(|e| {
                self.start_error(&format!("read the offsets of {}", split_name(topic, p)), &e)
            })?;
        self.health.up();
        Ok(w)
    }

    fn low_watermark(&self, topic: &str, p: i32) -> Result<i64, ConnectError> {
        Ok(self.watermarks(topic, p)?.0)
    }

    /// Where a partition starts when nothing is restored: a concrete
    /// offset, so that a checkpoint taken before its first record still
    /// records where it is.
    fn start_offset(&self, topic: &str, p: i32) -> Result<i64, ConnectError> {
        let (low, high) = self.watermarks(topic, p)?;
        Ok(match self.cfg.start {
            KafkaStart::Earliest => low,
            KafkaStart::Latest => high,
            KafkaStart::GroupOffsets => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, p);
                let c = self
                    .consumer
                    .committed_offsets(tpl, START_TIMEOUT)
                    .map_err(|e| self.start_error("read the group's offsets", &e))?;
                match c.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) if n >= low => n,
                    _ => low,
                }
            }
            KafkaStart::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, p, Offset::Offset(ms))
                    .map_err(|e| ConnectError::fatal(e.to_string()))?;
                let t = self
                    .consumer
                    .offsets_for_times(tpl, START_TIMEOUT)
                    .map_err(|e| self.start_error("look up offsets by time", &e))?;
                match t.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) => n,
                    // No record at or after the time: start at the end.
                    _ => high,
                }
            }
        })
    }

    fn ended(&self) -> bool {
        self.cfg.bounded && self.splits.iter().all(|s| s.ended)
    }

    /// A consumer error: fatal for what configuration causes, logged (the
    /// client retries) for what the network does.
    fn failed(&mut self, e: KafkaError) -> Result<(), ConnectError> {
        let code = e.rdkafka_error_code();
        match code {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic)
            | Some(RDKafkaErrorCode::UnknownPartition) => Err(ConnectError::fatal(format!(
                "{}: {e} (was a topic deleted under the job?)",
                self.what
            ))),
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            | Some(RDKafkaErrorCode::Authentication)
            | Some(RDKafkaErrorCode::SaslAuthenticationFailed) => Err(ConnectError::fatal(
                format!("{}: {e} (check the credentials and the ACLs)", self.what),
            )),
            Some(RDKafkaErrorCode::OffsetOutOfRange) => {
                tracing::warn!(
                    "{}: {e}: the broker no longer holds the records at the checkpointed offset (retention); reading on from the earliest one it holds",
                    self.what
                );
                Ok(())
            }
            _ => {
                tracing::debug!("{}: {e} (the client retries)", self.what);
                Ok(())
            }
        }
    }
}

impl SourceReader for KafkaReader {
    fn poll(
        &mut self,
        batch: &mut Batch,
        room: usize,
        _now: Duration,
        wait: Duration,
    ) -> Result<Poll, ConnectError> {
        if let Some(at) = self.next_discovery
            && Instant::now() >= at
        {
            self.discover(false)?;
            self.next_discovery = self.cfg.partition_discovery.map(|d| Instant::now() + d);
        }
        if self.splits.is_empty() {
            if self.cfg.bounded {
                return Ok(Poll::End);
            }
            // More subtasks than partitions: this one idles (and still
            // answers barriers and looks for new partitions).
            std::thread::sleep(wait);
            return Ok(Poll::Idle { until: None });
        }
        let mut added = 0;
        while added < room && !self.ended() {
            let timeout = if added == 0 { wait } else { Duration::ZERO };
            let Some(m) = self.consumer.poll(timeout) else {
                break;
            };
            match m {
                Ok(m) => {
                    let key = match self.cfg.key {
                        KafkaKey::Key => m.key(),
                        KafkaKey::None => None,
                    };
                    let ts = m.timestamp().to_millis();
                    batch.push(key, m.payload().unwrap_or_default(), ts);
                    let (p, offset) = (m.partition(), m.offset());
                    let at = self
                        .splits
                        .iter()
                        .position(|s| s.partition == p && s.topic == m.topic());
                    drop(m);
                    if let Some(s) = at.map(|i| &mut self.splits[i]) {
                        s.next = s.next.max(offset + 1);
                        s.time.saw(ts);
                    }
                    added += 1;
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    // Bounded: the partition is read to its end (EOF comes
                    // only once everything before it was read; a
                    // transaction's commit marker may sit past the last
                    // record, so `next` need not reach `end`). The client
                    // names only the partition number: with several topics
                    // of that number, those whose records reached the end.
                    let open: Vec<usize> = (0..self.splits.len())
                        .filter(|&i| self.splits[i].partition == p && !self.splits[i].ended)
                        .collect();
                    for &i in &open {
                        let s = &mut self.splits[i];
                        if open.len() == 1 || s.next >= s.end {
                            s.ended = true;
                        }
                    }
                }
                Err(e) => {
                    self.failed(e)?;
                    break;
                }
            }
        }
        if added > 0 {
            self.health.up();
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
                    next: u64::try_from(s.next).unwrap_or(0),
                })
                .collect(),
        )
    }

    fn checkpoint_complete(&mut self, _checkpoint: u64, position: &Position) {
        if self.cfg.group_id.is_none() {
            return;
        }
        let Position::Splits(ps) = position else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for sp in ps {
            if let Some(s) = self.splits.iter().find(|s| s.name == sp.split) {
                let _ = tpl.add_partition_offset(
                    &s.topic,
                    s.partition,
                    Offset::Offset(i64::try_from(sp.next).unwrap_or(0)),
                );
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!("{}: committing offsets to the group failed: {e}", self.what);
        }
    }

    fn lag(&self) -> Vec<(String, u64)> {
        let lag = self.health.lag.lock().unwrap_or_else(|p| p.into_inner());
        self.splits
            .iter()
            .filter_map(|s| {
                lag.get(s.name.as_str())
                    .map(|l| (s.name.clone(), u64::try_from(*l).unwrap_or(0)))
            })
            .collect()
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
        Some(self.health.connected())
    }
}
