//! Where checkpoints live: chunks and manifests behind [`CheckpointStore`].
//!
//! The filesystem store is rooted at one cap-std directory handle, so no
//! name can reach outside it:
//!
//! ```text
//! chunks/<aa>/<blake3 hex>          immutable, content-addressed state blobs
//! jobs/<job>/checkpoints/<n>.json   manifests
//! ```
//!
//! Every write is temp file → fsync → rename; every chunk read verifies
//! blake3, so a corrupt chunk is an error naming its file, never wrong state.

use super::manifest::{CheckpointId, CheckpointManifest, ChunkHash, MANIFEST_FORMAT};
use cap_std::fs::Dir;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A checkpoint store failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O failure.
    #[error("checkpoint store: cannot {op} {path}: {error}")]
    Io {
        /// What it was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A chunk whose bytes do not match its name.
    #[error(
        "checkpoint chunk {path} is corrupt: its blake3 is {actual}; the checkpoints that use it cannot be restored"
    )]
    Corrupt {
        /// The chunk file.
        path: PathBuf,
        /// The hash of what was read.
        actual: String,
    },
    /// A chunk a manifest needs is gone.
    #[error("checkpoint chunk {path} is missing")]
    MissingChunk {
        /// The chunk file.
        path: PathBuf,
    },
    /// A manifest that does not parse or does not fit.
    #[error("checkpoint manifest {path} is unreadable: {detail}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Storage of checkpoint chunks and manifests.
pub trait CheckpointStore: Send + Sync {
    /// Stores a chunk under its hash. Returns the hash and the bytes newly
    /// written: 0 when the chunk was already there (incremental for free).
    fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError>;
    /// Reads a chunk, verifying its hash.
    fn get_chunk(&self, hash: &ChunkHash) -> Result<Vec<u8>, StoreError>;
    /// Every stored chunk.
    fn list_chunks(&self) -> Result<Vec<ChunkHash>, StoreError>;
    /// Deletes a chunk (no error if it is already gone).
    fn delete_chunk(&self, hash: &ChunkHash) -> Result<(), StoreError>;
    /// Commits a manifest atomically.
    fn put_manifest(&self, m: &CheckpointManifest) -> Result<(), StoreError>;
    /// Reads a manifest.
    fn get_manifest(&self, job: &str, id: CheckpointId) -> Result<CheckpointManifest, StoreError>;
    /// A job's committed checkpoints, in increasing order.
    fn list_checkpoints(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError>;
    /// Deletes a manifest (no error if it is already gone).
    fn delete_manifest(&self, job: &str, id: CheckpointId) -> Result<(), StoreError>;
    /// Every job with a checkpoint directory (chunks are shared by all of
    /// them, so GC must read all their manifests).
    fn list_jobs(&self) -> Result<Vec<String>, StoreError>;
    /// Makes every chunk written so far durable (`put_manifest` does this
    /// itself before it commits).
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn chunk_path(h: &ChunkHash) -> PathBuf {
    let hex = h.hex();
    PathBuf::from("chunks").join(&hex[..2]).join(hex)
}

fn manifest_dir(job: &str) -> PathBuf {
    PathBuf::from("jobs").join(job).join("checkpoints")
}

fn manifest_path(job: &str, id: CheckpointId) -> PathBuf {
    manifest_dir(job).join(format!("{}.json", id.0))
}

fn parse_manifest(
    path: PathBuf,
    bytes: &[u8],
    job: &str,
    id: CheckpointId,
) -> Result<CheckpointManifest, StoreError> {
    let m: CheckpointManifest =
        serde_json::from_slice(bytes).map_err(|e| StoreError::BadManifest {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    if m.format != MANIFEST_FORMAT {
        return Err(StoreError::BadManifest {
            path,
            detail: format!(
                "format {}, but this wrun reads format {MANIFEST_FORMAT}",
                m.format
            ),
        });
    }
    if m.job != job || m.id != id {
        return Err(StoreError::BadManifest {
            path,
            detail: format!("it describes checkpoint {} of job '{}'", m.id, m.job),
        });
    }
    Ok(m)
}

/// The filesystem store.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    dir: Dir,
    /// Directories with renamed-in files whose entries are not yet synced.
    unsynced: Mutex<std::collections::BTreeSet<PathBuf>>,
    /// Chunks written or verified by this store: trusted without a read.
    verified: Mutex<std::collections::HashSet<ChunkHash>>,
    /// Chunks were written without fsync since the last manifest.
    dirty: AtomicBool,
}

impl FsStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<FsStore, StoreError> {
        std::fs::create_dir_all(root).map_err(|error| StoreError::Io {
            op: "create",
            path: root.to_path_buf(),
            error,
        })?;
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).map_err(|error| {
            StoreError::Io {
                op: "open",
                path: root.to_path_buf(),
                error,
            }
        })?;
        Ok(FsStore {
            root: root.to_path_buf(),
            dir,
            unsynced: Mutex::new(Default::default()),
            verified: Mutex::new(Default::default()),
            dirty: AtomicBool::new(false),
        })
    }

    fn io(&self, op: &'static str, rel: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = self.root.join(rel);
        move |error| StoreError::Io { op, path, error }
    }

    /// Writes `bytes` at `rel` by temp file, fsync, rename, and fsync of the
    /// directory, so a crash leaves the old file or the new one, never half.
    fn write_atomic(&self, rel: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.dir
            .create_dir_all(parent)
            .map_err(self.io("create", parent))?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut f = self.dir.create(&tmp).map_err(self.io("create", &tmp))?;
        f.write_all(bytes).map_err(self.io("write", &tmp))?;
        if durable {
            f.sync_all().map_err(self.io("sync", &tmp))?;
        }
        drop(f);
        self.dir
            .rename(&tmp, &self.dir, rel)
            .map_err(self.io("rename into place", rel))?;
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(parent.to_path_buf());
        Ok(())
    }

    /// Syncs every directory a rename went into since the last call, so
    /// the entries are durable before a manifest refers to them.
    fn sync_dirs(&self) -> Result<(), StoreError> {
        let dirs = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
        for d in dirs {
            self.dir
                .open_dir(&d)
                .and_then(|dir| dir.open("."))
                .and_then(|f| f.sync_all())
                .map_err(self.io("sync", &d))?;
        }
        Ok(())
    }

    fn names(&self, rel: &Path) -> Result<Vec<String>, StoreError> {
        match self.dir.read_dir(rel) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io("list", rel)(e)),
        }
    }

    fn remove(&self, rel: &Path) -> Result<(), StoreError> {
        match self.dir.remove_file(rel) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete", rel)(e)),
        }
    }
}

