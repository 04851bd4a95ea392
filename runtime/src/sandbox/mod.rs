//! The wasmtime side: one engine, components compiled once per digest and
//! cached on disk, one linker with the host side of every WIT interface,
//! and per-subtask stores with a memory limit and an epoch deadline per
//! call. Knows nothing of checkpoints or of the job graph's wiring.

mod batch_abi;
mod engine;
pub mod host;
mod instance;
mod limits;
mod packed;

pub use engine::{OperatorModule, SUPPORTED_WIT, Sandbox, SandboxConfig, WitVersion};
pub use instance::{CallLimits, Description, OperatorInstance, SandboxError, SubtaskInfo};

/// Bindings generated from `wit/` for the `operator` world, one module per
/// supported `wrun:operator` version.
pub(crate) mod bindings {
    /// `wrun:operator@0.1.0` (`wit/0.1.0/`): events as `list<event>`.
    pub(crate) mod v1 {
        wasmtime::component::bindgen!({
            world: "operator",
            path: "../wit/0.1.0",
            imports: { default: trappable },
            additional_derives: [PartialEq, Eq],
        });
    }
    /// `wrun:operator@0.2.0` (`wit/`): packed events, timers, named outputs.
    pub(crate) mod v2 {
        wasmtime::component::bindgen!({
            world: "operator",
            path: "../wit",
            imports: { default: trappable },
            additional_derives: [PartialEq, Eq],
        });
    }
}

pub use bindings::v2::wrun::operator::types::{OperatorSnapshot, StateFormat};
