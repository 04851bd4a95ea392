//! The data directory: one home for its layout, its lock, and the stores in
//! it. `wrun run`, `wrun serve`, the offline commands and the tests all
//! open it here, the same way.
//!
//! ```text
//! <data dir>/lock          flock held by the one process that writes here
//! <data dir>/modules/      uploaded components (module::ModuleStore)
//! <data dir>/cache/        compiled code, by engine and component digest
//! <data dir>/checkpoints/  chunks, manifests and savepoint pins (checkpoint::CheckpointStore)
//! <data dir>/savepoints/   the default savepoint registry (records)
//! <data dir>/jobs/         `wrun serve`'s job records
//! <data dir>/api.json      the endpoint of the API while a process serves it
//! <data dir>/api-token     the API's bearer token
//! ```
//!
//! A process that writes (runs jobs, disposes, imports) opens it with
//! [`DataDir::open`], which takes the lock, so only one process ever
//! collects garbage in the checkpoint store, and the store is opened once
//! per process, so all its writers share one transaction lock. Commands
//! that only read while a wrun runs use [`DataDir::open_read_only`].

use crate::blob::StateUrl;
use crate::checkpoint::{
    BlobSavepoints, CheckpointStore, FsSavepoints, MemorySavepoints, SavepointBackend,
    SavepointError, SavepointStore, StoreError,
};
use crate::job::SavepointSettings;
use crate::module::ModuleStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A data directory that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "data directory {} is in use by another wrun (pid {pid}); one wrun process per data directory: stop it, reach it with `wrun stop`/`wrun savepoint`, or use another --data-dir",
        dir.display()
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as written in the lock file.
        pid: String,
    },
    /// The directory or its lock file cannot be made or locked.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What it was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The checkpoint store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A savepoint registry.
    #[error(transparent)]
    Savepoints(#[from] SavepointError),
}

/// The exclusive lock on a data directory (`DIR/lock`, flock), released
/// when dropped or when the process dies.
#[derive(Debug)]
struct DirLock {
    _file: std::fs::File,
}

fn lock(dir: &Path) -> Result<DirLock, DataDirError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |error| DataDirError::Io { op, path, error }
    };
    std::fs::create_dir_all(dir).map_err(io("create data directory", dir))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            // Who holds it, for the next one's message.
            let _ = file.set_len(0);
            let _ =
                std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes());
            Ok(DirLock { _file: file })
        }
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            Err(DataDirError::InUse {
                dir: dir.to_path_buf(),
                pid: match pid.trim() {
                    "" => "unknown".into(),
                    p => p.into(),
                },
            })
        }
        Err(e) => Err(DataDirError::Io {
            op: "lock",
            path,
            error: e.into(),
        }),
    }
}

/// The savepoint registries a process knows: where savepoints are looked
/// up by ID or name and listed. (What keeps their chunks is their pins in
/// the checkpoint store, not this list.)
#[derive(Clone, Default)]
pub struct Registries(Arc<Mutex<Vec<Arc<dyn SavepointStore>>>>);

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all().iter().map(|r| r.location()))
            .finish()
    }
}

impl Registries {
    /// These registries.
    pub fn new(v: Vec<Arc<dyn SavepointStore>>) -> Registries {
        Registries(Arc::new(Mutex::new(v)))
    }

    /// Adds one, unless one at the same location is there; returns the one
    /// that is.
    pub fn add(&self, r: Arc<dyn SavepointStore>) -> Arc<dyn SavepointStore> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = v.iter().find(|x| x.location() == r.location()) {
            return x.clone();
        }
        v.push(r.clone());
        r
    }

    /// All of them now.
    pub fn all(&self) -> Vec<Arc<dyn SavepointStore>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An open data directory.
pub struct DataDir {
    root: PathBuf,
    lock: Option<DirLock>,
    modules: ModuleStore,
    store: Arc<CheckpointStore>,
    memory: Arc<dyn SavepointStore>,
    filesystem: Arc<dyn SavepointStore>,
    /// With `--state-url`: the registry in the state store, the default.
    shared: Option<Arc<dyn SavepointStore>>,
    registries: Registries,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("root", &self.root)
            .field("locked", &self.lock.is_some())
            .finish()
    }
}

