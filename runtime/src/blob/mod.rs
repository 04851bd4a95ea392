//! Blobs: the storage under the checkpoint repository. A flat namespace of
//! immutable objects under `/`-separated keys, with the five operations
//! every object store has: create-if-absent, get (whole or a byte range),
//! list by prefix, delete. Three implementations: a local directory
//! ([`FsBlobs`]), any S3-compatible store ([`S3Blobs`], through the
//! `object_store` crate) and memory ([`MemBlobs`], for tests, with faults
//! on demand). [`StateUrl`] says which one a user means.
//!
//! Nothing here knows what a checkpoint is; the layer sits beside `fsutil`
//! below everything that stores state (docs/architecture.md, "Layers").

mod fs;
mod mem;
mod s3;
mod url;

pub use fs::FsBlobs;
pub use mem::MemBlobs;
pub use s3::S3Blobs;
pub use url::{DEFAULT_GC_GRACE, S3Location, StateUrl, StateUrlError};

use bytes::Bytes;
use std::ops::Range;
use std::time::SystemTime;

/// What a create-if-absent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object is new.
    New,
    /// An object was already there under that key; nothing was written.
    Existed,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, as the store reports it.
    pub modified: SystemTime,
}

/// A blob store failure: what it was doing, to which object of which
/// store, and the underlying error as the cause.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under that key.
    #[error("{location} does not exist")]
    NotFound {
        /// The object, as a user finds it (`/data/x`, `s3://bucket/x`).
        location: String,
    },
    /// Anything else: I/O, the network, the server's answer.
    #[error("cannot {op} {location}")]
    Failed {
        /// What it was doing (`write`, `read`, `list`, `delete`).
        op: &'static str,
        /// The object or prefix.
        location: String,
        /// Why.
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A key this layer refuses (empty segments, `..`, a leading `/`):
    /// a bug above, never let through to a store.
    #[error("{key:?} is not a valid blob key")]
    BadKey {
        /// The key.
        key: String,
    },
}

/// The blob store operations. Keys are `/`-separated, relative, with no
/// empty, `.` or `..` segment ([`check_key`]).
pub trait Blobs: Send + Sync + std::fmt::Debug {
    /// Where an object is, for messages (never with credentials).
    fn location(&self, key: &str) -> String;
    /// Writes `bytes` under `key` unless an object is there. The object
    /// is durable when this returns. Whether a concurrent writer of the
    /// same key is excluded depends on the store: see
    /// [`Blobs::enforces_create`].
    fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<Created, BlobError>;
    /// Whether [`Blobs::put_if_absent`] is atomic against other writers
    /// (a local directory and memory: yes; S3: only where the server
    /// honours `If-None-Match: *`, which not every S3-compatible server
    /// does, so wrun never relies on it there).
    fn enforces_create(&self) -> bool;
    /// Reads a whole object.
    fn get(&self, key: &str) -> Result<Bytes, BlobError>;
    /// Reads `range` of an object. A range past its end is an error.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BlobError>;
    /// Every object whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError>;
    /// Deletes an object; no error if it is already gone.
    fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// Checks a key: relative, `/`-separated, each segment non-empty and not
/// `.` or `..`, no NUL or backslash.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && !key.contains(['\0', '\\'])
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(BlobError::BadKey {
            key: key.to_string(),
        })
    }
}

/// Checks a list prefix: empty, or a valid key with or without a
/// trailing `/`.
fn check_prefix(prefix: &str) -> Result<(), BlobError> {
    if prefix.starts_with('/') {
        return Err(BlobError::BadKey {
            key: prefix.to_string(),
        });
    }
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    if p.is_empty() { Ok(()) } else { check_key(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every implementation must do; run against each.
    pub(crate) fn contract(b: &dyn Blobs) {
        assert_eq!(
            b.put_if_absent("a/x", Bytes::from_static(b"hello"))
                .unwrap(),
            Created::New
        );
        assert_eq!(
            b.put_if_absent("a/x", Bytes::from_static(b"other"))
                .unwrap(),
            Created::Existed,
            "create-if-absent never overwrites"
        );
        assert_eq!(&b.get("a/x").unwrap()[..], b"hello");
        assert_eq!(&b.get_range("a/x", 1..4).unwrap()[..], b"ell");
        assert!(b.get_range("a/x", 3..9).is_err(), "a range past the end");
        b.put_if_absent("a/y/z", Bytes::from_static(b"12")).unwrap();
        b.put_if_absent("ab", Bytes::from_static(b"3")).unwrap();
        let keys =
            |p: &str| -> Vec<String> { b.list(p).unwrap().into_iter().map(|m| m.key).collect() };
        assert_eq!(keys("a/"), vec!["a/x", "a/y/z"]);
        assert_eq!(keys(""), vec!["a/x", "a/y/z", "ab"]);
        assert_eq!(keys("nothing/"), Vec::<String>::new());
        let meta = b.list("a/y/").unwrap();
        assert_eq!(meta[0].size, 2);
        assert!(meta[0].modified <= SystemTime::now());
        b.delete("a/x").unwrap();
        b.delete("a/x").unwrap();
        assert!(matches!(b.get("a/x"), Err(BlobError::NotFound { .. })));
        assert!(matches!(
            b.get_range("a/x", 0..1),
            Err(BlobError::NotFound { .. })
        ));
        for bad in ["../x", "/x", "a//b", "a/./b", ""] {
            assert!(
                matches!(
                    b.put_if_absent(bad, Bytes::new()),
                    Err(BlobError::BadKey { .. })
                ),
                "{bad}"
            );
        }
        assert!(b.list("../").is_err());
    }

    #[test]
    fn keys() {
        check_key("segments/ab-1").unwrap();
        check_key("jobs/wc/checkpoints/3.json").unwrap();
        for bad in ["", "/a", "a/", "a//b", "..", "a/../b", "a\\b", "./a"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        check_prefix("").unwrap();
        check_prefix("segments/").unwrap();
        assert!(check_prefix("/").is_err());
    }
}
