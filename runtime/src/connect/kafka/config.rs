//! The `kind = "kafka"` sections of `job.toml` (docs/connectors.md, "Kafka").

use super::OWNED_PROPERTIES;
use super::{KafkaConnection, KafkaKey, KafkaSasl, KafkaSink, KafkaSource, KafkaStart};
use crate::connect::config::{FieldError, Fields, Section, at_least, field_names, rfc3339_ms};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// The connection fields a Kafka source and sink share.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConnectionConfig {
    bootstrap_servers: Option<Spanned<Vec<String>>>,
    sasl_mechanism: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
    tls: Option<Spanned<bool>>,
    tls_ca_file: Option<Spanned<String>>,
    properties: Option<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SourceConfig {
    topics: Option<Spanned<Vec<String>>>,
    group_id: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    bounded: Option<Spanned<bool>>,
    partition_discovery_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SinkConfig {
    topic: Option<Spanned<String>>,
    partition: Option<Spanned<i64>>,
    delivery: Option<Spanned<String>>,
    transaction_timeout_ms: Option<Spanned<u64>>,
    transactional_id_prefix: Option<Spanned<String>>,
}

/// A Kafka source from its section.
pub fn source(fields: &Fields, s: &Section) -> Result<KafkaSource, FieldError> {
    s.only(
        fields,
        &[
            field_names::<ConnectionConfig>(),
            field_names::<SourceConfig>(),
        ],
    )?;
    let connection = connection(&s.read(fields)?, s)?;
    let c: SourceConfig = s.read(fields)?;
    let topics = match &c.topics {
        Some(t) if t.get_ref().is_empty() || !t.get_ref().iter().all(|x| topic_name(x)) => {
            return Err(s.err(
                t.span(),
                "`topics` must list one or more topic names (letters, digits, '.', '_', '-')",
            ));
        }
        Some(t) => t.get_ref().clone(),
        None => return Err(s.needs("`topics`, such as [\"lines\"]")),
    };
    let group_id = c.group_id.as_ref().map(|g| g.get_ref().clone());
    let start = match c.start.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "earliest")) => KafkaStart::Earliest,
        Some((_, "latest")) => KafkaStart::Latest,
        Some((v, "group-offsets")) => {
            if group_id.is_none() {
                return Err(s.err(v.span(), "`start = \"group-offsets\"` needs `group-id`"));
            }
            KafkaStart::GroupOffsets
        }
        Some((v, t)) => match t.strip_prefix("timestamp:") {
            Some(ts) => match ts.parse::<i64>() {
                Ok(ms) if ms >= 0 => KafkaStart::Timestamp(ms),
                _ => match rfc3339_ms(ts) {
                    Some(ms) => KafkaStart::Timestamp(ms),
                    None => {
                        return Err(s.err(
                            v.span(),
                            format!("{ts:?} is neither ms since the Unix epoch nor an RFC 3339 time such as \"2026-12-02T10:00:00Z\""),
                        ));
                    }
                },
            },
            None => {
                return Err(s.err(
                    v.span(),
                    format!("a kafka source's `start` is \"earliest\", \"latest\", \"group-offsets\" or \"timestamp:<ms or RFC 3339>\", not {t:?}"),
                ));
            }
        },
    };
    let key = match c.key.as_ref().map(|k| (k, k.get_ref().as_str())) {
        None | Some((_, "key")) => KafkaKey::Key,
        Some((_, "none")) => KafkaKey::None,
        Some((k, other)) => {
            return Err(s.err(
                k.span(),
                format!(
                    "a kafka source's `key` is \"key\" (the record's key) or \"none\", not {other:?}"
                ),
            ));
        }
    };
    let partition_discovery = match c.partition_discovery_ms.as_ref().map(|v| *v.get_ref()) {
        None => Some(Duration::from_secs(10)),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    Ok(KafkaSource {
        connection,
        topics,
        group_id,
        start,
        key,
        bounded: c.bounded.as_ref().is_some_and(|b| *b.get_ref()),
        partition_discovery,
    })
}

