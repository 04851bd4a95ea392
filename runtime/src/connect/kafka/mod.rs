//! Kafka (any Kafka-API broker): a source that reads topic partitions as
//! splits (the offset is the position), and a sink that writes one
//! transaction per checkpoint, committed after the checkpoint's manifest
//! is (exactly-once), or flushes at every barrier (at-least-once).
//!
//! The client is librdkafka (through `rdkafka`): its consumers and
//! producers run their own threads, so these connectors call it from the
//! subtask threads directly, with timeouts, and never from the
//! connectors' tokio runtime.

pub mod config;
mod sink;
mod source;

pub use sink::KafkaWriter;
pub use source::KafkaReader;

use super::{ConnectError, Delivery, Secret};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a connector waits for the broker when it starts (metadata,
/// offsets, the transaction coordinator) before it says the broker is not
/// there.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest single metadata request at start: between requests the
/// client's errors are looked at (an authentication failure ends the wait).
const METADATA_SLICE: Duration = Duration::from_millis(250);

/// How to reach a Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KafkaConnection {
    /// `host:port` of one or more brokers; the client learns the rest.
    pub bootstrap_servers: Vec<String>,
    /// SASL credentials.
    pub sasl: Option<KafkaSasl>,
    /// Talk TLS (with `tls_ca_file`, or the system's CAs).
    pub tls: bool,
    /// A CA certificate file (PEM) to verify the brokers by.
    pub tls_ca_file: Option<PathBuf>,
    /// Further librdkafka settings, passed as they are (never secrets,
    /// never the settings wrun owns: the manifest refuses those).
    pub properties: BTreeMap<String, String>,
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The user name.
    pub user: String,
    /// The password, by reference.
    pub password: Secret,
}

/// Where a Kafka source starts when it is not restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaStart {
    /// Each partition's earliest offset.
    Earliest,
    /// Each partition's end: only records produced after the job starts.
    Latest,
    /// The consumer group's committed offsets (earliest where it has none).
    GroupOffsets,
    /// The first record at or after a time, ms since the Unix epoch.
    Timestamp(i64),
}

/// What becomes an event's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaKey {
    /// The record's key.
    Key,
    /// No key.
    None,
}

/// A Kafka source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KafkaSource {
    /// The cluster.
    pub connection: KafkaConnection,
    /// The topics; each partition of each is a split.
    pub topics: Vec<String>,
    /// The consumer group the offsets are committed to after each
    /// completed checkpoint (for monitoring; the checkpoint is the truth).
    pub group_id: Option<String>,
    /// Where to start when not restored.
    pub start: KafkaStart,
    /// What becomes the event's key.
    pub key: KafkaKey,
    /// Read only what the partitions hold when the source starts, then end.
    pub bounded: bool,
    /// How often new partitions are looked for (`None`: never).
    pub partition_discovery: Option<Duration>,
}

/// A Kafka sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KafkaSink {
    /// The cluster.
    pub connection: KafkaConnection,
    /// The topic.
    pub topic: String,
    /// The delivery guarantee.
    pub delivery: Delivery,
    /// Write every record to this partition (default: by key, the
    /// producer's partitioner).
    pub partition: Option<i32>,
    /// The producer's `transaction.timeout.ms`: the broker aborts a
    /// transaction left open longer.
    pub transaction_timeout: Duration,
    /// `transactional.id` = `<prefix>.<subtask>` (default prefix:
    /// `wrun.<job>.<sink>`).
    pub transactional_id_prefix: Option<String>,
}

/// Settings the connectors own: the manifest refuses them in
/// `properties`.
pub const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "ssl.ca.location",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.partition.eof",
    "allow.auto.create.topics",
];

/// The brokers, for messages.
fn address(c: &KafkaConnection) -> String {
    c.bootstrap_servers.join(",")
}