impl CheckpointStore for FsStore {
    fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError> {
        let hash = ChunkHash::of(bytes);
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&hash)
        {
            return Ok((hash, 0));
        }
        let rel = chunk_path(&hash);
        // A chunk file left by an earlier process may predate a crash that
        // lost its data: trust it only once its bytes verify.
        if self.dir.exists(&rel) && self.get_chunk(&hash).is_ok() {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash);
            return Ok((hash, 0));
        }
        // No fsync per chunk: the next manifest makes them all durable at
        // once (syncfs) before it commits.
        self.write_atomic(&rel, bytes, false)?;
        self.dirty.store(true, Ordering::SeqCst);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash);
        Ok((hash, bytes.len() as u64))
    }

    fn get_chunk(&self, hash: &ChunkHash) -> Result<Vec<u8>, StoreError> {
        let rel = chunk_path(hash);
        let bytes = self.dir.read(&rel).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingChunk {
                path: self.root.join(&rel),
            },
            _ => self.io("read", &rel)(e),
        })?;
        let actual = ChunkHash::of(&bytes);
        if actual != *hash {
            return Err(StoreError::Corrupt {
                path: self.root.join(&rel),
                actual: actual.hex(),
            });
        }
        Ok(bytes)
    }

    fn list_chunks(&self) -> Result<Vec<ChunkHash>, StoreError> {
        let mut out = Vec::new();
        for prefix in self.names(Path::new("chunks"))? {
            for name in self.names(&Path::new("chunks").join(&prefix))? {
                if let Some(h) = ChunkHash::parse(&name) {
                    out.push(h);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete_chunk(&self, hash: &ChunkHash) -> Result<(), StoreError> {
        // Forget it first: a later put of the same bytes must write it again.
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
        self.remove(&chunk_path(hash))
    }

    fn put_manifest(&self, m: &CheckpointManifest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| StoreError::BadManifest {
            path: self.root.join(manifest_path(&m.job, m.id)),
            detail: e.to_string(),
        })?;
        // Chunks first: a durable manifest must never name a chunk that
        // could still be lost.
        self.sync()?;
        self.write_atomic(&manifest_path(&m.job, m.id), &bytes, true)?;
        self.sync_dirs()
    }

    /// One syncfs flushes every chunk written since the last call, their
    /// directory entries included.
    fn sync(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, Ordering::SeqCst) {
            let sync = |f: cap_std::fs::File| rustix::fs::syncfs(&f).map_err(std::io::Error::from);
            self.dir
                .open(".")
                .and_then(sync)
                .map_err(|error| StoreError::Io {
                    op: "sync",
                    path: self.root.clone(),
                    error,
                })?;
            self.unsynced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        Ok(())
    }

    fn get_manifest(&self, job: &str, id: CheckpointId) -> Result<CheckpointManifest, StoreError> {
        let rel = manifest_path(job, id);
        let bytes = self.dir.read(&rel).map_err(self.io("read", &rel))?;
        parse_manifest(self.root.join(rel), &bytes, job, id)
    }

    fn list_checkpoints(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError> {
        let mut ids: Vec<CheckpointId> = self
            .names(&manifest_dir(job))?
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .filter_map(|n| n.parse().ok())
            .map(CheckpointId)
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn delete_manifest(&self, job: &str, id: CheckpointId) -> Result<(), StoreError> {
        self.remove(&manifest_path(job, id))
    }

    fn list_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut jobs = self.names(Path::new("jobs"))?;
        jobs.sort();
        Ok(jobs)
    }
}

/// An in-memory store for tests, which can be told to fail its writes (a
/// full disk).
#[derive(Debug, Default)]
pub struct MemStore {
    chunks: Mutex<HashMap<ChunkHash, Vec<u8>>>,
    manifests: Mutex<BTreeMap<(String, CheckpointId), Vec<u8>>>,
    fail_writes: AtomicBool,
}

impl MemStore {
    /// Makes every later write fail (or succeed again).
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Overwrites a stored chunk's bytes, to simulate corruption.
    pub fn corrupt_chunk(&self, hash: &ChunkHash, bytes: Vec<u8>) {
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash, bytes);
    }

    fn check_write(&self, path: PathBuf) -> Result<(), StoreError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                op: "write",
                path,
                error: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ),
            });
        }
        Ok(())
    }
}

