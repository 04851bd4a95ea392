//! The Kafka sink.
//!
//! Exactly-once: one transaction per sink subtask per checkpoint, with
//! `transactional.id` = `<prefix>.<subtask>`. What arrives between
//! barriers `n-1` and `n` is written into transaction `n` as it comes;
//! barrier `n` flushes it (every record is on the broker, uncommitted) and
//! hands the runtime the same records as checkpoint `n`'s *group*, which
//! the checkpoint keeps; once checkpoint `n`'s manifest is committed, the
//! transaction is committed together with a *marker*: an offset commit,
//! inside the transaction, to a consumer group named like the
//! transactional ID, whose metadata names the group (`<epoch>/<n>`). While
//! transaction `n` waits for its commit, the records of `n+1` wait in
//! memory, and go out once it is committed.
//!
//! Recovery: a new producer with the same transactional ID fences the dead
//! one, and the broker aborts whatever transaction it left open (one no
//! manifest covers, or one whose commit the crash cut short). For each
//! group the restored checkpoint kept, the marker says whether its
//! transaction committed; if not, the group is written again in a new
//! transaction with its marker. librdkafka cannot take over a dead
//! producer's open transaction and commit it, which is why the checkpoint
//! keeps the records: a transaction the manifest covers is committed as a
//! new transaction holding the same records.
//!
//! At-least-once: an idempotent producer writes as records arrive; a
//! barrier waits until every record is acknowledged.

use super::{Context, Health, KafkaSink, START_TIMEOUT, client_config};
use crate::batch::Batch;
use crate::connect::codec::{Cursor, put};
use crate::connect::{
    ConnectError, Delivery, Prepared, SinkContext, SinkRestore, SinkWriter, Staged,
};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Group encoding: magic, version.
const MAGIC: &[u8; 4] = b"WRKF";
const VERSION: u8 = 1;
/// How long a flush or a transaction's commit may take before the sink
/// fails (and the job restarts from its last checkpoint).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The producer's context: the client's, and the first delivery failure.
struct SinkCtx {
    inner: Context,
    failed: Mutex<Option<String>>,
}

impl ClientContext for SinkCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.inner.log(level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason)
    }
    fn stats(&self, s: rdkafka::Statistics) {
        self.inner.stats(s)
    }
}

impl ProducerContext for SinkCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.inner.health.up(),
            Err((e, _)) => {
                let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                if f.is_none() {
                    *f = Some(e.to_string());
                }
            }
        }
    }
}

type Prod = ThreadedProducer<SinkCtx>;

/// A checkpoint's records, staged and waiting for its commit.
struct Group {
    staged: Staged,
    /// Its records are in the open transaction (flushed at the barrier).
    in_txn: bool,
}

/// A sink subtask's writer to a Kafka topic.
pub struct KafkaWriter {
    producer: Prod,
    health: Arc<Health>,
    topic: String,
    partition: Option<i32>,
    exactly_once: bool,
    txn_id: String,
    /// Random per opening of the sink: tells this run's groups from an
    /// abandoned run's with the same checkpoint numbers.
    epoch: String,
    /// The consumer whose group holds the markers (exactly-once).
    marker: Option<BaseConsumer<Context>>,
    /// The group being filled: encoded records.
    current: Vec<u8>,
    current_count: u32,
    /// The current group's records are being written into the open
    /// transaction as they come.
    current_in_txn: bool,
    txn_open: bool,
    pending: VecDeque<Group>,
    what: String,
    timeout_ms: u128,
}

