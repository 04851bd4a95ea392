//! The glue between the exported `handler` interface and an [`Operator`]:
//! the per-batch key index that keyed state and timers use, and the flush
//! of every state touched and every timer registered in a batch.

use crate::bindings::wrun::operator::types;
use crate::timers::{TimeDomain, Timer, TimerOp};
use crate::{Context, Emitter, Error, Event, Operator};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::thread::LocalKey;

/// Where `export_operator!` keeps the subtask's operator instance.
pub trait Slot: Operator {
    /// The thread-local slot.
    fn slot() -> &'static LocalKey<RefCell<Option<Self>>>;
}

/// A state handle with writes pending at the end of a batch.
pub(crate) trait Flush {
    fn flush(&self, keys: &types::Packed);
}

/// Item `i` of a packed list of optional items (empty when absent).
pub(crate) fn item_opt(p: &types::PackedOptions, i: usize) -> &[u8] {
    let start = if i == 0 { 0 } else { p.ends[i - 1] as usize };
    &p.data[start..p.ends[i] as usize]
}

/// A packed list as separate byte strings.
pub(crate) fn unpack(p: &types::Packed) -> Vec<Vec<u8>> {
    (0..p.ends.len()).map(|i| item(p, i).to_vec()).collect()
}

/// Item `i` of a packed list.
pub(crate) fn item(p: &types::Packed, i: usize) -> &[u8] {
    let start = if i == 0 { 0 } else { p.ends[i - 1] as usize };
    &p.data[start..p.ends[i] as usize]
}

struct Batch {
    /// Increments per batch; 0 means "no batch yet". State caches compare it
    /// to know whether their contents belong to the current batch.
    epoch: u64,
    /// The batch's distinct keys, in first-seen order, packed.
    keys: types::Packed,
    /// The index in `keys` of the event being processed.
    current: Option<u32>,
    touched: Vec<Rc<dyn Flush>>,
}

thread_local! {
    // `const`: no lazy-initialisation check on each of the few accesses
    // per event.
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch {
        epoch: 0,
        keys: types::Packed { data: Vec::new(), ends: Vec::new() },
        current: None,
        touched: Vec::new(),
    }) };
    static STATES: Cell<u32> = const { Cell::new(0) };
    static TIMER_OPS: RefCell<Vec<TimerOp>> = const { RefCell::new(Vec::new()) };
    /// The watermark, read from the host once per call (it stands still
    /// during a call): `None` until read.
    static WATERMARK: Cell<Option<Option<i64>>> = const { Cell::new(None) };
    static RESTORED: RefCell<Option<(types::StateFormat, Vec<u8>)>> = const { RefCell::new(None) };
}

/// Counts declared state handles; a stateless operator skips key indexing.
pub(crate) fn declare_state() {
    STATES.with(|s| s.set(s.get().saturating_add(1)));
}

/// The current batch epoch and key index, or an error outside `process`.
pub(crate) fn current(state: &str) -> Result<(u64, u32, usize), Error> {
    BATCH.with(|b| {
        let b = b.borrow();
        match b.current {
            Some(i) => Ok((b.epoch, i, b.keys.ends.len())),
            None => Err(Error::new(format!(
                "keyed state '{state}' used without a current key: keyed state is only available inside process() for an event that has a key"
            ))),
        }
    })
}

/// The current key's bytes, or an error outside a keyed event or timer.
pub(crate) fn current_key(what: &str) -> Result<Vec<u8>, Error> {
    BATCH.with(|b| {
        let b = b.borrow();
        match b.current {
            Some(i) => Ok(item(&b.keys, i as usize).to_vec()),
            None => Err(Error::new(format!(
                "{what} used without a current key: only inside process() for an event that has a key, or in on_timer()"
            ))),
        }
    })
}

/// The subtask's watermark, from the host on the first ask of a call.
pub(crate) fn current_watermark() -> Option<i64> {
    WATERMARK.with(|w| match w.get() {
        Some(wm) => wm,
        None => {
            let wm = crate::host::current_watermark();
            w.set(Some(wm));
            wm
        }
    })
}

/// Forgets the watermark read in the previous call.
fn new_call() {
    WATERMARK.with(|w| w.set(None));
}

/// Buffers a timer registration or deletion until the end of the batch.
pub(crate) fn push_timer_op(op: TimerOp) {
    TIMER_OPS.with(|t| t.borrow_mut().push(op));
}

