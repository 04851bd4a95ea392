//! Blobs in memory, for unit tests: with faults on demand (every write
//! failing as on a full disk, an object's bytes changed behind the store's
//! back, an object aged past a grace period).

use super::{BlobError, BlobMeta, Blobs, Created, check_key, check_prefix};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// What runs before a listing, with its prefix (a test's interleaving).
type ListHook = Box<dyn FnMut(&str) + Send>;

/// Objects in a map.
#[derive(Default)]
pub struct MemBlobs {
    objects: Mutex<BTreeMap<String, (Bytes, SystemTime)>>,
    fail_writes: AtomicBool,
    before_list: Mutex<Option<ListHook>>,
}

impl std::fmt::Debug for MemBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemBlobs")
    }
}

impl MemBlobs {
    /// Makes every later write fail (or succeed again).
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Replaces an object's bytes (to simulate corruption).
    pub fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        let mut o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = o.get_mut(key) {
            entry.0 = Bytes::from(bytes);
        }
    }

    /// Makes every object look `by` older than it is.
    pub fn age(&self, by: Duration) {
        let mut o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        for (_, at) in o.values_mut() {
            *at = at.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH);
        }
    }

    /// Runs `hook` before every listing, with its prefix: a test puts
    /// other writers' steps between a reader's listings with it.
    pub fn before_list(&self, hook: ListHook) {
        *self.before_list.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Every key, for tests that look at what is stored.
    pub fn keys(&self) -> Vec<String> {
        let o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        o.keys().cloned().collect()
    }

    fn get_object(&self, key: &str) -> Result<Bytes, BlobError> {
        check_key(key)?;
        let o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        o.get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| BlobError::NotFound {
                location: self.location(key),
            })
    }
}

impl Blobs for MemBlobs {
    fn location(&self, key: &str) -> String {
        format!("memory:{key}")
    }

    fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<Created, BlobError> {
        check_key(key)?;
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(BlobError::Failed {
                op: "write",
                location: self.location(key),
                error: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                )
                .into(),
            });
        }
        let mut o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        if o.contains_key(key) {
            return Ok(Created::Existed);
        }
        o.insert(key.to_string(), (bytes, SystemTime::now()));
        Ok(Created::New)
    }

    fn enforces_create(&self) -> bool {
        true
    }

    fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        self.get_object(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BlobError> {
        let b = self.get_object(key)?;
        if range.start > range.end || range.end > b.len() as u64 {
            return Err(BlobError::Failed {
                op: "read",
                location: self.location(key),
                error: format!(
                    "bytes {}..{} asked for, but the object has {}",
                    range.start,
                    range.end,
                    b.len()
                )
                .into(),
            });
        }
        Ok(b.slice(range.start as usize..range.end as usize))
    }

    fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError> {
        check_prefix(prefix)?;
        // Taken out while it runs: the hook may use this store.
        let hook = self
            .before_list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut h) = hook {
            h(prefix);
            let mut slot = self.before_list.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(h);
            }
        }
        let o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(o.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, at))| BlobMeta {
                key: k.clone(),
                size: b.len() as u64,
                modified: *at,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let mut o = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        o.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_and_faults() {
        let b = MemBlobs::default();
        super::super::tests::contract(&b);
        b.fail_writes(true);
        let err = crate::report::causes(&b.put_if_absent("n", Bytes::new()).unwrap_err());
        assert_eq!(
            err,
            vec!["cannot write memory:n", "no space left on device"]
        );
        b.fail_writes(false);
        b.put_if_absent("n", Bytes::from_static(b"abc")).unwrap();
        b.overwrite("n", b"xyz".to_vec());
        assert_eq!(&b.get("n").unwrap()[..], b"xyz");
        let before = b.list("n").unwrap()[0].modified;
        b.age(Duration::from_secs(60));
        assert!(b.list("n").unwrap()[0].modified < before);
    }
}
