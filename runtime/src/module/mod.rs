//! The module store: components addressed by the blake3 digest of their
//! bytes, optionally named `name@version`, and the resolution of a
//! manifest's component references to bytes. [`push`] validates an upload
//! (size, component or core module with an embedded type, the
//! `wrun:operator` world), compiles it once and stores it.

mod load;
mod push;
mod shared;

pub use load::{LoadError, load_modules};
pub use push::{ModuleInfo, PushError, Pushed, push};

use crate::job::ComponentRef;
use std::path::{Path, PathBuf};

pub use crate::ids::Digest;

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.hex())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blake3:{}", self.hex())
    }
}

/// Why a component could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A path in the manifest that cannot be read.
    #[error("cannot read component {path}{}", hint_for(path))]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A digest not in the store.
    #[error(
        "no module {digest} in the module store {dir}; push it with `wrun module push FILE`, or reference the component by its .wasm path instead"
    )]
    UnknownDigest {
        /// The digest.
        digest: String,
        /// The store.
        dir: PathBuf,
    },
    /// A name not in the store.
    #[error(
        "no module named {name}@{version} in the module store {dir}; push it with `wrun module push FILE --name {name} --version {version}`, or reference the component by its .wasm path instead"
    )]
    UnknownName {
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// The store.
        dir: PathBuf,
    },
    /// A stored module whose bytes no longer match its digest.
    #[error(
        "module file {path} is corrupt: its blake3 is {actual}, not the {expected} it is stored under; push the component again"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// `name@version` already names other bytes.
    #[error(
        "{name}@{version} already names {existing}; versions are immutable: push under a new version"
    )]
    NameTaken {
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// The digest it names.
        existing: String,
    },
    /// A digest prefix that matches several modules.
    #[error("{prefix} matches {count} modules; give more digits of the digest")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many it matches.
        count: usize,
    },
    /// Store I/O.
    #[error("module store: cannot use {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error (or the JSON error of a record, as invalid data).
        #[source]
        error: std::io::Error,
    },
}

fn hint_for(path: &Path) -> &'static str {
    if path.to_string_lossy().contains("target/guests") {
        "\n  hint: the example components are built by `cargo xtask guests` (the README's commands run it)"
    } else {
        ""
    }
}

/// Components on disk under `<data dir>/modules` (mirrored into a
/// shared store in a fleet: `shared.rs`).
#[derive(Debug, Clone)]
pub struct ModuleStore {
    dir: PathBuf,
    shared: Option<std::sync::Arc<dyn crate::blob::Blobs>>,
}

impl ModuleStore {
    /// The store under a data directory (created on first write).
    pub fn new(data_dir: &Path) -> ModuleStore {
        ModuleStore {
            dir: data_dir.join("modules"),
            shared: None,
        }
    }

    /// This store, mirrored into `shared` (under `modules/`).
    pub fn with_shared(mut self, shared: std::sync::Arc<dyn crate::blob::Blobs>) -> ModuleStore {
        self.shared = Some(shared);
        self
    }

    /// Whether `hex` is a digest's 64 lowercase hex digits (and so safe
    /// in a file name).
    fn valid_hex(hex: &str) -> bool {
        Digest::parse(hex).is_some()
    }

    /// Whether a module name or version can be a file name here (the
    /// rules of a manifest's `name@version`).
    fn valid_name(s: &str) -> bool {
        crate::names::check(crate::names::NameKind::Module, s).is_ok()
    }

    fn blob(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{hex}.wasm"))
    }

    fn name_file(&self, name: &str, version: &str) -> PathBuf {
        self.dir.join("names").join(name).join(version)
    }