/// Sends the buffered timer operations to the host, in order: each run of
/// registrations or of deletions is one host call.
fn flush_timer_ops(send: bool) {
    let ops = TIMER_OPS.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if !send {
        return;
    }
    let mut i = 0;
    while i < ops.len() {
        let register = ops[i].0;
        let run = ops[i..].iter().take_while(|(r, _)| *r == register).count();
        let packed = pack_timers(ops[i..i + run].iter().map(|(_, t)| t));
        if register {
            crate::host::register_timers(&packed);
        } else {
            crate::host::delete_timers(&packed);
        }
        i += run;
    }
}

/// Timers as the `timers` record.
fn pack_timers<'a>(timers: impl Iterator<Item = &'a Timer>) -> types::Timers {
    let mut t = types::Timers {
        keys: types::Packed {
            data: Vec::new(),
            ends: Vec::new(),
        },
        times: Vec::new(),
        domains: Vec::new(),
        tags: Vec::new(),
    };
    for timer in timers {
        t.keys.data.extend_from_slice(&timer.key);
        t.keys.ends.push(t.keys.data.len() as u32);
        t.times.push(timer.time);
        t.domains.push(match timer.domain {
            TimeDomain::EventTime => types::TimeDomain::EventTime,
            TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
        });
        t.tags.push(timer.tag);
    }
    t
}

/// The timers of a `timers` record.
fn unpack_timers(t: &types::Timers) -> Result<Vec<Timer>, Error> {
    let n = t.keys.ends.len();
    if t.times.len() != n || t.domains.len() != n || t.tags.len() != n {
        return Err(Error::new(
            "the host sent fired timers whose lists differ in length",
        ));
    }
    let mut start = 0usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let end = t.keys.ends[i] as usize;
        if end < start || end > t.keys.data.len() {
            return Err(Error::new(
                "the host sent fired timers with bad key offsets",
            ));
        }
        out.push(Timer {
            key: t.keys.data[start..end].to_vec(),
            time: t.times[i],
            domain: match t.domains[i] {
                types::TimeDomain::EventTime => TimeDomain::EventTime,
                types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
            },
            tag: t.tags[i],
        });
        start = end;
    }
    Ok(out)
}

/// Runs `f` with the batch's keys.
pub(crate) fn with_keys<R>(f: impl FnOnce(&types::Packed) -> R) -> R {
    BATCH.with(|b| f(&b.borrow().keys))
}

/// Registers a state to be flushed at the end of the batch.
pub(crate) fn touch(state: Rc<dyn Flush>) {
    BATCH.with(|b| b.borrow_mut().touched.push(state));
}

/// Runs one batch through an operator: index keys, process, flush state
/// and timers.
pub(crate) fn run_batch<T: Operator>(op: &mut T, batch: Vec<Event>) -> Result<Emitter, Error> {
    let indices = begin_batch(batch.iter().map(|e| e.key.as_deref()), batch.len());
    let mut out = Emitter::new(T::outputs(), batch.len());
    let result = (|| {
        for (i, event) in batch.into_iter().enumerate() {
            let idx = indices.as_ref().and_then(|ix| ix[i]);
            BATCH.with(|b| b.borrow_mut().current = idx);
            out.inherit = event.timestamp;
            op.process(event, &mut out)?;
        }
        Ok(())
    })();
    end_batch(result.is_ok());
    result.map(|()| out)
}

/// Runs fired timers through an operator, each with its key as the
/// current key; an event emitted without a timestamp from an event-time
/// timer gets the timer's time.
pub(crate) fn run_timers<T: Operator>(op: &mut T, fired: Vec<Timer>) -> Result<Emitter, Error> {
    let indices = begin_batch(fired.iter().map(|t| Some(t.key.as_slice())), fired.len());
    let mut out = Emitter::new(T::outputs(), fired.len());
    let result = (|| {
        for (i, timer) in fired.into_iter().enumerate() {
            let idx = indices.as_ref().and_then(|ix| ix[i]);
            BATCH.with(|b| b.borrow_mut().current = idx);
            out.inherit = (timer.domain == TimeDomain::EventTime).then_some(timer.time);
            op.on_timer(timer, &mut out)?;
        }
        Ok(())
    })();
    end_batch(result.is_ok());
    result.map(|()| out)
}

fn begin_batch<'a>(
    keys_of: impl Iterator<Item = Option<&'a [u8]>>,
    n: usize,
) -> Option<Vec<Option<u32>>> {
    new_call();
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        b.epoch += 1;
        b.keys.data.clear();
        b.keys.ends.clear();
        b.current = None;
        b.touched.clear();
        if STATES.with(Cell::get) == 0 {
            return None;
        }
        let mut index: FxHashMap<&[u8], u32> =
            FxHashMap::with_capacity_and_hasher(n, Default::default());
        let mut keys = std::mem::replace(
            &mut b.keys,
            types::Packed {
                data: Vec::new(),
                ends: Vec::new(),
            },
        );
        let ix = keys_of
            .map(|k| {
                k.map(|k| {
                    *index.entry(k).or_insert_with(|| {
                        keys.data.extend_from_slice(k);
                        keys.ends.push(keys.data.len() as u32);
                        (keys.ends.len() - 1) as u32
                    })
                })
            })
            .collect();
        b.keys = keys;
        Some(ix)
    })
}