/// The client settings for `c` (the connection and its credentials).
fn client_config(c: &KafkaConnection, client_id: &str) -> Result<ClientConfig, ConnectError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in &c.properties {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", address(c))
        .set("client.id", client_id)
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "5000")
        // A missing topic is an error, never created by a lookup.
        .set("allow.auto.create.topics", "false")
        // Lag per partition, and whether a broker is up again.
        .set("statistics.interval.ms", "5000")
        .set_log_level(RDKafkaLogLevel::Warning);
    let protocol = match (&c.sasl, c.tls || c.tls_ca_file.is_some()) {
        (None, false) => "plaintext",
        (None, true) => "ssl",
        (Some(_), false) => "sasl_plaintext",
        (Some(_), true) => "sasl_ssl",
    };
    cfg.set("security.protocol", protocol);
    if let Some(s) = &c.sasl {
        cfg.set("sasl.mechanism", &s.mechanism)
            .set("sasl.username", &s.user)
            .set("sasl.password", s.password.read("the Kafka SASL password")?);
    }
    if let Some(ca) = &c.tls_ca_file {
        if !ca.is_file() {
            return Err(ConnectError::fatal(format!(
                "the TLS CA file {} does not exist",
                ca.display()
            )));
        }
        cfg.set("ssl.ca.location", ca.display().to_string());
    }
    Ok(cfg)
}

/// What a client's context saw of the cluster: connection state and the
/// last error, for health, logs and start-up messages.
#[derive(Default)]
pub(crate) struct Health {
    address: String,
    down: AtomicBool,
    last_error: Mutex<Option<(RDKafkaErrorCode, String)>>,
    /// Per-partition lag from the client's statistics, by split name.
    lag: Mutex<BTreeMap<String, i64>>,
}

impl Health {
    fn new(address: String) -> Health {
        Health {
            address,
            ..Health::default()
        }
    }

    /// The last error the client reported, and whether it was about
    /// credentials or a broker certificate it does not trust (either way
    /// the job's to fix: waiting longer or restarting cannot help).
    fn last_error(&self) -> Option<(String, bool)> {
        let e = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        e.as_ref()
            .map(|(code, reason)| (reason.clone(), refused(*code, reason)))
    }

    /// Records the client's latest error; a refusal (credentials, an
    /// untrusted certificate) is kept over the "brokers are down" and
    /// lost-connection errors that follow it.
    fn record(&self, code: RDKafkaErrorCode, reason: &str) {
        let mut e = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if !refused(code, reason) && e.as_ref().is_some_and(|(c, r)| refused(*c, r)) {
            return;
        }
        *e = Some((code, reason.to_string()));
    }

    /// The client talked to the cluster again.
    fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Kafka {}: connected again", self.address);
        }
    }

    /// Whether the client is connected, as far as it knows.
    pub(crate) fn connected(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// A clear error for a request that failed at start (`doing`: what it
    /// was): names the address, and what the client saw.
    fn start_error(&self, doing: &str, e: &KafkaError) -> ConnectError {
        let (seen, auth) = self.last_error().unwrap_or_else(|| (String::new(), false));
        let timeout = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::OperationTimedOut)
                | Some(RDKafkaErrorCode::BrokerTransportFailure)
                | Some(RDKafkaErrorCode::AllBrokersDown)
        );
        let detail = if seen.is_empty() || seen == e.to_string() {
            e.to_string()
        } else {
            format!("{e}; the client reported: {seen}")
        };
        ConnectError {
            detail: format!(
                "cannot {doing} on Kafka at {}: {detail}{}",
                self.address,
                if auth && seen.contains("SSL") {
                    " (check the brokers' TLS certificate and tls-ca-file)"
                } else if auth {
                    " (check the SASL mechanism, user and password)"
                } else if timeout {
                    " (is the broker running, and is the address right?)"
                } else {
                    ""
                }
            ),
            transient: !auth,
        }
    }
}

/// The client context: routes librdkafka's logs, errors and statistics
/// into wrun's log, health and lag.
pub(crate) struct Context {
    pub(crate) health: std::sync::Arc<Health>,
}

impl Context {
    fn new(c: &KafkaConnection) -> Context {
        Context {
            health: std::sync::Arc::new(Health::new(address(c))),
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if message.contains("uthentication") {
            // librdkafka says why a broker refused it only in its log.
            self.health
                .record(RDKafkaErrorCode::Authentication, message);
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!("Kafka {}: {fac}: {message}", self.health.address)
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!("Kafka {}: {fac}: {message}", self.health.address)
            }
            _ => tracing::debug!("Kafka {}: {fac}: {message}", self.health.address),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        if code == RDKafkaErrorCode::PartitionEOF {
            return; // a bounded source's end, not an error
        }
        let lost = matches!(
            code,
            RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure
        );
        if lost {
            if !self.health.down.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "Kafka {}: connection lost ({reason}); reconnecting",
                    self.health.address
                );
            }
        } else {
            tracing::warn!("Kafka {}: {reason}", self.health.address);
        }
        self.health.record(code, reason);
    }

    fn stats(&self, s: rdkafka::Statistics) {
        if s.brokers.values().any(|b| b.state == "UP") {
            self.health.up();
        }
        let mut lag = self.health.lag.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    lag.insert(split_name(topic, *p), part.consumer_lag);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Context {}

/// Whether an error of the client is the cluster refusing this client:
/// its credentials, its permissions, or the client not trusting the
/// brokers' certificate.
fn refused(code: RDKafkaErrorCode, reason: &str) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::SSL
    ) || reason.contains("uthenticat")
        || reason.contains("certificate verify failed")
}

