//! The `job.toml` format: what users write. Parsed with serde (unknown
//! fields denied, kebab-case keys) and then validated into a [`JobGraph`];
//! every error names the field and points at its line.

use super::graph::{
    self, ComponentRef, JobGraph, Partition, SinkKind, SourceFormat, SourceKind, VertexKind,
};
use super::settings::{
    CheckpointSettings, Limits, RestartPolicy, SavepointBackend, SavepointSettings,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The manifest versions this wrun reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A manifest that cannot be used, with the place it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}{}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(), snippet.as_ref().zip(*location).map(|(s, (l, _))| format!("\n  {l} | {s}")).unwrap_or_default())]
pub struct ManifestError {
    /// The manifest's path as given.
    pub file: String,
    /// Line and column (1-based), when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong and what to do.
    pub message: String,
    /// The manifest line at `location`.
    pub snippet: Option<String>,
}

fn line_at(text: &str, offset: usize) -> (usize, usize, String) {
    let upto = &text[..offset.min(text.len())];
    let line = upto.matches('\n').count() + 1;
    let col = upto
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    let snippet = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim_end()
        .to_string();
    (line, col, snippet)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Manifest {
    version: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    max_parallelism: Option<Spanned<u32>>,
    #[serde(default)]
    parallelism: Option<Spanned<u32>>,
    #[serde(default)]
    batch: Option<Batch>,
    #[serde(default)]
    limits: Option<LimitsSpec>,
    #[serde(default)]
    checkpoint: Option<CheckpointSpec>,
    #[serde(default)]
    restart: Option<RestartSpec>,
    #[serde(default)]
    savepoints: Option<SavepointsSpec>,
    #[serde(default, rename = "source")]
    sources: Vec<SourceSpec>,
    #[serde(default, rename = "operator")]
    operators: Vec<OperatorSpec>,
    #[serde(default, rename = "sink")]
    sinks: Vec<SinkSpec>,
    #[serde(default, rename = "edge")]
    edges: Vec<EdgeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Batch {
    size: Option<Spanned<u32>>,
    linger_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SavepointsSpec {
    backend: Option<Spanned<SavepointBackend>>,
    dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CheckpointSpec {
    interval_ms: Spanned<u64>,
    timeout_ms: Option<Spanned<u64>>,
    min_pause_ms: Option<u64>,
    retain: Option<Spanned<u64>>,
    tolerable_failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestartSpec {
    attempts: u32,
    delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsSpec {
    memory_mb: Option<Spanned<u64>>,
    call_timeout_ms: Option<Spanned<u64>>,
    max_output_events: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum SourceKindName {
    File,
    Generator,
    Stdin,
    Nats,
    Kafka,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SourceSpec {
    name: Spanned<String>,
    kind: Spanned<SourceKindName>,
    path: Option<Spanned<String>>,
    format: Option<Spanned<SourceFormat>>,
    key: Option<Spanned<String>>,
    count: Option<Spanned<u64>>,
    keys: Option<Spanned<u64>>,
    rate: Option<Spanned<f64>>,
    seed: Option<Spanned<u64>>,
    parallelism: Option<Spanned<u32>>,
    servers: Option<Spanned<Vec<String>>>,
    stream: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
    token: Option<Spanned<toml::Value>>,
    creds_file: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
    subjects: Option<Spanned<Vec<String>>>,
    start: Option<Spanned<String>>,
    bounded: Option<Spanned<bool>>,
    bootstrap_servers: Option<Spanned<Vec<String>>>,
    topics: Option<Spanned<Vec<String>>>,
    group_id: Option<Spanned<String>>,
    partition_discovery_ms: Option<Spanned<u64>>,
    sasl_mechanism: Option<Spanned<String>>,
    tls: Option<Spanned<bool>>,
    properties: Option<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OperatorSpec {
    name: Spanned<String>,
    uid: Option<Spanned<String>>,
    component: Spanned<String>,
    parallelism: Option<Spanned<u32>>,
    config: Option<toml::Table>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum SinkKindName {
    File,
    Stdout,
    Discard,
    Nats,
    Kafka,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SinkSpec {
    name: Spanned<String>,
    kind: Spanned<SinkKindName>,
    path: Option<Spanned<String>>,
    parallelism: Option<Spanned<u32>>,
    servers: Option<Spanned<Vec<String>>>,
    stream: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
    token: Option<Spanned<toml::Value>>,
    creds_file: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    delivery: Option<Spanned<String>>,
    bootstrap_servers: Option<Spanned<Vec<String>>>,
    topic: Option<Spanned<String>>,
    partition: Option<Spanned<i64>>,
    transaction_timeout_ms: Option<Spanned<u64>>,
    transactional_id_prefix: Option<Spanned<String>>,
    sasl_mechanism: Option<Spanned<String>>,
    tls: Option<Spanned<bool>>,
    properties: Option<Spanned<toml::Table>>,
}

/// The [`NatsFields`] of a `SourceSpec` or a `SinkSpec` (`what`: "source"
/// or "sink"); the two specs repeat the fields, as `deny_unknown_fields`
/// rules out flattening a shared struct into them.
macro_rules! nats_fields {
    ($what:literal, $s:expr) => {
        NatsFields {
            what: format!(concat!($what, " '{}'"), $s.name.get_ref()),
            span: $s.name.span(),
            servers: &$s.servers,
            stream: &$s.stream,
            user: &$s.user,
            password: &$s.password,
            token: &$s.token,
            creds_file: &$s.creds_file,
            tls_ca_file: &$s.tls_ca_file,
        }
    };
}

/// The NATS connection fields of a source or a sink.
struct NatsFields<'a> {
    what: String,
    span: std::ops::Range<usize>,
    servers: &'a Option<Spanned<Vec<String>>>,
    stream: &'a Option<Spanned<String>>,
    user: &'a Option<Spanned<String>>,
    password: &'a Option<Spanned<toml::Value>>,
    token: &'a Option<Spanned<toml::Value>>,
    creds_file: &'a Option<Spanned<String>>,
    tls_ca_file: &'a Option<Spanned<String>>,
}

/// `{ env = "VAR" }` or `{ file = "path" }`: a secret by reference.
fn secret(
    ctx: &Ctx,
    v: &Spanned<toml::Value>,
    field: &str,
    what: &str,
    base_dir: &Path,
) -> Result<crate::connect::Secret, ManifestError> {
    let t = v.get_ref().as_table();
    let one = t.filter(|t| t.len() == 1).and_then(|t| t.iter().next());
    match one {
        Some((k, toml::Value::String(s))) if k == "env" && !s.is_empty() => {
            Ok(crate::connect::Secret::Env(s.clone()))
        }
        Some((k, toml::Value::String(s))) if k == "file" && !s.is_empty() => {
            Ok(crate::connect::Secret::File(resolve(base_dir, s)))
        }
        _ => {
            let mut e = ctx.err(
                v.span(),
                format!(
                    "{what}: `{field}` names where the secret is, never the secret itself: write `{field} = {{ env = \"VARIABLE\" }}` or `{field} = {{ file = \"path\" }}`"
                ),
            );
            // The line may hold the secret: never echo it.
            e.snippet = None;
            Err(e)
        }
    }
}

fn nats_connection(
    ctx: &Ctx,
    f: &NatsFields,
    base_dir: &Path,
) -> Result<(crate::connect::nats::NatsConnection, String), ManifestError> {
    use crate::connect::nats::{NatsAuth, NatsConnection};
    let what = &f.what;
    let servers = match f.servers {
        Some(s) if s.get_ref().is_empty() => {
            return Err(ctx.err(s.span(), format!("{what}: `servers` is empty")));
        }
        Some(s) => {
            for url in s.get_ref() {
                if url.parse::<async_nats::ServerAddr>().is_err() {
                    return Err(ctx.err(
                        s.span(),
                        format!("{what}: {url:?} is not a NATS server URL (such as \"nats://127.0.0.1:4222\")"),
                    ));
                }
            }
            s.get_ref().clone()
        }
        None => {
            return Err(ctx.err(
                f.span.clone(),
                format!("{what} needs `servers`, such as [\"nats://127.0.0.1:4222\"]"),
            ));
        }
    };
    let stream = match f.stream {
        Some(s) if !s.get_ref().is_empty() => s.get_ref().clone(),
        Some(s) => return Err(ctx.err(s.span(), format!("{what}: `stream` is empty"))),
        None => {
            return Err(ctx.err(
                f.span.clone(),
                format!("{what} needs `stream`, the JetStream stream's name"),
            ));
        }
    };
    let auth = match (f.user, f.password, f.token, f.creds_file) {
        (None, None, None, None) => NatsAuth::None,
        (Some(u), Some(p), None, None) => NatsAuth::UserPassword {
            user: u.get_ref().clone(),
            password: secret(ctx, p, "password", what, base_dir)?,
        },
        (None, None, Some(t), None) => NatsAuth::Token(secret(ctx, t, "token", what, base_dir)?),
        (None, None, None, Some(c)) => NatsAuth::CredsFile(resolve(base_dir, c.get_ref())),
        (Some(u), None, None, None) => {
            return Err(ctx.err(u.span(), format!("{what}: `user` needs `password`")));
        }
        (None, Some(p), None, None) => {
            return Err(ctx.err(p.span(), format!("{what}: `password` needs `user`")));
        }
        _ => {
            return Err(ctx.err(
                f.span.clone(),
                format!("{what}: give one of `user` and `password`, `token`, or `creds-file`"),
            ));
        }
    };
    Ok((
        NatsConnection {
            servers,
            auth,
            tls_ca_file: f
                .tls_ca_file
                .as_ref()
                .map(|c| resolve(base_dir, c.get_ref())),
        },
        stream,
    ))
}

/// The Kafka connection fields of a source or a sink.
struct KafkaFields<'a> {
    what: String,
    span: std::ops::Range<usize>,
    bootstrap_servers: &'a Option<Spanned<Vec<String>>>,
    sasl_mechanism: &'a Option<Spanned<String>>,
    user: &'a Option<Spanned<String>>,
    password: &'a Option<Spanned<toml::Value>>,
    tls: &'a Option<Spanned<bool>>,
    tls_ca_file: &'a Option<Spanned<String>>,
    properties: &'a Option<Spanned<toml::Table>>,
}

/// The [`KafkaFields`] of a `SourceSpec` or a `SinkSpec`.
macro_rules! kafka_fields {
    ($what:literal, $s:expr) => {
        KafkaFields {
            what: format!(concat!($what, " '{}'"), $s.name.get_ref()),
            span: $s.name.span(),
            bootstrap_servers: &$s.bootstrap_servers,
            sasl_mechanism: &$s.sasl_mechanism,
            user: &$s.user,
            password: &$s.password,
            tls: &$s.tls,
            tls_ca_file: &$s.tls_ca_file,
            properties: &$s.properties,
        }
    };
}

fn kafka_connection(
    ctx: &Ctx,
    f: &KafkaFields,
    base_dir: &Path,
) -> Result<crate::connect::kafka::KafkaConnection, ManifestError> {
    use crate::connect::kafka::{KafkaConnection, KafkaSasl, OWNED_PROPERTIES};
    let what = &f.what;
    let bootstrap_servers = match f.bootstrap_servers {
        Some(s) if s.get_ref().is_empty() => {
            return Err(ctx.err(s.span(), format!("{what}: `bootstrap-servers` is empty")));
        }
        Some(s) => {
            for a in s.get_ref() {
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok || a.contains("://") {
                    return Err(ctx.err(
                        s.span(),
                        format!("{what}: {a:?} is not a broker address: write host:port, such as \"127.0.0.1:9092\""),
                    ));
                }
            }
            s.get_ref().clone()
        }
        None => {
            return Err(ctx.err(
                f.span.clone(),
                format!("{what} needs `bootstrap-servers`, such as [\"127.0.0.1:9092\"]"),
            ));
        }
    };
    let sasl = match (f.user, f.password) {
        (None, None) => {
            if let Some(m) = f.sasl_mechanism {
                return Err(ctx.err(
                    m.span(),
                    format!("{what}: `sasl-mechanism` needs `user` and `password`"),
                ));
            }
            None
        }
        (Some(u), Some(p)) => {
            let mechanism = match f.sasl_mechanism.as_ref() {
                None => "SCRAM-SHA-512".to_string(),
                Some(m) => {
                    let up = m.get_ref().to_ascii_uppercase();
                    if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&up.as_str()) {
                        return Err(ctx.err(m.span(), format!("{what}: `sasl-mechanism` is \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\", not {:?}", m.get_ref())));
                    }
                    up
                }
            };
            Some(KafkaSasl {
                mechanism,
                user: u.get_ref().clone(),
                password: secret(ctx, p, "password", what, base_dir)?,
            })
        }
        (Some(u), None) => {
            return Err(ctx.err(u.span(), format!("{what}: `user` needs `password`")));
        }
        (None, Some(p)) => {
            return Err(ctx.err(p.span(), format!("{what}: `password` needs `user`")));
        }
    };
    let mut properties = std::collections::BTreeMap::new();
    if let Some(t) = f.properties {
        for (k, v) in t.get_ref() {
            let lower = k.to_ascii_lowercase();
            if lower.contains("password")
                || lower.contains("secret")
                || lower.contains("jaas")
                || lower.starts_with("ssl.key")
            {
                let mut e = ctx.err(t.span(), format!("{what}: `properties` may not hold {k:?}: secrets go by reference (`password = {{ env = \"VARIABLE\" }}`), never into the manifest"));
                e.snippet = None;
                return Err(e);
            }
            if OWNED_PROPERTIES.contains(&lower.as_str()) {
                return Err(ctx.err(t.span(), format!("{what}: wrun sets {k:?} itself (see docs/connectors.md: `bootstrap-servers`, `user`/`password`/`sasl-mechanism`, `tls`/`tls-ca-file`, `group-id`, `transaction-timeout-ms`); remove it from `properties`")));
            }
            let v = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(x) => x.to_string(),
                _ => {
                    return Err(ctx.err(
                        t.span(),
                        format!("{what}: property {k:?} must be a string, number or boolean"),
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
        tls_ca_file: f
            .tls_ca_file
            .as_ref()
            .map(|c| resolve(base_dir, c.get_ref())),
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

/// Errors for connector fields set on a kind they do not apply to; each
/// field lists the kinds it applies to.
/// Where a field is in the manifest, when it is set.
fn span<T>(v: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
    v.as_ref().map(|v| v.span())
}

/// The [`FieldUse`]s of the connection fields a source and a sink share
/// (`$nats`, `$kafka`: the spec's kinds they apply to).
macro_rules! connection_fields {
    ($s:expr, $nats:expr, $kafka:expr) => {
        [
            ("servers", span(&$s.servers), &[$nats][..]),
            ("stream", span(&$s.stream), &[$nats][..]),
            ("token", span(&$s.token), &[$nats][..]),
            ("creds-file", span(&$s.creds_file), &[$nats][..]),
            ("user", span(&$s.user), &[$nats, $kafka][..]),
            ("password", span(&$s.password), &[$nats, $kafka][..]),
            ("tls-ca-file", span(&$s.tls_ca_file), &[$nats, $kafka][..]),
            (
                "bootstrap-servers",
                span(&$s.bootstrap_servers),
                &[$kafka][..],
            ),
            ("sasl-mechanism", span(&$s.sasl_mechanism), &[$kafka][..]),
            ("tls", span(&$s.tls), &[$kafka][..]),
            ("properties", span(&$s.properties), &[$kafka][..]),
        ]
    };
}

/// A connector field: its name, its span when set, the kinds it applies to.
type FieldUse<'k, K> = (&'static str, Option<std::ops::Range<usize>>, &'k [K]);

fn fields_apply<K: PartialEq + Copy>(
    kind: K,
    fields: &[FieldUse<'_, K>],
    not_for: impl Fn(&str, Option<std::ops::Range<usize>>) -> Result<(), ManifestError>,
) -> Result<(), ManifestError> {
    for (f, sp, kinds) in fields {
        if !kinds.contains(&kind) {
            not_for(f, sp.clone())?;
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EdgeSpec {
    from: Spanned<String>,
    to: Spanned<String>,
    partition: Option<Spanned<Partition>>,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ManifestError {
        let (line, col, snippet) = line_at(self.text, span.start);
        ManifestError {
            file: self.file.to_string(),
            location: Some((line, col)),
            message: message.into(),
            snippet: Some(snippet),
        }
    }
}

fn pos<T>(ctx: &Ctx, v: &Spanned<T>, field: &str, n: T) -> Result<T, ManifestError>
where
    T: PartialOrd + Copy + std::fmt::Display,
{
    if *v.get_ref() < n {
        return Err(ctx.err(
            v.span(),
            format!("`{field}` must be at least {n}, not {}", v.get_ref()),
        ));
    }
    Ok(*v.get_ref())
}

/// Parses and validates a manifest. `file` names it in errors; `base_dir`
/// resolves relative paths in it; `default_parallelism` (the CLI's
/// `--parallelism`) overrides the manifest's job-wide `parallelism`, but
/// not a vertex's own.
pub fn parse_manifest(
    text: &str,
    file: &str,
    base_dir: &Path,
    default_parallelism: Option<u32>,
) -> Result<JobGraph, ManifestError> {
    let ctx = Ctx { file, text };
    let m: Manifest = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| line_at(text, s.start));
        ManifestError {
            file: file.to_string(),
            location: at.as_ref().map(|a| (a.0, a.1)),
            message: e.message().trim_end().to_string(),
            snippet: at.map(|a| a.2),
        }
    })?;

    if *m.version.get_ref() != MANIFEST_VERSION {
        return Err(ctx.err(
            m.version.span(),
            format!(
                "unsupported manifest `version` {}: this wrun reads version {MANIFEST_VERSION}",
                m.version.get_ref()
            ),
        ));
    }
    let name = m.name.get_ref().clone();
    if let Err(e) = crate::names::check(crate::names::NameKind::Job, &name) {
        return Err(ctx.err(m.name.span(), e.to_string()));
    }
    let max_parallelism = match &m.max_parallelism {
        Some(v) => {
            let n = pos(&ctx, v, "max-parallelism", 1)?;
            if n > 32768 {
                return Err(ctx.err(
                    v.span(),
                    format!("`max-parallelism` must be at most 32768, not {n}"),
                ));
            }
            n
        }
        None => 128,
    };
    if let Some(p) = default_parallelism
        && !(1..=max_parallelism).contains(&p)
    {
        return Err(ManifestError {
            file: file.to_string(),
            location: None,
            message: format!(
                "--parallelism {p} must be between 1 and the job's max-parallelism {max_parallelism}"
            ),
            snippet: None,
        });
    }
    let job_parallelism = match (default_parallelism, &m.parallelism) {
        (Some(p), _) => p,
        (None, Some(v)) => pos(&ctx, v, "parallelism", 1)?,
        (None, None) => 1,
    };
    let (batch_size, linger_ms) = match &m.batch {
        Some(b) => (
            b.size
                .as_ref()
                .map(|s| pos(&ctx, s, "batch.size", 1))
                .transpose()?
                .unwrap_or(1024),
            b.linger_ms.unwrap_or(10),
        ),
        None => (1024, 10),
    };
    let mut limits = Limits::default();
    if let Some(l) = &m.limits {
        if let Some(v) = &l.memory_mb {
            limits.memory_mb = pos(&ctx, v, "limits.memory-mb", 1)?;
        }
        if let Some(v) = &l.call_timeout_ms {
            limits.call_timeout_ms = pos(&ctx, v, "limits.call-timeout-ms", 1)?;
        }
        if let Some(v) = &l.max_output_events {
            limits.max_output_events = pos(&ctx, v, "limits.max-output-events", 1)?;
        }
    }

    let mut b = graph::Builder::new(
        name,
        max_parallelism,
        batch_size as usize,
        linger_ms,
        limits,
    );
    let checkpoint = match &m.checkpoint {
        Some(c) => Some(CheckpointSettings {
            interval_ms: pos(&ctx, &c.interval_ms, "checkpoint.interval-ms", 1)?,
            timeout_ms: c
                .timeout_ms
                .as_ref()
                .map(|t| pos(&ctx, t, "checkpoint.timeout-ms", 1))
                .transpose()?
                .unwrap_or(60_000),
            min_pause_ms: c.min_pause_ms.unwrap_or(0),
            retain: c
                .retain
                .as_ref()
                .map(|r| pos(&ctx, r, "checkpoint.retain", 1))
                .transpose()?
                .unwrap_or(3) as usize,
            tolerable_failures: c.tolerable_failures.unwrap_or(3),
        }),
        None => None,
    };
    // Without checkpoints a restart would replay from the start and
    // duplicate output, so by default only checkpointed jobs restart.
    let restart = match &m.restart {
        Some(r) => RestartPolicy {
            attempts: r.attempts,
            delay_ms: r.delay_ms.unwrap_or(1000),
            max_delay_ms: r.max_delay_ms.unwrap_or(30_000),
        },
        None => RestartPolicy {
            attempts: if checkpoint.is_some() { 3 } else { 0 },
            delay_ms: 1000,
            max_delay_ms: 30_000,
        },
    };
    let mut savepoints = SavepointSettings::default();
    if let Some(s) = &m.savepoints {
        if let Some(b) = &s.backend {
            savepoints.backend = *b.get_ref();
        }
        if let Some(d) = &s.dir {
            if savepoints.backend == SavepointBackend::Memory {
                return Err(ctx.err(
                    d.span(),
                    "savepoints.dir is for the filesystem backend; remove it or set backend = \"filesystem\"",
                ));
            }
            savepoints.dir = Some(resolve(base_dir, d.get_ref()));
        }
    }
    // How long a checkpoint may leave a sink's transaction open.
    let checkpoint_span_ms = checkpoint
        .as_ref()
        .map(|c| c.interval_ms + c.timeout_ms + c.min_pause_ms);
    b.policies(checkpoint, restart, savepoints);
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();

    let check_par = |v: &Option<Spanned<u32>>, default: u32| -> Result<u32, ManifestError> {
        let p = match v {
            Some(v) => pos(&ctx, v, "parallelism", 1)?,
            None => default,
        };
        if p > max_parallelism {
            let span = v.as_ref().map(|v| v.span()).unwrap_or(0..0);
            return Err(ctx.err(span, format!("parallelism {p} is above max-parallelism {max_parallelism}: a subtask needs at least one key group")));
        }
        Ok(p)
    };

    for s in &m.sources {
        let kind = *s.kind.get_ref();
        let not_for =
            |field: &str, present: Option<std::ops::Range<usize>>| -> Result<(), ManifestError> {
                match present {
                    Some(span) => Err(ctx.err(
                        span,
                        format!(
                            "source '{}': `{field}` does not apply to a {:?} source",
                            s.name.get_ref(),
                            kind
                        )
                        .replace("File", "file")
                        .replace("Generator", "generator")
                        .replace("Stdin", "stdin")
                        .replace("Nats", "nats")
                        .replace("Kafka", "kafka"),
                    )),
                    None => Ok(()),
                }
            };
        let nf = nats_fields!("source", s);
        fields_apply(
            kind,
            &[
                &connection_fields!(s, SourceKindName::Nats, SourceKindName::Kafka)[..],
                &[
                    ("subjects", span(&s.subjects), &[SourceKindName::Nats][..]),
                    (
                        "start",
                        span(&s.start),
                        &[SourceKindName::Nats, SourceKindName::Kafka][..],
                    ),
                    (
                        "bounded",
                        span(&s.bounded),
                        &[SourceKindName::Nats, SourceKindName::Kafka][..],
                    ),
                    ("topics", span(&s.topics), &[SourceKindName::Kafka][..]),
                    ("group-id", span(&s.group_id), &[SourceKindName::Kafka][..]),
                    (
                        "partition-discovery-ms",
                        span(&s.partition_discovery_ms),
                        &[SourceKindName::Kafka][..],
                    ),
                ],
            ]
            .concat(),
            not_for,
        )?;
        let source = match kind {
            SourceKindName::Kafka => {
                for (f, sp) in [
                    ("path", s.path.as_ref().map(|v| v.span())),
                    ("format", s.format.as_ref().map(|v| v.span())),
                    ("count", s.count.as_ref().map(|v| v.span())),
                    ("keys", s.keys.as_ref().map(|v| v.span())),
                    ("rate", s.rate.as_ref().map(|v| v.span())),
                    ("seed", s.seed.as_ref().map(|v| v.span())),
                ] {
                    not_for(f, sp)?;
                }
                use crate::connect::kafka::{KafkaKey, KafkaSource, KafkaStart};
                let name = s.name.get_ref();
                let connection = kafka_connection(&ctx, &kafka_fields!("source", s), base_dir)?;
                let topics = match &s.topics {
                    Some(t)
                        if t.get_ref().is_empty() || !t.get_ref().iter().all(|x| topic_name(x)) =>
                    {
                        return Err(ctx.err(t.span(), format!("source '{name}': `topics` must list one or more topic names (letters, digits, '.', '_', '-')")));
                    }
                    Some(t) => t.get_ref().clone(),
                    None => return Err(ctx.err(
                        s.name.span(),
                        format!(
                            "source '{name}': a kafka source needs `topics`, such as [\"lines\"]"
                        ),
                    )),
                };
                let group_id = s.group_id.as_ref().map(|g| g.get_ref().clone());
                let start = match s.start.as_ref().map(|v| (v, v.get_ref().as_str())) {
                    None | Some((_, "earliest")) => KafkaStart::Earliest,
                    Some((_, "latest")) => KafkaStart::Latest,
                    Some((v, "group-offsets")) => {
                        if group_id.is_none() {
                            return Err(ctx.err(v.span(), format!("source '{name}': `start = \"group-offsets\"` needs `group-id`")));
                        }
                        KafkaStart::GroupOffsets
                    }
                    Some((v, t)) => match t.strip_prefix("timestamp:") {
                        Some(ts) => {
                            let ms = match ts.parse::<i64>() {
                                Ok(ms) if ms >= 0 => ms,
                                _ => match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
                                    Ok(t) => (t.unix_timestamp_nanos() / 1_000_000) as i64,
                                    Err(_) => return Err(ctx.err(v.span(), format!("source '{name}': {ts:?} is neither ms since the Unix epoch nor an RFC 3339 time such as \"2026-12-02T10:00:00Z\""))),
                                },
                            };
                            KafkaStart::Timestamp(ms)
                        }
                        None => return Err(ctx.err(v.span(), format!("source '{name}': a kafka source's `start` is \"earliest\", \"latest\", \"group-offsets\" or \"timestamp:<ms or RFC 3339>\", not {t:?}"))),
                    },
                };
                let key = match s.key.as_ref().map(|k| (k, k.get_ref().as_str())) {
                    None | Some((_, "key")) => KafkaKey::Key,
                    Some((_, "none")) => KafkaKey::None,
                    Some((k, other)) => return Err(ctx.err(k.span(), format!("source '{name}': a kafka source's `key` is \"key\" (the record's key) or \"none\", not {other:?}"))),
                };
                let partition_discovery =
                    match s.partition_discovery_ms.as_ref().map(|v| *v.get_ref()) {
                        None => Some(std::time::Duration::from_secs(10)),
                        Some(0) => None,
                        Some(ms) => Some(std::time::Duration::from_millis(ms)),
                    };
                SourceKind::Kafka(KafkaSource {
                    connection,
                    topics,
                    group_id,
                    start,
                    key,
                    bounded: s.bounded.as_ref().is_some_and(|b| *b.get_ref()),
                    partition_discovery,
                })
            }
            SourceKindName::Nats => {
                for (f, sp) in [
                    ("path", s.path.as_ref().map(|v| v.span())),
                    ("format", s.format.as_ref().map(|v| v.span())),
                    ("count", s.count.as_ref().map(|v| v.span())),
                    ("keys", s.keys.as_ref().map(|v| v.span())),
                    ("rate", s.rate.as_ref().map(|v| v.span())),
                    ("seed", s.seed.as_ref().map(|v| v.span())),
                ] {
                    not_for(f, sp)?;
                }
                use crate::connect::nats::{NatsKey, NatsSource, NatsStart};
                let (connection, stream) = nats_connection(&ctx, &nf, base_dir)?;
                let start = match &s.start {
                    None => NatsStart::First,
                    Some(v) => {
                        let t = v.get_ref();
                        match t.as_str() {
                            "first" => NatsStart::First,
                            "new" => NatsStart::New,
                            _ => match t.split_once(':') {
                                Some(("sequence", n)) => match n.parse::<u64>() {
                                    Ok(n) if n >= 1 => NatsStart::Sequence(n),
                                    _ => return Err(ctx.err(v.span(), format!("source '{}': `start = \"sequence:N\"` needs a stream sequence of 1 or more, not {n:?}", s.name.get_ref()))),
                                },
                                Some(("time", ts)) => {
                                    if time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_err() {
                                        return Err(ctx.err(v.span(), format!("source '{}': {ts:?} is not an RFC 3339 time such as \"2026-12-02T10:00:00Z\"", s.name.get_ref())));
                                    }
                                    NatsStart::Time(ts.to_string())
                                }
                                _ => return Err(ctx.err(v.span(), format!("source '{}': `start` is \"first\", \"new\", \"sequence:<N>\" or \"time:<RFC 3339>\", not {t:?}", s.name.get_ref()))),
                            },
                        }
                    }
                };
                let key = match s.key.as_ref().map(|k| k.get_ref().as_str()) {
                    None | Some("subject") => NatsKey::Subject,
                    Some("none") => NatsKey::None,
                    Some(k) => match k.strip_prefix("header:") {
                        Some(h) if !h.is_empty() => NatsKey::Header(h.to_string()),
                        _ => {
                            let span = s.key.as_ref().map(|k| k.span()).unwrap_or_default();
                            return Err(ctx.err(span, format!("source '{}': a NATS source's `key` is \"subject\", \"none\" or \"header:<Name>\", not {k:?}", s.name.get_ref())));
                        }
                    },
                };
                let subjects = s
                    .subjects
                    .as_ref()
                    .map(|v| v.get_ref().clone())
                    .unwrap_or_default();
                if let Some(v) = &s.subjects
                    && let Some(bad) = subjects
                        .iter()
                        .find(|x| x.is_empty() || x.contains(char::is_whitespace))
                {
                    return Err(ctx.err(
                        v.span(),
                        format!(
                            "source '{}': {bad:?} is not a subject filter",
                            s.name.get_ref()
                        ),
                    ));
                }
                SourceKind::Nats(NatsSource {
                    connection,
                    stream,
                    subjects,
                    start,
                    key,
                    bounded: s.bounded.as_ref().is_some_and(|b| *b.get_ref()),
                })
            }
            SourceKindName::File | SourceKindName::Stdin => {
                for (f, sp) in [
                    ("count", s.count.as_ref().map(|v| v.span())),
                    ("keys", s.keys.as_ref().map(|v| v.span())),
                    ("rate", s.rate.as_ref().map(|v| v.span())),
                    ("seed", s.seed.as_ref().map(|v| v.span())),
                    ("parallelism", s.parallelism.as_ref().map(|v| v.span())),
                ] {
                    not_for(f, sp)?;
                }
                let format = s
                    .format
                    .as_ref()
                    .map(|f| *f.get_ref())
                    .unwrap_or(SourceFormat::Lines);
                let key = match &s.key {
                    Some(k) => {
                        if format != SourceFormat::Json {
                            return Err(ctx.err(k.span(), format!("source '{}': `key` is a JSON pointer and needs `format = \"json\"`", s.name.get_ref())));
                        }
                        if !k.get_ref().is_empty() && !k.get_ref().starts_with('/') {
                            return Err(ctx.err(k.span(), format!("source '{}': `key` must be a JSON pointer such as \"/user/id\" (starting with '/'), not {:?}", s.name.get_ref(), k.get_ref())));
                        }
                        Some(k.get_ref().clone())
                    }
                    None => None,
                };
                if kind == SourceKindName::File {
                    let path = s.path.as_ref().ok_or_else(|| {
                        ctx.err(
                            s.name.span(),
                            format!("source '{}': a file source needs `path`", s.name.get_ref()),
                        )
                    })?;
                    SourceKind::File {
                        path: resolve(base_dir, path.get_ref()),
                        format,
                        key,
                    }
                } else {
                    not_for("path", s.path.as_ref().map(|v| v.span()))?;
                    SourceKind::Stdin { format, key }
                }
            }
            SourceKindName::Generator => {
                for (f, sp) in [
                    ("path", s.path.as_ref().map(|v| v.span())),
                    ("format", s.format.as_ref().map(|v| v.span())),
                    ("key", s.key.as_ref().map(|v| v.span())),
                ] {
                    not_for(f, sp)?;
                }
                let count = s.count.as_ref().ok_or_else(|| {
                    ctx.err(
                        s.name.span(),
                        format!(
                            "source '{}': a generator needs `count` (how many events)",
                            s.name.get_ref()
                        ),
                    )
                })?;
                let keys = match &s.keys {
                    Some(k) => pos(&ctx, k, "keys", 1)?,
                    None => 1,
                };
                let rate = match &s.rate {
                    Some(r) if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) => {
                        return Err(ctx.err(
                            r.span(),
                            "`rate` must be a positive number of events per second",
                        ));
                    }
                    Some(r) => Some(*r.get_ref()),
                    None => None,
                };
                SourceKind::Generator {
                    count: *count.get_ref(),
                    keys,
                    rate,
                    seed: s.seed.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
                }
            }
        };
        let par = if matches!(
            kind,
            SourceKindName::Generator | SourceKindName::Nats | SourceKindName::Kafka
        ) {
            check_par(&s.parallelism, 1)?
        } else {
            1
        };
        b.vertex(
            s.name.get_ref().clone(),
            None,
            par,
            VertexKind::Source(source),
        )
        .map_err(|e| ctx.err(s.name.span(), e))?;
        spans.push(s.name.span());
    }

    for o in &m.operators {
        let par = check_par(&o.parallelism, job_parallelism)?;
        let component = ComponentRef::parse(o.component.get_ref(), base_dir).map_err(|e| {
            ctx.err(
                o.component.span(),
                format!("operator '{}': {e}", o.name.get_ref()),
            )
        })?;
        let config = match &o.config {
            Some(t) => serde_json::to_vec(t).map_err(|e| {
                ctx.err(
                    o.name.span(),
                    format!(
                        "operator '{}': `config` cannot be encoded as JSON: {e}",
                        o.name.get_ref()
                    ),
                )
            })?,
            None => b"{}".to_vec(),
        };
        let uid = match &o.uid {
            Some(u) => {
                if u.get_ref().is_empty() || u.get_ref().len() > 256 {
                    return Err(ctx.err(
                        u.span(),
                        format!("operator '{}': `uid` must be 1-256 bytes", o.name.get_ref()),
                    ));
                }
                if let Some(other) = b.uid_owner(u.get_ref()) {
                    let first = spans[other].clone();
                    let here = line_at(text, u.span().start);
                    let there = line_at(text, first.start);
                    return Err(ctx.err(
                        u.span(),
                        format!(
                            "duplicate uid {:?}: operators '{}' (line {}) and '{}' (line {}) both use it; every uid must be unique within a job",
                            u.get_ref(),
                            b.vertex_name(other),
                            there.0,
                            o.name.get_ref(),
                            here.0,
                        ),
                    ));
                }
                Some(u.get_ref().clone())
            }
            None => None,
        };
        b.vertex(
            o.name.get_ref().clone(),
            uid,
            par,
            VertexKind::Operator { component, config },
        )
        .map_err(|e| ctx.err(o.name.span(), e))?;
        spans.push(o.name.span());
    }

    for s in &m.sinks {
        let nf = nats_fields!("sink", s);
        {
            use SinkKindName::{Kafka, Nats};
            let kind = *s.kind.get_ref();
            let not_for = |f: &str, sp: Option<std::ops::Range<usize>>| match sp {
                Some(sp) => Err(ctx.err(
                    sp,
                    format!(
                        "sink '{}': `{f}` does not apply to a {} sink",
                        s.name.get_ref(),
                        format!("{kind:?}").to_lowercase()
                    ),
                )),
                None => Ok(()),
            };
            fields_apply(
                kind,
                &[
                    &connection_fields!(s, Nats, Kafka)[..],
                    &[
                        ("subject", span(&s.subject), &[Nats][..]),
                        ("delivery", span(&s.delivery), &[Nats, Kafka][..]),
                        ("parallelism", span(&s.parallelism), &[Nats, Kafka][..]),
                        ("topic", span(&s.topic), &[Kafka][..]),
                        ("partition", span(&s.partition), &[Kafka][..]),
                        (
                            "transaction-timeout-ms",
                            span(&s.transaction_timeout_ms),
                            &[Kafka][..],
                        ),
                        (
                            "transactional-id-prefix",
                            span(&s.transactional_id_prefix),
                            &[Kafka][..],
                        ),
                    ],
                ]
                .concat(),
                not_for,
            )?;
        }
        let delivery = || -> Result<crate::connect::Delivery, ManifestError> {
            use crate::connect::Delivery;
            Ok(match s.delivery.as_ref().map(|d| d.get_ref().as_str()) {
                None | Some("exactly-once") => Delivery::ExactlyOnce,
                Some("at-least-once") => Delivery::AtLeastOnce,
                Some(other) => {
                    let span = s.delivery.as_ref().map(|d| d.span()).unwrap_or_default();
                    return Err(ctx.err(span, format!("sink '{}': `delivery` is \"exactly-once\" or \"at-least-once\", not {other:?}", s.name.get_ref())));
                }
            })
        };
        let mut par = 1;
        let kind = match s.kind.get_ref() {
            SinkKindName::Nats => {
                use crate::connect::nats::NatsSink;
                if let Some(p) = &s.path {
                    return Err(ctx.err(
                        p.span(),
                        format!(
                            "sink '{}': `path` does not apply to a nats sink",
                            s.name.get_ref()
                        ),
                    ));
                }
                let (connection, stream) = nats_connection(&ctx, &nf, base_dir)?;
                let subject = match &s.subject {
                    Some(v) => {
                        let t = v.get_ref();
                        let probe = t.replace("{key}", "k");
                        if probe.is_empty()
                            || probe.contains(char::is_whitespace)
                            || probe
                                .split('.')
                                .any(|tok| tok.is_empty() || tok == "*" || tok == ">")
                        {
                            return Err(ctx.err(v.span(), format!("sink '{}': {t:?} is not a subject to publish to (tokens separated by '.', no spaces or wildcards; `{{key}}` stands for the event's key)", s.name.get_ref())));
                        }
                        t.clone()
                    }
                    None => {
                        return Err(ctx.err(
                            s.name.span(),
                            format!("sink '{}': a nats sink needs `subject` (such as \"counts.{{key}}\")", s.name.get_ref()),
                        ));
                    }
                };
                let delivery = delivery()?;
                par = check_par(&s.parallelism, 1)?;
                SinkKind::Nats(NatsSink {
                    connection,
                    stream,
                    subject,
                    delivery,
                })
            }
            SinkKindName::Kafka => {
                use crate::connect::kafka::KafkaSink;
                let name = s.name.get_ref();
                if let Some(p) = &s.path {
                    return Err(ctx.err(
                        p.span(),
                        format!("sink '{name}': `path` does not apply to a kafka sink"),
                    ));
                }
                let connection = kafka_connection(&ctx, &kafka_fields!("sink", s), base_dir)?;
                let topic = match &s.topic {
                    Some(t) if topic_name(t.get_ref()) => t.get_ref().clone(),
                    Some(t) => return Err(ctx.err(t.span(), format!("sink '{name}': {:?} is not a topic name (letters, digits, '.', '_', '-')", t.get_ref()))),
                    None => return Err(ctx.err(s.name.span(), format!("sink '{name}': a kafka sink needs `topic`"))),
                };
                let partition =
                    match &s.partition {
                        Some(p) => match i32::try_from(*p.get_ref()) {
                            Ok(n) if n >= 0 => Some(n),
                            _ => return Err(ctx.err(
                                p.span(),
                                format!(
                                    "sink '{name}': `partition` is a partition number, 0 or more"
                                ),
                            )),
                        },
                        None => None,
                    };
                let delivery = delivery()?;
                let timeout_ms = match &s.transaction_timeout_ms {
                    Some(t) => pos(&ctx, t, "transaction-timeout-ms", 1000)?,
                    None => 900_000,
                };
                if delivery == crate::connect::Delivery::ExactlyOnce
                    && let Some(open) = checkpoint_span_ms
                    && timeout_ms <= open
                {
                    let span = s
                        .transaction_timeout_ms
                        .as_ref()
                        .map(|t| t.span())
                        .unwrap_or_else(|| s.name.span());
                    return Err(ctx.err(span, format!("sink '{name}': `transaction-timeout-ms` = {timeout_ms} is too short for this job's checkpoints: a transaction stays open from its first record until the checkpoint after it completes, up to checkpoint.interval-ms + checkpoint.timeout-ms + min-pause-ms = {open} ms, and the broker aborts a transaction left open longer. Raise `transaction-timeout-ms` above {open} (within the broker's transaction.max.timeout.ms), or shorten the checkpoint interval or timeout")));
                }
                let transactional_id_prefix = match &s.transactional_id_prefix {
                    Some(p)
                        if p.get_ref().is_empty() || p.get_ref().contains(char::is_whitespace) =>
                    {
                        return Err(ctx.err(p.span(), format!("sink '{name}': `transactional-id-prefix` must be non-empty, without spaces")));
                    }
                    Some(p) => Some(p.get_ref().clone()),
                    None => None,
                };
                par = check_par(&s.parallelism, 1)?;
                SinkKind::Kafka(KafkaSink {
                    connection,
                    topic,
                    delivery,
                    partition,
                    transaction_timeout: std::time::Duration::from_millis(timeout_ms),
                    transactional_id_prefix,
                })
            }
            SinkKindName::File => {
                let path = s.path.as_ref().ok_or_else(|| {
                    ctx.err(
                        s.name.span(),
                        format!("sink '{}': a file sink needs `path`", s.name.get_ref()),
                    )
                })?;
                SinkKind::File {
                    path: resolve(base_dir, path.get_ref()),
                }
            }
            other => {
                if let Some(p) = &s.path {
                    return Err(ctx.err(
                        p.span(),
                        format!(
                            "sink '{}': `path` applies only to a file sink, not {other:?}",
                            s.name.get_ref()
                        )
                        .replace("Stdout", "stdout")
                        .replace("Discard", "discard")
                        .replace("Nats", "nats")
                        .replace("Kafka", "kafka"),
                    ));
                }
                if *other == SinkKindName::Stdout {
                    SinkKind::Stdout
                } else {
                    SinkKind::Discard
                }
            }
        };
        b.vertex(s.name.get_ref().clone(), None, par, VertexKind::Sink(kind))
            .map_err(|e| ctx.err(s.name.span(), e))?;
        spans.push(s.name.span());
    }

    for e in &m.edges {
        let from = b.find(e.from.get_ref()).ok_or_else(|| {
            ctx.err(
                e.from.span(),
                format!(
                    "edge `from` names unknown vertex '{}' (known: {})",
                    e.from.get_ref(),
                    b.names().join(", ")
                ),
            )
        })?;
        let to = b.find(e.to.get_ref()).ok_or_else(|| {
            ctx.err(
                e.to.span(),
                format!(
                    "edge `to` names unknown vertex '{}' (known: {})",
                    e.to.get_ref(),
                    b.names().join(", ")
                ),
            )
        })?;
        b.edge(from, to, e.partition.as_ref().map(|p| *p.get_ref()))
            .map_err(|(field, m)| {
                let span = match field {
                    graph::EdgeField::From => e.from.span(),
                    graph::EdgeField::To => e.to.span(),
                    graph::EdgeField::Partition => e
                        .partition
                        .as_ref()
                        .map(|p| p.span())
                        .unwrap_or(e.from.span()),
                };
                ctx.err(span, m)
            })?;
    }

    b.finish().map_err(|(vertex, msg)| match vertex {
        Some(v) => ctx.err(spans[v].clone(), msg),
        None => ManifestError {
            file: file.to_string(),
            location: None,
            message: msg,
            snippet: None,
        },
    })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshot tests: every `tests/ui/*.toml` beside the expected parsed
    /// graph (`.json`) or error (`.err`). `WRUN_BLESS=1` rewrites them.
    #[test]
    fn ui_manifests() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
        let bless = std::env::var_os("WRUN_BLESS").is_some();
        let mut n = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        entries.sort();
        for path in entries {
            n += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            let (ext, got) = match parse_manifest(&text, &file, Path::new("/jobs"), None) {
                Ok(g) => ("json", serde_json::to_string_pretty(&g).unwrap() + "\n"),
                Err(e) => ("err", e.to_string() + "\n"),
            };
            let expected_path = path.with_extension(ext);
            let other = path.with_extension(if ext == "json" { "err" } else { "json" });
            if bless {
                std::fs::write(&expected_path, &got).unwrap();
                let _ = std::fs::remove_file(&other);
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!(
                    "{file}: expected {} to exist (got:\n{got})",
                    expected_path.display()
                )
            });
            assert_eq!(
                got,
                expected,
                "{file}: output differs from {}",
                expected_path.display()
            );
        }
        assert!(n >= 10, "only {n} ui manifests");
    }
}
