//! Savepoints: checkpoints a user triggered and pinned, kept until the user
//! disposes of them (docs/architecture.md, "Savepoints").
//!
//! A savepoint records the manifest of the checkpoint it was taken with:
//! a few kilobytes of pointers to that checkpoint's chunks, which are shared,
//! not copied. Retention of checkpoints never touches it; garbage collection
//! keeps every chunk a savepoint references until it is disposed of.
//!
//! Two registries, chosen per job independently of checkpoint storage:
//! [`MemorySavepoints`] (held by the running wrun, gone when it stops) and
//! [`FsSavepoints`] (one JSON file per savepoint in a directory). A registry
//! holds the records users list and name; what keeps a savepoint's chunks
//! alive is its [`Pin`] in the checkpoint store, written by [`register`]
//! before the record and removed by [`dispose`] after it, so every garbage
//! collection keeps them whichever registry the record is in.
//! [`export`] writes a self-contained copy (record plus chunks, relative
//! paths) that [`import`] reads back into another data directory.

use super::manifest::{CheckpointManifest, ChunkHash};
use super::store::{CheckpointStore, PIN_FORMAT, Pin, StoreError, Txn, begin, collect_garbage};
use crate::fsutil;
pub use crate::job::SavepointBackend;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The savepoint record format this wrun writes and reads.
pub const SAVEPOINT_FORMAT: u32 = 1;

/// The record's file name in an exported savepoint directory.
pub const EXPORT_RECORD: &str = "savepoint.json";

/// A savepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Savepoint {
    /// [`SAVEPOINT_FORMAT`].
    pub format: u32,
    /// Its ID: `sp-<job>-<checkpoint>-<suffix>`, or `mem-…` in memory.
    pub id: String,
    /// The name the user gave it, if any; unique in its registry.
    pub name: Option<String>,
    /// Which registry holds it.
    pub backend: SavepointBackend,
    /// When it completed (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether the job stopped at it (`wrun stop --savepoint`).
    pub stopped: bool,
    /// Whether the job drained its pipeline before it (`--drain`).
    pub drained: bool,
    /// The checkpoint it pins: its manifest, pointing at shared chunks.
    pub checkpoint: CheckpointManifest,
}

impl Savepoint {
    /// The job it was taken of.
    pub fn job(&self) -> &str {
        &self.checkpoint.job
    }
}

/// A savepoint operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    /// No savepoint has that ID or name.
    #[error("{0}")]
    NotFound(String),
    /// A name that is not allowed.
    #[error(transparent)]
    BadName(#[from] crate::names::NameError),
    /// A name already taken.
    #[error(
        "a savepoint named '{0}' already exists; choose another --name or dispose of the old one"
    )]
    NameTaken(String),
    /// A record of another format.
    #[error("savepoint record {path} is unreadable: {detail}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A record that does not parse, or whose ID is not a valid name.
    #[error("savepoint record {path} is unreadable")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why: the JSON or the name error.
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An I/O failure.
    #[error("savepoints: cannot {op} {path}")]
    Io {
        /// What it was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A checkpoint store failure (reading or copying chunks).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a user-given savepoint name (or ID): it becomes a file name, so
/// it may not contain a path separator, `..` or anything hidden.
pub fn check_name(name: &str) -> Result<(), SavepointError> {
    Ok(crate::names::check(
        crate::names::NameKind::Savepoint,
        name,
    )?)
}

/// A registry of savepoints.
pub trait SavepointStore: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> SavepointBackend;
    /// Where it is, for messages.
    fn location(&self) -> String;
    /// Every savepoint, oldest first.
    fn list(&self) -> Result<Vec<Savepoint>, SavepointError>;
    /// Adds one; its name must be free.
    fn put(&self, sp: &Savepoint) -> Result<(), SavepointError>;
    /// Fails with [`SavepointError::NameTaken`] when `sp`'s ID, or its
    /// name, is already another savepoint's ID or name. (The default
    /// reads every record; a store can answer with less.)
    fn check_free(&self, sp: &Savepoint) -> Result<(), SavepointError> {
        free_among(&self.list()?, sp)
    }
    /// Removes one by ID; `false` if there was none.
    fn remove(&self, id: &str) -> Result<bool, SavepointError>;
}

