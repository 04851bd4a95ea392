//! The module store mirrored into a shared blob store (the `--state-url`
//! store, under `modules/`), so every node of a fleet can run a module
//! pushed to any one of them. Every file the local store writes
//! (component bytes, what validation found, names) is also put there; a
//! file missing here is fetched from there on first use. Component bytes
//! are verified against their digest on every read, wherever they came
//! from.

use super::{Digest, ModuleError, ModuleStore, write_atomic};
use crate::blob::{BlobError, Created};
use bytes::Bytes;
use std::path::{Path, PathBuf};

const PREFIX: &str = "modules";

impl ModuleStore {
    /// The shared key of a local file of the store.
    fn shared_key(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        Some(format!("{PREFIX}/{}", parts.join("/")))
    }

    fn shared_error(&self, key: &str, e: BlobError) -> ModuleError {
        ModuleError::Io {
            path: PathBuf::from(key),
            error: std::io::Error::other(format!(
                "the fleet's shared module store: {}",
                crate::report::chain(&e)
            )),
        }
    }

    /// Puts a file just written locally into the shared store.
    pub(super) fn publish(&self, path: &Path, bytes: &[u8]) -> Result<(), ModuleError> {
        let (Some(shared), Some(key)) = (&self.shared, self.shared_key(path)) else {
            return Ok(());
        };
        shared
            .put_if_absent(&key, Bytes::copy_from_slice(bytes))
            .map_err(|e| self.shared_error(&key, e))?;
        Ok(())
    }

    /// Shares `name@version` → `digest`, unless the shared store names
    /// other bytes so already.
    pub(super) fn publish_name(
        &self,
        path: &Path,
        name: &str,
        version: &str,
        digest: Digest,
    ) -> Result<(), ModuleError> {
        let (Some(shared), Some(key)) = (&self.shared, self.shared_key(path)) else {
            return Ok(());
        };
        let taken = |existing: &[u8]| ModuleError::NameTaken {
            name: name.to_string(),
            version: version.to_string(),
            existing: format!("blake3:{}", String::from_utf8_lossy(existing).trim()),
        };
        match shared.get(&key) {
            Ok(b) if String::from_utf8_lossy(&b).trim() == digest.hex() => return Ok(()),
            Ok(b) => return Err(taken(&b)),
            Err(BlobError::NotFound { .. }) => {}
            Err(e) => return Err(self.shared_error(&key, e)),
        }
        match shared.put_if_absent(&key, Bytes::from(digest.hex())) {
            Ok(Created::New) => Ok(()),
            Ok(Created::Existed) => match shared.get(&key) {
                Ok(b) if String::from_utf8_lossy(&b).trim() == digest.hex() => Ok(()),
                Ok(b) => Err(taken(&b)),
                Err(e) => Err(self.shared_error(&key, e)),
            },
            Err(e) => Err(self.shared_error(&key, e)),
        }
    }

    /// Fetches a file missing locally from the shared store, keeping a
    /// local copy. `None`: not there either.
    pub(super) fn fetch(&self, path: &Path) -> Result<Option<Vec<u8>>, ModuleError> {
        let (Some(shared), Some(key)) = (&self.shared, self.shared_key(path)) else {
            return Ok(None);
        };
        match shared.get(&key) {
            Ok(b) => {
                write_atomic(path, &b)?;
                Ok(Some(b.to_vec()))
            }
            Err(BlobError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.shared_error(&key, e)),
        }
    }

    /// Fetches every file under `sub` (`names`, `meta`) the local store
    /// lacks, before a listing.
    pub(super) fn sync(&self, sub: &str) -> Result<(), ModuleError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let prefix = format!("{PREFIX}/{sub}/");
        let keys = shared
            .list(&prefix)
            .map_err(|e| self.shared_error(&prefix, e))?;
        for m in keys {
            let Some(rel) = m.key.strip_prefix(&format!("{PREFIX}/")) else {
                continue;
            };
            let local = rel
                .split('/')
                .fold(self.dir.clone(), |p, part| p.join(part));
            if !local.exists() {
                self.fetch(&local)?;
            }
        }
        Ok(())
    }
}
