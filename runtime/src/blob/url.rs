//! `--state-url`: where checkpoints and savepoints live. A path or
//! `file://` URL is a local directory; `s3://bucket/prefix?options` is an
//! S3-compatible object store. Credentials never appear in the URL: they
//! come from the environment or a credentials file, and nothing here
//! prints them.

use std::path::PathBuf;

/// Where state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StateUrl {
    /// A local directory.
    Dir(PathBuf),
    /// An S3-compatible object store.
    S3(S3Location),
}

/// An S3 bucket and prefix, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside it (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The endpoint (`http://127.0.0.1:3900`); AWS's own when absent.
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`) instead of
    /// virtual-hosted ones; what most self-hosted servers need.
    pub path_style: bool,
    /// A credentials file in the AWS shared-credentials format, instead of
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` in the environment.
    pub credentials_file: Option<PathBuf>,
    /// The profile to read from that file.
    pub profile: String,
    /// How long an object nothing references is kept before garbage
    /// collection may delete it: longer than any checkpoint takes to
    /// commit (a commit later than half of it is refused) plus the clock
    /// skew between wrun nodes and the store. Default 15 minutes.
    pub gc_grace: std::time::Duration,
}

/// A state URL that cannot be used, and how to write one that can.
#[derive(Debug, thiserror::Error)]
#[error("state URL {url:?}: {detail}")]
pub struct StateUrlError {
    /// The URL as given (it holds no credentials: they are never in one).
    pub url: String,
    /// What is wrong and what to write instead.
    pub detail: String,
}

const OPTIONS: &str = "endpoint, region, path-style, credentials-file, profile, gc-grace-seconds";

/// The default garbage collection grace period of object stores.
pub const DEFAULT_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl StateUrl {
    /// Parses a path, `file://PATH` or `s3://BUCKET[/PREFIX][?OPTIONS]`.
    /// S3 options: `endpoint=URL`, `region=R`, `path-style=true|false`,
    /// `credentials-file=PATH`, `profile=NAME`, `gc-grace-seconds=N`; the
    /// endpoint and region
    /// default to `AWS_ENDPOINT_URL` and `AWS_REGION` from the environment.
    pub fn parse(s: &str) -> Result<StateUrl, StateUrlError> {
        Self::parse_with_env(s, &|k| std::env::var(k).ok())
    }

    /// [`StateUrl::parse`] with the environment given (for tests).
    pub fn parse_with_env(
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StateUrl, StateUrlError> {
        let err = |detail: String| StateUrlError {
            url: redacted(s),
            detail,
        };
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(err(
                    "file:// needs a path, as in file:///var/lib/wrun".into()
                ));
            }
            return Ok(StateUrl::Dir(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("s3://") else {
            if let Some((scheme, _)) = s.split_once("://") {
                return Err(err(format!(
                    "{scheme}:// is not supported; use a directory (a path or file://PATH) or s3://BUCKET/PREFIX"
                )));
            }
            if s.is_empty() {
                return Err(err("empty; give a directory or s3://BUCKET/PREFIX".into()));
            }
            return Ok(StateUrl::Dir(PathBuf::from(s)));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(err(format!(
                "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')"
            )));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            super::check_key(&prefix).map_err(|_| {
                err(format!(
                    "the prefix {prefix:?} has an empty, '.' or '..' segment"
                ))
            })?;
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            prefix,
            endpoint: env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT")),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            path_style: false,
            credentials_file: None,
            profile: env("AWS_PROFILE").unwrap_or_else(|| "default".into()),
            gc_grace: DEFAULT_GC_GRACE,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| err(format!("the value of {k} is not UTF-8")))?
                .into_owned();
            match k {
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(err(format!(
                            "endpoint {v:?} must start with http:// or https://"
                        )));
                    }
                    loc.endpoint = Some(v);
                }
                "region" => loc.region = v,
                "path-style" => {
                    loc.path_style = match v.as_str() {
                        "true" | "" => true,
                        "false" => false,
                        _ => return Err(err(format!("path-style={v}: say true or false"))),
                    }
                }
                "credentials-file" => loc.credentials_file = Some(PathBuf::from(v)),
                "profile" => loc.profile = v,
                "gc-grace-seconds" => {
                    let secs: u64 = v.parse().map_err(|_| {
                        err(format!(
                            "gc-grace-seconds={v}: give a whole number of seconds"
                        ))
                    })?;
                    loc.gc_grace = std::time::Duration::from_secs(secs);
                }
                _ => {
                    return Err(err(format!(
                        "unknown option {k:?}; the options are {OPTIONS} (credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a credentials-file, never the URL)"
                    )));
                }
            }
        }
        Ok(StateUrl::S3(loc))
    }
}

/// A URL as given, with every query value replaced by `…`: a user who put
/// a secret in one (which is refused) does not see it echoed.
fn redacted(s: &str) -> String {
    match s.split_once('?') {
        Some((base, query)) => {
            let keys: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) => format!("{k}=…"),
                    None => p.to_string(),
                })
                .collect();
            format!("{base}?{}", keys.join("&"))
        }
        None => s.to_string(),
    }
}

impl std::fmt::Display for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateUrl::Dir(p) => write!(f, "{}", p.display()),
            StateUrl::S3(l) => write!(f, "{l}"),
        }
    }
}

/// Written as its [`Display`](std::fmt::Display) form (no credentials are
/// ever in it), for `wrun validate`'s JSON.
impl serde::Serialize for StateUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateUrl({self})")
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        if let Some(e) = &self.endpoint {
            write!(f, " at {e}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Location({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StateUrl, String> {
        StateUrl::parse_with_env(s, &|k| (k == "AWS_REGION").then(|| "eu-1".to_string()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn paths_and_urls() {
        assert_eq!(parse("/data").unwrap(), StateUrl::Dir("/data".into()));
        assert_eq!(parse("rel/x").unwrap(), StateUrl::Dir("rel/x".into()));
        assert_eq!(
            parse("file:///var/wrun").unwrap(),
            StateUrl::Dir("/var/wrun".into())
        );
        let StateUrl::S3(l) = parse(
            "s3://state/prod/wrun/?endpoint=http%3A%2F%2F127.0.0.1%3A3900&path-style=true&credentials-file=/etc/wrun/s3",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(l.bucket, "state");
        assert_eq!(l.prefix, "prod/wrun");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(l.region, "eu-1", "from the environment");
        assert!(l.path_style);
        assert_eq!(
            l.to_string(),
            "s3://state/prod/wrun at http://127.0.0.1:3900"
        );
        let StateUrl::S3(l) = parse("s3://bucket").unwrap() else {
            panic!()
        };
        assert_eq!(l.prefix, "");
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        for (url, says) in [
            ("gs://b/x", "gs:// is not supported"),
            ("s3://B/x", "not a bucket name"),
            ("s3://bucket/a/../b", "'..'"),
            ("s3://bucket?secret=x", "unknown option \"secret\""),
            ("s3://bucket?secret=hunter2", "s3://bucket?secret=…\""),
            ("s3://bucket?endpoint=127.0.0.1", "must start with http://"),
            ("s3://bucket?path-style=yes", "say true or false"),
            ("s3://bucket?gc-grace-seconds=1h", "whole number of seconds"),
            ("file://", "needs a path"),
            ("", "empty"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = parse("s3://bucket?secret=hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "a value is never echoed: {e}");
    }
}
