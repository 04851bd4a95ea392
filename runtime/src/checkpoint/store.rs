//! Where checkpoints live: chunks and manifests behind [`CheckpointStore`].
//!
//! The filesystem store is rooted at one cap-std directory handle, so no
//! name can reach outside it:
//!
//! ```text
//! chunks/<aa>/<blake3 hex>          immutable, content-addressed state blobs
//! jobs/<job>/checkpoints/<n>.json   manifests
//! pins/<savepoint id>.json          what a savepoint keeps alive (its manifest)
//! ```
//!
//! Every write is temp file → fsync → rename; every chunk read verifies
//! blake3, so a corrupt chunk is an error naming its file, never wrong state.
//!
//! Chunks are shared by every job and every savepoint, so writes that
//! create references go through a [`Txn`]: chunks, then the manifest or pin
//! that references them. Garbage collection ([`collect_garbage`]) takes the
//! store's lock exclusively, so it can never run between a chunk's write
//! and the commit that references it, and it keeps whatever a manifest or a
//! pin references, whichever job or savepoint registry it belongs to.

use super::manifest::{CheckpointId, CheckpointManifest, ChunkHash, MANIFEST_FORMAT};
use crate::fsutil;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

/// The pin record format this wrun writes and reads.
pub const PIN_FORMAT: u32 = 1;

/// What keeps a savepoint's chunks alive: a copy of the manifest it points
/// at, stored in the checkpoint store itself so that every garbage
/// collection sees it, whichever registry holds the savepoint's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pin {
    /// [`PIN_FORMAT`].
    pub format: u32,
    /// The savepoint's ID.
    pub savepoint: String,
    /// Where its record is (a registry's location), for messages.
    pub registry: String,
    /// Held by a memory registry: it dies with the process that took it,
    /// so the next process to open the data directory removes the pin.
    pub memory: bool,
    /// The checkpoint it pins.
    pub checkpoint: CheckpointManifest,
}

/// The lock behind [`Txn`] and [`collect_garbage`]; one per store, so
/// everything in one process that writes to a store must share that store
/// (the data directory opens it once).
#[derive(Debug, Default)]
pub struct TxnLock(RwLock<()>);

/// A write transaction: chunks written through it cannot be collected
/// before the manifest or pin that references them is committed through it
/// (or the transaction is dropped). Many transactions run at once; only
/// garbage collection excludes them.
pub struct Txn<'a> {
    store: &'a dyn CheckpointStore,
    _shared: RwLockReadGuard<'a, ()>,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Txn")
    }
}

/// Starts a write transaction on `store`.
pub fn begin(store: &dyn CheckpointStore) -> Txn<'_> {
    Txn {
        store,
        _shared: store.txn_lock().0.read().unwrap_or_else(|p| p.into_inner()),
    }
}

impl Txn<'_> {
    /// Stores a chunk under its hash: see [`CheckpointStore::put_chunk`].
    pub fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError> {
        self.store.put_chunk(self, bytes)
    }
    /// Commits a manifest: see [`CheckpointStore::put_manifest`].
    pub fn put_manifest(&self, m: &CheckpointManifest) -> Result<(), StoreError> {
        self.store.put_manifest(self, m)
    }
    /// Commits a pin: see [`CheckpointStore::put_pin`].
    pub fn put_pin(&self, p: &Pin) -> Result<(), StoreError> {
        self.store.put_pin(self, p)
    }
    /// Makes the chunks written so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }
}