fn pin_of(sp: &Savepoint, registry: &dyn SavepointStore) -> Pin {
    Pin {
        format: PIN_FORMAT,
        savepoint: sp.id.clone(),
        registry: registry.location(),
        memory: registry.backend() == SavepointBackend::Memory,
        checkpoint: sp.checkpoint.clone(),
    }
}

/// Registers a savepoint: its pin in `store` first (from then on no
/// collection can take its chunks), then its record in `registry`. A
/// record that cannot be written (its name is taken) takes the pin back.
pub fn register(
    store: &CheckpointStore,
    registry: &dyn SavepointStore,
    sp: &Savepoint,
) -> Result<(), SavepointError> {
    registry.check_free(sp)?;
    let txn = begin(store);
    // Held until the pin is there: no collection in this process takes
    // them meanwhile (the manifest it copies may be retired already).
    sp.checkpoint.chunks().for_each(|c| txn.reuse(c));
    txn.put_pin(&pin_of(sp, registry))?;
    drop(txn);
    if let Err(e) = registry.put(sp) {
        store.delete_pin(&sp.id)?;
        return Err(e);
    }
    Ok(())
}

/// Disposes of a savepoint: removes its record, then its pin, then
/// collects the chunks nothing else references. Returns the savepoint and
/// the objects freed. Needs no operator code: state is host-owned bytes.
pub fn dispose(
    store: &CheckpointStore,
    registry: &dyn SavepointStore,
    id_or_name: &str,
) -> Result<(Savepoint, Vec<String>), SavepointError> {
    let sp = match find(registry, id_or_name) {
        Ok(sp) => {
            registry.remove(&sp.id)?;
            sp
        }
        // A pin whose record is gone (a crash between the two writes of
        // `register`, or a record deleted by hand): disposing of it by ID
        // frees its chunks.
        Err(e) => match store
            .list_pins()?
            .into_iter()
            .find(|p| p.savepoint == id_or_name)
        {
            Some(p) => Savepoint {
                format: SAVEPOINT_FORMAT,
                id: p.savepoint,
                name: None,
                backend: if p.memory {
                    SavepointBackend::Memory
                } else {
                    SavepointBackend::Filesystem
                },
                created_at_ms: p.checkpoint.triggered_at_ms,
                stopped: false,
                drained: false,
                checkpoint: p.checkpoint,
            },
            None => return Err(e),
        },
    };
    store.delete_pin(&sp.id)?;
    let freed = collect_garbage(store)?;
    Ok((sp, freed))
}

/// Gives every record in `registry` that has no pin in `store` one: the
/// savepoints of a registry written before pins existed, or whose pin a
/// crash between the two writes of [`register`] never made.
pub fn ensure_pins(
    store: &CheckpointStore,
    registry: &dyn SavepointStore,
) -> Result<usize, SavepointError> {
    let pinned: std::collections::HashSet<String> = store
        .list_pins()?
        .into_iter()
        .map(|p| p.savepoint)
        .collect();
    let txn = begin(store);
    let mut added = 0;
    for sp in registry.list()? {
        if !pinned.contains(&sp.id) {
            txn.put_pin(&pin_of(&sp, registry))?;
            added += 1;
        }
    }
    Ok(added)
}

