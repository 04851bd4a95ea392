//! The per-store resource limiter: caps linear memory and tables, and says
//! which limit was hit in words a user can act on.

/// A guest tried to grow its memory past the job's limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the guest tried to grow its memory to {} MiB, but the limit is {} MiB (raise `limits.memory-mb` in the job manifest if the operator really needs it)", requested / (1024 * 1024), limit / (1024 * 1024))]
pub struct MemoryLimitExceeded {
    /// Bytes all the store's memories would hold.
    pub requested: usize,
    /// The limit in bytes.
    pub limit: usize,
}

/// Limits one store's memories and tables. The memory limit is on the sum
/// of all the store's linear memories, so a component with many memories
/// gets no more than one with a single memory.
#[derive(Debug)]
pub struct Limiter {
    pub(crate) memory_bytes: usize,
    pub(crate) table_elements: usize,
    /// Linear memory of all the store's memories now, in bytes.
    pub(crate) used: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: total,
                limit: self.memory_bytes,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        1000
    }

    fn tables(&self) -> usize {
        1000
    }

    fn memories(&self) -> usize {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_limit_counts_every_memory_of_the_store() {
        let mut l = Limiter {
            memory_bytes: 10 << 20,
            table_elements: 10,
            used: 0,
        };
        // A first memory of 6 MiB, then a second of 6 MiB: 12 MiB in all.
        assert!(l.memory_growing(0, 6 << 20, None).unwrap());
        let err = l.memory_growing(0, 6 << 20, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("grow its memory to 12 MiB, but the limit is 10 MiB"),
            "{err}"
        );
        // The first one may still grow within the limit.
        assert!(l.memory_growing(6 << 20, 9 << 20, None).unwrap());
        assert_eq!(l.used, 9 << 20);
    }
}
