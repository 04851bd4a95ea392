//! One subtask's instance: a `Store` with its limits and the calls into the
//! guest, each under an epoch deadline, each failure turned into an error
//! that names the operator, the subtask and the call.

use super::batch_abi::{GuestBatch, LiftedBatch};
use super::bindings::Operator;
use super::bindings::wrun::operator::types;
use super::engine::{OperatorModule, SUPPORTED_WIT, Sandbox};
use super::host::SubtaskData;
use super::limits::MemoryLimitExceeded;
use super::{OperatorSnapshot, StateFormat};
use crate::batch::Batch;
use crate::state::{KeyedState, StateError};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Func, TypedFunc};
use wasmtime::{Store, Trap, WasmBacktrace};

/// `process`, typed for host batches (see [`super::batch_abi`]).
type ProcessFn<'a> = TypedFunc<(GuestBatch<'a>,), (Result<LiftedBatch, types::Error>,)>;
/// `close`, typed for host batches.
type CloseFn = TypedFunc<(), (Result<LiftedBatch, types::Error>,)>;

/// Everything that can go wrong loading or running a component.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be created.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// Not a component.
    #[error("module {digest} is not a WebAssembly component: {detail}")]
    NotAComponent {
        /// Its digest.
        digest: String,
        /// Why.
        detail: String,
    },
    /// A component that does not export the operator interface.
    #[error("module {digest} does not implement the wrun:operator world: it exports [{}], but an operator must export wrun:operator/handler@{SUPPORTED_WIT}.x (see docs/wit.md)", exports.join(", "))]
    NotAnOperator {
        /// Its digest.
        digest: String,
        /// What it exports.
        exports: Vec<String>,
    },
    /// An operator built against a WIT version this runtime does not speak.
    #[error(
        "module {digest} implements wrun:operator@{found}, which this wrun does not support (it supports {SUPPORTED_WIT}.x); rebuild the operator against a supported wrun-guest version"
    )]
    UnsupportedVersion {
        /// Its digest.
        digest: String,
        /// The version found.
        found: String,
    },
    /// An import the host does not provide.
    #[error(
        "module {digest} imports {import}, which wrun does not provide: an operator may import only wrun:operator/* and wasi:*"
    )]
    UnsupportedImport {
        /// Its digest.
        digest: String,
        /// The import.
        import: String,
    },
    /// Linking failed (e.g. a WASI interface version the host lacks).
    #[error("module {digest} cannot be linked: {detail}")]
    Link {
        /// Its digest.
        digest: String,
        /// Why.
        detail: String,
    },
    /// The guest trapped.
    #[error("operator {who} trapped in {call}: {}{detail}", panic.as_ref().map(|p| format!("guest panicked at {p}\n  ")).unwrap_or_default())]
    Trap {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// The trap and backtrace.
        detail: String,
        /// The guest's panic message, when it logged one.
        panic: Option<String>,
    },
    /// A call ran past its deadline.
    #[error(
        "operator {who} timed out in {call}: the call did not return within {ms} ms (`limits.call-timeout-ms`); an operator must not loop forever or block"
    )]
    Timeout {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// The limit.
        ms: u64,
    },
    /// The guest hit its memory limit.
    #[error("operator {who} failed in {call}: {error}")]
    MemoryLimit {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// The limit hit.
        error: MemoryLimitExceeded,
    },
    /// The guest misused keyed state.
    #[error("operator {who} failed in {call}: {error}")]
    State {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// The misuse.
        error: StateError,
    },
    /// The guest returned an error.
    #[error("operator {who} returned an error from {call}: {message}")]
    Guest {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// Its message.
        message: String,
    },
    /// Too many output events for one batch.
    #[error(
        "operator {who} emitted {got} events from one call of {call}; the limit is {limit} (`limits.max-output-events`)"
    )]
    OutputTooLarge {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// How many.
        got: usize,
        /// The limit.
        limit: usize,
    },
}

/// What a subtask is told when it is opened.
#[derive(Debug, Clone)]
pub struct SubtaskInfo {
    /// The uid (or vertex name).
    pub uid: String,
    /// Subtask index.
    pub subtask_index: u32,
    /// Operator parallelism.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// JSON config bytes.
    pub config: Vec<u8>,
    /// Whether state was restored.
    pub restored: bool,
    /// The restored state's format.
    pub restored_format: Option<StateFormat>,
}

