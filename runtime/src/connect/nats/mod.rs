//! NATS JetStream: a source that reads a stream with ordered consumers
//! (the stream sequence is the position), and a sink that publishes with
//! `Nats-Msg-Id` after the checkpoint commits, so the stream's duplicate
//! window drops a republish after a crash (exactly-once).

pub mod config;
mod sink;
mod source;

pub use sink::NatsWriter;
pub use source::NatsReader;

use super::{ConnectError, Delivery, Secret, block_on};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach a NATS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NatsConnection {
    /// Server URLs (`nats://host:port`, `tls://host:port`); the client
    /// picks one and fails over to the others.
    pub servers: Vec<String>,
    /// How to authenticate.
    pub auth: NatsAuth,
    /// A CA certificate file (PEM) to verify the server's TLS certificate
    /// by; setting it requires TLS.
    pub tls_ca_file: Option<PathBuf>,
}

/// How a connector authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// A user and a password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password, by reference.
        password: Secret,
    },
    /// A token, by reference.
    Token(Secret),
    /// A `.creds` file (a user JWT and its NKey seed).
    CredsFile(PathBuf),
}

/// Where a NATS source starts when it is not restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatsStart {
    /// The stream's first message.
    First,
    /// Only messages published after the job starts.
    New,
    /// A stream sequence.
    Sequence(u64),
    /// The first message published at or after a time (RFC 3339).
    Time(String),
}

/// What becomes an event's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatsKey {
    /// The message's subject.
    Subject,
    /// A header's value (no key when the message lacks it).
    Header(String),
    /// No key.
    None,
}

/// A NATS JetStream source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NatsSource {
    /// The server.
    pub connection: NatsConnection,
    /// The stream.
    pub stream: String,
    /// Subject filters, each a split read by its own ordered consumer;
    /// empty: the whole stream is one split.
    pub subjects: Vec<String>,
    /// Where to start when not restored.
    pub start: NatsStart,
    /// What becomes the event's key.
    pub key: NatsKey,
    /// The JSON pointer of the event time in each message's payload;
    /// `None`: the message's publish time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Read only what the stream holds when the source starts, then end
    /// (a batch job over a stream; tests, backfills).
    pub bounded: bool,
}

/// A NATS JetStream sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NatsSink {
    /// The server.
    pub connection: NatsConnection,
    /// The stream that stores what the sink publishes (its duplicate
    /// window is checked at start).
    pub stream: String,
    /// The subject, where `{key}` stands for the event's key.
    pub subject: String,
    /// The delivery guarantee.
    pub delivery: Delivery,
}

/// The first server, for messages.
fn address(c: &NatsConnection) -> String {
    c.servers.join(", ")
}

/// Connects to `c`'s servers: a clear error naming the address when none
/// answers within a few seconds, never a hang. Once connected, the client
/// reconnects by itself (with backoff) when the connection is lost.
async fn connect(c: &NatsConnection, name: &str) -> Result<async_nats::Client, ConnectError> {
    let mut opts = match &c.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => async_nats::ConnectOptions::new()
            .user_and_password(user.clone(), password.read("the NATS password")?),
        NatsAuth::Token(t) => async_nats::ConnectOptions::new().token(t.read("the NATS token")?),
        NatsAuth::CredsFile(p) => async_nats::ConnectOptions::with_credentials_file(p)
            .await
            .map_err(|e| {
                ConnectError::fatal(format!(
                    "cannot read the NATS credentials file {}: {e}",
                    p.display()
                ))
            })?,
    };
    if let Some(ca) = &c.tls_ca_file {
        if !ca.is_file() {
            return Err(ConnectError::fatal(format!(
                "the TLS CA file {} does not exist",
                ca.display()
            )));
        }
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = c
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| ConnectError::fatal(format!("{s:?} is not a NATS server URL: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let addr = address(c);
    opts.name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let addr = addr.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS {addr}: connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS {addr}: connection lost; reconnecting")
                    }
                    // The connector closed its own connection.
                    async_nats::Event::Closed => tracing::debug!("NATS {addr}: closed"),
                    other => tracing::warn!("NATS {addr}: {other}"),
                }
            }
        })
        .connect(addrs)
        .await
        .map_err(|e| {
            let detail = crate::report::chain(&e);
            let auth = detail.contains("uthorization") || detail.contains("uthentication");
            // A certificate the client does not trust is the job's to fix
            // (tls-ca-file), as credentials are: no restart mends it.
            let tls = detail.contains("certificate") || detail.contains("UnknownIssuer");
            ConnectError {
                detail: format!(
                    "cannot connect to NATS at {}: {detail}{}",
                    address(c),
                    if auth {
                        " (check the user, password, token or creds file)"
                    } else if tls {
                        " (check the server's TLS certificate and tls-ca-file)"
                    } else {
                        " (is the server running, and is the address right?)"
                    }
                ),
                transient: !auth && !tls,
            }
        })
}

/// Checks that a server answers and that `stream` exists (the check
/// `wrun deploy` makes before it accepts a job).
pub fn check_stream(c: &NatsConnection, stream: &str) -> Result<(), ConnectError> {
    block_on(async {
        let client = connect(c, "wrun check").await?;
        let js = async_nats::jetstream::new(client);
        get_stream(&js, c, stream).await.map(|_| ())
    })?
}

/// Looks up `stream`: a clear error when it does not exist.
async fn get_stream(
    js: &async_nats::jetstream::Context,
    c: &NatsConnection,
    stream: &str,
) -> Result<async_nats::jetstream::stream::Stream, ConnectError> {
    js.get_stream(stream).await.map_err(|e| {
        let detail = crate::report::chain(&e);
        let missing = detail.contains("not found");
        ConnectError {
            detail: if missing {
                format!(
                    "JetStream stream {stream:?} does not exist on NATS at {}: create it (for example `nats stream add {stream}`) or name another",
                    address(c)
                )
            } else {
                format!(
                    "cannot look up JetStream stream {stream:?} on NATS at {}: {detail} (is JetStream enabled on the server?)",
                    address(c)
                )
            },
            transient: !missing,
        }
    })
}
