//! The checkpoint repository: the layout, encoding and verification of
//! checkpoints over a blob store (a directory, S3, memory; `crate::blob`).
//!
//! ```text
//! segments/<txn>-<n>                 chunks, back to back: one object per writer thread
//!                                    per checkpoint (a manifest names each chunk by blake3,
//!                                    size, segment and offset)
//! jobs/<job>/checkpoints/<n>.json    manifests, created once (never overwritten)
//! pins/<savepoint id>.json           what a savepoint keeps alive (its manifest)
//! chunks/<aa>/<blake3 hex>           chunks of format 1 manifests (read, never written)
//! ```
//!
//! Every chunk read verifies blake3, so a corrupt or truncated object is an
//! error naming it, never wrong state. A manifest or pin is created only
//! after every segment it names is durable, and never overwrites one.
//!
//! **Garbage collection without a lock** ([`collect_garbage`]): marks every
//! segment and chunk object that a manifest of any job or a pin references,
//! and deletes the rest that are older than the store's grace period and
//! that no transaction of this process holds. Another process's commit in
//! flight is protected by the grace period: a transaction refuses to
//! commit once half of it has passed since it wrote its first segment, and
//! a collection counts ages from its own start, so whatever a commit it
//! cannot see yet references is younger than the grace period. Within one
//! process, transactions hold their segments ([`Txn`]) and a collection
//! keeps whatever was held at any moment while it ran.

use super::manifest::{
    CheckpointId, CheckpointManifest, ChunkHash, ChunkRef, Loc, MANIFEST_FORMATS_READ, Span,
};
use crate::blob::{BlobError, Blobs, Created, FsBlobs, MemBlobs};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The pin record format this wrun writes. Format 2 holds a format 2
/// manifest; format 1 pins are still read.
pub const PIN_FORMAT: u32 = 2;

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

/// A checkpoint store failure, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob store failed (I/O, the network, a full disk).
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A chunk whose bytes do not match its name.
    #[error(
        "checkpoint chunk {chunk} at {location} is corrupt: its blake3 is {actual}; the checkpoints that use it cannot be restored"
    )]
    Corrupt {
        /// The chunk's hash.
        chunk: String,
        /// Where it was read (the object, and the range in a segment).
        location: String,
        /// The hash of what was read.
        actual: String,
    },
    /// A chunk a manifest needs is gone.
    #[error("checkpoint chunk {chunk} is missing: {location} does not exist")]
    MissingChunk {
        /// The chunk's hash.
        chunk: String,
        /// The object it should be in.
        location: String,
    },
    /// A manifest (or pin) that does not fit this wrun: another format,
    /// another job.
    #[error("checkpoint manifest {path} is unreadable: {detail}")]
    BadManifest {
        /// The manifest.
        path: String,
        /// Why.
        detail: String,
    },
    /// A manifest (or pin) that does not parse, or a name in its path that
    /// is not allowed.
    #[error("checkpoint manifest {path} is unreadable")]
    Unreadable {
        /// The manifest.
        path: String,
        /// Why: the JSON or the name error.
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A manifest or pin that is already there: something else writes
    /// this job's checkpoints (or this savepoint) to the same store.
    #[error(
        "{location} already exists: another wrun writes checkpoints of this job to the same state store; run one job of a name per state URL (or use a fleet, which fences owners)"
    )]
    Exists {
        /// The object.
        location: String,
    },
    /// A commit that came too late to be safe from another process's
    /// garbage collection.
    #[error(
        "checkpoint commit refused: {elapsed:?} passed since its first segment was written, more than half the store's garbage collection grace period ({grace:?}); another wrun's collection may have removed its segments"
    )]
    TooSlow {
        /// Since the first segment was written.
        elapsed: Duration,
        /// The store's grace period.
        grace: Duration,
    },
}

/// The size at which a segment is written and another started (what
/// waits in memory per writer thread).
pub const SEGMENT_MAX: usize = 64 << 20;

/// Segments held by this process's open transactions, and those released
/// while a collection ran (it must keep them too).
#[derive(Debug, Default)]
struct Held {
    live: HashMap<String, usize>,
    collections: usize,
    released: HashSet<String>,
}