/// Per-subtask limits.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit of one call.
    pub call_timeout: Duration,
    /// Most events one call may return.
    pub max_output_events: usize,
}

/// A live subtask instance.
pub struct OperatorInstance {
    store: Store<SubtaskData>,
    op: Operator,
    /// `process`, type-checked as [`ProcessFn`] at instantiation.
    process: Func,
    /// `close`, type-checked as [`CloseFn`] at instantiation.
    close: CloseFn,
    who: Arc<str>,
    deadline_ticks: u64,
    limits: CallLimits,
}

impl OperatorInstance {
    /// Instantiates the module for one subtask, with `state` as its keyed
    /// state.
    pub fn instantiate(
        sandbox: &Sandbox,
        module: &OperatorModule,
        info: &SubtaskInfo,
        limits: CallLimits,
        state: KeyedState,
    ) -> Result<OperatorInstance, SandboxError> {
        let who: Arc<str> = format!("{}[{}]", info.uid, info.subtask_index).into();
        let mut store = Store::new(
            &sandbox.engine,
            SubtaskData::new(who.clone(), state, limits.memory_bytes),
        );
        store.limiter(|d| &mut d.limiter);
        store.epoch_deadline_trap();
        let tick = sandbox.epoch_tick().as_nanos().max(1);
        let deadline_ticks = (limits.call_timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1;
        store.set_epoch_deadline(deadline_ticks);
        let linked = module
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let op = Operator::new(&mut store, &instance)?;
                let (process, close) = batch_funcs(&mut store, &instance, module)?;
                Ok((op, process, close))
            });
        let (op, process, close) = match linked {
            Ok(parts) => parts,
            Err(e) => {
                let mut inst_err = |e| classify(&mut store, &who, limits, "instantiate", e);
                return Err(inst_err(e));
            }
        };
        Ok(OperatorInstance {
            store,
            op,
            process,
            close,
            who,
            deadline_ticks,
            limits,
        })
    }

    /// Linear memory the instance holds now (all its memories), in bytes.
    pub fn linear_memory_bytes(&self) -> usize {
        self.store.data().limiter.used
    }

    /// "uid[subtask]".
    pub fn who(&self) -> &str {
        &self.who
    }

    /// The subtask's keyed state.
    pub fn state(&self) -> &KeyedState {
        &self.store.data().state
    }

    /// The subtask's keyed state, for snapshots.
    pub fn state_mut(&mut self) -> &mut KeyedState {
        &mut self.store.data_mut().state
    }

    fn arm(&mut self) {
        // A panic message belongs to the call it happened in.
        self.store.data_mut().last_panic = None;
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    fn fail(&mut self, call: &'static str, e: wasmtime::Error) -> SandboxError {
        classify(&mut self.store, &self.who, self.limits, call, e)
    }

    fn guest_err(&self, call: &'static str, e: types::Error) -> SandboxError {
        SandboxError::Guest {
            who: self.who.to_string(),
            call,
            message: e.message,
        }
    }

    fn check_output(&self, call: &'static str, out: &Batch) -> Result<(), SandboxError> {
        if out.len() > self.limits.max_output_events {
            return Err(SandboxError::OutputTooLarge {
                who: self.who.to_string(),
                call,
                got: out.len(),
                limit: self.limits.max_output_events,
            });
        }
        Ok(())
    }

    /// `declared-format`.
    pub fn declared_format(&mut self) -> Result<StateFormat, SandboxError> {
        self.arm();
        let r = self
            .op
            .wrun_operator_handler()
            .call_declared_format(&mut self.store);
        r.map_err(|e| self.fail("declared-format", e))
    }

    /// `restore`, with non-keyed state from a snapshot.
    pub fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<(), SandboxError> {
        self.arm();
        let r = self
            .op
            .wrun_operator_handler()
            .call_restore(&mut self.store, snapshot);
        r.map_err(|e| self.fail("restore", e))?
            .map_err(|e| self.guest_err("restore", e))
    }

    /// `open`.
    pub fn open(&mut self, info: &SubtaskInfo) -> Result<(), SandboxError> {
        let ctx = types::Context {
            uid: info.uid.clone(),
            subtask_index: info.subtask_index,
            parallelism: info.parallelism,
            max_parallelism: info.max_parallelism,
            config: info.config.clone(),
            restored: info.restored,
            restored_format: info.restored_format.clone(),
        };
        self.arm();
        let r = self
            .op
            .wrun_operator_handler()
            .call_open(&mut self.store, &ctx);
        r.map_err(|e| self.fail("open", e))?
            .map_err(|e| self.guest_err("open", e))
    }

    /// `process`: one batch in, the emitted events out.
    pub fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        self.arm();
        // SAFETY: `batch_funcs` type-checked `process` as `ProcessFn` when
        // the instance was created; only the lifetime differs.
        let f: ProcessFn<'_> = unsafe { TypedFunc::new_unchecked(self.process) };
        let r = f.call(&mut self.store, (GuestBatch(batch),));
        let (out,) = r.map_err(|e| self.fail("process", e))?;
        let LiftedBatch(out) = out.map_err(|e| self.guest_err("process", e))?;
        self.check_output("process", &out)?;
        Ok(out)
    }

    /// `close`: the final events.
    pub fn close(&mut self) -> Result<Batch, SandboxError> {
        self.arm();
        let r = self.close.call(&mut self.store, ());
        let (out,) = r.map_err(|e| self.fail("close", e))?;
        let LiftedBatch(out) = out.map_err(|e| self.guest_err("close", e))?;
        self.check_output("close", &out)?;
        Ok(out)
    }

    /// `snapshot`: the non-keyed state, if any.
    pub fn snapshot(&mut self) -> Result<Option<OperatorSnapshot>, SandboxError> {
        self.arm();
        let r = self
            .op
            .wrun_operator_handler()
            .call_snapshot(&mut self.store);
        r.map_err(|e| self.fail("snapshot", e))?
            .map_err(|e| self.guest_err("snapshot", e))
    }
}

