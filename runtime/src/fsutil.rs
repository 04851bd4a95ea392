//! Writing a file so a crash leaves the old version or the new one, never
//! half of either: temp file, fsync, rename, fsync of the directory.
//!
//! Every store in wrun (checkpoint chunks and manifests, savepoint
//! records and pins, job records, the API token and endpoint) writes
//! through here. This module sits below every other layer.

use cap_std::fs::Dir;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A temp file name no other write in any process uses at the same time:
/// two jobs of one `wrun serve` writing the same chunk must not share one.
pub fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a directory entry is a temp file of [`write_atomic`] (left by a
/// crash; never read, safe to delete).
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Writes `bytes` at `rel` inside `dir`, creating its parent directories.
/// With `durable`, the file is fsynced before the rename and the directory
/// after it; without, the caller makes it durable later (the checkpoint
/// store syncs a whole checkpoint's chunks at once).
pub fn write_atomic(dir: &Dir, rel: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    if !parent.as_os_str().is_empty() {
        dir.create_dir_all(parent)?;
    }
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(temp_name(&name));
    let written = (|| {
        let mut f = dir.create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        dir.rename(&tmp, dir, rel)
    })();
    if let Err(e) = written {
        let _ = dir.remove_file(&tmp);
        return Err(e);
    }
    if durable {
        sync_dir(dir, parent)?;
    }
    Ok(())
}

/// Fsyncs the directory `rel` inside `dir`, so renames into it are durable.
pub fn sync_dir(dir: &Dir, rel: &Path) -> std::io::Result<()> {
    let d = if rel.as_os_str().is_empty() {
        dir.open(".")?
    } else {
        dir.open_dir(rel)?.open(".")?
    };
    d.sync_all()
}

/// [`write_atomic`] for a path outside any store (the API token, the
/// endpoint file, job records): opens the parent directory and writes
/// durably into it.
pub fn write_atomic_path(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)?;
    let dir = Dir::open_ambient_dir(parent, cap_std::ambient_authority())?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    write_atomic(&dir, Path::new(name), bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_leave_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(t.path(), cap_std::ambient_authority()).unwrap();
        write_atomic(&dir, Path::new("a/b/c.json"), b"one", true).unwrap();
        write_atomic(&dir, Path::new("a/b/c.json"), b"two", false).unwrap();
        assert_eq!(std::fs::read(t.path().join("a/b/c.json")).unwrap(), b"two");
        write_atomic_path(&t.path().join("top"), b"x").unwrap();
        let names: Vec<String> = std::fs::read_dir(t.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["c.json".to_string()]);
    }

    #[test]
    fn temp_names_are_unique_per_write() {
        let a = temp_name("x");
        let b = temp_name("x");
        assert_ne!(a, b);
        assert!(is_temp(&a) && !is_temp("x.json"));
    }
}