/// Removes the pins of memory savepoints: called by the process that has
/// just taken the data directory's lock, so the process that held them is
/// gone, and so are they.
pub fn drop_memory_pins(store: &CheckpointStore) -> Result<usize, SavepointError> {
    let mut dropped = 0;
    for p in store.list_pins()? {
        if p.memory {
            store.delete_pin(&p.savepoint)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Finds a savepoint by ID or name.
pub fn find(store: &dyn SavepointStore, id_or_name: &str) -> Result<Savepoint, SavepointError> {
    store
        .list()?
        .into_iter()
        .find(|s| s.id == id_or_name || s.name.as_deref() == Some(id_or_name))
        .ok_or_else(|| {
            let mut msg = format!(
                "no savepoint '{id_or_name}' in {} ({})",
                store.location(),
                store.backend()
            );
            if id_or_name.starts_with("mem-") {
                msg.push_str(
                    "; it is a memory savepoint, which lived only in the wrun process that took it and is gone now that the process stopped. Use the filesystem backend ([savepoints] backend = \"filesystem\") for savepoints that outlive the process",
                );
            } else {
                msg.push_str("; `wrun savepoint list` shows the savepoints there");
            }
            SavepointError::NotFound(msg)
        })
}

pub(super) fn sorted(mut v: Vec<Savepoint>) -> Vec<Savepoint> {
    v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    v
}

pub(super) fn free_among(existing: &[Savepoint], sp: &Savepoint) -> Result<(), SavepointError> {
    check_name(&sp.id)?;
    if let Some(n) = &sp.name {
        check_name(n)?;
        if existing
            .iter()
            .any(|s| s.id != sp.id && (s.name.as_deref() == Some(n) || s.id == *n))
        {
            return Err(SavepointError::NameTaken(n.clone()));
        }
    }
    if existing.iter().any(|s| s.id == sp.id) {
        return Err(SavepointError::NameTaken(sp.id.clone()));
    }
    Ok(())
}

/// Savepoints in memory: held by the running wrun, gone when it stops.
#[derive(Debug, Default)]
pub struct MemorySavepoints {
    all: Mutex<BTreeMap<String, Savepoint>>,
}

impl SavepointStore for MemorySavepoints {
    fn backend(&self) -> SavepointBackend {
        SavepointBackend::Memory
    }
    fn location(&self) -> String {
        "the memory of this wrun process".into()
    }
    fn list(&self) -> Result<Vec<Savepoint>, SavepointError> {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        Ok(sorted(all.values().cloned().collect()))
    }
    fn put(&self, sp: &Savepoint) -> Result<(), SavepointError> {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        free_among(&all.values().cloned().collect::<Vec<_>>(), sp)?;
        all.insert(sp.id.clone(), sp.clone());
        Ok(())
    }
    fn remove(&self, id: &str) -> Result<bool, SavepointError> {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.remove(id).is_some())
    }
}

/// Savepoints as files `<id>.json` in one directory (a cap-std handle, so
/// no name reaches outside it).
#[derive(Debug)]
pub struct FsSavepoints {
    root: PathBuf,
    dir: Dir,
    lock: Mutex<()>,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SavepointError {
    let path = path.to_path_buf();
    move |error| SavepointError::Io { op, path, error }
}

fn write_atomic(dir: &Dir, root: &Path, name: &str, bytes: &[u8]) -> Result<(), SavepointError> {
    fsutil::write_atomic(dir, Path::new(name), bytes, true).map_err(io("write", &root.join(name)))
}

pub(super) fn parse_record(path: &Path, bytes: &[u8]) -> Result<Savepoint, SavepointError> {
    let unreadable = |error: Box<dyn std::error::Error + Send + Sync>| SavepointError::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let sp: Savepoint = serde_json::from_slice(bytes).map_err(|e| unreadable(e.into()))?;
    if sp.format != SAVEPOINT_FORMAT {
        return Err(SavepointError::BadRecord {
            path: path.to_path_buf(),
            detail: format!(
                "format {}, but this wrun reads format {SAVEPOINT_FORMAT}",
                sp.format
            ),
        });
    }
    crate::names::check(crate::names::NameKind::Savepoint, &sp.id)
        .map_err(|e| unreadable(e.into()))?;
    Ok(sp)
}

impl FsSavepoints {
    /// Opens (creating) the registry at `root`.
    pub fn open(root: &Path) -> Result<FsSavepoints, SavepointError> {
        std::fs::create_dir_all(root).map_err(io("create", root))?;
        let dir =
            Dir::open_ambient_dir(root, cap_std::ambient_authority()).map_err(io("open", root))?;
        Ok(FsSavepoints {
            root: root.to_path_buf(),
            dir,
            lock: Mutex::new(()),
        })
    }

    /// The file of a savepoint.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.json"))
    }

    /// Every record file (not temporary or hidden ones): its path, and
    /// its bytes when read.
    #[allow(clippy::type_complexity)]
    fn records(
        &self,
    ) -> Result<impl Iterator<Item = (PathBuf, Result<Vec<u8>, SavepointError>)> + '_, SavepointError>
    {
        let mut names = Vec::new();
        for e in self.dir.entries().map_err(io("list", &self.root))? {
            let e = e.map_err(io("list", &self.root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !(fsutil::is_temp(&name) || name.starts_with('.') || !name.ends_with(".json")) {
                names.push(name);
            }
        }
        Ok(names.into_iter().map(|name| {
            let path = self.root.join(&name);
            let bytes = self.dir.read(&name).map_err(io("read", &path));
            (path, bytes)
        }))
    }
}

impl SavepointStore for FsSavepoints {
    fn backend(&self) -> SavepointBackend {
        SavepointBackend::Filesystem
    }
    fn location(&self) -> String {
        self.root.display().to_string()
    }
    fn list(&self) -> Result<Vec<Savepoint>, SavepointError> {
        let mut out = Vec::new();
        for (path, bytes) in self.records()? {
            out.push(parse_record(&path, &bytes?)?);
        }
        Ok(sorted(out))
    }
    fn put(&self, sp: &Savepoint) -> Result<(), SavepointError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_free(sp)?;
        let bytes = serde_json::to_vec_pretty(sp).map_err(|e| SavepointError::Unreadable {
            path: self.path_of(&sp.id),
            error: e.into(),
        })?;
        write_atomic(&self.dir, &self.root, &format!("{}.json", sp.id), &bytes)
    }
    /// IDs are file names: an unnamed savepoint reads no record. A named
    /// one reads each record's `id` and `name` only (skipping the
    /// manifest), so registering stays cheap however many savepoints
    /// there are.
    fn check_free(&self, sp: &Savepoint) -> Result<(), SavepointError> {
        check_name(&sp.id)?;
        let exists = |id: &str| {
            let name = format!("{id}.json");
            self.dir
                .try_exists(&name)
                .map_err(io("read", &self.root.join(name)))
        };
        if exists(&sp.id)? {
            return Err(SavepointError::NameTaken(sp.id.clone()));
        }
        let Some(n) = &sp.name else {
            return Ok(());
        };
        check_name(n)?;
        if exists(n)? {
            return Err(SavepointError::NameTaken(n.clone()));
        }
        /// What a name check needs of a record.
        #[derive(Deserialize)]
        struct Head {
            id: String,
            name: Option<String>,
        }
        for (path, bytes) in self.records()? {
            let head: Head =
                serde_json::from_slice(&bytes?).map_err(|e| SavepointError::Unreadable {
                    path: path.clone(),
                    error: e.into(),
                })?;
            if head.id != sp.id && head.name.as_deref() == Some(n) {
                return Err(SavepointError::NameTaken(n.clone()));
            }
        }
        Ok(())
    }
    fn remove(&self, id: &str) -> Result<bool, SavepointError> {
        check_name(id)?;
        let name = format!("{id}.json");
        match self.dir.remove_file(&name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("delete", &self.root.join(name))(e)),
        }
    }
}

/// Copies every chunk `m` references from `from` into `txn` (verifying
/// each on the way) and points `m` at the copies. Returns the bytes copied.
fn copy_chunks(
    m: &mut crate::checkpoint::CheckpointManifest,
    from: &CheckpointStore,
    txn: &Txn<'_>,
) -> Result<u64, StoreError> {
    let mut copied: std::collections::HashMap<ChunkHash, crate::checkpoint::ChunkRef> =
        Default::default();
    let mut bytes = 0;
    m.relocate(|loc| -> Result<_, StoreError> {
        if let Some(r) = copied.get(&loc.chunk) {
            return Ok(r.clone());
        }
        let data = from.get_chunk(loc)?;
        bytes += data.len() as u64;
        let (r, _) = txn.put_chunk(&data)?;
        copied.insert(loc.chunk, r.clone());
        Ok(r)
    })?;
    txn.flush()?;
    Ok(bytes)
}

/// Writes a self-contained copy of `sp` into the new directory `dest`:
/// `savepoint.json` and the chunks, laid out as a checkpoint store of its
/// own (`segments/`), so the directory can be read as one. Every chunk is
/// verified on the way. Returns the bytes of chunks copied.
pub fn export(sp: &Savepoint, from: &CheckpointStore, dest: &Path) -> Result<u64, SavepointError> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(io("read", dest))?
            .next()
            .is_some()
    {
        return Err(SavepointError::Io {
            op: "export into",
            path: dest.to_path_buf(),
            error: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the directory is not empty; export into a new or empty directory",
            ),
        });
    }
    let to = CheckpointStore::open_dir(dest)?;
    let mut sp = sp.clone();
    let bytes = copy_chunks(&mut sp.checkpoint, from, &begin(&to))?;
    let dir =
        Dir::open_ambient_dir(dest, cap_std::ambient_authority()).map_err(io("open", dest))?;
    let record = serde_json::to_vec_pretty(&sp).map_err(|e| SavepointError::Unreadable {
        path: dest.join(EXPORT_RECORD),
        error: e.into(),
    })?;
    write_atomic(&dir, dest, EXPORT_RECORD, &record)?;
    Ok(bytes)
}