/// Deletes every chunk that no checkpoint manifest of any job and no pin
/// in the store references, and returns them. A manifest or pin that
/// cannot be read stops the collection: deleting what it might reference
/// could lose state.
pub fn collect_garbage(store: &dyn CheckpointStore) -> Result<Vec<ChunkHash>, StoreError> {
    let _exclusive = store
        .txn_lock()
        .0
        .write()
        .unwrap_or_else(|p| p.into_inner());
    let mut kept: Vec<CheckpointManifest> = store
        .list_pins()?
        .into_iter()
        .map(|p| p.checkpoint)
        .collect();
    for job in store.list_jobs()? {
        for id in store.list_checkpoints(&job)? {
            kept.push(store.get_manifest(&job, id)?);
        }
    }
    let dead = super::retention::unreferenced_chunks(&store.list_chunks()?, &kept);
    for chunk in &dead {
        store.delete_chunk(chunk)?;
    }
    Ok(dead)
}

/// A checkpoint store failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O failure.
    #[error("checkpoint store: cannot {op} {path}")]
    Io {
        /// What it was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
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
    /// A manifest (or pin) that does not fit this wrun: another format,
    /// another job.
    #[error("checkpoint manifest {path} is unreadable: {detail}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A manifest (or pin) that does not parse, or a name in its path that
    /// is not allowed.
    #[error("checkpoint manifest {path} is unreadable")]
    Unreadable {
        /// The manifest file.
        path: PathBuf,
        /// Why: the JSON or the name error.
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Storage of checkpoint chunks, manifests and pins. Writes that add
/// references take a [`Txn`] of this store ([`begin`]).
pub trait CheckpointStore: Send + Sync {
    /// The lock transactions and garbage collection share.
    fn txn_lock(&self) -> &TxnLock;
    /// Stores a chunk under its hash. Returns the hash and the bytes newly
    /// written: 0 when the chunk was already there (incremental for free).
    fn put_chunk(&self, txn: &Txn<'_>, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError>;
    /// Reads a chunk, verifying its hash.
    fn get_chunk(&self, hash: &ChunkHash) -> Result<Vec<u8>, StoreError>;
    /// Every stored chunk.
    fn list_chunks(&self) -> Result<Vec<ChunkHash>, StoreError>;
    /// Deletes a chunk (no error if it is already gone).
    fn delete_chunk(&self, hash: &ChunkHash) -> Result<(), StoreError>;
    /// Commits a manifest atomically (after making every chunk durable).
    fn put_manifest(&self, txn: &Txn<'_>, m: &CheckpointManifest) -> Result<(), StoreError>;
    /// Reads a manifest.
    fn get_manifest(&self, job: &str, id: CheckpointId) -> Result<CheckpointManifest, StoreError>;
    /// A job's committed checkpoints, in increasing order.
    fn list_checkpoints(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError>;
    /// Deletes a manifest (no error if it is already gone).
    fn delete_manifest(&self, job: &str, id: CheckpointId) -> Result<(), StoreError>;
    /// Every job with a checkpoint directory (chunks are shared by all of
    /// them, so GC must read all their manifests).
    fn list_jobs(&self) -> Result<Vec<String>, StoreError>;
    /// Commits a pin atomically (after making every chunk durable).
    fn put_pin(&self, txn: &Txn<'_>, p: &Pin) -> Result<(), StoreError>;
    /// Every pin.
    fn list_pins(&self) -> Result<Vec<Pin>, StoreError>;
    /// Deletes a savepoint's pin (no error if it is already gone); its
    /// chunks go at the next garbage collection.
    fn delete_pin(&self, savepoint: &str) -> Result<(), StoreError>;
    /// Makes every chunk written so far durable (`put_manifest` does this
    /// itself before it commits).
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn pin_path(savepoint: &str) -> Result<PathBuf, StoreError> {
    crate::names::check(crate::names::NameKind::Savepoint, savepoint).map_err(|e| {
        StoreError::Unreadable {
            path: PathBuf::from("pins").join(savepoint),
            error: e.into(),
        }
    })?;
    Ok(PathBuf::from("pins").join(format!("{savepoint}.json")))
}

fn parse_pin(path: PathBuf, bytes: &[u8]) -> Result<Pin, StoreError> {
    let p: Pin = serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
        path: path.clone(),
        error: e.into(),
    })?;
    if p.format != PIN_FORMAT {
        return Err(StoreError::BadManifest {
            path,
            detail: format!(
                "pin format {}, but this wrun reads format {PIN_FORMAT}",
                p.format
            ),
        });
    }
    Ok(p)
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

/// A job name reaches the store only after the caller checked it; this is
/// the last line of defence (a name with `..` must never become a path).
fn check_job(job: &str, rel: &Path) -> Result<(), StoreError> {
    crate::names::check(crate::names::NameKind::Job, job).map_err(|e| StoreError::Unreadable {
        path: rel.to_path_buf(),
        error: e.into(),
    })
}

fn parse_manifest(
    path: PathBuf,
    bytes: &[u8],
    job: &str,
    id: CheckpointId,
) -> Result<CheckpointManifest, StoreError> {
    let m: CheckpointManifest =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
            path: path.clone(),
            error: e.into(),
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
    lock: TxnLock,
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
            lock: TxnLock::default(),
        })
    }

    fn io(&self, op: &'static str, rel: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = self.root.join(rel);
        move |error| StoreError::Io { op, path, error }
    }

    /// Writes `bytes` at `rel` atomically; the directory entry is synced
    /// with the next manifest (or now, with `durable`).
    fn write_atomic(&self, rel: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
        fsutil::write_atomic(&self.dir, rel, bytes, durable).map_err(self.io("write", rel))?;
        if !durable {
            let parent = rel.parent().unwrap_or(Path::new(""));
            self.unsynced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(parent.to_path_buf());
        }
        Ok(())
    }

    /// Syncs every directory a rename went into since the last call, so
    /// the entries are durable before a manifest refers to them.
    fn sync_dirs(&self) -> Result<(), StoreError> {
        let dirs = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
        for d in dirs {
            fsutil::sync_dir(&self.dir, &d).map_err(self.io("sync", &d))?;
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

    /// Makes every chunk durable, then commits `bytes` at `rel` durably:
    /// a durable manifest or pin must never name a chunk that could still
    /// be lost.
    fn commit(&self, rel: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.sync()?;
        self.write_atomic(rel, bytes, true)?;
        self.sync_dirs()
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
    fn txn_lock(&self) -> &TxnLock {
        &self.lock
    }

    fn put_chunk(&self, _txn: &Txn<'_>, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError> {
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

    fn put_manifest(&self, _txn: &Txn<'_>, m: &CheckpointManifest) -> Result<(), StoreError> {
        check_job(&m.job, &self.root.join("jobs"))?;
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Unreadable {
            path: self.root.join(manifest_path(&m.job, m.id)),
            error: e.into(),
        })?;
        self.commit(&manifest_path(&m.job, m.id), &bytes)
    }

    fn put_pin(&self, _txn: &Txn<'_>, p: &Pin) -> Result<(), StoreError> {
        let rel = pin_path(&p.savepoint)?;
        let bytes = serde_json::to_vec_pretty(p).map_err(|e| StoreError::Unreadable {
            path: self.root.join(&rel),
            error: e.into(),
        })?;
        self.commit(&rel, &bytes)
    }

    fn list_pins(&self) -> Result<Vec<Pin>, StoreError> {
        let mut out = Vec::new();
        let mut names = self.names(Path::new("pins"))?;
        names.sort();
        for name in names {
            if fsutil::is_temp(&name) || !name.ends_with(".json") {
                continue;
            }
            let rel = Path::new("pins").join(&name);
            let bytes = self.dir.read(&rel).map_err(self.io("read", &rel))?;
            out.push(parse_pin(self.root.join(rel), &bytes)?);
        }
        Ok(out)
    }

    fn delete_pin(&self, savepoint: &str) -> Result<(), StoreError> {
        self.remove(&pin_path(savepoint)?)?;
        fsutil::sync_dir(&self.dir, Path::new("pins")).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(self.io("sync", Path::new("pins"))(e)),
        })
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
        check_job(job, &rel)?;
        let bytes = self.dir.read(&rel).map_err(self.io("read", &rel))?;
        parse_manifest(self.root.join(rel), &bytes, job, id)
    }

    fn list_checkpoints(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError> {
        check_job(job, &manifest_dir(job))?;
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
        check_job(job, &manifest_dir(job))?;
        self.remove(&manifest_path(job, id))
    }

    fn list_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut jobs = self.names(Path::new("jobs"))?;
        jobs.retain(|j| crate::names::check(crate::names::NameKind::Job, j).is_ok());
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
    pins: Mutex<BTreeMap<String, Pin>>,
    fail_writes: AtomicBool,
    lock: TxnLock,
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
    fn txn_lock(&self) -> &TxnLock {
        &self.lock
    }

    fn put_chunk(&self, _txn: &Txn<'_>, bytes: &[u8]) -> Result<(ChunkHash, u64), StoreError> {
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

    fn put_pin(&self, _txn: &Txn<'_>, p: &Pin) -> Result<(), StoreError> {
        self.check_write(pin_path(&p.savepoint)?)?;
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(p.savepoint.clone(), p.clone());
        Ok(())
    }

    fn list_pins(&self) -> Result<Vec<Pin>, StoreError> {
        Ok(self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    fn delete_pin(&self, savepoint: &str) -> Result<(), StoreError> {
        pin_path(savepoint)?;
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(savepoint);
        Ok(())
    }

    fn put_manifest(&self, _txn: &Txn<'_>, m: &CheckpointManifest) -> Result<(), StoreError> {
        self.check_write(manifest_path(&m.job, m.id))?;
        let bytes = serde_json::to_vec(m).map_err(|e| StoreError::Unreadable {
            path: manifest_path(&m.job, m.id),
            error: e.into(),
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

    use crate::report::causes as messages;

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
            input_ended: false,
        }
    }

    fn exercise(store: &dyn CheckpointStore) {
        let (a, new) = begin(store).put_chunk(b"abc").unwrap();
        assert_eq!(new, 3);
        assert_eq!(
            begin(store).put_chunk(b"abc").unwrap(),
            (a, 0),
            "an unchanged chunk is not written again"
        );
        let (b, _) = begin(store).put_chunk(b"def").unwrap();
        assert_eq!(store.get_chunk(&a).unwrap(), b"abc");
        assert_eq!(store.list_chunks().unwrap().len(), 2);
        begin(store).put_manifest(&manifest(2, &[a, b])).unwrap();
        begin(store).put_manifest(&manifest(10, &[a])).unwrap();
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
        let (h, _) = begin(&store).put_chunk(b"state").unwrap();
        let file = dir.path().join("store").join(chunk_path(&h));
        std::fs::write(&file, b"stale").unwrap();
        let err = store.get_chunk(&h).unwrap_err().to_string();
        assert!(
            err.contains(&file.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
        let mpath = dir.path().join("store/jobs/wordcount/checkpoints/10.json");
        std::fs::write(&mpath, b"{\"format\": 1").unwrap();
        let err = messages(
            &store
                .get_manifest("wordcount", CheckpointId(10))
                .unwrap_err(),
        );
        assert!(err[0].ends_with("10.json is unreadable"), "{err:?}");
        assert!(
            err[1].contains("EOF while parsing"),
            "the JSON error is the cause: {err:?}"
        );
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
        let (h, _) = begin(&store).put_chunk(b"x").unwrap();
        store.delete_chunk(&h).unwrap();
        assert_eq!(
            begin(&store).put_chunk(b"x").unwrap(),
            (h, 1),
            "written again after GC"
        );
        store.get_chunk(&h).unwrap();
        // A leftover from a crash with lost data: a new store must not trust it.
        std::fs::write(dir.path().join(chunk_path(&h)), b"").unwrap();
        let fresh = FsStore::open(dir.path()).unwrap();
        assert_eq!(begin(&fresh).put_chunk(b"x").unwrap(), (h, 1));
        assert_eq!(fresh.get_chunk(&h).unwrap(), b"x");
    }

    #[test]
    fn a_missing_chunk_and_an_unusable_directory_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (h, _) = begin(&store).put_chunk(b"y").unwrap();
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

    fn pin(id: &str, m: CheckpointManifest) -> Pin {
        Pin {
            format: PIN_FORMAT,
            savepoint: id.into(),
            registry: "/somewhere/else".into(),
            memory: false,
            checkpoint: m,
        }
    }

    /// A savepoint's chunks stay whatever registry holds its record: the
    /// pin is in the store, and every collection reads every pin.
    fn pins_keep_chunks(store: &dyn CheckpointStore) {
        let txn = begin(store);
        let (a, _) = txn.put_chunk(b"pinned").unwrap();
        let (b, _) = txn.put_chunk(b"referenced").unwrap();
        let (c, _) = txn.put_chunk(b"dead").unwrap();
        txn.put_pin(&pin("sp-other-1-ab", manifest(1, &[a])))
            .unwrap();
        txn.put_manifest(&manifest(2, &[b])).unwrap();
        drop(txn);
        assert_eq!(collect_garbage(store).unwrap(), vec![c]);
        assert_eq!(store.list_pins().unwrap().len(), 1);
        store.delete_pin("sp-other-1-ab").unwrap();
        assert_eq!(collect_garbage(store).unwrap(), vec![a]);
        assert_eq!(store.list_chunks().unwrap(), vec![b]);
        assert!(
            store.delete_pin("../x").is_err(),
            "a pin name is a savepoint name"
        );
    }

    #[test]
    fn pins_keep_chunks_in_both_stores() {
        pins_keep_chunks(&MemStore::default());
        let dir = tempfile::tempdir().unwrap();
        pins_keep_chunks(&FsStore::open(dir.path()).unwrap());
    }

    #[test]
    fn collection_waits_for_open_transactions() {
        let store = std::sync::Arc::new(MemStore::default());
        let txn = begin(store.as_ref());
        let (h, _) = txn.put_chunk(b"in flight").unwrap();
        let gc = {
            let store = store.clone();
            std::thread::spawn(move || collect_garbage(store.as_ref()).unwrap())
        };
        // The collector cannot get in while the transaction is open: the
        // chunk is still there once the manifest commits.
        txn.put_manifest(&manifest(1, &[h])).unwrap();
        drop(txn);
        assert!(gc.join().unwrap().is_empty());
        assert_eq!(store.list_chunks().unwrap(), vec![h]);
    }

    #[test]
    fn bad_job_names_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for bad in ["../../x", "/etc", "a/b", ".."] {
            let err = messages(&store.list_checkpoints(bad).unwrap_err());
            assert!(err[0].contains("is unreadable"), "{err:?}");
            assert!(
                err[1].contains("invalid job name"),
                "the name error is the cause: {err:?}"
            );
            assert!(store.get_manifest(bad, CheckpointId(1)).is_err());
        }
    }

    #[test]
    fn memory_store_and_a_full_disk() {
        let store = MemStore::default();
        exercise(&store);
        store.fail_writes(true);
        let err = messages(&begin(&store).put_chunk(b"new").unwrap_err());
        assert!(
            err[0].starts_with("checkpoint store: cannot write chunks/"),
            "{err:?}"
        );
        assert_eq!(
            err[1], "no space left on device",
            "the I/O error is the cause, not part of the message"
        );
        store.fail_writes(false);
        let (h, _) = begin(&store).put_chunk(b"new").unwrap();
        store.corrupt_chunk(&h, b"old".to_vec());
        assert!(matches!(
            store.get_chunk(&h),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