impl KafkaWriter {
    /// Connects, checks the topic, starts the (transactional) producer,
    /// and finishes what a restored checkpoint left half committed.
    pub fn open(cfg: &KafkaSink, ctx: &SinkContext<'_>) -> Result<KafkaWriter, ConnectError> {
        let what = format!("Kafka topic {:?}", cfg.topic);
        // As for NATS: exactly-once needs periodic checkpoints to publish
        // anything before the job ends.
        let exactly_once =
            ctx.exactly_once && ctx.interval.is_some() && cfg.delivery == Delivery::ExactlyOnce;
        if cfg.delivery == Delivery::ExactlyOnce && !exactly_once {
            tracing::warn!(
                "sink '{}': the job has no [checkpoint] table, so {what} gets the sink's output as it arrives (at-least-once); add [checkpoint] for exactly-once",
                ctx.sink
            );
        }
        let prefix = cfg
            .transactional_id_prefix
            .clone()
            .unwrap_or_else(|| format!("wrun.{}.{}", ctx.job, ctx.sink));
        let txn_id = format!("{prefix}.{}", ctx.subtask);
        let (producer, health) = producer(cfg, exactly_once.then_some(txn_id.as_str()))?;
        let ps = super::partitions(
            producer.client(),
            &health,
            &cfg.topic,
            START_TIMEOUT,
            true,
            &|| {
                // The producer's thread serves its events.
                std::thread::sleep(Duration::from_millis(100))
            },
        )?;
        if let Some(p) = cfg.partition
            && !ps.contains(&p)
        {
            return Err(ConnectError::fatal(format!(
                "{what} has no partition {p} (it has {})",
                ps.len()
            )));
        }
        let epoch = {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b)
                .map_err(|e| ConnectError::fatal(format!("cannot draw the sink's epoch: {e}")))?;
            hex::encode(b)
        };
        let mut w = KafkaWriter {
            producer,
            health,
            topic: cfg.topic.clone(),
            partition: cfg.partition,
            exactly_once,
            txn_id,
            epoch,
            marker: None,
            current: Vec::new(),
            current_count: 0,
            current_in_txn: false,
            txn_open: false,
            pending: VecDeque::new(),
            what,
            timeout_ms: cfg.transaction_timeout.as_millis(),
        };
        if exactly_once {
            w.init_transactions(&w.txn_id.clone(), &w.producer)?;
            w.marker = Some(marker_consumer(cfg, &w.txn_id)?);
            if let Some(r) = ctx.restore {
                w.recover(cfg, ctx, r)?;
            }
        }
        Ok(w)
    }

    /// Fences any earlier producer with `id` (the broker aborts its open
    /// transaction).
    fn init_transactions(&self, id: &str, p: &Prod) -> Result<(), ConnectError> {
        p.init_transactions(START_TIMEOUT * 3).map_err(|e| {
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed)
            {
                ConnectError::fatal(format!(
                    "{}: the broker refuses transactional ID {id:?} ({e}): exactly-once delivery needs transactions. Either the broker does not support them, or its ACLs do not let this user use the ID (grant WRITE on TransactionalId {id:?} or the prefix `transactional-id-prefix`); or use `delivery = \"at-least-once\"`",
                    self.what
                ))
            } else if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidTransactionTimeout) {
                ConnectError::fatal(format!(
                    "{}: the broker refuses a transaction timeout of {} ms (`transaction-timeout-ms`): it allows at most its `transaction.max.timeout.ms`; lower the sink's timeout, or raise the broker's limit",
                    self.what, self.timeout_ms
                ))
            } else {
                self.health
                    .start_error(&format!("start the transactional producer {id:?}"), &e)
            }
        })
    }

    /// Writes again, each in a transaction of its own with its marker,
    /// the restored groups whose transactions did not commit.
    fn recover(
        &mut self,
        cfg: &KafkaSink,
        ctx: &SinkContext<'_>,
        r: &SinkRestore,
    ) -> Result<(), ConnectError> {
        // The old subtasks this one takes over (a rescale): fence them too,
        // so no transaction of theirs stays open and holds back readers.
        let prefix = self
            .txn_id
            .rsplit_once('.')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        for old in &r.subtasks {
            if *old == ctx.subtask {
                continue;
            }
            let id = format!("{prefix}.{old}");
            let (p, _) = producer(cfg, Some(&id))?;
            self.init_transactions(&id, &p)?;
        }
        let mut markers: BTreeMap<String, Option<Marker>> = BTreeMap::new();
        let (mut again, mut kept) = (0u64, 0u64);
        for s in &r.staged {
            let g = decode(&s.bytes).map_err(|e| {
                ConnectError::fatal(format!(
                    "{}: a staged group of records is corrupt ({e}); the checkpoint cannot be restored",
                    self.what
                ))
            })?;
            if !markers.contains_key(&g.txn_id) {
                let m = read_marker(cfg, &g.txn_id, &self.topic, &self.health)?;
                markers.insert(g.txn_id.clone(), m);
            }
            let committed = markers[&g.txn_id]
                .as_ref()
                .is_some_and(|m| m.covers(&g.epoch, g.checkpoint));
            if committed {
                kept += g.records.len() as u64;
                continue;
            }
            self.begin()?;
            for rec in &g.records {
                self.send(rec.key, rec.value, rec.ts)?;
            }
            again += g.records.len() as u64;
            self.commit_txn(&g.txn_id, &g.epoch, g.checkpoint, Some(cfg))?;
        }
        if again + kept > 0 {
            // Neutral words: a stop with a savepoint leaves its groups
            // committed too, and nothing crashed then.
            tracing::info!(
                "{}: of the {} records the restored checkpoint staged, {kept} were committed already; {again} were written again in new transactions{}",
                self.what,
                again + kept,
                if again > 0 {
                    " (the job had ended before their commit)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<(), ConnectError> {
        if !self.txn_open {
            self.producer
                .begin_transaction()
                .map_err(|e| self.txn_error("begin a transaction", &e))?;
            self.txn_open = true;
        }
        Ok(())
    }

    /// Sends one record (waiting while the producer's queue is full).
    fn send(&self, key: Option<&[u8]>, value: &[u8], ts: Option<i64>) -> Result<(), ConnectError> {
        crate::fault::crash_point("kafka-sink-produce");
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(value);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(t) = ts {
            rec = rec.timestamp(t);
        }
        if let Some(p) = self.partition {
            rec = rec.partition(p);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    // The producer's thread drains the queue.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(ConnectError::transient(format!(
                        "{}: cannot send a record: {e}",
                        self.what
                    )));
                }
            }
        }
    }

    /// Commits the open transaction with the marker of group
    /// (`txn_id`, `epoch`, `checkpoint`).
    fn commit_txn(
        &mut self,
        txn_id: &str,
        epoch: &str,
        checkpoint: u64,
        cfg: Option<&KafkaSink>,
    ) -> Result<(), ConnectError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            0,
            Offset::Offset(marker_offset(epoch, checkpoint)),
        )
        .map_err(|e| ConnectError::fatal(e.to_string()))?;
        if let Some(mut e) = tpl.find_partition(&self.topic, 0) {
            e.set_metadata(format!("{epoch}/{checkpoint}"));
        }
        // The marker goes to the group of the transactional ID that wrote
        // the group first (another subtask's, after a rescale).
        let other;
        let consumer = match (&self.marker, cfg) {
            (Some(m), _) if txn_id == self.txn_id => m,
            (_, Some(cfg)) => {
                other = marker_consumer(cfg, txn_id)?;
                &other
            }
            _ => {
                return Err(ConnectError::fatal(format!(
                    "{}: no marker group for {txn_id:?}",
                    self.what
                )));
            }
        };
        let gm = consumer.group_metadata().ok_or_else(|| {
            ConnectError::fatal(format!("{}: no group metadata for the marker", self.what))
        })?;
        self.producer
            .send_offsets_to_transaction(&tpl, &gm, COMMIT_TIMEOUT)
            .map_err(|e| self.txn_error("add the marker to the transaction", &e))?;
        crate::fault::crash_point("kafka-sink-commit");
        self.producer
            .commit_transaction(COMMIT_TIMEOUT)
            .map_err(|e| {
                self.txn_error(
                    &format!("commit the transaction of checkpoint {checkpoint}"),
                    &e,
                )
            })?;
        self.txn_open = false;
        self.check_deliveries()?;
        crate::fault::crash_point("kafka-sink-committed");
        Ok(())
    }

    fn txn_error(&self, doing: &str, e: &KafkaError) -> ConnectError {
        let fenced = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fenced)
                | Some(RDKafkaErrorCode::ProducerFenced)
                | Some(RDKafkaErrorCode::InvalidProducerEpoch)
                | Some(RDKafkaErrorCode::InvalidTransactionalState)
                | Some(RDKafkaErrorCode::InvalidProducerIdMapping)
                | Some(RDKafkaErrorCode::TransactionCoordinatorFenced)
        );
        ConnectError::transient(if fenced {
            format!(
                "{}: cannot {doing}: {e}. The broker dropped the transaction: it stayed open longer than the sink's transaction timeout ({} ms, `transaction-timeout-ms`), or another producer took transactional.id {:?} over (two jobs with one name and sink?). Nothing is lost: the job restarts from its last checkpoint, which keeps the records, and writes them again",
                self.what, self.timeout_ms, self.txn_id
            )
        } else {
            format!("{}: cannot {doing}: {e}", self.what)
        })
    }

    /// Fails if the broker refused a record.
    fn check_deliveries(&self) -> Result<(), ConnectError> {
        let f = self
            .producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match f {
            Some(e) => Err(ConnectError::transient(format!(
                "{}: the broker did not take a record: {e}",
                self.what
            ))),
            None => Ok(()),
        }
    }

    fn flush(&self) -> Result<(), ConnectError> {
        self.producer.flush(COMMIT_TIMEOUT).map_err(|e| {
            ConnectError::transient(format!(
                "{}: records were not acknowledged within {} s: {e}",
                self.what,
                COMMIT_TIMEOUT.as_secs()
            ))
        })?;
        self.check_deliveries()
    }

    /// Sends the current group's buffered records into a new transaction
    /// (the previous one just committed).
    fn send_current(&mut self) -> Result<(), ConnectError> {
        self.begin()?;
        let mut at = 0;
        let buf = std::mem::take(&mut self.current);
        let r = (|| {
            while at < buf.len() {
                let (rec, n) = record(&buf[at..]).map_err(ConnectError::fatal)?;
                self.send(rec.key, rec.value, rec.ts)?;
                at += n;
            }
            Ok(())
        })();
        self.current = buf;
        r?;
        self.current_in_txn = true;
        Ok(())
    }

    /// Closes the current group as checkpoint `checkpoint`'s.
    fn stage(&mut self, checkpoint: u64) -> Result<(), ConnectError> {
        if self.current_count == 0 {
            return Ok(());
        }
        if self.current_in_txn {
            // The pre-commit: every record of the group is on the broker.
            self.flush()?;
        }
        let bytes = encode(
            &self.txn_id,
            &self.epoch,
            checkpoint,
            self.current_count,
            &self.current,
        );
        self.current.clear();
        self.current_count = 0;
        self.pending.push_back(Group {
            staged: Staged {
                checkpoint,
                bytes: bytes.into(),
            },
            in_txn: self.current_in_txn,
        });
        self.current_in_txn = false;
        Ok(())
    }

    fn commit_through(&mut self, checkpoint: u64) -> Result<(), ConnectError> {
        while let Some(g) = self.pending.front() {
            if g.staged.checkpoint > checkpoint {
                break;
            }
            let (c, in_txn, bytes) = (g.staged.checkpoint, g.in_txn, g.staged.bytes.clone());
            if !in_txn {
                let d = decode(&bytes).map_err(ConnectError::fatal)?;
                self.begin()?;
                for rec in &d.records {
                    self.send(rec.key, rec.value, rec.ts)?;
                }
            }
            let (id, epoch) = (self.txn_id.clone(), self.epoch.clone());
            self.commit_txn(&id, &epoch, c, None)?;
            self.pending.pop_front();
        }
        if self.pending.is_empty() && self.current_count > 0 && !self.current_in_txn {
            self.send_current()?;
        }
        Ok(())
    }
}