impl DataDir {
    /// Opens (creating) a data directory to write to: takes its lock,
    /// drops the pins of memory savepoints (their process is gone, or we
    /// could not have the lock), and pins the default registry's
    /// savepoints that have no pin yet.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        DataDir::open_at(root, None)
    }

    /// [`DataDir::open`] with checkpoints and pins at `state` instead of
    /// `<root>/checkpoints`. On a store other processes may share (an
    /// object store), the pins of memory savepoints are left alone: they
    /// may be another live process's.
    pub fn open_at(root: &Path, state: Option<&StateUrl>) -> Result<DataDir, DataDirError> {
        let lock = lock(root)?;
        let mut d = DataDir::open_read_only_at(root, state)?;
        d.lock = Some(lock);
        if !d.store.shared() {
            crate::checkpoint::drop_memory_pins(d.store.as_ref())?;
        }
        crate::checkpoint::ensure_pins(d.store.as_ref(), d.filesystem.as_ref())?;
        Ok(d)
    }

    /// Opens a data directory to read, without its lock (a running wrun
    /// may hold it). Nothing opened this way may write to the checkpoint
    /// store or the registries.
    pub fn open_read_only(root: &Path) -> Result<DataDir, DataDirError> {
        DataDir::open_read_only_at(root, None)
    }

    /// [`DataDir::open_read_only`] with checkpoints at `state`.
    pub fn open_read_only_at(
        root: &Path,
        state: Option<&StateUrl>,
    ) -> Result<DataDir, DataDirError> {
        let store = match state {
            Some(url) => CheckpointStore::open(url)?,
            None => CheckpointStore::open_dir(&root.join("checkpoints"))?,
        };
        let store = Arc::new(store);
        let memory: Arc<dyn SavepointStore> = Arc::new(MemorySavepoints::default());
        let filesystem: Arc<dyn SavepointStore> =
            Arc::new(FsSavepoints::open(&root.join("savepoints"))?);
        // A store named by URL may be shared with other processes (a
        // fleet): savepoints are recorded in it, where all of them look.
        let shared: Option<Arc<dyn SavepointStore>> = state.map(|_| {
            Arc::new(BlobSavepoints::new(store.blobs().clone())) as Arc<dyn SavepointStore>
        });
        let mut all = vec![memory.clone()];
        all.extend(shared.clone());
        all.push(filesystem.clone());
        Ok(DataDir {
            root: root.to_path_buf(),
            lock: None,
            // With a store named by URL, modules are shared through it too.
            modules: match state {
                Some(_) => ModuleStore::new(root).with_shared(store.blobs().clone()),
                None => ModuleStore::new(root),
            },
            store,
            registries: Registries::new(all),
            memory,
            filesystem,
            shared,
        })
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The uploaded modules.
    pub fn modules(&self) -> &ModuleStore {
        &self.modules
    }

    /// The checkpoint store: chunks, manifests, pins. One per process.
    pub fn store(&self) -> Arc<CheckpointStore> {
        self.store.clone()
    }

    /// Where `wrun serve` keeps its job records.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// The default savepoint registry: in the state store when one was
    /// named (`--state-url`), else `<data dir>/savepoints`.
    pub fn default_savepoints(&self) -> Arc<dyn SavepointStore> {
        self.shared
            .clone()
            .unwrap_or_else(|| self.filesystem.clone())
    }

    /// Every registry this process knows, for lookups and lists.
    pub fn registries(&self) -> Registries {
        self.registries.clone()
    }

    /// The registry a job's `[savepoints]` settings name. A directory of
    /// its own is opened once per process, joins [`Self::registries`], and
    /// (when this process writes) gets pins for any of its savepoints that
    /// have none.
    pub fn savepoints_for(
        &self,
        settings: &SavepointSettings,
    ) -> Result<Arc<dyn SavepointStore>, DataDirError> {
        Ok(match (settings.backend, &settings.dir) {
            (SavepointBackend::Memory, _) => self.memory.clone(),
            (SavepointBackend::Filesystem | SavepointBackend::Shared, None) => {
                self.default_savepoints()
            }
            (SavepointBackend::Shared, Some(_)) => self.default_savepoints(),
            (SavepointBackend::Filesystem, Some(dir)) => self.registry_at(dir)?,
        })
    }

    /// The filesystem registry at `dir` (the default one when `dir` is the
    /// data directory's own).
    pub fn registry_at(&self, dir: &Path) -> Result<Arc<dyn SavepointStore>, DataDirError> {
        let r: Arc<dyn SavepointStore> = Arc::new(FsSavepoints::open(dir)?);
        let r = self.registries.add(r);
        if self.lock.is_some() {
            crate::checkpoint::ensure_pins(self.store.as_ref(), r.as_ref())?;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_per_data_directory() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        let err = DataDir::open(t.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another wrun"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        DataDir::open_read_only(t.path()).unwrap();
        drop(d);
        DataDir::open(t.path()).unwrap();
    }

    #[test]
    fn memory_pins_die_with_their_process() {
        use crate::checkpoint::{CheckpointId, CheckpointManifest, PIN_FORMAT, Pin};
        let t = tempfile::tempdir().unwrap();
        let pin = |id: &str, memory| Pin {
            format: PIN_FORMAT,
            savepoint: id.into(),
            registry: "r".into(),
            memory,
            checkpoint: CheckpointManifest::empty("j", CheckpointId(1), 1),
        };
        {
            let d = DataDir::open(t.path()).unwrap();
            let txn = crate::checkpoint::begin(d.store.as_ref());
            txn.put_pin(&pin("mem-j-1-aa", true)).unwrap();
            txn.put_pin(&pin("sp-j-1-aa", false)).unwrap();
        }
        let d = DataDir::open(t.path()).unwrap();
        let left: Vec<String> = d
            .store()
            .list_pins()
            .unwrap()
            .into_iter()
            .map(|p| p.savepoint)
            .collect();
        assert_eq!(left, vec!["sp-j-1-aa".to_string()]);
    }
}