/// The handler's `process` and `close`, type-checked for host batches.
fn batch_funcs(
    store: &mut Store<SubtaskData>,
    instance: &wasmtime::component::Instance,
    module: &OperatorModule,
) -> wasmtime::Result<(Func, CloseFn)> {
    let handler = module
        .exports
        .iter()
        .find(|e| e.starts_with("wrun:operator/handler@"))
        .ok_or_else(|| wasmtime::format_err!("the component exports no wrun:operator/handler"))?;
    let iface = instance
        .get_export_index(&mut *store, None, handler)
        .ok_or_else(|| wasmtime::format_err!("the component exports no {handler}"))?;
    let func = |store: &mut Store<SubtaskData>, name: &str| {
        instance
            .get_export_index(&mut *store, Some(&iface), name)
            .and_then(|i| instance.get_func(&mut *store, i))
            .ok_or_else(|| wasmtime::format_err!("{handler} has no `{name}` function"))
    };
    let process = func(store, "process")?;
    process.typed::<(GuestBatch<'static>,), (Result<LiftedBatch, types::Error>,)>(&*store)?;
    let close = func(store, "close")?.typed(&*store)?;
    Ok((process, close))
}

fn classify(
    store: &mut Store<SubtaskData>,
    who: &str,
    limits: CallLimits,
    call: &'static str,
    e: wasmtime::Error,
) -> SandboxError {
    let who = who.to_string();
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return SandboxError::MemoryLimit {
            who,
            call,
            error: MemoryLimitExceeded {
                requested: m.requested,
                limit: m.limit,
            },
        };
    }
    let e = match e.downcast::<StateError>() {
        Ok(error) => return SandboxError::State { who, call, error },
        Err(e) => e,
    };
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return SandboxError::Timeout {
            who,
            call,
            ms: limits.call_timeout.as_millis() as u64,
        };
    }
    let panic = store.data_mut().last_panic.take();
    let trap = match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => {
            "the guest's stack overflowed (deep or unbounded recursion)".to_string()
        }
        Some(Trap::UnreachableCodeReached) if panic.is_some() => {
            "the guest aborted after its panic".to_string()
        }
        Some(Trap::MemoryOutOfBounds) => format!(
            "{}; in Rust and C guests a stack overflow shows up like this too, when deep recursion runs off the stack kept in linear memory",
            Trap::MemoryOutOfBounds
        ),
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    let detail = match e.downcast_ref::<WasmBacktrace>() {
        Some(bt) => format!(
            "{trap}\n  {}",
            bt.to_string().trim_end().replace('\n', "\n  ")
        ),
        None => trap,
    };
    SandboxError::Trap {
        who,
        call,
        detail,
        panic,
    }
}