    /// Stores bytes (a no-op when already there, intact) and returns
    /// their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, ModuleError> {
        let digest = Digest::of(bytes);
        let path = self.blob(&digest.hex());
        if self.get(&digest.hex()).is_err() {
            write_atomic(&path, bytes)?;
        }
        self.publish(&path, bytes)?;
        Ok(digest)
    }

    /// Names a stored digest `name@version`; a name is given once: naming
    /// other bytes with it fails with [`ModuleError::NameTaken`], also when
    /// two pushes race.
    pub fn name(&self, name: &str, version: &str, digest: Digest) -> Result<(), ModuleError> {
        if !Self::valid_name(name) || !Self::valid_name(version) {
            return Err(ModuleError::UnknownName {
                name: name.to_string(),
                version: version.to_string(),
                dir: self.dir.clone(),
            });
        }
        let path = self.name_file(name, version);
        let io = |e| ModuleError::Io {
            path: path.clone(),
            error: e,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(crate::fsutil::temp_name(version));
        std::fs::write(&tmp, digest.hex()).map_err(io)?;
        // The first link wins; a later one sees what it says.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => self.publish_name(&path, name, version, digest),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match self.named(name, version)? {
                    Some(h) if h == digest.hex() => self.publish_name(&path, name, version, digest),
                    Some(h) => Err(ModuleError::NameTaken {
                        name: name.to_string(),
                        version: version.to_string(),
                        existing: format!("blake3:{h}"),
                    }),
                    None => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Reads the file `path_of(hex)` of a stored module; a digest that is
    /// not 64 lowercase hex digits, or a missing file, is an unknown module.
    fn read_of(
        &self,
        hex: &str,
        path_of: impl Fn(&Self, &str) -> PathBuf,
    ) -> Result<(PathBuf, Vec<u8>), ModuleError> {
        let unknown = || ModuleError::UnknownDigest {
            digest: format!("blake3:{hex}"),
            dir: self.dir.clone(),
        };
        if !Self::valid_hex(hex) {
            return Err(unknown());
        }
        let path = path_of(self, hex);
        match std::fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.fetch(&path)? {
                Some(bytes) => Ok((path, bytes)),
                None => Err(unknown()),
            },
            Err(e) => Err(ModuleError::Io { path, error: e }),
        }
    }

    /// Reads a stored module, verifying its digest.
    pub fn get(&self, hex: &str) -> Result<Vec<u8>, ModuleError> {
        let (path, bytes) = self.read_of(hex, Self::blob)?;
        let actual = Digest::of(&bytes).hex();
        if actual != hex {
            return Err(ModuleError::Corrupt {
                path,
                expected: format!("blake3:{hex}"),
                actual: format!("blake3:{actual}"),
            });
        }
        Ok(bytes)
    }

    fn meta_file(&self, hex: &str) -> PathBuf {
        self.dir.join("meta").join(format!("{hex}.json"))
    }

    /// The digest `name@version` names, if any.
    pub fn named(&self, name: &str, version: &str) -> Result<Option<String>, ModuleError> {
        if !Self::valid_name(name) || !Self::valid_name(version) {
            return Ok(None);
        }
        let f = self.name_file(name, version);
        match std::fs::read_to_string(&f) {
            Ok(hex) => Ok(Some(hex.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self
                .fetch(&f)?
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())),
            Err(e) => Err(ModuleError::Io { path: f, error: e }),
        }
    }

    /// Every `name@version` and the digest it names, sorted.
    pub fn names(&self) -> Result<Vec<(String, String, String)>, ModuleError> {
        self.sync("names")?;
        let dir = self.dir.join("names");
        let mut out = Vec::new();
        let io = |path: &Path, e| ModuleError::Io {
            path: path.to_path_buf(),
            error: e,
        };
        let names = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&dir, e)),
        };
        for n in names {
            let n = n.map_err(|e| io(&dir, e))?;
            let name = n.file_name().to_string_lossy().to_string();
            for v in std::fs::read_dir(n.path()).map_err(|e| io(&n.path(), e))? {
                let v = v.map_err(|e| io(&n.path(), e))?;
                let version = v.file_name().to_string_lossy().to_string();
                if version.starts_with('.') {
                    continue;
                }
                let hex = std::fs::read_to_string(v.path()).map_err(|e| io(&v.path(), e))?;
                out.push((name.clone(), version, hex.trim().to_string()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Records what validation found out about a stored module.
    pub fn put_info(&self, info: &ModuleInfo) -> Result<(), ModuleError> {
        let bytes = serde_json::to_vec_pretty(info).map_err(|e| ModuleError::Io {
            path: self.meta_file(&info.hex()),
            error: std::io::Error::other(e),
        })?;
        write_atomic(&self.meta_file(&info.hex()), &bytes)?;
        self.publish(&self.meta_file(&info.hex()), &bytes)
    }

    /// What is recorded about a stored module (its names filled in).
    pub fn info(&self, hex: &str) -> Result<ModuleInfo, ModuleError> {
        let (path, bytes) = self.read_of(hex, Self::meta_file)?;
        let mut info: ModuleInfo = serde_json::from_slice(&bytes).map_err(|e| ModuleError::Io {
            path: path.clone(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        info.names = self
            .names()?
            .into_iter()
            .filter(|(_, _, h)| h == hex)
            .map(|(n, v, _)| format!("{n}@{v}"))
            .collect();
        Ok(info)
    }

    /// Every pushed module, oldest first.
    pub fn list(&self) -> Result<Vec<ModuleInfo>, ModuleError> {
        self.sync("meta")?;
        let dir = self.dir.join("meta");
        let entries = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ModuleError::Io {
                    path: dir,
                    error: e,
                });
            }
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| ModuleError::Io {
                path: dir.clone(),
                error: e,
            })?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(hex) = name.strip_suffix(".json")
                && !name.starts_with('.')
            {
                out.push(self.info(hex)?);
            }
        }
        out.sort_by(|a, b| (a.pushed_at_ms, &a.digest).cmp(&(b.pushed_at_ms, &b.digest)));
        Ok(out)
    }

    /// The digest (hex) a user's reference means: `name@version`,
    /// `blake3:<hex>`, or a unique hex prefix of at least 8 digits.
    pub fn lookup(&self, spec: &str) -> Result<String, ModuleError> {
        let unknown = || ModuleError::UnknownDigest {
            digest: spec.to_string(),
            dir: self.dir.clone(),
        };
        if let Some((name, version)) = spec.split_once('@') {
            return self
                .named(name, version)?
                .ok_or_else(|| ModuleError::UnknownName {
                    name: name.to_string(),
                    version: version.to_string(),
                    dir: self.dir.clone(),
                });
        }
        let prefix = spec.strip_prefix("blake3:").unwrap_or(spec);
        if prefix.len() < 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let matches: Vec<String> = self
            .list()?
            .into_iter()
            .map(|i| i.hex())
            .filter(|h| h.starts_with(prefix))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(unknown()),
            _ => Err(ModuleError::Ambiguous {
                prefix: spec.to_string(),
                count: matches.len(),
            }),
        }
    }

    /// Resolves a manifest reference to the component's bytes.
    pub fn resolve(&self, r: &ComponentRef) -> Result<Vec<u8>, ModuleError> {
        match r {
            ComponentRef::Path(p) => std::fs::read(p).map_err(|e| ModuleError::Read {
                path: p.clone(),
                error: e,
            }),
            ComponentRef::Digest(hex) => self.get(hex),
            ComponentRef::Named { name, version } => {
                let hex = self
                    .named(name, version)?
                    .ok_or_else(|| ModuleError::UnknownName {
                        name: name.clone(),
                        version: version.clone(),
                        dir: self.dir.clone(),
                    })?;
                self.get(&hex)
            }
        }
    }
}

/// Writes a file so readers never see a partial one (see [`crate::fsutil`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModuleError> {
    crate::fsutil::write_atomic_path(path, bytes).map_err(|error| ModuleError::Io {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_failure_keeps_the_io_error_as_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let missing = dir.path().join("op.wasm");
        let err = store
            .resolve(&ComponentRef::Path(missing.clone()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read component {}", missing.display())
        );
        let cause = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the I/O error is the source");
        assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);
        let hex = "a".repeat(64);
        std::fs::create_dir_all(store.meta_file(&hex).parent().unwrap()).unwrap();
        std::fs::write(store.meta_file(&hex), b"{").unwrap();
        let err = store.info(&hex).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "module store: cannot use {}",
                store.meta_file(&hex).display()
            )
        );
        let cause = std::error::Error::source(&err).expect("the record's error is the source");
        assert!(cause.to_string().contains("EOF while parsing"), "{cause}");
    }

    #[test]
    fn references_cannot_leave_the_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        let store = ModuleStore::new(&dir.path().join("data"));
        for spec in [
            "..@../../secret",
            "a@../../../secret",
            "blake3:../../secret",
            "../../secret",
        ] {
            let err = store.lookup(spec).unwrap_err();
            assert!(
                matches!(
                    err,
                    ModuleError::UnknownName { .. } | ModuleError::UnknownDigest { .. }
                ),
                "{spec}: {err}"
            );
        }
        assert!(store.get("../../secret").is_err());
        assert!(store.info("../../secret").is_err());
        let d = store.put(b"abc").unwrap();
        assert!(store.name("../x", "1", d).is_err());
    }

    #[test]
    fn a_name_is_given_once_and_a_corrupt_copy_is_repaired_by_putting_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let a = store.put(b"a").unwrap();
        let b = store.put(b"b").unwrap();
        store.name("op", "1", a).unwrap();
        store.name("op", "1", a).unwrap();
        let err = store.name("op", "1", b).unwrap_err();
        assert!(matches!(err, ModuleError::NameTaken { .. }), "{err}");
        std::fs::write(store.blob(&a.hex()), b"z").unwrap();
        assert!(store.get(&a.hex()).is_err());
        store.put(b"a").unwrap();
        assert_eq!(store.get(&a.hex()).unwrap(), b"a");
    }

    #[test]
    fn put_get_name_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(dir.path());
        let d = store.put(b"abc").unwrap();
        assert_eq!(store.put(b"abc").unwrap(), d, "same bytes, same digest");
        store.name("op", "1", d).unwrap();
        assert_eq!(
            store
                .resolve(&ComponentRef::Named {
                    name: "op".into(),
                    version: "1".into()
                })
                .unwrap(),
            b"abc"
        );
        std::fs::write(store.blob(&d.hex()), b"abd").unwrap();
        let err = store.get(&d.hex()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let err = store
            .resolve(&ComponentRef::Named {
                name: "nope".into(),
                version: "2".into(),
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("reference the component by its .wasm path"),
            "{err}"
        );
    }
}
