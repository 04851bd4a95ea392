//! The host side of every interface a guest may import: one file per WIT
//! interface, each implementing the generated `Host` trait on
//! [`SubtaskData`], plus WASI with nothing granted.

mod log;
mod state;
mod wasi;

use super::bindings;
use super::limits::Limiter;
use crate::state::KeyedState;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What one subtask's store holds: its keyed state, its limits, and a WASI
/// context that grants nothing.
pub struct SubtaskData {
    pub(crate) state: KeyedState,
    pub(crate) limiter: Limiter,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// "uid[subtask]", for logs and errors.
    pub(crate) who: Arc<str>,
    /// The last panic message a guest logged, attached to its trap.
    pub(crate) last_panic: Option<String>,
}

impl SubtaskData {
    /// Fresh data for a subtask with the given state.
    pub fn new(who: Arc<str>, state: KeyedState, memory_bytes: usize) -> SubtaskData {
        SubtaskData {
            state,
            limiter: Limiter {
                memory_bytes,
                table_elements: 1_000_000,
                used: 0,
            },
            wasi: wasi::locked_down(&who),
            table: ResourceTable::new(),
            who,
            last_panic: None,
        }
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

impl bindings::wrun::operator::types::Host for SubtaskData {}

/// Adds `wrun:operator/*` and WASI to a linker.
pub fn add_to_linker(linker: &mut Linker<SubtaskData>) -> wasmtime::Result<()> {
    bindings::Operator::add_to_linker::<_, HasSelf<_>>(linker, |d| d)?;
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    Ok(())
}
