//! A savepoint registry in the state store itself: records at
//! `savepoints/<id>.json` beside the checkpoints, so every process that
//! opens the store (every node of a fleet) sees the same savepoints. It is
//! the default registry wherever `--state-url` names the store.
//!
//! IDs are unique by construction (they carry the checkpoint and a random
//! suffix). Names are checked against the records before a write; two
//! nodes naming two savepoints alike at the same instant could both pass
//! that check (an object store has no transactions to stop it): the
//! lookup by name then answers with the older one.

use super::savepoint::{free_among, parse_record, sorted};
use super::{Savepoint, SavepointBackend, SavepointError, SavepointStore, check_name};
use crate::blob::{BlobError, Blobs, Created};
use std::path::PathBuf;
use std::sync::Arc;

const PREFIX: &str = "savepoints/";

/// Savepoint records in a blob store (see the module's docs).
#[derive(Debug)]
pub struct BlobSavepoints {
    blobs: Arc<dyn Blobs>,
}

impl BlobSavepoints {
    /// The registry in `blobs`.
    pub fn new(blobs: Arc<dyn Blobs>) -> BlobSavepoints {
        BlobSavepoints { blobs }
    }

    fn key(id: &str) -> String {
        format!("{PREFIX}{id}.json")
    }

    fn failed(&self, op: &'static str, key: &str, e: BlobError) -> SavepointError {
        SavepointError::Io {
            op,
            path: PathBuf::from(self.blobs.location(key)),
            error: std::io::Error::other(e),
        }
    }
}

impl SavepointStore for BlobSavepoints {
    fn backend(&self) -> SavepointBackend {
        SavepointBackend::Shared
    }
    fn location(&self) -> String {
        self.blobs.location(PREFIX.trim_end_matches('/'))
    }
    fn list(&self) -> Result<Vec<Savepoint>, SavepointError> {
        let metas = self
            .blobs
            .list(PREFIX)
            .map_err(|e| self.failed("list", PREFIX, e))?;
        let mut out = Vec::new();
        for m in metas {
            if !m.key.ends_with(".json") {
                continue;
            }
            let bytes = match self.blobs.get(&m.key) {
                Ok(b) => b,
                // Disposed of since the listing.
                Err(BlobError::NotFound { .. }) => continue,
                Err(e) => return Err(self.failed("read", &m.key, e)),
            };
            out.push(parse_record(
                &PathBuf::from(self.blobs.location(&m.key)),
                &bytes,
            )?);
        }
        Ok(sorted(out))
    }
    fn put(&self, sp: &Savepoint) -> Result<(), SavepointError> {
        self.check_free(sp)?;
        let key = Self::key(&sp.id);
        let bytes = serde_json::to_vec_pretty(sp).map_err(|e| SavepointError::Unreadable {
            path: PathBuf::from(self.blobs.location(&key)),
            error: e.into(),
        })?;
        match self.blobs.put_if_absent(&key, bytes.into()) {
            Ok(Created::New) => Ok(()),
            Ok(Created::Existed) => Err(SavepointError::NameTaken(sp.id.clone())),
            Err(e) => Err(self.failed("write", &key, e)),
        }
    }
    fn check_free(&self, sp: &Savepoint) -> Result<(), SavepointError> {
        check_name(&sp.id)?;
        free_among(&self.list()?, sp)
    }
    fn remove(&self, id: &str) -> Result<bool, SavepointError> {
        check_name(id)?;
        let key = Self::key(id);
        match self.blobs.get(&key) {
            Ok(_) => {}
            Err(BlobError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.failed("read", &key, e)),
        }
        self.blobs
            .delete(&key)
            .map_err(|e| self.failed("delete", &key, e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointId, CheckpointManifest, SAVEPOINT_FORMAT};

    fn sp(id: &str, name: Option<&str>, at: u64) -> Savepoint {
        Savepoint {
            format: SAVEPOINT_FORMAT,
            id: id.into(),
            name: name.map(String::from),
            backend: SavepointBackend::Shared,
            created_at_ms: at,
            stopped: false,
            drained: false,
            checkpoint: CheckpointManifest::empty("j", CheckpointId(1), 1),
        }
    }

    #[test]
    fn records_are_shared_through_the_store() {
        let blobs: Arc<dyn Blobs> = Arc::new(crate::blob::MemBlobs::default());
        let a = BlobSavepoints::new(blobs.clone());
        // A second process opening the same store.
        let b = BlobSavepoints::new(blobs);
        a.put(&sp("sp-j-1-aa", Some("v1"), 2)).unwrap();
        b.put(&sp("sp-j-2-bb", None, 1)).unwrap();
        let ids: Vec<String> = a.list().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, vec!["sp-j-2-bb", "sp-j-1-aa"], "oldest first");
        assert!(matches!(
            b.put(&sp("sp-j-3-cc", Some("v1"), 3)),
            Err(SavepointError::NameTaken(n)) if n == "v1"
        ));
        assert!(matches!(
            b.put(&sp("sp-j-1-aa", None, 3)),
            Err(SavepointError::NameTaken(_))
        ));
        assert_eq!(crate::checkpoint::find(&b, "v1").unwrap().id, "sp-j-1-aa");
        assert!(b.remove("sp-j-1-aa").unwrap());
        assert!(!a.remove("sp-j-1-aa").unwrap());
        assert_eq!(a.list().unwrap().len(), 1);
        assert!(a.remove("../x").is_err(), "an ID is checked before use");
    }
}