impl CheckpointStore for MemStore {
    fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError> {
        let hash = ChunkHash::of(bytes);
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.contains_key(&hash) {
            return Ok((hash, 0));
        }
        self.check_write(chunk_path(&hash))?;
        chunks.insert(hash, bytes.to_vec());
        Ok((hash, bytes.len() as u64))
    }

    fn get_chunk(&self, hash: &ChunkHash) -> Result<Vec<u8>, StoreError> {
        let bytes = self
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
            .ok_or(StoreError::MissingChunk {
                path: chunk_path(hash),
            })?;
        let actual = ChunkHash::of(&bytes);
        if actual != *hash {
            return Err(StoreError::Corrupt {
                path: chunk_path(hash),
                actual: actual.hex(),
            });
        }
        Ok(bytes)
    }

    fn list_chunks(&self) -> Result<Vec<ChunkHash>, StoreError> {
        let mut v: Vec<ChunkHash> = self
            .chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort();
        Ok(v)
    }

    fn delete_chunk(&self, hash: &ChunkHash) -> Result<(), StoreError> {
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
        Ok(())
    }

    fn put_manifest(&self, m: &CheckpointManifest) -> Result<(), StoreError> {
        self.check_write(manifest_path(&m.job, m.id))?;
        let bytes = serde_json::to_vec(m).map_err(|e| StoreError::BadManifest {
            path: manifest_path(&m.job, m.id),
            detail: e.to_string(),
        })?;
        self.manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((m.job.clone(), m.id), bytes);
        Ok(())
    }