/// Checkpoints, savepoint pins and their chunks, over a blob store.
#[derive(Debug)]
pub struct CheckpointStore {
    blobs: Arc<dyn Blobs>,
    grace: Duration,
    /// Other processes may write it (anything but the data directory's own).
    shared: bool,
    held: Mutex<Held>,
}

impl CheckpointStore {
    /// A store over `blobs`; unreferenced objects younger than `grace` are
    /// never collected (zero is right only where one process writes).
    pub fn new(blobs: Arc<dyn Blobs>, grace: Duration) -> CheckpointStore {
        CheckpointStore {
            blobs,
            grace,
            shared: !grace.is_zero(),
            held: Mutex::new(Held::default()),
        }
    }

    /// A store in the local directory `root` (created if missing). One
    /// process writes it (the data directory's lock), so its grace period
    /// is zero.
    pub fn open_dir(root: &Path) -> Result<CheckpointStore, StoreError> {
        Ok(CheckpointStore::new(
            Arc::new(FsBlobs::open(root)?),
            Duration::ZERO,
        ))
    }

    /// The store a state URL names: a directory or an S3 bucket and
    /// prefix. Unlike the data directory's own store, no lock makes
    /// either this process's alone (two wruns with different data
    /// directories may name one), so both are shared: a directory gets
    /// the default grace period, an object store the one its URL sets.
    pub fn open(url: &crate::blob::StateUrl) -> Result<CheckpointStore, StoreError> {
        let (blobs, grace): (Arc<dyn Blobs>, Duration) = match url {
            crate::blob::StateUrl::Dir(p) => {
                (Arc::new(FsBlobs::open(p)?), crate::blob::DEFAULT_GC_GRACE)
            }
            crate::blob::StateUrl::S3(loc) => {
                (Arc::new(crate::blob::S3Blobs::open(loc)?), loc.gc_grace)
            }
        };
        Ok(CheckpointStore {
            blobs,
            grace,
            shared: true,
            held: Mutex::new(Held::default()),
        })
    }

    /// Whether other processes may write this store at the same time:
    /// then nothing in it belongs to this process alone.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// A store in memory (tests).
    pub fn in_memory() -> CheckpointStore {
        CheckpointStore::memory(Arc::new(MemBlobs::default()))
    }

    /// A store over memory blobs the caller keeps (to inject faults).
    pub fn memory(blobs: Arc<MemBlobs>) -> CheckpointStore {
        CheckpointStore::new(blobs, Duration::ZERO)
    }

    /// The blobs underneath.
    pub fn blobs(&self) -> &Arc<dyn Blobs> {
        &self.blobs
    }

    /// The garbage collection grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Where an object of this store is, for messages.
    pub fn location(&self, key: &str) -> String {
        self.blobs.location(key)
    }

