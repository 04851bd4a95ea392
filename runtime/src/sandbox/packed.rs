//! Events of `wrun:operator@0.2.0` across the boundary, through wasmtime's
//! public typed-function API.
//!
//! [`EventsIn`] lowers a host [`Batch`] as the WIT `events` record straight
//! from the batch's own buffer and the offsets the caller keeps
//! ([`PackedLists`]): five lists, five guest allocations, whatever the
//! batch's size. [`EmittedOut`] lifts the guest's `emitted` record as five
//! vectors and the outputs list; [`into_batches`] then takes the data
//! vector as the main output batch's buffer, checking every offset (a
//! guest wrote them).

use crate::batch::{Batch, PackedError, PackedLists};
use wasmtime::component::{ComponentType, Lift, Lower};

/// `record events`, borrowed from a host batch.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct EventsIn<'a> {
    data: &'a [u8],
    #[component(name = "key-ends")]
    key_ends: &'a [u32],
    #[component(name = "value-ends")]
    value_ends: &'a [u32],
    flags: &'a [u8],
    timestamps: &'a [i64],
}

impl<'a> EventsIn<'a> {
    /// `batch` with the lists `write_packed` filled for it.
    pub(super) fn new(batch: &'a Batch, lists: &'a PackedLists) -> EventsIn<'a> {
        EventsIn {
            data: batch.bytes(),
            key_ends: &lists.key_ends,
            value_ends: &lists.value_ends,
            flags: &lists.flags,
            timestamps: &lists.timestamps,
        }
    }
}

/// `record events`, lifted.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct EventsOut {
    data: Vec<u8>,
    #[component(name = "key-ends")]
    key_ends: Vec<u32>,
    #[component(name = "value-ends")]
    value_ends: Vec<u32>,
    flags: Vec<u8>,
    timestamps: Vec<i64>,
}

/// `record emitted`, lifted.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct EmittedOut {
    events: EventsOut,
    outputs: Vec<u8>,
}

/// Why a guest's `emitted` was refused.
#[derive(Debug, thiserror::Error)]
pub enum EmittedError {
    /// The packed events break the rules.
    #[error("invalid packed events: {0}")]
    Packed(#[from] PackedError),
    /// `outputs` has the wrong length.
    #[error("{outputs} output indices for {events} events (give one per event, or none)")]
    OutputsLength {
        /// Indices given.
        outputs: usize,
        /// Events emitted.
        events: usize,
    },
    /// An output index the operator did not declare.
    #[error(
        "event {index} goes to output {output}, but the operator declares {named} named outputs (`describe`)"
    )]
    UnknownOutput {
        /// The event.
        index: usize,
        /// Its output.
        output: u8,
        /// How many named outputs there are.
        named: usize,
    },
}

impl EmittedOut {
    /// How many events it holds.
    pub(super) fn len(&self) -> usize {
        self.events.key_ends.len()
    }
}

/// The emitted events as batches: the main output's, and one per named
/// output (`named` of them, empty ones included).
pub(super) fn into_batches(
    e: EmittedOut,
    named: usize,
    scratch: &mut PackedLists,
) -> Result<(Batch, Vec<Batch>), EmittedError> {
    let EventsOut {
        data,
        key_ends,
        value_ends,
        flags,
        timestamps,
    } = e.events;
    *scratch = PackedLists {
        key_ends,
        value_ends,
        flags,
        timestamps,
    };
    let n = scratch.key_ends.len();
    if e.outputs.is_empty() {
        return Ok((Batch::from_packed(data, scratch)?, Vec::new()));
    }
    if e.outputs.len() != n {
        return Err(EmittedError::OutputsLength {
            outputs: e.outputs.len(),
            events: n,
        });
    }
    if let Some((index, &output)) = e
        .outputs
        .iter()
        .enumerate()
        .find(|(_, o)| **o as usize > named)
    {
        return Err(EmittedError::UnknownOutput {
            index,
            output,
            named,
        });
    }
    let mut batches = vec![Batch::default(); named + 1];
    Batch::split_packed(&data, scratch, &e.outputs, &mut batches)?;
    let main = batches.remove(0);
    Ok((main, batches))
}