/// Checks that the cluster answers and that every topic exists (the
/// check `wrun deploy` makes before it accepts a job).
pub fn check_topics(c: &KafkaConnection, topics: &[String]) -> Result<(), ConnectError> {
    let ctx = Context::new(c);
    let health = ctx.health.clone();
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer<Context> = client_config(c, "wrun-check")?
        .set("group.id", "wrun-check")
        .create_with_context(ctx)
        .map_err(|e| ConnectError::fatal(format!("cannot create a Kafka client: {e}")))?;
    for t in topics {
        partitions(consumer.client(), &health, t, START_TIMEOUT, true, &|| {
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(20));
            }
        })?;
    }
    Ok(())
}

/// A split's stable name: `topic/<topic>/<partition>`.
fn split_name(topic: &str, partition: i32) -> String {
    format!("topic/{topic}/{partition}")
}

/// The split index of a partition: stable whatever other topics and
/// partitions there are (the topic's hash plus the partition, as Flink
/// assigns Kafka splits), so a new partition never moves an old one to
/// another subtask.
fn split_index(topic: &str, partition: i32) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(topic.as_bytes()) & 0x7fff_ffff;
    (h + partition.max(0) as u64) as usize
}

/// The partitions of `topic` (a clear error when it does not exist).
/// `drain` serves the client's queued events (its log and errors say why
/// a request failed) before an error is built. With `fail_fast`, at start
/// (where `drain` may take no record the job needs: nothing is assigned
/// yet, or the client is a producer), the metadata is asked in short
/// slices with `drain` between them, so that credentials the broker
/// refuses or a certificate the client does not trust (which the client
/// reports within milliseconds) fail at once instead of after the whole
/// timeout. Without it (a running source discovering partitions, whose
/// `drain` would drop records), one request waits the whole timeout.
fn partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    health: &Health,
    topic: &str,
    timeout: Duration,
    fail_fast: bool,
    drain: &dyn Fn(),
) -> Result<Vec<i32>, ConnectError> {
    let slice = if fail_fast { METADATA_SLICE } else { timeout };
    let deadline = std::time::Instant::now() + timeout;
    let md = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.fetch_metadata(Some(topic), left.min(slice)) {
            Ok(md) => break md,
            Err(e) => {
                drain();
                let refused = health.last_error().is_some_and(|(_, auth)| auth);
                if refused || left <= slice {
                    return Err(
                        health.start_error(&format!("read the metadata of topic {topic:?}"), &e)
                    );
                }
            }
        }
    };
    health.up();
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| {
            ConnectError::fatal(format!(
                "Kafka at {}: no metadata for topic {topic:?}",
                health.address
            ))
        })?;
    match t.error() {
        None => {}
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            return Err(ConnectError::fatal(format!(
                "topic {topic:?} does not exist on Kafka at {}: create it (for example `kafka-topics --create --topic {topic}`) or name another",
                health.address
            )));
        }
        Some(e) => {
            let code = RDKafkaErrorCode::from(e);
            return Err(ConnectError {
                detail: format!("Kafka at {}: topic {topic:?}: {code}", health.address),
                transient: !matches!(code, RDKafkaErrorCode::TopicAuthorizationFailed),
            });
        }
    }
    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ps.sort_unstable();
    if ps.is_empty() {
        return Err(ConnectError::fatal(format!(
            "topic {topic:?} on Kafka at {} has no partitions",
            health.address
        )));
    }
    Ok(ps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_indexes_are_stable_and_spread() {
        assert_eq!(split_index("a", 3), split_index("a", 0) + 3);
        assert_ne!(split_index("a", 0), split_index("b", 0));
        assert_eq!(split_name("orders", 7), "topic/orders/7");
    }
}
