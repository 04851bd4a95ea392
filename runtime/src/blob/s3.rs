//! Blobs in an S3-compatible object store, through the `object_store`
//! crate. Its calls are async; this store runs them on a small tokio
//! runtime of its own and waits on a channel, so any thread may call it
//! (a subtask's, the coordinator's, an API handler's) without nesting
//! runtimes.
//!
//! Requests time out (connect 5 s, request 30 s) and are retried three
//! times within 15 s; past that an operation fails, and the checkpoint
//! that needed it fails and is retried by the coordinator under the job's
//! `tolerable-failures`. Objects above 16 MiB go up as multipart uploads
//! in 8 MiB parts.

use super::{BlobError, BlobMeta, Blobs, Created, S3Location, check_key, check_prefix};
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Objects above this size are uploaded in parts.
const MULTIPART_ABOVE: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;

/// An S3 bucket and prefix.
pub struct S3Blobs {
    loc: S3Location,
    store: Arc<AmazonS3>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Blobs {
    fn drop(&mut self) {
        // A runtime dropped from inside another one (an API handler's)
        // must not block: let its threads finish in the background.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Blobs({})", self.loc)
    }
}

/// Access key, secret and session token.
type Credentials = (String, String, Option<String>);

/// Reads `[profile]`'s keys from an AWS shared-credentials file.
fn read_credentials_file(path: &std::path::Path, profile: &str) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
    let (mut section, mut id, mut secret, mut token) = (String::new(), None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok((id, secret, token)),
        _ => Err(format!(
            "the credentials file {} has no aws_access_key_id and aws_secret_access_key in [{profile}]",
            path.display()
        )),
    }
}

impl S3Blobs {
    /// Connects to `loc` with credentials from its credentials file or the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`). Makes no request: a store that cannot be
    /// reached fails at its first operation, naming it.
    pub fn open(loc: &S3Location) -> Result<S3Blobs, BlobError> {
        let failed = |error: String| BlobError::Failed {
            op: "open",
            location: loc.to_string(),
            error: error.into(),
        };
        let (id, secret, token) = match &loc.credentials_file {
            Some(path) => read_credentials_file(path, &loc.profile).map_err(failed)?,
            None => match (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Ok(id), Ok(secret)) => (id, secret, std::env::var("AWS_SESSION_TOKEN").ok()),
                _ => {
                    return Err(failed(
                        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add credentials-file=PATH to the state URL".into(),
                    ));
                }
            },
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(&loc.region)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(!loc.path_style)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(30))
                    .with_allow_http(true),
            );
        if let Some(t) = token {
            b = b.with_token(t);
        }
        if let Some(e) = &loc.endpoint {
            b = b.with_endpoint(e);
        }
        // reqwest takes the process's rustls provider; ring is the one
        // every TLS client in wrun uses (already installed: fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = b.build().map_err(|e| failed(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wrun-s3")
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        Ok(S3Blobs {
            loc: loc.clone(),
            store: Arc::new(store),
            runtime: Some(runtime),
        })
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.loc.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.loc.prefix))
        }
    }

    /// Runs `f` on this store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if let Some(rt) = &self.runtime {
            rt.spawn(async move {
                let _ = tx.send(f.await);
            });
        }
        rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: "the S3 client's runtime stopped".into(),
            })
        })
    }

    fn error(&self, op: &'static str, key: &str) -> impl FnOnce(object_store::Error) -> BlobError {
        let location = self.location(key);
        move |e| match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound { location },
            e => BlobError::Failed {
                op,
                location,
                error: e.into(),
            },
        }
    }
}

impl Blobs for S3Blobs {
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.loc.bucket, self.path(key))
    }

    fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<Created, BlobError> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        let put = async move {
            if bytes.len() > MULTIPART_ABOVE {
                // Multipart uploads have no create-if-absent; wrun writes
                // large objects only under names nobody else uses.
                let upload = store.put_multipart(&path).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                let mut rest = bytes;
                while !rest.is_empty() {
                    // At most 4 parts in flight: each must finish within
                    // the request timeout on a modest link too.
                    w.wait_for_capacity(4).await?;
                    w.put(rest.split_to(rest.len().min(PART_SIZE)));
                }
                w.finish().await.map(|_| Created::New)
            } else {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                match store.put_opts(&path, PutPayload::from(bytes), opts).await {
                    Ok(_) => Ok(Created::New),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Existed),
                    Err(e) => Err(e),
                }
            }
        };
        self.run(put).map_err(self.error("write", key))
    }

    fn enforces_create(&self) -> bool {
        false
    }

    fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        self.run(async move { store.get(&path).await?.bytes().await })
            .map_err(self.error("read", key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BlobError> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        let want = range.end - range.start;
        let got = self
            .run(async move { store.get_range(&path, range).await })
            .map_err(self.error("read", key))?;
        if got.len() as u64 != want {
            return Err(BlobError::Failed {
                op: "read",
                location: self.location(key),
                error: format!("{want} bytes asked for, {} returned", got.len()).into(),
            });
        }
        Ok(got)
    }

    fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError> {
        check_prefix(prefix)?;
        use futures_util::TryStreamExt;
        let store = self.store.clone();
        // object_store lists by whole path segments: list the deepest
        // directory the prefix names and filter the rest here.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = if self.loc.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.loc.prefix)
        };
        let list_at = if dir.is_empty() {
            (!self.loc.prefix.is_empty()).then(|| ObjPath::from(self.loc.prefix.as_str()))
        } else {
            Some(self.path(dir))
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .run(async move { store.list(list_at.as_ref()).try_collect().await })
            .map_err(self.error("list", prefix))?;
        let mut out: Vec<BlobMeta> = metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.to_string();
                let key = full.strip_prefix(&base)?.to_string();
                key.starts_with(prefix).then(|| BlobMeta {
                    key,
                    size: m.size,
                    modified: std::time::SystemTime::from(m.last_modified),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "# comment\n[default]\naws_access_key_id = AK\naws_secret_access_key=SK\n\n[other]\naws_access_key_id=X\n",
        )
        .unwrap();
        assert_eq!(
            read_credentials_file(&f, "default").unwrap(),
            ("AK".into(), "SK".into(), None)
        );
        let e = read_credentials_file(&f, "other").unwrap_err();
        assert!(e.contains("[other]") && !e.contains("X"), "{e}");
        let e = read_credentials_file(&dir.path().join("none"), "default").unwrap_err();
        assert!(e.contains("cannot read the credentials file"), "{e}");
    }
}