/// Reads an exported savepoint directory: its record and a store over its
/// chunks.
/// A savepoint, and the store holding its chunks when that is not the data
/// directory's.
pub type Found = (Savepoint, Option<Arc<CheckpointStore>>);

/// A savepoint in an exported directory (`spec` is its path), with a store
/// over its chunks; `None` when `spec` is no such directory.
pub fn exported(spec: &str) -> Result<Option<Found>, SavepointError> {
    let path = Path::new(spec);
    if !path.join(EXPORT_RECORD).is_file() {
        return Ok(None);
    }
    let (sp, chunks) = open_export(path)?;
    Ok(Some((sp, Some(Arc::new(chunks)))))
}

/// Finds the savepoint a job starts from: an exported directory, or an ID
/// or name in one of the registries.
pub fn resolve(
    spec: &str,
    registries: &[Arc<dyn SavepointStore>],
) -> Result<Found, SavepointError> {
    if let Some(found) = exported(spec)? {
        return Ok(found);
    }
    for r in registries {
        if let Some(sp) = r
            .list()?
            .into_iter()
            .find(|s| s.id == spec || s.name.as_deref() == Some(spec))
        {
            return Ok((sp, None));
        }
    }
    let searched: Vec<String> = registries
        .iter()
        .map(|r| format!("{} ({})", r.location(), r.backend()))
        .collect();
    let memory = if spec.starts_with("mem-") {
        "it is a memory savepoint, which lived only in the wrun process that took it and is gone now that the process stopped"
    } else {
        "if it was a memory savepoint ([savepoints] backend = \"memory\"), it lived only in the wrun process that took it and is gone once that process stopped"
    };
    Err(SavepointError::NotFound(format!(
        "no savepoint '{spec}' in {}, and no exported savepoint directory at that path; {memory}. `wrun savepoint list` shows the savepoints there; use the filesystem backend for savepoints that outlive the process",
        if searched.is_empty() {
            "any registry".to_string()
        } else {
            searched.join(", ")
        }
    )))
}