    fn hold(&self, segment: &str) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        *h.live.entry(segment.to_string()).or_default() += 1;
    }

    fn release(&self, segments: &[String]) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for s in segments {
            if let Some(n) = h.live.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    h.live.remove(s);
                }
            }
            if h.collections > 0 {
                h.released.insert(s.clone());
            }
        }
    }

    /// Reads a chunk, verifying its hash.
    pub fn get_chunk(&self, loc: Loc<'_>) -> Result<Bytes, StoreError> {
        let (key, got) = match loc.at {
            Some(span) => {
                let end = self.end_of(loc, span)?;
                (
                    span.segment.clone(),
                    self.blobs.get_range(&span.segment, span.offset..end),
                )
            }
            None => {
                let key = legacy_chunk_key(&loc.chunk);
                let got = self.blobs.get(&key);
                (key, got)
            }
        };
        let bytes = got.map_err(|e| self.read_error(e, loc, &key))?;
        self.verify(loc, &key, bytes)
    }

    /// Reads many chunks, verifying each: one request per segment (the
    /// range covering every chunk wanted from it), so a restore of many
    /// key groups makes a few large reads, not one per key group. Returns
    /// them in the order asked.
    pub fn get_chunks(&self, locs: &[Loc<'_>]) -> Result<Vec<Bytes>, StoreError> {
        let mut out: Vec<Option<Bytes>> = vec![None; locs.len()];
        let mut by_segment: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, l) in locs.iter().enumerate() {
            match l.at {
                Some(s) => by_segment.entry(s.segment.as_str()).or_default().push(i),
                None => out[i] = Some(self.get_chunk(*l)?),
            }
        }
        for (segment, wanted) in by_segment {
            let mut start = u64::MAX;
            let mut end = 0;
            for &i in &wanted {
                let l = locs[i];
                let Some(span) = l.at else { continue };
                start = start.min(span.offset);
                end = end.max(self.end_of(l, span)?);
            }
            let range = self
                .blobs
                .get_range(segment, start..end)
                .map_err(|e| self.read_error(e, locs[wanted[0]], segment))?;
            for &i in &wanted {
                let l = locs[i];
                let Some(span) = l.at else { continue };
                let from = (span.offset - start) as usize;
                let bytes = range.slice(from..from + l.bytes as usize);
                out[i] = Some(self.verify(l, segment, bytes)?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Reads and verifies every chunk of `locs`, a segment at a time, and
    /// keeps none.
    pub fn verify_chunks<'l>(
        &self,
        locs: impl IntoIterator<Item = Loc<'l>>,
    ) -> Result<(), StoreError> {
        let mut by_segment: std::collections::BTreeMap<String, Vec<Loc<'l>>> = Default::default();
        for l in locs {
            by_segment.entry(object_key(l)).or_default().push(l);
        }
        for group in by_segment.values() {
            self.get_chunks(group)?;
        }
        Ok(())
    }

    /// The end of `span`'s chunk, or a manifest error for an impossible one.
    fn end_of(&self, loc: Loc<'_>, span: &Span) -> Result<u64, StoreError> {
        span.offset
            .checked_add(loc.bytes)
            .ok_or_else(|| StoreError::BadManifest {
                path: self.location(&span.segment),
                detail: format!(
                    "a manifest places chunk {} at the impossible range {} + {}",
                    loc.chunk.hex(),
                    span.offset,
                    loc.bytes
                ),
            })
    }

    fn read_error(&self, e: BlobError, loc: Loc<'_>, key: &str) -> StoreError {
        match e {
            BlobError::NotFound { .. } => StoreError::MissingChunk {
                chunk: loc.chunk.hex(),
                location: self.location(key),
            },
            e => StoreError::Blob(e),
        }
    }

    /// `bytes`, read from `key`, if they are `loc`'s chunk.
    fn verify(&self, loc: Loc<'_>, key: &str, bytes: Bytes) -> Result<Bytes, StoreError> {
        let actual = ChunkHash::of(&bytes);
        if actual != loc.chunk {
            return Err(StoreError::Corrupt {
                chunk: loc.chunk.hex(),
                location: match loc.at {
                    Some(s) => format!(
                        "{} (bytes {}..{})",
                        self.location(key),
                        s.offset,
                        s.offset.saturating_add(loc.bytes)
                    ),
                    None => self.location(key),
                },
                actual: actual.hex(),
            });
        }
        Ok(bytes)
    }

    /// Reads a manifest.
    pub fn get_manifest(
        &self,
        job: &str,
        id: CheckpointId,
    ) -> Result<CheckpointManifest, StoreError> {
        let key = manifest_key(job, id);
        self.check_job(job, &key)?;
        let bytes = self.blobs.get(&key)?;
        parse_manifest(self.location(&key), &bytes, job, id)
    }

    /// A job's committed checkpoints, in increasing order.
    pub fn list_checkpoints(&self, job: &str) -> Result<Vec<CheckpointId>, StoreError> {
        let dir = manifest_dir(job);
        self.check_job(job, &dir)?;
        let mut ids: Vec<CheckpointId> = self
            .blobs
            .list(&format!("{dir}/"))?
            .iter()
            .filter_map(|m| m.key.strip_prefix(&dir)?.strip_prefix('/'))
            .filter_map(|n| n.strip_suffix(".json"))
            .filter_map(|n| n.parse().ok())
            .map(CheckpointId)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Deletes a manifest (no error if it is already gone).
    pub fn delete_manifest(&self, job: &str, id: CheckpointId) -> Result<(), StoreError> {
        let key = manifest_key(job, id);
        self.check_job(job, &key)?;
        Ok(self.blobs.delete(&key)?)
    }

    /// Every job with a checkpoint (chunks may be shared by all of them,
    /// so GC must read all their manifests).
    pub fn list_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut jobs: Vec<String> = self
            .blobs
            .list("jobs/")?
            .iter()
            .filter_map(|m| m.key.strip_prefix("jobs/")?.split('/').next())
            .filter(|j| crate::names::check(crate::names::NameKind::Job, j).is_ok())
            .map(str::to_string)
            .collect();
        jobs.dedup();
        Ok(jobs)
    }

    /// Every pin.
    pub fn list_pins(&self) -> Result<Vec<Pin>, StoreError> {
        let mut out = Vec::new();
        for m in self.blobs.list("pins/")? {
            if !m.key.ends_with(".json") {
                continue;
            }
            let bytes = match self.blobs.get(&m.key) {
                Ok(b) => b,
                // Disposed of while listing.
                Err(BlobError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            out.push(parse_pin(self.location(&m.key), &bytes)?);
        }
        Ok(out)
    }

    /// Deletes a savepoint's pin (no error if it is already gone); its
    /// chunks go at the next garbage collection.
    pub fn delete_pin(&self, savepoint: &str) -> Result<(), StoreError> {
        let key = pin_key(savepoint)?;
        Ok(self.blobs.delete(&key)?)
    }

    /// A job name reaches the store only after the caller checked it; this
    /// is the last line of defence (a name with `..` must never become a
    /// key).
    fn check_job(&self, job: &str, key: &str) -> Result<(), StoreError> {
        crate::names::check(crate::names::NameKind::Job, job).map_err(|e| StoreError::Unreadable {
            path: self.location(key),
            error: e.into(),
        })
    }
}

fn legacy_chunk_key(h: &ChunkHash) -> String {
    let hex = h.hex();
    format!("chunks/{}/{hex}", &hex[..2])
}

/// The object a chunk lives in: its segment, or (format 1) its own object.
pub fn object_key(loc: Loc<'_>) -> String {
    match loc.at {
        Some(s) => s.segment.clone(),
        None => legacy_chunk_key(&loc.chunk),
    }
}

fn manifest_dir(job: &str) -> String {
    format!("jobs/{job}/checkpoints")
}

fn manifest_key(job: &str, id: CheckpointId) -> String {
    format!("{}/{}.json", manifest_dir(job), id.0)
}

fn pin_key(savepoint: &str) -> Result<String, StoreError> {
    crate::names::check(crate::names::NameKind::Savepoint, savepoint).map_err(|e| {
        StoreError::Unreadable {
            path: format!("pins/{savepoint}"),
            error: e.into(),
        }
    })?;
    Ok(format!("pins/{savepoint}.json"))
}

fn parse_pin(path: String, bytes: &[u8]) -> Result<Pin, StoreError> {
    let p: Pin = serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
        path: path.clone(),
        error: e.into(),
    })?;
    if !(1..=PIN_FORMAT).contains(&p.format) {
        return Err(StoreError::BadManifest {
            path,
            detail: format!(
                "pin format {}, but this wrun reads formats 1 to {PIN_FORMAT}",
                p.format
            ),
        });
    }
    Ok(p)
}

fn parse_manifest(
    path: String,
    bytes: &[u8],
    job: &str,
    id: CheckpointId,
) -> Result<CheckpointManifest, StoreError> {
    let m: CheckpointManifest =
        serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
            path: path.clone(),
            error: e.into(),
        })?;
    if !MANIFEST_FORMATS_READ.contains(&m.format) {
        return Err(StoreError::BadManifest {
            path,
            detail: format!(
                "format {}, but this wrun reads formats {MANIFEST_FORMATS_READ:?}",
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

/// A write transaction: segments of chunks, then the manifest or pin that
/// references them. Its segments are held (no collection in this process
/// deletes them) until it is dropped; see the module docs for other
/// processes.
pub struct Txn<'a> {
    store: &'a CheckpointStore,
    /// Unique per transaction: the segments' names start with it.
    id: String,
    next_segment: AtomicU32,
    held: Mutex<Vec<String>>,
    first_write: Mutex<Option<Instant>>,
    /// The transaction's own segment, for chunks written one at a time.
    loose: Mutex<Option<SegmentWriter<'a>>>,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Txn({})", self.id)
    }
}

/// Starts a write transaction on `store`.
pub fn begin(store: &CheckpointStore) -> Txn<'_> {
    let mut r = [0u8; 10];
    // The OS's random source failing is not worth failing a checkpoint:
    // fall back to the time and the process, still unique in practice.
    if getrandom::fill(&mut r).is_err() {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        r[..8].copy_from_slice(&t.to_le_bytes());
        r[8..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
    }
    Txn {
        store,
        id: hex::encode(r),
        next_segment: AtomicU32::new(0),
        held: Mutex::new(Vec::new()),
        first_write: Mutex::new(None),
        loose: Mutex::new(None),
    }
}

impl<'a> Txn<'a> {
    /// A new segment to write chunks into; one per writer thread.
    pub fn segment(&self) -> SegmentWriter<'a> {
        let n = self.next_segment.fetch_add(1, Ordering::Relaxed);
        let key = format!("segments/{}-{n}", self.id);
        self.hold(&key);
        SegmentWriter {
            store: self.store,
            key,
            buf: Vec::new(),
        }
    }

    /// Keeps a segment that an earlier checkpoint wrote and this one
    /// references again (an unchanged key group) from this process's
    /// collections until the commit.
    pub fn reuse(&self, loc: Loc<'_>) {
        if let Some(s) = loc.at {
            self.hold(&s.segment);
        }
    }

    fn hold(&self, key: &str) {
        self.store.hold(key);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.to_string());
    }

    /// Notes that a segment write starts: the commit deadline counts from
    /// the first one (an object's age, as a store lists it, may count
    /// from the start of its upload).
    fn wrote(&self) {
        self.first_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Instant::now);
    }

    /// Adds a chunk to the transaction's own segment; it is written by
    /// [`Txn::flush`] (or the commit). Returns its ref and its size.
    pub fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkRef, u64), StoreError> {
        let mut loose = self.loose.lock().unwrap_or_else(|p| p.into_inner());
        let w = loose.get_or_insert_with(|| self.segment());
        let put = w.put(bytes);
        // Copies of whole savepoints go through here: bound what waits in
        // memory.
        if w.buf.len() >= SEGMENT_MAX
            && let Some(w) = loose.take()
        {
            self.wrote();
            w.finish()?;
        }
        Ok(put)
    }

    /// Writes the chunks added with [`Txn::put_chunk`] so far. Returns the
    /// bytes uploaded.
    pub fn flush(&self) -> Result<u64, StoreError> {
        let w = self.loose.lock().unwrap_or_else(|p| p.into_inner()).take();
        match w {
            Some(w) => {
                self.wrote();
                w.finish()
            }
            None => Ok(0),
        }
    }

    /// Notes that a segment writer of this transaction finished.
    pub fn finished(&self, w: SegmentWriter<'_>) -> Result<u64, StoreError> {
        self.wrote();
        w.finish()
    }

    /// Refuses a commit that came too late (see the module docs).
    fn in_time(&self) -> Result<(), StoreError> {
        let grace = self.store.grace;
        if grace.is_zero() {
            return Ok(());
        }
        let first = *self.first_write.lock().unwrap_or_else(|p| p.into_inner());
        match first.map(|t| t.elapsed()) {
            Some(elapsed) if elapsed > grace / 2 => Err(StoreError::TooSlow { elapsed, grace }),
            _ => Ok(()),
        }
    }

    fn create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.flush()?;
        self.in_time()?;
        match self.store.blobs.put_if_absent(key, Bytes::from(bytes))? {
            Created::New => Ok(()),
            Created::Existed => Err(StoreError::Exists {
                location: self.store.location(key),
            }),
        }
    }

    /// Commits a manifest: after every segment it names is durable, and
    /// never over an existing one.
    pub fn put_manifest(&self, m: &CheckpointManifest) -> Result<(), StoreError> {
        let key = manifest_key(&m.job, m.id);
        self.store.check_job(&m.job, &key)?;
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Unreadable {
            path: self.store.location(&key),
            error: e.into(),
        })?;
        self.create(&key, bytes)
    }

    /// Commits a pin, as [`Txn::put_manifest`].
    pub fn put_pin(&self, p: &Pin) -> Result<(), StoreError> {
        let key = pin_key(&p.savepoint)?;
        let bytes = serde_json::to_vec_pretty(p).map_err(|e| StoreError::Unreadable {
            path: self.store.location(&key),
            error: e.into(),
        })?;
        self.create(&key, bytes)
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        self.store.release(&held);
    }
}

