//! The API's one error type and its JSON shape,
//! `{"error": "...", "causes": ["...", ...]}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error: a status and a message a person can act on. A message
/// made by [`ApiError::chain`] carries its causes too; they are answered
/// apart, as `causes`, so a client can print the chain a line each.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

/// Between a message and each of its causes inside an [`ApiError`].
const CAUSE: &str = "\ncaused by: ";

impl ApiError {
    /// An error with the whole cause chain of `e`.
    pub fn chain(status: StatusCode, e: &anyhow::Error) -> ApiError {
        let all: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        ApiError(status, all.join(CAUSE))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut parts = self.1.split(CAUSE);
        let error = parts.next().unwrap_or_default();
        let causes: Vec<&str> = parts.collect();
        let body = if causes.is_empty() {
            json!({ "error": error })
        } else {
            json!({ "error": error, "causes": causes })
        };
        let mut r = (self.0, Json(body)).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

pub(crate) fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn body(e: ApiError) -> (StatusCode, Value) {
        let r = e.into_response();
        let status = r.status();
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
        let (status, v) = body(ApiError::chain(StatusCode::BAD_REQUEST, &e)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "cannot deploy job 'counts'");
        assert_eq!(
            v["causes"],
            json!(["cannot load module blake3:ab", "the chunk is corrupt"])
        );
        let (_, v) = body(not_found("no job 'x'".into())).await;
        assert_eq!(v, json!({ "error": "no job 'x'" }));
    }
}