impl SinkWriter for KafkaWriter {
    fn write(&mut self, batch: &Batch) -> Result<(), ConnectError> {
        if !self.exactly_once {
            for e in batch.iter() {
                self.send(e.key, e.value, e.timestamp)?;
            }
            return Ok(());
        }
        let direct = self.pending.is_empty();
        if direct && !self.current_in_txn {
            if self.current_count > 0 {
                self.send_current()?;
            } else {
                self.begin()?;
                self.current_in_txn = true;
            }
        }
        for e in batch.iter() {
            put_record(&mut self.current, e.key, e.value, e.timestamp);
            self.current_count += 1;
            if direct {
                self.send(e.key, e.value, e.timestamp)?;
            }
        }
        Ok(())
    }

    fn prepare(&mut self, checkpoint: u64) -> Result<Prepared, ConnectError> {
        if !self.exactly_once {
            self.flush()?;
            return Ok(Prepared::default());
        }
        self.stage(checkpoint)?;
        Ok(Prepared {
            file: None,
            staged: self.pending.iter().map(|g| g.staged.clone()).collect(),
        })
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectError> {
        if !self.exactly_once {
            return Ok(());
        }
        self.commit_through(checkpoint)
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        if !self.exactly_once {
            return self.flush();
        }
        // The end of the input: what came since the last barrier is final.
        self.stage(u64::MAX)?;
        self.commit_through(u64::MAX)?;
        if self.txn_open {
            // Begun for records that never came.
            self.producer
                .abort_transaction(COMMIT_TIMEOUT)
                .map_err(|e| self.txn_error("end an empty transaction", &e))?;
            self.txn_open = false;
        }
        Ok(())
    }

    fn connected(&self) -> Option<bool> {
        Some(self.health.connected())
    }
}

/// A producer for `cfg`, transactional with `txn_id`, or idempotent.
fn producer(cfg: &KafkaSink, txn_id: Option<&str>) -> Result<(Prod, Arc<Health>), ConnectError> {
    let mut cc = client_config(&cfg.connection, "wrun-sink")?;
    cc.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set(
            "transaction.timeout.ms",
            cfg.transaction_timeout.as_millis().to_string(),
        );
    if let Some(id) = txn_id {
        cc.set("transactional.id", id);
    }
    let inner = Context::new(&cfg.connection);
    let health = inner.health.clone();
    let p: Prod = cc
        .create_with_context(SinkCtx {
            inner,
            failed: Mutex::new(None),
        })
        .map_err(|e| {
            ConnectError::fatal(format!(
                "cannot create a Kafka producer: {e} (check `properties`)"
            ))
        })?;
    Ok((p, health))
}

/// A consumer of the marker group `txn_id` (it never subscribes).
fn marker_consumer(cfg: &KafkaSink, txn_id: &str) -> Result<BaseConsumer<Context>, ConnectError> {
    let mut cc = client_config(&cfg.connection, "wrun-sink-marker")?;
    cc.set("group.id", txn_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    cc.create_with_context(Context::new(&cfg.connection))
        .map_err(|e| ConnectError::fatal(format!("cannot create a Kafka consumer: {e}")))
}

/// The last group a transactional ID committed, as its marker says.
#[derive(Debug, PartialEq, Eq)]
struct Marker {
    /// The committed offset: [`marker_offset`].
    offset: i64,
    /// The metadata, `<epoch>/<checkpoint>` (brokers that keep it).
    metadata: Option<(String, u64)>,
}

/// Checkpoint bits of a marker offset.
const MARKER_CHECKPOINT_BITS: u32 = 40;

/// The marker as an offset, for brokers that do not keep commit metadata:
/// 23 bits of a hash of the epoch over 40 bits of the checkpoint.
fn marker_offset(epoch: &str, checkpoint: u64) -> i64 {
    let mask = (1u64 << MARKER_CHECKPOINT_BITS) - 1;
    let h = xxhash_rust::xxh3::xxh3_64(epoch.as_bytes()) & 0x7f_ffff;
    ((h << MARKER_CHECKPOINT_BITS) | checkpoint.min(mask)) as i64
}

impl Marker {
    /// Whether the group of (`epoch`, `checkpoint`) was committed: the
    /// same epoch (run) committed it or a later one, in order. By the
    /// metadata where the broker kept it, else by the offset.
    fn covers(&self, epoch: &str, checkpoint: u64) -> bool {
        if let Some((e, c)) = &self.metadata {
            return e == epoch && *c >= checkpoint;
        }
        let mask = (1u64 << MARKER_CHECKPOINT_BITS) - 1;
        let want = marker_offset(epoch, checkpoint) as u64;
        let got = self.offset as u64;
        got >> MARKER_CHECKPOINT_BITS == want >> MARKER_CHECKPOINT_BITS
            && (got & mask) >= (want & mask)
    }
}

/// The marker of `txn_id`'s group, if it has one.
fn read_marker(
    cfg: &KafkaSink,
    txn_id: &str,
    topic: &str,
    health: &Health,
) -> Result<Option<Marker>, ConnectError> {
    let c = marker_consumer(cfg, txn_id)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c
        .committed_offsets(tpl, START_TIMEOUT)
        .map_err(|e| health.start_error(&format!("read the commit marker of {txn_id:?}"), &e))?;
    let Some(e) = got.find_partition(topic, 0) else {
        return Ok(None);
    };
    let Offset::Offset(offset) = e.offset() else {
        return Ok(None);
    };
    let metadata = e
        .metadata()
        .split_once('/')
        .and_then(|(epoch, c)| Some((epoch.to_string(), c.parse().ok()?)));
    Ok(Some(Marker { offset, metadata }))
}

/// A record: a key flag (0 none, 1 key), the key, the value, a timestamp
/// flag and the timestamp (i64 little-endian).
fn put_record(out: &mut Vec<u8>, key: Option<&[u8]>, value: &[u8], ts: Option<i64>) {
    match key {
        Some(k) => {
            out.push(1);
            put(out, k);
        }
        None => out.push(0),
    }
    put(out, value);
    match ts {
        Some(t) => {
            out.push(1);
            out.extend_from_slice(&t.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// A group: magic, version, the transactional ID and epoch that wrote it,
/// the checkpoint, the count, then the records.
fn encode(txn_id: &str, epoch: &str, checkpoint: u64, count: u32, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() + txn_id.len() + 48);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put(&mut out, txn_id.as_bytes());
    put(&mut out, epoch.as_bytes());
    out.extend_from_slice(&checkpoint.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(records);
    out
}

struct Rec<'a> {
    key: Option<&'a [u8]>,
    value: &'a [u8],
    ts: Option<i64>,
}

struct Decoded<'a> {
    txn_id: String,
    epoch: String,
    checkpoint: u64,
    records: Vec<Rec<'a>>,
}

/// Reads one record (see [`put_record`]).
fn read_record<'a>(c: &mut Cursor<'a>) -> Result<Rec<'a>, String> {
    let key = match c.u8()? {
        0 => None,
        1 => Some(c.bytes()?),
        f => return Err(format!("bad key flag {f}")),
    };
    let value = c.bytes()?;
    let ts = match c.u8()? {
        0 => None,
        1 => Some(c.u64()? as i64),
        f => return Err(format!("bad timestamp flag {f}")),
    };
    Ok(Rec { key, value, ts })
}

/// One record at the start of `b`, and its length.
fn record(b: &[u8]) -> Result<(Rec<'_>, usize), String> {
    let mut c = Cursor::new(b);
    let r = read_record(&mut c)?;
    Ok((r, c.at()))
}

fn decode(b: &[u8]) -> Result<Decoded<'_>, String> {
    let mut c = Cursor::new(b);
    if c.take(4)? != MAGIC || c.take(1)? != [VERSION] {
        return Err("not a wrun Kafka group (magic or version)".into());
    }
    let txn_id = c.string("transactional ID")?;
    let epoch = c.string("epoch")?;
    let checkpoint = c.u64()?;
    let count = c.u32()?;
    let mut records = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        records.push(read_record(&mut c)?);
    }
    if c.left() > 0 {
        return Err(format!("{} bytes after the last record", c.left()));
    }
    Ok(Decoded {
        txn_id,
        epoch,
        checkpoint,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_cover_their_run_s_groups_up_to_their_checkpoint() {
        let by_offset = |e: &str, c: u64| Marker {
            offset: marker_offset(e, c),
            metadata: None,
        };
        let by_metadata = |e: &str, c: u64| Marker {
            offset: 0,
            metadata: Some((e.to_string(), c)),
        };
        for m in [by_offset("e1", 7), by_metadata("e1", 7)] {
            assert!(m.covers("e1", 7) && m.covers("e1", 1));
            assert!(!m.covers("e1", 8), "{m:?}");
            assert!(!m.covers("e2", 3), "{m:?}");
        }
        // The final group (checkpoint u64::MAX) clamps, and stays covered.
        assert!(by_offset("e1", u64::MAX).covers("e1", u64::MAX));
        assert!(marker_offset("e1", u64::MAX) > 0);
    }

    #[test]
    fn groups_round_trip_and_corruption_is_caught() {
        let mut m = Vec::new();
        put_record(&mut m, Some(b"a"), b"1", Some(7));
        put_record(&mut m, None, b"", None);
        let g = encode("wrun.j.s.0", "e1", 9, 2, &m);
        let d = decode(&g).unwrap();
        assert_eq!(
            (d.txn_id.as_str(), d.epoch.as_str(), d.checkpoint),
            ("wrun.j.s.0", "e1", 9)
        );
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[0].key, Some(&b"a"[..]));
        assert_eq!(d.records[0].value, b"1");
        assert_eq!(d.records[0].ts, Some(7));
        assert_eq!((d.records[1].key, d.records[1].ts), (None, None));
        for cut in 0..g.len() {
            assert!(decode(&g[..cut]).is_err(), "{cut}");
        }
        let (r, n) = record(&m).unwrap();
        assert_eq!((r.value, n), (&b"1"[..], 1 + 4 + 1 + 4 + 1 + 1 + 8));
    }
}