/// Chunks written back to back into one segment object, uploaded at once
/// by [`Txn::finished`].
pub struct SegmentWriter<'a> {
    store: &'a CheckpointStore,
    key: String,
    buf: Vec<u8>,
}

impl SegmentWriter<'_> {
    /// The bytes added so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends a chunk. Returns its ref and the bytes it adds.
    pub fn put(&mut self, bytes: &[u8]) -> (ChunkRef, u64) {
        let r = ChunkRef {
            chunk: ChunkHash::of(bytes),
            bytes: bytes.len() as u64,
            at: Some(Span {
                segment: self.key.clone(),
                offset: self.buf.len() as u64,
            }),
        };
        self.buf.extend_from_slice(bytes);
        (r, bytes.len() as u64)
    }

    /// Uploads the segment (nothing if no chunk was added). Returns its
    /// size.
    fn finish(self) -> Result<u64, StoreError> {
        if self.buf.is_empty() {
            return Ok(0);
        }
        let n = self.buf.len() as u64;
        // A segment's name is random per transaction: one already there
        // is this very write, stored by an attempt the client retried.
        self.store
            .blobs
            .put_if_absent(&self.key, Bytes::from(self.buf))?;
        Ok(n)
    }
}

/// Deletes every segment and chunk object that no checkpoint manifest of
/// any job and no pin references, that is older than the store's grace
/// period (counted from this call's start), and that no transaction of
/// this process held while it ran; returns their keys. A manifest or pin
/// that cannot be read stops the collection: deleting what it might
/// reference could lose state.
pub fn collect_garbage(store: &CheckpointStore) -> Result<Vec<String>, StoreError> {
    let started = SystemTime::now();
    store
        .held
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .collections += 1;
    let result = collect(store, started);
    let mut h = store.held.lock().unwrap_or_else(|p| p.into_inner());
    h.collections -= 1;
    if h.collections == 0 {
        h.released.clear();
    }
    drop(h);
    result
}

