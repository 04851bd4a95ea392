//! The host side of every interface a guest may import: one file per WIT
//! interface, each implementing the generated `Host` trait on
//! [`SubtaskData`], plus WASI with nothing granted.

mod log;
mod state;
pub(crate) mod timers;
mod wasi;

use super::bindings;
use super::limits::Limiter;
use crate::state::{KeyedState, TimerQueue};
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What one subtask's store holds: its keyed state and timers, the time
/// the executor last told it, its limits, and a WASI context that grants
/// nothing.
pub struct SubtaskData {
    pub(crate) state: KeyedState,
    pub(crate) timers: TimerQueue,
    /// The subtask's watermark (ms), `None` before the first.
    pub(crate) watermark: Option<i64>,
    /// The job's clock, Unix ms.
    pub(crate) now_ms: i64,
    pub(crate) limiter: Limiter,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// "uid[subtask]", for logs and errors.
    pub(crate) who: Arc<str>,
    /// The last panic message a guest logged, attached to its trap.
    pub(crate) last_panic: Option<String>,
}

impl SubtaskData {
    /// Fresh data for a subtask with the given state (and the timers in it).
    pub fn new(
        who: Arc<str>,
        state: KeyedState,
        memory_bytes: usize,
    ) -> Result<SubtaskData, crate::state::StateError> {
        let timers = TimerQueue::restore(&state, state.limits().max_timers)?;
        Ok(SubtaskData {
            state,
            timers,
            watermark: None,
            now_ms: 0,
            limiter: Limiter {
                memory_bytes,
                table_elements: 1_000_000,
                used: 0,
            },
            wasi: wasi::locked_down(&who),
            table: ResourceTable::new(),
            who,
            last_panic: None,
        })
    }

    /// The subtask's keyed state.
    pub fn state(&self) -> &KeyedState {
        &self.state
    }
}

impl WasiView for SubtaskData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::v1::wrun::operator::types::Host for SubtaskData {}
impl bindings::v2::wrun::operator::types::Host for SubtaskData {}

/// Adds `wrun:operator/*` of every supported version and WASI to a linker.
pub fn add_to_linker(linker: &mut Linker<SubtaskData>) -> wasmtime::Result<()> {
    bindings::v1::Operator::add_to_linker::<_, HasSelf<_>>(linker, |d| d)?;
    bindings::v2::Operator::add_to_linker::<_, HasSelf<_>>(linker, |d| d)?;
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    Ok(())
}