    fn get_manifest(&self, job: &str, id: CheckpointId) -> Result<CheckpointManifest, StoreError> {
        let path = manifest_path(job, id);
        let bytes = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(job.to_string(), id))
            .cloned()
            .ok_or_else(|| StoreError::Io {
                op: "read",
                path: path.clone(),
                error: std::io::ErrorKind::NotFound.into(),
            })?;
        parse_manifest(path, &bytes, job, id)
    }

    fn list_checkpoints(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError> {
        Ok(self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|(j, _)| j == job)
            .map(|(_, id)| *id)
            .collect())
    }

    fn delete_manifest(&self, job: &str, id: CheckpointId) -> Result<(), StoreError> {
        self.manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(job.to_string(), id));
        Ok(())
    }

    fn list_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut jobs: Vec<String> = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|(j, _)| j.clone())
            .collect();
        jobs.dedup();
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{KeyGroupRef, OperatorStateRef};

    fn manifest(id: u64, chunks: &[ChunkHash]) -> CheckpointManifest {
        CheckpointManifest {
            format: MANIFEST_FORMAT,
            job: "wordcount".into(),
            id: CheckpointId(id),
            triggered_at_ms: 1,
            duration_ms: 2,
            graph_fingerprint: "f".into(),
            max_parallelism: 128,
            operators: vec![OperatorStateRef {
                operator_id: "ab".into(),
                uid: Some("counter".into()),
                name: "count".into(),
                parallelism: 2,
                module: "blake3:00".into(),
                state_format: Some(("wordcount".into(), 1)),
                key_groups: chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| KeyGroupRef {
                        key_group: i as u16,
                        chunk: *c,
                        bytes: 3,
                        deltas: vec![],
                    })
                    .collect(),
                operator_state: vec![],
            }],
            sources: vec![],
            sinks: vec![],
            full_bytes: 6,
            new_bytes: 3,
        }
    }

    fn exercise(store: &dyn CheckpointStore) {
        let (a, new) = store.put_chunk(b"abc").unwrap();
        assert_eq!(new, 3);
        assert_eq!(
            store.put_chunk(b"abc").unwrap(),
            (a, 0),
            "an unchanged chunk is not written again"
        );
        let (b, _) = store.put_chunk(b"def").unwrap();
        assert_eq!(store.get_chunk(&a).unwrap(), b"abc");
        assert_eq!(store.list_chunks().unwrap().len(), 2);
        store.put_manifest(&manifest(2, &[a, b])).unwrap();
        store.put_manifest(&manifest(10, &[a])).unwrap();
        assert_eq!(
            store.list_checkpoints("wordcount").unwrap(),
            vec![CheckpointId(2), CheckpointId(10)],
            "numeric order"
        );
        assert_eq!(
            store.get_manifest("wordcount", CheckpointId(2)).unwrap(),
            manifest(2, &[a, b])
        );
        assert!(store.list_checkpoints("other").unwrap().is_empty());
        store.delete_manifest("wordcount", CheckpointId(2)).unwrap();
        store.delete_chunk(&b).unwrap();
        store.delete_chunk(&b).unwrap();
        assert_eq!(
            store.list_checkpoints("wordcount").unwrap(),
            vec![CheckpointId(10)]
        );
        assert!(matches!(
            store.get_chunk(&b),
            Err(StoreError::MissingChunk { .. })
        ));
    }

    #[test]
    fn filesystem_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("store")).unwrap();
        exercise(&store);
        let (h, _) = store.put_chunk(b"state").unwrap();
        let file = dir.path().join("store").join(chunk_path(&h));
        std::fs::write(&file, b"stale").unwrap();
        let err = store.get_chunk(&h).unwrap_err().to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
        let mpath = dir.path().join("store/jobs/wordcount/checkpoints/10.json");
        std::fs::write(&mpath, b"{\"format\": 1").unwrap();
        let err = store
            .get_manifest("wordcount", CheckpointId(10))
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.json is unreadable"), "{err}");
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(d: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .unwrap()
            .flat_map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { walk(&p) } else { vec![p] }
            })
            .collect()
    }

    #[test]
    fn a_deleted_chunk_is_written_again_and_a_bad_leftover_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (h, _) = store.put_chunk(b"x").unwrap();
        store.delete_chunk(&h).unwrap();
        assert_eq!(
            store.put_chunk(b"x").unwrap(),
            (h, 1),
            "written again after GC"
        );
        store.get_chunk(&h).unwrap();
        // A leftover from a crash with lost data: a new store must not trust it.
        std::fs::write(dir.path().join(chunk_path(&h)), b"").unwrap();
        let fresh = FsStore::open(dir.path()).unwrap();
        assert_eq!(fresh.put_chunk(b"x").unwrap(), (h, 1));
        assert_eq!(fresh.get_chunk(&h).unwrap(), b"x");
    }

    #[test]
    fn a_missing_chunk_and_an_unusable_directory_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (h, _) = store.put_chunk(b"y").unwrap();
        std::fs::remove_file(dir.path().join(chunk_path(&h))).unwrap();
        let err = store.get_chunk(&h).unwrap_err().to_string();
        assert!(err.contains(&h.hex()), "{err}");
        // A store whose directory cannot be made (a file is in the way;
        // tests may run as root, for whom permissions do not stop writes).
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let err = FsStore::open(&dir.path().join("file/store"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("file/store") && err.contains("cannot"),
            "{err}"
        );
    }

    #[test]
    fn memory_store_and_a_full_disk() {
        let store = MemStore::default();
        exercise(&store);
        store.fail_writes(true);
        let err = store.put_chunk(b"new").unwrap_err().to_string();
        assert!(err.contains("no space left on device"), "{err}");
        store.fail_writes(false);
        let (h, _) = store.put_chunk(b"new").unwrap();
        store.corrupt_chunk(&h, b"old".to_vec());
        assert!(matches!(
            store.get_chunk(&h),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
