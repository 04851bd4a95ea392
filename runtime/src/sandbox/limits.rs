//! The per-store resource limiter: caps linear memory and tables, and says
//! which limit was hit in words a user can act on.

/// A guest tried to grow its memory past the job's limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the guest tried to grow its memory to {} MiB, but the limit is {} MiB (raise `limits.memory-mb` in the job manifest if the operator really needs it)", requested / (1024 * 1024), limit / (1024 * 1024))]
pub struct MemoryLimitExceeded {
    /// Bytes asked for.
    pub requested: usize,
    /// The limit in bytes.
    pub limit: usize,
}

/// Limits one store's memories and tables.
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
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: desired,
                limit: self.memory_bytes,
            }));
        }
        self.used = self.used.saturating_add(desired.saturating_sub(current));
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