pub fn open_export(dir: &Path) -> Result<(Savepoint, CheckpointStore), SavepointError> {
    let path = dir.join(EXPORT_RECORD);
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let sp = parse_record(&path, &bytes)?;
    Ok((sp, CheckpointStore::open_dir(dir)?))
}

/// Imports an exported savepoint: copies (and verifies) its chunks into
/// `into` and registers it in `registry`, under `name` if given.
pub fn import(
    dir: &Path,
    into: &CheckpointStore,
    registry: &dyn SavepointStore,
    name: Option<String>,
) -> Result<Savepoint, SavepointError> {
    let (mut sp, from) = open_export(dir)?;
    if name.is_some() {
        sp.name = name;
    }
    sp.backend = registry.backend();
    registry.check_free(&sp)?;
    // The transaction holds the copies until the pin references them.
    let txn = begin(into);
    copy_chunks(&mut sp.checkpoint, &from, &txn)?;
    txn.put_pin(&pin_of(&sp, registry))?;
    drop(txn);
    if let Err(e) = registry.put(&sp) {
        into.delete_pin(&sp.id)?;
        return Err(e);
    }
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::causes as messages;

    #[test]
    fn io_and_json_errors_are_causes() {
        let dir = tempfile::tempdir().unwrap();
        let err = messages(&open_export(dir.path()).unwrap_err());
        assert_eq!(
            err[0],
            format!(
                "savepoints: cannot read {}",
                dir.path().join(EXPORT_RECORD).display()
            )
        );
        assert!(err[1].contains("No such file"), "{err:?}");
        std::fs::write(dir.path().join(EXPORT_RECORD), b"[").unwrap();
        let err = messages(&open_export(dir.path()).unwrap_err());
        assert!(err[0].ends_with("savepoint.json is unreadable"), "{err:?}");
        assert!(err[1].contains("EOF while parsing"), "{err:?}");
    }

    fn record(id: &str, name: Option<&str>) -> Savepoint {
        Savepoint {
            format: SAVEPOINT_FORMAT,
            id: id.into(),
            name: name.map(Into::into),
            backend: SavepointBackend::Filesystem,
            created_at_ms: 0,
            stopped: false,
            drained: false,
            checkpoint: CheckpointManifest::empty("job", crate::checkpoint::CheckpointId(1), 16),
        }
    }

    #[test]
    fn the_file_store_checks_names_as_the_records_say() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsSavepoints::open(dir.path()).unwrap();
        let mem = MemorySavepoints::default();
        for store in [&fs as &dyn SavepointStore, &mem] {
            store.put(&record("sp-a", Some("before"))).unwrap();
            store.put(&record("sp-b", None)).unwrap();
        }
        let taken = |sp: &Savepoint| {
            let by_fs = matches!(fs.check_free(sp), Err(SavepointError::NameTaken(_)));
            let by_list = matches!(mem.check_free(sp), Err(SavepointError::NameTaken(_)));
            assert_eq!(by_fs, by_list, "{sp:?}");
            by_fs
        };
        assert!(taken(&record("sp-a", None)), "an ID in use");
        assert!(taken(&record("sp-c", Some("before"))), "a name in use");
        assert!(
            taken(&record("sp-c", Some("sp-b"))),
            "another's ID as a name"
        );
        assert!(!taken(&record("sp-c", Some("after"))));
        assert!(!taken(&record("sp-c", None)));
        assert!(matches!(
            fs.put(&record("sp-d", Some("before"))),
            Err(SavepointError::NameTaken(n)) if n == "before"
        ));
        // An unreadable record blocks no unnamed savepoint (its ID is its
        // file name), and is named when a name must be checked.
        std::fs::write(dir.path().join("sp-x.json"), b"{").unwrap();
        fs.put(&record("sp-e", None)).unwrap();
        let err = fs.check_free(&record("sp-f", Some("n"))).unwrap_err();
        assert!(err.to_string().contains("sp-x.json"), "{err}");
    }

    #[test]
    fn names_cannot_escape_or_hide() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-flag",
            "a b",
            "x\0",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["v1", "before-upgrade_2026.11", "sp-wordcount-7-ab12"] {
            check_name(good).unwrap();
        }
    }
}
