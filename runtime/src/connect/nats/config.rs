//! The `kind = "nats"` sections of `job.toml` (docs/connectors.md, "NATS
//! JetStream").

use super::{NatsAuth, NatsConnection, NatsKey, NatsSink, NatsSource, NatsStart};
use crate::connect::config::{
    FieldError, Fields, Section, delivery, field_names, json_pointer, rfc3339_ms,
};
use serde::Deserialize;
use toml::Spanned;

/// The connection fields a NATS source and sink share.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConnectionConfig {
    servers: Option<Spanned<Vec<String>>>,
    stream: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
    token: Option<Spanned<toml::Value>>,
    creds_file: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SourceConfig {
    subjects: Option<Spanned<Vec<String>>>,
    start: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    timestamp: Option<Spanned<String>>,
    bounded: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SinkConfig {
    subject: Option<Spanned<String>>,
    delivery: Option<Spanned<String>>,
}

/// A NATS JetStream source from its section.
pub fn source(fields: &Fields, s: &Section) -> Result<NatsSource, FieldError> {
    s.only(
        fields,
        &[
            field_names::<ConnectionConfig>(),
            field_names::<SourceConfig>(),
        ],
    )?;
    let (connection, stream) = connection(&s.read(fields)?, s)?;
    let c: SourceConfig = s.read(fields)?;
    let start = match &c.start {
        None => NatsStart::First,
        Some(v) => {
            let t = v.get_ref();
            match t.as_str() {
                "first" => NatsStart::First,
                "new" => NatsStart::New,
                _ => match t.split_once(':') {
                    Some(("sequence", n)) => match n.parse::<u64>() {
                        Ok(n) if n >= 1 => NatsStart::Sequence(n),
                        _ => {
                            return Err(s.err(v.span(), format!("`start = \"sequence:N\"` needs a stream sequence of 1 or more, not {n:?}")));
                        }
                    },
                    Some(("time", ts)) => {
                        if rfc3339_ms(ts).is_none() {
                            return Err(s.err(
                                v.span(),
                                format!("{ts:?} is not an RFC 3339 time such as \"2026-12-02T10:00:00Z\""),
                            ));
                        }
                        NatsStart::Time(ts.to_string())
                    }
                    _ => {
                        return Err(s.err(v.span(), format!("`start` is \"first\", \"new\", \"sequence:<N>\" or \"time:<RFC 3339>\", not {t:?}")));
                    }
                },
            }
        }
    };
    let key = match c.key.as_ref().map(|k| (k, k.get_ref().as_str())) {
        None | Some((_, "subject")) => NatsKey::Subject,
        Some((_, "none")) => NatsKey::None,
        Some((k, other)) => match other.strip_prefix("header:") {
            Some(h) if !h.is_empty() => NatsKey::Header(h.to_string()),
            _ => {
                return Err(s.err(k.span(), format!("a NATS source's `key` is \"subject\", \"none\" or \"header:<Name>\", not {other:?}")));
            }
        },
    };
    let subjects = c
        .subjects
        .as_ref()
        .map(|v| v.get_ref().clone())
        .unwrap_or_default();
    if let Some(v) = &c.subjects
        && let Some(bad) = subjects
            .iter()
            .find(|x| x.is_empty() || x.contains(char::is_whitespace))
    {
        return Err(s.err(v.span(), format!("{bad:?} is not a subject filter")));
    }
    Ok(NatsSource {
        connection,
        stream,
        subjects,
        start,
        key,
        timestamp: c
            .timestamp
            .as_ref()
            .map(|t| json_pointer(t, s))
            .transpose()?,
        bounded: c.bounded.as_ref().is_some_and(|b| *b.get_ref()),
    })
}

/// A NATS JetStream sink from its section.
pub fn sink(fields: &Fields, s: &Section) -> Result<NatsSink, FieldError> {
    s.only(
        fields,
        &[
            field_names::<ConnectionConfig>(),
            field_names::<SinkConfig>(),
        ],
    )?;
    let (connection, stream) = connection(&s.read(fields)?, s)?;
    let c: SinkConfig = s.read(fields)?;
    let subject = match &c.subject {
        Some(v) => {
            let t = v.get_ref();
            let probe = t.replace("{key}", "k");
            if probe.is_empty()
                || probe.contains(char::is_whitespace)
                || probe
                    .split('.')
                    .any(|tok| tok.is_empty() || tok == "*" || tok == ">")
            {
                return Err(s.err(v.span(), format!("{t:?} is not a subject to publish to (tokens separated by '.', no spaces or wildcards; `{{key}}` stands for the event's key)")));
            }
            t.clone()
        }
        None => return Err(s.needs("`subject` (such as \"counts.{key}\")")),
    };
    Ok(NatsSink {
        connection,
        stream,
        subject,
        delivery: delivery(&c.delivery, s)?,
    })
}

fn connection(f: &ConnectionConfig, s: &Section) -> Result<(NatsConnection, String), FieldError> {
    let servers = match &f.servers {
        Some(v) if v.get_ref().is_empty() => return Err(s.err(v.span(), "`servers` is empty")),
        Some(v) => {
            for url in v.get_ref() {
                if url.parse::<async_nats::ServerAddr>().is_err() {
                    return Err(s.err(
                        v.span(),
                        format!(
                            "{url:?} is not a NATS server URL (such as \"nats://127.0.0.1:4222\")"
                        ),
                    ));
                }
            }
            v.get_ref().clone()
        }
        None => return Err(s.needs("`servers`, such as [\"nats://127.0.0.1:4222\"]")),
    };
    let stream = match &f.stream {
        Some(v) if !v.get_ref().is_empty() => v.get_ref().clone(),
        Some(v) => return Err(s.err(v.span(), "`stream` is empty")),
        None => return Err(s.needs("`stream`, the JetStream stream's name")),
    };
    let auth = match (&f.user, &f.password, &f.token, &f.creds_file) {
        (None, None, None, None) => NatsAuth::None,
        (Some(u), Some(p), None, None) => NatsAuth::UserPassword {
            user: u.get_ref().clone(),
            password: s.secret(p, "password")?,
        },
        (None, None, Some(t), None) => NatsAuth::Token(s.secret(t, "token")?),
        (None, None, None, Some(c)) => NatsAuth::CredsFile(s.resolve(c.get_ref())),
        (Some(u), None, None, None) => return Err(s.err(u.span(), "`user` needs `password`")),
        (None, Some(p), None, None) => return Err(s.err(p.span(), "`password` needs `user`")),
        _ => {
            return Err(s.err(
                s.name_span.clone(),
                "give one of `user` and `password`, `token`, or `creds-file`",
            ));
        }
    };
    Ok((
        NatsConnection {
            servers,
            auth,
            tls_ca_file: f.tls_ca_file.as_ref().map(|c| s.resolve(c.get_ref())),
        },
        stream,
    ))
}