/// A Kafka sink from its section. `checkpoint_span_ms`: how long a
/// checkpoint may keep a transaction open (interval + timeout + min pause),
/// when the job checkpoints.
pub fn sink(
    fields: &Fields,
    s: &Section,
    checkpoint_span_ms: Option<u64>,
) -> Result<KafkaSink, FieldError> {
    s.only(
        fields,
        &[
            field_names::<ConnectionConfig>(),
            field_names::<SinkConfig>(),
        ],
    )?;
    let connection = connection(&s.read(fields)?, s)?;
    let c: SinkConfig = s.read(fields)?;
    let topic = match &c.topic {
        Some(t) if topic_name(t.get_ref()) => t.get_ref().clone(),
        Some(t) => {
            return Err(s.err(
                t.span(),
                format!(
                    "{:?} is not a topic name (letters, digits, '.', '_', '-')",
                    t.get_ref()
                ),
            ));
        }
        None => return Err(s.needs("`topic`")),
    };
    let partition = match &c.partition {
        Some(p) => match i32::try_from(*p.get_ref()) {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(s.err(p.span(), "`partition` is a partition number, 0 or more"));
            }
        },
        None => None,
    };
    let delivery = crate::connect::config::delivery(&c.delivery, s)?;
    let timeout_ms = match &c.transaction_timeout_ms {
        Some(t) => at_least(t, "transaction-timeout-ms", 1000)?,
        None => 900_000,
    };
    if delivery == crate::connect::Delivery::ExactlyOnce
        && let Some(open) = checkpoint_span_ms
        && timeout_ms <= open
    {
        let span = c
            .transaction_timeout_ms
            .as_ref()
            .map(|t| t.span())
            .unwrap_or_else(|| s.name_span.clone());
        return Err(s.err(span, format!("`transaction-timeout-ms` = {timeout_ms} is too short for this job's checkpoints: a transaction stays open from its first record until the checkpoint after it completes, up to checkpoint.interval-ms + checkpoint.timeout-ms + min-pause-ms = {open} ms, and the broker aborts a transaction left open longer. Raise `transaction-timeout-ms` above {open} (within the broker's transaction.max.timeout.ms), or shorten the checkpoint interval or timeout")));
    }
    let transactional_id_prefix = match &c.transactional_id_prefix {
        Some(p) if p.get_ref().is_empty() || p.get_ref().contains(char::is_whitespace) => {
            return Err(s.err(
                p.span(),
                "`transactional-id-prefix` must be non-empty, without spaces",
            ));
        }
        Some(p) => Some(p.get_ref().clone()),
        None => None,
    };
    Ok(KafkaSink {
        connection,
        topic,
        delivery,
        partition,
        transaction_timeout: Duration::from_millis(timeout_ms),
        transactional_id_prefix,
    })
}

fn connection(f: &ConnectionConfig, s: &Section) -> Result<KafkaConnection, FieldError> {
    let bootstrap_servers = match &f.bootstrap_servers {
        Some(v) if v.get_ref().is_empty() => {
            return Err(s.err(v.span(), "`bootstrap-servers` is empty"));
        }
        Some(v) => {
            for a in v.get_ref() {
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok || a.contains("://") {
                    return Err(s.err(
                        v.span(),
                        format!("{a:?} is not a broker address: write host:port, such as \"127.0.0.1:9092\""),
                    ));
                }
            }
            v.get_ref().clone()
        }
        None => return Err(s.needs("`bootstrap-servers`, such as [\"127.0.0.1:9092\"]")),
    };
    let sasl = match (&f.user, &f.password) {
        (None, None) => {
            if let Some(m) = &f.sasl_mechanism {
                return Err(s.err(m.span(), "`sasl-mechanism` needs `user` and `password`"));
            }
            None
        }
        (Some(u), Some(p)) => {
            let mechanism = match f.sasl_mechanism.as_ref() {
                None => "SCRAM-SHA-512".to_string(),
                Some(m) => {
                    let up = m.get_ref().to_ascii_uppercase();
                    if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&up.as_str()) {
                        return Err(s.err(m.span(), format!("`sasl-mechanism` is \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\", not {:?}", m.get_ref())));
                    }
                    up
                }
            };
            Some(KafkaSasl {
                mechanism,
                user: u.get_ref().clone(),
                password: s.secret(p, "password")?,
            })
        }
        (Some(u), None) => return Err(s.err(u.span(), "`user` needs `password`")),
        (None, Some(p)) => return Err(s.err(p.span(), "`password` needs `user`")),
    };
    let mut properties = std::collections::BTreeMap::new();
    if let Some(t) = &f.properties {
        for (k, v) in t.get_ref() {
            let lower = k.to_ascii_lowercase();
            if lower.contains("password")
                || lower.contains("secret")
                || lower.contains("jaas")
                || lower.starts_with("ssl.key")
            {
                return Err(FieldError {
                    hide_line: true,
                    ..s.err(t.span(), format!("`properties` may not hold {k:?}: secrets go by reference (`password = {{ env = \"VARIABLE\" }}`), never into the manifest"))
                });
            }
            if OWNED_PROPERTIES.contains(&lower.as_str()) {
                return Err(s.err(t.span(), format!("wrun sets {k:?} itself (see docs/connectors.md: `bootstrap-servers`, `user`/`password`/`sasl-mechanism`, `tls`/`tls-ca-file`, `group-id`, `transaction-timeout-ms`); remove it from `properties`")));
            }
            let v = match v {
                toml::Value::String(x) => x.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(x) => x.to_string(),
                _ => {
                    return Err(s.err(
                        t.span(),
                        format!("property {k:?} must be a string, number or boolean"),
                    ));
                }
            };
            properties.insert(k.clone(), v);
        }
    }
    Ok(KafkaConnection {
        bootstrap_servers,
        sasl,
        tls: f.tls.as_ref().is_some_and(|t| *t.get_ref()),
        tls_ca_file: f.tls_ca_file.as_ref().map(|c| s.resolve(c.get_ref())),
        properties,
    })
}

/// Whether `t` is a Kafka topic name (1-249 letters, digits, '.', '_', '-').
fn topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
