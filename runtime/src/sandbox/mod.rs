//! The wasmtime side: one engine, components compiled once per digest and
//! cached on disk, one linker with the host side of every WIT interface,
//! and per-subtask stores with a memory limit and an epoch deadline per
//! call. Knows nothing of checkpoints or of the job graph's wiring.

mod batch_abi;
mod engine;
pub mod host;
mod instance;
mod limits;

pub use engine::{OperatorModule, SUPPORTED_WIT, Sandbox, SandboxConfig};
pub use instance::{CallLimits, OperatorInstance, SandboxError, SubtaskInfo};

/// Bindings generated from `wit/` for the `operator` world.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "operator",
        path: "../wit",
        imports: { default: trappable },
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::wrun::operator::types::{Event, OperatorSnapshot, StateFormat};
