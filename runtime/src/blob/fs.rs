//! Blobs in a local directory, rooted at one cap-std directory handle so no
//! key can reach outside it. An object is a file at its key's path.
//! Create-if-absent writes a temp file, fsyncs it and hard-links it under
//! its key (`link` fails if the name exists, so two writers can never both
//! create one key), then fsyncs the directory.

use super::{BlobError, BlobMeta, Blobs, Created, check_key, check_prefix};
use crate::fsutil;
use bytes::Bytes;
use cap_std::fs::Dir;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A directory of blobs.
#[derive(Debug)]
pub struct FsBlobs {
    root: PathBuf,
    dir: Dir,
}

impl FsBlobs {
    /// Opens (creating) the directory at `root`.
    pub fn open(root: &Path) -> Result<FsBlobs, BlobError> {
        let failed = |op, error: std::io::Error| BlobError::Failed {
            op,
            location: root.display().to_string(),
            error: error.into(),
        };
        std::fs::create_dir_all(root).map_err(|e| failed("create", e))?;
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())
            .map_err(|e| failed("open", e))?;
        Ok(FsBlobs {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn failed(&self, op: &'static str, key: &str) -> impl FnOnce(std::io::Error) -> BlobError {
        let location = self.location(key);
        move |e| {
            if e.kind() == std::io::ErrorKind::NotFound && matches!(op, "read") {
                BlobError::NotFound { location }
            } else {
                BlobError::Failed {
                    op,
                    location,
                    error: e.into(),
                }
            }
        }
    }

    fn create(&self, key: &str, bytes: &[u8]) -> std::io::Result<Created> {
        let rel = Path::new(key);
        let parent = rel.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() {
            self.dir.create_dir_all(parent)?;
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(fsutil::temp_name(&name));
        let linked = (|| {
            let mut f = self.dir.create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            self.dir.hard_link(&tmp, &self.dir, rel)
        })();
        let _ = self.dir.remove_file(&tmp);
        match linked {
            Ok(()) => {
                fsutil::sync_dir(&self.dir, parent)?;
                Ok(Created::New)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Created::Existed),
            Err(e) => Err(e),
        }
    }

    /// Walks `rel` (a directory) and collects every file under it whose
    /// key starts with `prefix`.
    fn walk(&self, rel: &Path, prefix: &str, out: &mut Vec<BlobMeta>) -> std::io::Result<()> {
        let at = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let entries = match self.dir.read_dir(at) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if fsutil::is_temp(&name) {
                continue;
            }
            let path = rel.join(&name);
            let key = path.to_string_lossy().into_owned();
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted while listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                // Only descend where keys below may match the prefix.
                let dir_key = format!("{key}/");
                if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                    self.walk(&path, prefix, out)?;
                }
            } else if key.starts_with(prefix) {
                out.push(BlobMeta {
                    key,
                    size: meta.len(),
                    modified: meta
                        .modified()
                        .map(|t| t.into_std())
                        .unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(())
    }
}

impl Blobs for FsBlobs {
    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<Created, BlobError> {
        check_key(key)?;
        self.create(key, &bytes).map_err(self.failed("write", key))
    }

    fn enforces_create(&self) -> bool {
        true
    }

    fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        check_key(key)?;
        self.dir
            .read(key)
            .map(Bytes::from)
            .map_err(self.failed("read", key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BlobError> {
        check_key(key)?;
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = self.dir.open(key)?;
            let len = f.metadata()?.len();
            if range.start > range.end || range.end > len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "bytes {}..{} asked for, but the file has {len}",
                        range.start, range.end
                    ),
                ));
            }
            f.seek(SeekFrom::Start(range.start))?;
            let mut buf = vec![0; (range.end - range.start) as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        read().map(Bytes::from).map_err(self.failed("read", key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError> {
        check_prefix(prefix)?;
        // Start at the deepest directory the prefix names whole.
        let start = match prefix.rfind('/') {
            Some(i) => Path::new(&prefix[..i]).to_path_buf(),
            None => PathBuf::new(),
        };
        let mut out = Vec::new();
        self.walk(&start, prefix, &mut out)
            .map_err(self.failed("list", prefix))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        match self.dir.remove_file(key) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.failed("delete", key)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBlobs::open(dir.path()).unwrap();
        super::super::tests::contract(&b);
        let err = b.get("gone").unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().join("gone").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn two_writers_of_one_key_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let b = std::sync::Arc::new(FsBlobs::open(dir.path()).unwrap());
        let results: Vec<Created> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u8)
                .map(|i| {
                    let b = b.clone();
                    s.spawn(move || b.put_if_absent("k", Bytes::from(vec![i; 1000])).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|c| **c == Created::New).count(), 1);
        let got = b.get("k").unwrap();
        assert!(
            got.iter().all(|x| *x == got[0]),
            "never a mix of two writes"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("k")]);
    }

    #[test]
    fn a_file_in_the_way_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let err = FsBlobs::open(&dir.path().join("file/store"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("file/store") && err.contains("cannot"),
            "{err}"
        );
    }
}