fn end_batch(flush: bool) {
    let (touched, keys) = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        b.current = None;
        let keys = std::mem::replace(
            &mut b.keys,
            types::Packed {
                data: Vec::new(),
                ends: Vec::new(),
            },
        );
        (std::mem::take(&mut b.touched), keys)
    });
    if flush {
        for state in &touched {
            state.flush(&keys);
        }
    }
    flush_timer_ops(flush);
    BATCH.with(|b| b.borrow_mut().keys = keys);
}

fn context(ctx: types::Context) -> Context {
    Context {
        uid: ctx.uid,
        subtask_index: ctx.subtask_index,
        parallelism: ctx.parallelism,
        max_parallelism: ctx.max_parallelism,
        config: ctx.config,
        restored: ctx.restored,
        restored_format: ctx.restored_format,
        restored_snapshot: RESTORED.with(|r| r.borrow_mut().take()),
    }
}

fn raw(e: Error) -> types::Error {
    types::Error { message: e.message }
}

pub(crate) fn open_operator<T: Operator>(ctx: Context) -> Result<T, Error> {
    T::open(&ctx)
}

/// `handler.open`.
pub fn open<T: Slot>(ctx: types::Context) -> Result<(), types::Error> {
    install_panic_hook();
    let op = open_operator::<T>(context(ctx)).map_err(raw)?;
    T::slot().with(|s| *s.borrow_mut() = Some(op));
    Ok(())
}

fn with_op<T: Slot, R>(f: impl FnOnce(&mut T) -> Result<R, Error>) -> Result<R, types::Error> {
    T::slot().with(|s| match s.borrow_mut().as_mut() {
        Some(op) => f(op).map_err(raw),
        None => Err(types::Error {
            message: "the operator was called before open()".into(),
        }),
    })
}

/// `handler.describe`.
pub fn describe<T: Operator>() -> types::Description {
    install_panic_hook();
    types::Description {
        format: T::state_format(),
        outputs: T::outputs().iter().map(|o| o.to_string()).collect(),
    }
}

/// `handler.process`.
pub fn process<T: Slot>(batch: types::Events) -> Result<types::Emitted, types::Error> {
    with_op::<T, _>(|op| run_batch(op, crate::emit::unpack(&batch)?)?.into_emitted())
}

/// `handler.on-timers`.
pub fn on_timers<T: Slot>(fired: types::Timers) -> Result<types::Emitted, types::Error> {
    with_op::<T, _>(|op| run_timers(op, unpack_timers(&fired)?)?.into_emitted())
}

/// `handler.close`.
pub fn close<T: Slot>() -> Result<types::Emitted, types::Error> {
    with_op::<T, _>(|op| close_operator(op)?.into_emitted())
}

pub(crate) fn close_operator<T: Operator>(op: &mut T) -> Result<Emitter, Error> {
    let mut out = Emitter::new(T::outputs(), 0);
    op.close(&mut out)?;
    Ok(out)
}

/// `handler.snapshot`.
pub fn snapshot<T: Slot>() -> Result<Option<types::OperatorSnapshot>, types::Error> {
    with_op::<T, _>(|op| snapshot_operator(op))
}

pub(crate) fn snapshot_operator<T: Operator>(
    op: &mut T,
) -> Result<Option<types::OperatorSnapshot>, Error> {
    Ok(op.snapshot()?.map(|data| types::OperatorSnapshot {
        format: T::state_format(),
        data,
    }))
}

/// `handler.restore`: kept until `open` hands it to the operator.
pub fn restore(snapshot: types::OperatorSnapshot) -> Result<(), types::Error> {
    install_panic_hook();
    RESTORED.with(|r| *r.borrow_mut() = Some((snapshot.format, snapshot.data)));
    Ok(())
}

/// On wasm a panic aborts with no message; log it first so the host can
/// say why the guest trapped. Installed on the first call into the guest.
pub fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        thread_local!(static INSTALLED: Cell<bool> = const { Cell::new(false) });
        if !INSTALLED.with(|i| i.replace(true)) {
            std::panic::set_hook(Box::new(|info| {
                crate::host::log(crate::host::LogLevel::Error, &info.to_string())
            }));
        }
    }
}
