//! The API's one error type and its one JSON shape:
//!
//! ```json
//! {"error": "what went wrong, for a person to act on", "causes": ["why", "why that"]}
//! ```
//!
//! `causes` is left out when there are none. Code outside `api/` says what
//! kind of error it has ([`ErrorKind`]); only this module turns a kind into
//! an HTTP status, so nothing below the API depends on HTTP.

use super::types::ErrorBody;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What kind of failure an [`ApiError`] is; each answers one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400): fix it and send it again.
    BadRequest,
    /// No or a wrong bearer token (401).
    Unauthorized,
    /// Authenticated, but refused as it came (403): a cookie-only request
    /// that changes something without the dashboard's header.
    Forbidden,
    /// No such job, module, savepoint, request or route (404).
    NotFound,
    /// The route does not take that method (405).
    MethodNotAllowed,
    /// Not now: the job's state or a name already taken forbids it (409).
    Conflict,
    /// The body is over the limit (413).
    PayloadTooLarge,
    /// Too many requests in progress for one job (429): retry later.
    TooManyRequests,
    /// A failure of this wrun (storage, a task that died) (500).
    Internal,
    /// This wrun is shutting down (503): retry once it is back.
    Unavailable,
}

impl ErrorKind {
    pub(super) fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An API error: its kind, a message a person can act on, and the causes
/// behind it (outermost first), answered apart so a client can print the
/// chain a line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    causes: Vec<String>,
}

impl ApiError {
    /// An error of `kind` with no causes.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// A 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    /// A 409: not in this state.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, message)
    }

    /// An error of `kind` from any error: its message and its `source()`
    /// chain (a cause its message already quotes is not repeated).
    pub fn from_error(kind: ErrorKind, e: &dyn std::error::Error) -> ApiError {
        let message = e.to_string();
        let mut causes: Vec<String> = Vec::new();
        let mut next = e.source();
        while let Some(c) = next {
            let text = c.to_string();
            let quoted = message.contains(&text) || causes.iter().any(|k| k.contains(&text));
            if !quoted {
                causes.push(text);
            }
            next = c.source();
        }
        ApiError {
            kind,
            message,
            causes,
        }
    }

    /// A 500, from any error (see [`ApiError::from_error`]).
    pub fn internal(e: impl std::error::Error) -> ApiError {
        ApiError::from_error(ErrorKind::Internal, &e)
    }

    /// An error of `kind` with the whole cause chain of `e`: its outermost
    /// context is the message, the rest are the causes.
    pub fn chain(kind: ErrorKind, e: &anyhow::Error) -> ApiError {
        let mut all = e.chain().map(|c| c.to_string());
        ApiError {
            kind,
            message: all.next().unwrap_or_default(),
            causes: all.collect(),
        }
    }

    /// Adds a cause (after those there are).
    pub fn caused_by(mut self, cause: impl Into<String>) -> ApiError {
        self.causes.push(cause.into());
        self
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Its message, without the causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Its causes, outermost first.
    pub fn causes(&self) -> &[String] {
        &self.causes
    }
}

/// The message and every cause, `: `-separated (for logs).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.causes {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let mut r = (
            status,
            Json(ErrorBody {
                error: self.message,
                causes: self.causes,
            }),
        )
            .into_response();
        if self.kind == ErrorKind::Unauthorized {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// A 500 from anything displayable (a join error, a store error's text).
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    async fn body(e: ApiError) -> (StatusCode, Value) {
        let r = e.into_response();
        let status = r.status();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(r.into_body(), super::super::MAX_BODY_BYTES)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_error_with_causes_answers_them_apart() {
        let e = anyhow::anyhow!("the chunk is corrupt")
            .context("cannot load module blake3:ab")
            .context("cannot deploy job 'counts'");
        let (status, v) = body(ApiError::chain(ErrorKind::BadRequest, &e)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            v,
            json!({
                "error": "cannot deploy job 'counts'",
                "causes": ["cannot load module blake3:ab", "the chunk is corrupt"],
            })
        );
        let (status, v) = body(ApiError::not_found("no job 'x'")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v, json!({ "error": "no job 'x'" }));
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot write /data/x")]
        Write(#[source] std::io::Error),
        #[error("cannot read /data/y: {0}")]
        Read(#[source] std::io::Error),
    }

    #[tokio::test]
    async fn an_internal_error_keeps_its_source_chain_once() {
        let e = Outer::Write(std::io::Error::other("disk full"));
        let (status, v) = body(ApiError::internal(e)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            v,
            json!({ "error": "cannot write /data/x", "causes": ["disk full"] })
        );
        // A message that already quotes its cause does not repeat it.
        let e = Outer::Read(std::io::Error::other("gone"));
        let (_, v) = body(ApiError::internal(e)).await;
        assert_eq!(v, json!({ "error": "cannot read /data/y: gone" }));
    }

    #[test]
    fn every_kind_answers_its_own_status() {
        use ErrorKind as K;
        let all = [
            (K::BadRequest, 400),
            (K::Unauthorized, 401),
            (K::NotFound, 404),
            (K::MethodNotAllowed, 405),
            (K::Conflict, 409),
            (K::PayloadTooLarge, 413),
            (K::TooManyRequests, 429),
            (K::Internal, 500),
            (K::Unavailable, 503),
        ];
        for (k, s) in all {
            assert_eq!(k.status().as_u16(), s, "{k:?}");
        }
    }
}