fn collect(store: &CheckpointStore, started: SystemTime) -> Result<Vec<String>, StoreError> {
    let kept = referenced(store)?;
    let mut objects = store.blobs.list("segments/")?;
    objects.extend(store.blobs.list("chunks/")?);
    let held: HashSet<String> = {
        let h = store.held.lock().unwrap_or_else(|p| p.into_inner());
        h.live.keys().chain(h.released.iter()).cloned().collect()
    };
    let cutoff = started
        .checked_sub(store.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let dead = super::retention::garbage(&objects, &kept, &held, cutoff);
    for key in &dead {
        store.blobs.delete(key)?;
    }
    Ok(dead)
}

/// Every object a manifest or pin references. Manifests first, pins
/// after: a pin is created while the manifest it copies still exists, so a
/// collection either reads that manifest or, listing pins later, the pin.
/// A manifest listed but gone when read (retention deleted it meanwhile)
/// restarts the marking, so a commit that replaced it is seen.
fn referenced(store: &CheckpointStore) -> Result<HashSet<String>, StoreError> {
    let mut attempt = 0;
    'again: loop {
        attempt += 1;
        let mut kept = HashSet::new();
        for job in store.list_jobs()? {
            for id in store.list_checkpoints(&job)? {
                match store.get_manifest(&job, id) {
                    Ok(m) => kept.extend(m.chunks().map(object_key)),
                    Err(StoreError::Blob(BlobError::NotFound { .. })) if attempt < 3 => {
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for p in store.list_pins()? {
            kept.extend(p.checkpoint.chunks().map(object_key));
        }
        return Ok(kept);
    }
}

#[cfg(test)]
mod tests;
