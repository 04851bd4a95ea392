//! Strict extractors: every route reads its input through these, so every
//! route refuses bad input the same way, with the documented JSON error
//! (axum's own rejections are plain text):
//!
//! - [`JsonObject`]: a body that is a JSON object (an array is refused even
//!   where serde would read it as a struct) with no unknown fields (the
//!   types deny them), or empty for the defaults;
//! - [`StrictQuery`]: a query with no unknown and no repeated parameter
//!   ([`NoQuery`] for routes that take none);
//! - [`JobName`]: a `{job}` path segment that is UTF-8 and a valid job name
//!   (`names::check`); [`Segment`]: any other segment, UTF-8.

use super::MAX_BODY_BYTES;
use super::error::{ApiError, ErrorKind};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A JSON object body, parsed into `T` (empty or all whitespace: `T`'s
/// defaults).
#[derive(Debug)]
pub(super) struct JsonObject<T>(pub T);

/// The error for a body that cannot be read (too large, cut off).
pub(super) fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is over the limit of {limit} bytes"),
        )
    } else {
        ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
    }
}

/// Parses `bytes` as a JSON object into `T`.
pub(super) fn parse_object<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(T::default()),
        Some(b'{') => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"))),
        Some(_) => Err(ApiError::bad_request(
            "the body must be a JSON object (`{...}`), or empty; see docs/api.md",
        )),
    }
}

impl<S, T> FromRequest<S> for JsonObject<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(e, MAX_BODY_BYTES))?;
        parse_object(&bytes).map(JsonObject)
    }
}

/// A query string parsed into `T`, which must deny unknown fields; a
/// parameter given twice is refused too (serde's duplicate field).
#[derive(Debug)]
pub(super) struct StrictQuery<T>(pub T);

/// The query of a route that takes no parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoQuery {}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "bad query string: {}; see docs/api.md",
        e.body_text()
    ))
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| StrictQuery(q))
            .map_err(query_error)
    }
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path: {}", e.body_text()))
}

/// One path segment, percent-decoded, UTF-8.
#[derive(Debug)]
pub(super) struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Segment(s))
            .map_err(path_error)
    }
}

/// A job name from the path, checked by [`crate::names::check`].
#[derive(Debug)]
pub(super) struct JobName(pub String);

/// Checks a job name given to the API.
pub(super) fn check_job(name: &str) -> Result<(), ApiError> {
    crate::names::check(crate::names::NameKind::Job, name)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

impl<S: Send + Sync> FromRequestParts<S> for JobName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Segment(name) = Segment::from_request_parts(parts, state).await?;
        check_job(&name)?;
        Ok(JobName(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{DeployRequest, SavepointRequest};

    #[test]
    fn only_an_object_or_nothing_is_a_body() {
        let r: SavepointRequest = parse_object(b"  \n").unwrap();
        assert!(r.name.is_none() && r.stop.is_none());
        let r: SavepointRequest = parse_object(br#" {"name": "n"}"#).unwrap();
        assert_eq!(r.name.as_deref(), Some("n"));
        for bad in [
            &b"[null, null]"[..],
            br#"["version = 1"]"#,
            b"null",
            b"1",
            br#""x""#,
        ] {
            let e = parse_object::<DeployRequest>(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadRequest);
            assert!(e.message().contains("JSON object"), "{e}");
        }
        let e = parse_object::<SavepointRequest>(br#"{"nmae": "n"}"#).unwrap_err();
        assert!(e.message().contains("unknown field"), "{e}");
    }
}
