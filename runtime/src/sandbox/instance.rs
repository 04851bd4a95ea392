//! One subtask's instance: a `Store` with its limits and the calls into the
//! guest, each under an epoch deadline, each failure turned into an error
//! that names the operator, the subtask and the call. A module of either
//! supported contract version runs behind the same methods.

use super::batch_abi::{GuestBatch, LiftedBatch};
use super::bindings::{v1, v2};
use super::engine::{ModulePre, OperatorModule, Sandbox, supported_wit};
use super::host::SubtaskData;
use super::limits::MemoryLimitExceeded;
use super::packed::{EmittedError, EmittedOut, EventsIn, into_batches};
use super::{OperatorSnapshot, StateFormat};
use crate::batch::{Batch, PackedLists};
use crate::state::{Domain, KeyedState, StateError, Timer};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Func, TypedFunc};
use wasmtime::{Store, Trap, WasmBacktrace};

/// 0.1 `process`, typed for host batches (see [`super::batch_abi`]).
type ProcessV1<'a> =
    TypedFunc<(GuestBatch<'a>,), (Result<LiftedBatch, v1::wrun::operator::types::Error>,)>;
/// 0.1 `close`, typed for host batches.
type CloseV1 = TypedFunc<(), (Result<LiftedBatch, v1::wrun::operator::types::Error>,)>;
/// 0.2 `process`.
type ProcessV2<'a> =
    TypedFunc<(EventsIn<'a>,), (Result<EmittedOut, v2::wrun::operator::types::Error>,)>;
/// 0.2 `on-timers`.
type OnTimersV2 = TypedFunc<
    (v2::wrun::operator::types::Timers,),
    (Result<EmittedOut, v2::wrun::operator::types::Error>,),
>;
/// 0.2 `close`.
type CloseV2 = TypedFunc<(), (Result<EmittedOut, v2::wrun::operator::types::Error>,)>;

/// Most timers handed to one `on-timers` call.
const TIMERS_PER_CALL: usize = 1024;
/// Most rounds of firing for one advance of time: a guest that registers
/// already-due timers from every `on-timers` call would otherwise keep the
/// subtask firing forever.
const MAX_FIRING_ROUNDS: usize = 100_000;

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
    #[error("module {digest} does not implement the wrun:operator world: it exports [{}], but an operator must export wrun:operator/handler of version {} (see docs/wit.md)", exports.join(", "), supported_wit())]
    NotAnOperator {
        /// Its digest.
        digest: String,
        /// What it exports.
        exports: Vec<String>,
    },
    /// An operator built against a WIT version this runtime does not speak.
    #[error(
        "module {digest} implements wrun:operator@{found}, which this wrun does not support (it supports {}); rebuild the operator against a supported wrun-guest version",
        supported_wit()
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
    /// The guest emitted events that break the packed format's rules.
    #[error("operator {who} returned malformed events from {call}: {error}")]
    Emitted {
        /// "uid[subtask]".
        who: String,
        /// The guest function.
        call: &'static str,
        /// What is wrong.
        error: EmittedError,
    },
    /// A call that the module's contract version does not have.
    #[error("operator {who}: {call} needs wrun:operator@0.2 or later; the module implements 0.1")]
    NotInVersion {
        /// "uid[subtask]".
        who: String,
        /// The call.
        call: &'static str,
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

/// What a module says about itself (`describe`; a 0.1 module has no named
/// outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The state format it writes.
    pub format: StateFormat,
    /// Its named outputs besides the main one.
    pub outputs: Vec<String>,
}

/// The guest's exports, per contract version.
enum Api {
    V1 {
        op: v1::Operator,
        /// `process`, type-checked as [`ProcessV1`] at instantiation.
        process: Func,
        close: CloseV1,
    },
    V2 {
        op: v2::Operator,
        /// `process`, type-checked as [`ProcessV2`] at instantiation.
        process: Func,
        on_timers: OnTimersV2,
        close: CloseV2,
        /// Offsets of the batch being lowered, kept between calls.
        lists: PackedLists,
        /// How many named outputs the module declared.
        named: usize,
    },
}

/// A live subtask instance.
pub struct OperatorInstance {
    store: Store<SubtaskData>,
    api: Api,
    /// Events of named outputs from the last call, one batch per output.
    side: Vec<Batch>,
    who: Arc<str>,
    deadline_ticks: u64,
    limits: CallLimits,
}

impl OperatorInstance {
    /// Instantiates the module for one subtask, with `state` as its keyed
    /// state (and the timers kept in it).
    pub fn instantiate(
        sandbox: &Sandbox,
        module: &OperatorModule,
        info: &SubtaskInfo,
        limits: CallLimits,
        state: KeyedState,
    ) -> Result<OperatorInstance, SandboxError> {
        let who: Arc<str> = format!("{}[{}]", info.uid, info.subtask_index).into();
        let data = SubtaskData::new(who.clone(), state, limits.memory_bytes).map_err(|error| {
            SandboxError::State {
                who: who.to_string(),
                call: "restore",
                error,
            }
        })?;
        let mut store = Store::new(&sandbox.engine, data);
        store.limiter(|d| &mut d.limiter);
        store.epoch_deadline_trap();
        let tick = sandbox.epoch_tick().as_nanos().max(1);
        let deadline_ticks = (limits.call_timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1;
        store.set_epoch_deadline(deadline_ticks);
        let linked = link(&mut store, module);
        let api = match linked {
            Ok(api) => api,
            Err(e) => return Err(classify(&mut store, &who, limits, "instantiate", e)),
        };
        Ok(OperatorInstance {
            store,
            api,
            side: Vec::new(),
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

    /// How many timers are pending.
    pub fn pending_timers(&self) -> usize {
        self.store.data().timers.len()
    }

    fn arm(&mut self) {
        // A panic message belongs to the call it happened in.
        self.store.data_mut().last_panic = None;
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    fn fail(&mut self, call: &'static str, e: wasmtime::Error) -> SandboxError {
        classify(&mut self.store, &self.who, self.limits, call, e)
    }

    fn guest_err(&self, call: &'static str, message: String) -> SandboxError {
        SandboxError::Guest {
            who: self.who.to_string(),
            call,
            message,
        }
    }

    fn check_output(&self, call: &'static str, events: usize) -> Result<(), SandboxError> {
        if events > self.limits.max_output_events {
            return Err(SandboxError::OutputTooLarge {
                who: self.who.to_string(),
                call,
                got: events,
                limit: self.limits.max_output_events,
            });
        }
        Ok(())
    }

    /// A 0.2 call's `emitted`, as the main output's batch; the named
    /// outputs' go to `self.side`.
    fn emitted(&mut self, call: &'static str, out: EmittedOut) -> Result<Batch, SandboxError> {
        self.check_output(call, out.len())?;
        let Api::V2 { lists, named, .. } = &mut self.api else {
            unreachable!("emitted is only lifted from 0.2 modules")
        };
        let (main, side) =
            into_batches(out, *named, lists).map_err(|error| SandboxError::Emitted {
                who: self.who.to_string(),
                call,
                error,
            })?;
        self.side = side;
        Ok(main)
    }

    /// Tells the instance the watermark and the job's clock (Unix ms) that
    /// its next calls see (`timers.current-watermark`,
    /// `timers.processing-time`).
    pub fn set_time(&mut self, watermark: Option<i64>, now_ms: i64) {
        let d = self.store.data_mut();
        d.watermark = watermark;
        d.now_ms = now_ms;
        d.state.set_clock(watermark, now_ms);
    }

    /// Removes expired keyed state (of states with a time to live): about
    /// `budget` entries' worth, from where the last call stopped, or all
    /// of it with `None`.
    pub fn expire_state(&mut self, budget: Option<usize>) -> Result<usize, SandboxError> {
        let state = &mut self.store.data_mut().state;
        if !state.has_ttl() {
            return Ok(0);
        }
        state.expire(budget).map_err(|error| SandboxError::State {
            who: self.who.to_string(),
            call: "expire",
            error,
        })
    }

    /// `describe` (0.1: `declared-format`, and no named outputs).
    pub fn describe(&mut self) -> Result<Description, SandboxError> {
        self.arm();
        match &self.api {
            Api::V1 { op, .. } => {
                let r = op
                    .wrun_operator_handler()
                    .call_declared_format(&mut self.store);
                let f = r.map_err(|e| self.fail("declared-format", e))?;
                Ok(Description {
                    format: StateFormat {
                        name: f.name,
                        version: f.version,
                    },
                    outputs: Vec::new(),
                })
            }
            Api::V2 { op, .. } => {
                let r = op.wrun_operator_handler().call_describe(&mut self.store);
                let d = r.map_err(|e| self.fail("describe", e))?;
                if d.outputs.len() > u8::MAX as usize {
                    return Err(self.guest_err(
                        "describe",
                        format!(
                            "it declares {} named outputs; at most 255 are allowed",
                            d.outputs.len()
                        ),
                    ));
                }
                if let Api::V2 { named, .. } = &mut self.api {
                    *named = d.outputs.len();
                }
                Ok(Description {
                    format: d.format,
                    outputs: d.outputs,
                })
            }
        }
    }

    /// `restore`, with non-keyed state from a snapshot.
    pub fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<(), SandboxError> {
        self.arm();
        let r = match &self.api {
            Api::V1 { op, .. } => {
                let s = v1::wrun::operator::types::OperatorSnapshot {
                    format: v1::wrun::operator::types::StateFormat {
                        name: snapshot.format.name.clone(),
                        version: snapshot.format.version,
                    },
                    data: snapshot.data.clone(),
                };
                op.wrun_operator_handler()
                    .call_restore(&mut self.store, &s)
                    .map(|r| r.map_err(|e| e.message))
            }
            Api::V2 { op, .. } => op
                .wrun_operator_handler()
                .call_restore(&mut self.store, snapshot)
                .map(|r| r.map_err(|e| e.message)),
        };
        r.map_err(|e| self.fail("restore", e))?
            .map_err(|m| self.guest_err("restore", m))
    }

    /// `open`.
    pub fn open(&mut self, info: &SubtaskInfo) -> Result<(), SandboxError> {
        self.arm();
        let r = match &self.api {
            Api::V1 { op, .. } => {
                use v1::wrun::operator::types as t;
                let ctx = t::Context {
                    uid: info.uid.clone(),
                    subtask_index: info.subtask_index,
                    parallelism: info.parallelism,
                    max_parallelism: info.max_parallelism,
                    config: info.config.clone(),
                    restored: info.restored,
                    restored_format: info.restored_format.as_ref().map(|f| t::StateFormat {
                        name: f.name.clone(),
                        version: f.version,
                    }),
                };
                op.wrun_operator_handler()
                    .call_open(&mut self.store, &ctx)
                    .map(|r| r.map_err(|e| e.message))
            }
            Api::V2 { op, .. } => {
                let ctx = v2::wrun::operator::types::Context {
                    uid: info.uid.clone(),
                    subtask_index: info.subtask_index,
                    parallelism: info.parallelism,
                    max_parallelism: info.max_parallelism,
                    config: info.config.clone(),
                    restored: info.restored,
                    restored_format: info.restored_format.clone(),
                };
                op.wrun_operator_handler()
                    .call_open(&mut self.store, &ctx)
                    .map(|r| r.map_err(|e| e.message))
            }
        };
        r.map_err(|e| self.fail("open", e))?
            .map_err(|m| self.guest_err("open", m))?;
        // `open` set the times to live: refresh times of states that have
        // none now go, and restored entries that expired go at once.
        let state = &mut self.store.data_mut().state;
        state
            .drop_stale_ttl()
            .map_err(|error| SandboxError::State {
                who: self.who.to_string(),
                call: "open",
                error,
            })?;
        self.expire_state(None).map(drop)
    }

    /// `process`: one batch in, the main output's events out (the named
    /// outputs' wait in [`OperatorInstance::take_side_outputs`]).
    pub fn process(&mut self, batch: &Batch) -> Result<Batch, SandboxError> {
        self.arm();
        match &mut self.api {
            Api::V1 { process, .. } => {
                // SAFETY: `link` type-checked `process` as `ProcessV1` when
                // the instance was created; only the lifetime differs.
                let f: ProcessV1<'_> = unsafe { TypedFunc::new_unchecked(*process) };
                let r = f.call(&mut self.store, (GuestBatch(batch),));
                let (out,) = r.map_err(|e| self.fail("process", e))?;
                let LiftedBatch(out) = out.map_err(|e| self.guest_err("process", e.message))?;
                self.check_output("process", out.len())?;
                Ok(out)
            }
            Api::V2 { process, lists, .. } => {
                let process = *process;
                if let Err(e) = batch.write_packed(lists) {
                    return Err(SandboxError::Emitted {
                        who: self.who.to_string(),
                        call: "process",
                        error: e.into(),
                    });
                }
                let lists = std::mem::take(lists);
                let r = process
                    .typed::<(EventsIn<'_>,), (Result<EmittedOut, v2::wrun::operator::types::Error>,)>(&self.store)
                    .and_then(|f: ProcessV2<'_>| f.call(&mut self.store, (EventsIn::new(batch, &lists),)));
                if let Api::V2 { lists: l, .. } = &mut self.api {
                    *l = lists;
                }
                let (out,) = r.map_err(|e| self.fail("process", e))?;
                let out = out.map_err(|e| self.guest_err("process", e.message))?;
                self.emitted("process", out)
            }
        }
    }

    /// The events the last call emitted to named outputs: one batch per
    /// output, in the order `describe` named them (empty for a 0.1 module).
    pub fn take_side_outputs(&mut self) -> Vec<Batch> {
        std::mem::take(&mut self.side)
    }

    /// Fires every timer that is due (event-time ones up to `watermark`,
    /// processing-time ones up to `now_ms`) through `on-timers`, in batches,
    /// and returns what the operator emitted to its main output; named
    /// outputs' events are appended per output to `side` (which grows to
    /// the number of named outputs). A 0.1 module has no timers.
    pub fn fire_timers(
        &mut self,
        watermark: Option<i64>,
        now_ms: i64,
        side: &mut Vec<Batch>,
    ) -> Result<Batch, SandboxError> {
        self.set_time(watermark, now_ms);
        let mut main = Batch::default();
        let Api::V2 { on_timers, .. } = &self.api else {
            return Ok(main);
        };
        let on_timers = *on_timers;
        let mut fired: Vec<Timer> = Vec::new();
        for _ in 0..MAX_FIRING_ROUNDS {
            fired.clear();
            let d = self.store.data_mut();
            let pop = |d: &mut SubtaskData, domain, upto, out: &mut Vec<Timer>| {
                d.timers
                    .pop_due(&mut d.state, domain, upto, TIMERS_PER_CALL, out)
            };
            let popped = match watermark {
                Some(wm) => pop(d, Domain::EventTime, wm, &mut fired),
                None => Ok(()),
            }
            .and_then(|()| {
                let left = TIMERS_PER_CALL.saturating_sub(fired.len());
                if left > 0 {
                    let mut more = Vec::new();
                    let r = d.timers.pop_due(
                        &mut d.state,
                        Domain::ProcessingTime,
                        now_ms,
                        left,
                        &mut more,
                    );
                    fired.extend(more);
                    r
                } else {
                    Ok(())
                }
            });
            if let Err(error) = popped {
                return Err(SandboxError::State {
                    who: self.who.to_string(),
                    call: "on-timers",
                    error,
                });
            }
            if fired.is_empty() {
                return Ok(main);
            }
            self.arm();
            let r = on_timers.call(&mut self.store, (super::host::timers::pack(&fired),));
            let (out,) = r.map_err(|e| self.fail("on-timers", e))?;
            let out = out.map_err(|e| self.guest_err("on-timers", e.message))?;
            let batch = self.emitted("on-timers", out)?;
            main.extend_from(&batch);
            let named = std::mem::take(&mut self.side);
            if side.len() < named.len() {
                side.resize_with(named.len(), Batch::default);
            }
            for (to, from) in side.iter_mut().zip(&named) {
                to.extend_from(from);
            }
            self.check_output("on-timers", main.len())?;
        }
        Err(self.guest_err(
            "on-timers",
            format!("timers kept coming due after {MAX_FIRING_ROUNDS} rounds of firing: the operator registers timers that are already due from on-timers"),
        ))
    }

    /// `close`: the final events (named outputs' in `take_side_outputs`).
    pub fn close(&mut self) -> Result<Batch, SandboxError> {
        self.arm();
        match &self.api {
            Api::V1 { close, .. } => {
                let r = close.call(&mut self.store, ());
                let (out,) = r.map_err(|e| self.fail("close", e))?;
                let LiftedBatch(out) = out.map_err(|e| self.guest_err("close", e.message))?;
                self.check_output("close", out.len())?;
                Ok(out)
            }
            Api::V2 { close, .. } => {
                let r = close.call(&mut self.store, ());
                let (out,) = r.map_err(|e| self.fail("close", e))?;
                let out = out.map_err(|e| self.guest_err("close", e.message))?;
                self.emitted("close", out)
            }
        }
    }

    /// `snapshot`: the non-keyed state, if any.
    pub fn snapshot(&mut self) -> Result<Option<OperatorSnapshot>, SandboxError> {
        self.arm();
        let r = match &self.api {
            Api::V1 { op, .. } => op
                .wrun_operator_handler()
                .call_snapshot(&mut self.store)
                .map(|r| {
                    r.map(|s| {
                        s.map(|s| OperatorSnapshot {
                            format: StateFormat {
                                name: s.format.name,
                                version: s.format.version,
                            },
                            data: s.data,
                        })
                    })
                    .map_err(|e| e.message)
                }),
            Api::V2 { op, .. } => op
                .wrun_operator_handler()
                .call_snapshot(&mut self.store)
                .map(|r| r.map_err(|e| e.message)),
        };
        r.map_err(|e| self.fail("snapshot", e))?
            .map_err(|m| self.guest_err("snapshot", m))
    }
}

/// Instantiates a pre-linked module and finds its exports, typed.
fn link(store: &mut Store<SubtaskData>, module: &OperatorModule) -> wasmtime::Result<Api> {
    match &module.pre {
        ModulePre::V1(pre) => {
            let instance = pre.instance_pre().instantiate(&mut *store)?;
            let op = v1::Operator::new(&mut *store, &instance)?;
            let process = handler_func(store, &instance, module, "process")?;
            process.typed::<(GuestBatch<'static>,), (Result<LiftedBatch, v1::wrun::operator::types::Error>,)>(&*store)?;
            let close = handler_func(store, &instance, module, "close")?.typed(&*store)?;
            Ok(Api::V1 { op, process, close })
        }
        ModulePre::V2(pre) => {
            let instance = pre.instance_pre().instantiate(&mut *store)?;
            let op = v2::Operator::new(&mut *store, &instance)?;
            let process = handler_func(store, &instance, module, "process")?;
            process.typed::<(EventsIn<'static>,), (Result<EmittedOut, v2::wrun::operator::types::Error>,)>(&*store)?;
            let on_timers = handler_func(store, &instance, module, "on-timers")?.typed(&*store)?;
            let close = handler_func(store, &instance, module, "close")?.typed(&*store)?;
            Ok(Api::V2 {
                op,
                process,
                on_timers,
                close,
                lists: PackedLists::default(),
                named: module.outputs.len(),
            })
        }
    }
}

/// A function of the module's `wrun:operator/handler` export.
fn handler_func(
    store: &mut Store<SubtaskData>,
    instance: &wasmtime::component::Instance,
    module: &OperatorModule,
    name: &str,
) -> wasmtime::Result<Func> {
    let handler = module
        .exports
        .iter()
        .find(|e| e.starts_with("wrun:operator/handler@"))
        .ok_or_else(|| wasmtime::format_err!("the component exports no wrun:operator/handler"))?;
    let iface = instance
        .get_export_index(&mut *store, None, handler)
        .ok_or_else(|| wasmtime::format_err!("the component exports no {handler}"))?;
    instance
        .get_export_index(&mut *store, Some(&iface), name)
        .and_then(|i| instance.get_func(&mut *store, i))
        .ok_or_else(|| wasmtime::format_err!("{handler} has no `{name}` function"))
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
