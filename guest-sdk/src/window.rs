//! Event-time windows over keyed state and timers: tumbling, sliding and
//! session windows with an incremental [`Aggregate`], allowed lateness, and
//! results that carry their window's bounds.
//!
//! A [`WindowState`] keeps, per key, the windows still open with their
//! accumulators in one value state (so a batch reads and writes them in one
//! host call each), and one event-time timer per window at its last
//! millisecond (`end - 1`, Flink's `maxTimestamp`). When the watermark
//! passes it, the timer fires and [`WindowState::fire`] hands the window
//! and its accumulator to the operator, which emits the result. Everything
//! is ordinary keyed state and timers, so windows survive savepoints,
//! rescales, module swaps and crashes like any state.
//!
//! ```
//! use wrun_guest::window::{Count, WindowState, tumbling};
//! use wrun_guest::{Context, Emitter, Error, Event, Operator, Timer};
//!
//! /// Events per key per minute; late events to the `late` output.
//! pub struct PerMinute {
//!     counts: WindowState<Count>,
//! }
//!
//! impl Operator for PerMinute {
//!     fn outputs() -> &'static [&'static str] {
//!         &["late"]
//!     }
//!     fn open(_: &Context) -> Result<Self, Error> {
//!         let spec = tumbling(60_000).allowed_lateness(5_000);
//!         Ok(PerMinute { counts: WindowState::new("per-minute", spec, Count) })
//!     }
//!     fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> {
//!         if !self.counts.add(&e)? {
//!             out.emit_to("late", e);
//!         }
//!         Ok(())
//!     }
//!     fn on_timer(&mut self, t: Timer, out: &mut Emitter) -> Result<(), Error> {
//!         if let Some((w, n)) = self.counts.fire(&t)? {
//!             out.emit(Event::keyed(t.key, format!("{},{},{n}", w.start, w.end)));
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use crate::{Error, Event, TimeDomain, Timer, Timers, ValueState};
use serde::{Serialize, de::DeserializeOwned};

/// A window: the event times `start..end` (milliseconds, end excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
}

impl Window {
    /// Its last millisecond: where its timer fires, and the timestamp of
    /// its result.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

/// How events are assigned to windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

/// Which windows, and how late an event may still be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    kind: Kind,
    lateness: i64,
}

/// Windows of `size_ms` one after another: `[0, size)`, `[size, 2 size)`…
pub fn tumbling(size_ms: i64) -> WindowSpec {
    WindowSpec {
        kind: Kind::Tumbling {
            size: size_ms.max(1),
        },
        lateness: 0,
    }
}

/// Windows of `size_ms` starting every `slide_ms`; an event is in
/// `size / slide` of them.
pub fn sliding(size_ms: i64, slide_ms: i64) -> WindowSpec {
    WindowSpec {
        kind: Kind::Sliding {
            size: size_ms.max(1),
            slide: slide_ms.clamp(1, size_ms.max(1)),
        },
        lateness: 0,
    }
}

/// A window per burst of a key's activity: it closes after `gap_ms`
/// without an event of that key; an event that bridges two windows merges
/// them.
pub fn session(gap_ms: i64) -> WindowSpec {
    WindowSpec {
        kind: Kind::Session { gap: gap_ms.max(1) },
        lateness: 0,
    }
}

impl WindowSpec {
    /// Keeps a window `ms` after the watermark passed its end: a late event
    /// within that time is still added, and the window fires again with
    /// the updated result. Later events are refused ([`WindowState::add`]
    /// returns `false`). Default 0.
    pub fn allowed_lateness(mut self, ms: i64) -> WindowSpec {
        self.lateness = ms.max(0);
        self
    }

    /// The windows an event at `ts` belongs to (before session merging),
    /// into `out` (cleared first), oldest first.
    fn assign_into(&self, ts: i64, out: &mut Vec<Window>) {
        out.clear();
        match self.kind {
            Kind::Tumbling { size } => {
                let start = ts.div_euclid(size) * size;
                out.push(Window {
                    start,
                    end: start.saturating_add(size),
                });
            }
            Kind::Sliding { size, slide } => {
                let mut start = ts.div_euclid(slide) * slide;
                while start > ts.saturating_sub(size) {
                    out.push(Window {
                        start,
                        end: start.saturating_add(size),
                    });
                    start -= slide;
                }
                out.reverse();
            }
            Kind::Session { gap } => out.push(Window {
                start: ts,
                end: ts.saturating_add(gap),
            }),
        }
    }

    #[cfg(test)]
    fn assign(&self, ts: i64) -> Vec<Window> {
        let mut out = Vec::new();
        self.assign_into(ts, &mut out);
        out
    }
}

/// An incremental aggregate: what a window keeps instead of its events.
pub trait Aggregate: 'static {
    /// The accumulator kept per window (in keyed state, so serializable).
    type Acc: Serialize + DeserializeOwned + Clone + 'static;
    /// A new, empty accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds an event.
    fn add(&self, acc: &mut Self::Acc, event: &Event);
    /// Merges `other` into `acc` (session windows that merge).
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
}

/// Counts events.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl Aggregate for Count {
    type Acc = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: &Event) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

/// Keeps every event's value: for a full-window function, which gets all
/// of a window's values when it fires (as Flink's `ProcessWindowFunction`).
/// Costs state in proportion to the window's events; prefer an incremental
/// aggregate where one exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct Collect;

impl Aggregate for Collect {
    type Acc = Vec<Vec<u8>>;
    fn create(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<Vec<u8>>, event: &Event) {
        acc.push(event.value.clone());
    }
    fn merge(&self, acc: &mut Vec<Vec<u8>>, other: Vec<Vec<u8>>) {
        acc.extend(other);
    }
}

/// An aggregate from closures: `create`, `add`, `merge`.
pub struct FnAggregate<A, C, F, M> {
    create: C,
    add: F,
    merge: M,
    _acc: std::marker::PhantomData<fn() -> A>,
}

/// An [`Aggregate`] from three functions, e.g. a sum:
/// `aggregate(|| 0i64, |s, e| *s += parse(&e.value), |s, o| *s += o)`.
pub fn aggregate<A, C, F, M>(create: C, add: F, merge: M) -> FnAggregate<A, C, F, M>
where
    C: Fn() -> A,
    F: Fn(&mut A, &Event),
    M: Fn(&mut A, A),
{
    FnAggregate {
        create,
        add,
        merge,
        _acc: std::marker::PhantomData,
    }
}

impl<A, C, F, M> Aggregate for FnAggregate<A, C, F, M>
where
    A: Serialize + DeserializeOwned + Clone + 'static,
    C: Fn() -> A + 'static,
    F: Fn(&mut A, &Event) + 'static,
    M: Fn(&mut A, A) + 'static,
{
    type Acc = A;
    fn create(&self) -> A {
        (self.create)()
    }
    fn add(&self, acc: &mut A, event: &Event) {
        (self.add)(acc, event)
    }
    fn merge(&self, acc: &mut A, other: A) {
        (self.merge)(acc, other)
    }
}

/// A key's open windows: (start, end, accumulator), by start.
type Open<A> = Vec<(i64, i64, A)>;

/// Windows of one kind with one aggregate, per key. Create it in
/// [`Operator::open`](crate::Operator::open); call [`add`](Self::add) in
/// `process` and [`fire`](Self::fire) in `on_timer`.
pub struct WindowState<G: Aggregate> {
    spec: WindowSpec,
    agg: G,
    open: ValueState<Open<G::Acc>>,
    timers: Timers,
    /// The windows of the event being added (kept to spare an allocation).
    assigned: std::cell::RefCell<Vec<Window>>,
    /// This state's timer tags: `fire` at a window's end, `cleanup` once
    /// its allowed lateness has passed.
    fire_tag: u32,
    cleanup_tag: u32,
}

/// FNV-1a: a tag from the state's name that stays the same across module
/// versions, so timers restored from a savepoint find their windows.
fn name_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl<G: Aggregate> WindowState<G> {
    /// Windows by `spec`, aggregated by `agg`, kept in the value state
    /// `name` (the name checkpoints and `savepoint inspect` know it by; it
    /// also tells this state's timers from others').
    pub fn new(name: &str, spec: WindowSpec, agg: G) -> WindowState<G> {
        let base = name_hash(name) & !1;
        WindowState {
            spec,
            agg,
            open: ValueState::new(name),
            timers: Timers::new(),
            assigned: std::cell::RefCell::new(Vec::new()),
            fire_tag: base,
            cleanup_tag: base | 1,
        }
    }

    /// Adds an event of the current key to each of its windows, by its
    /// timestamp. Returns `false`, adding it nowhere, when it is too late
    /// for every window it belongs to (the watermark passed their end plus
    /// the allowed lateness): route it to a late output. An event added
    /// to a window whose end the watermark passed (within the lateness)
    /// makes that window fire again. Fails for an event without timestamp.
    pub fn add(&self, event: &Event) -> Result<bool, Error> {
        let ts = event.timestamp.ok_or_else(|| {
            Error::new(format!(
                "window state '{}': an event without a timestamp cannot be windowed by event time (give the source `timestamp`, see docs/time.md)",
                self.open.name()
            ))
        })?;
        let watermark = self.timers.current_watermark();
        let lateness = self.spec.lateness;
        let too_late = |w: &Window| {
            watermark.is_some_and(|wm| w.max_timestamp().saturating_add(lateness) <= wm)
        };
        let mut assigned = self.assigned.borrow_mut();
        self.spec.assign_into(ts, &mut assigned);
        assigned.retain(|w| !too_late(w));
        if assigned.is_empty() {
            return Ok(false);
        }
        let session = match self.spec.kind {
            Kind::Session { gap } => Some(Window {
                start: ts,
                end: ts.saturating_add(gap),
            }),
            _ => None,
        };
        // In place: the key's open windows are not copied per event.
        let mut result = Ok(());
        let mut merged = None;
        self.open.update(|open| {
            let open = open.get_or_insert_with(Vec::new);
            for w in assigned.iter() {
                match open.iter_mut().find(|o| o.0 == w.start && o.1 == w.end) {
                    Some(o) => self.agg.add(&mut o.2, event),
                    None => {
                        let mut acc = self.agg.create();
                        self.agg.add(&mut acc, event);
                        open.push((w.start, w.end, acc));
                        if session.is_none() && result.is_ok() {
                            result = self.schedule(w);
                        }
                    }
                }
                // Late but allowed: fire again with the new result.
                if result.is_ok() && watermark.is_some_and(|wm| w.max_timestamp() <= wm) {
                    result = self
                        .timers
                        .register_event_time(w.max_timestamp(), self.fire_tag);
                }
            }
            if session.is_some() {
                merged = Some(std::mem::take(open));
            }
        })?;
        result?;
        if let (Some(new), Some(open)) = (session, merged) {
            let open = self.merge_sessions(open, new)?;
            self.open.set(&open)?;
        }
        Ok(true)
    }

    /// Registers a window's timers: its end, and its cleanup.
    fn schedule(&self, w: &Window) -> Result<(), Error> {
        self.timers
            .register_event_time(w.max_timestamp(), self.fire_tag)?;
        if self.spec.lateness > 0 {
            self.timers.register_event_time(
                w.max_timestamp().saturating_add(self.spec.lateness),
                self.cleanup_tag,
            )?;
        }
        Ok(())
    }

    /// Deletes a window's timers.
    fn unschedule(&self, w: &Window) -> Result<(), Error> {
        self.timers
            .delete_event_time(w.max_timestamp(), self.fire_tag)?;
        if self.spec.lateness > 0 {
            self.timers.delete_event_time(
                w.max_timestamp().saturating_add(self.spec.lateness),
                self.cleanup_tag,
            )?;
        }
        Ok(())
    }

    /// Merges overlapping session windows; the merged ones' timers are
    /// moved to the window they merged into. `new` is the window just
    /// added, which has no timers yet.
    fn merge_sessions(&self, mut open: Open<G::Acc>, new: Window) -> Result<Open<G::Acc>, Error> {
        open.sort_by_key(|o| (o.0, o.1));
        let before: Vec<Window> = open
            .iter()
            .map(|o| Window {
                start: o.0,
                end: o.1,
            })
            .collect();
        let mut merged: Open<G::Acc> = Vec::with_capacity(open.len());
        for (s, e, acc) in open {
            match merged.last_mut() {
                Some(last) if s < last.1 => {
                    last.1 = last.1.max(e);
                    self.agg.merge(&mut last.2, acc);
                }
                _ => merged.push((s, e, acc)),
            }
        }
        let after: Vec<Window> = merged
            .iter()
            .map(|o| Window {
                start: o.0,
                end: o.1,
            })
            .collect();
        for w in before.iter().filter(|w| **w != new && !after.contains(w)) {
            self.unschedule(w)?;
        }
        for w in after.iter().filter(|w| **w == new || !before.contains(w)) {
            self.schedule(w)?;
        }
        Ok(merged)
    }

    /// For a timer of this state (call it from
    /// [`Operator::on_timer`](crate::Operator::on_timer) with every timer):
    /// the window that closed and its accumulator, to emit; `None` for a
    /// timer that is not this state's or only cleans up. Without allowed
    /// lateness the window's state is dropped at once; with it, when the
    /// lateness has passed.
    pub fn fire(&self, timer: &Timer) -> Result<Option<(Window, G::Acc)>, Error> {
        if timer.domain != TimeDomain::EventTime
            || (timer.tag != self.fire_tag && timer.tag != self.cleanup_tag)
        {
            return Ok(None);
        }
        let mut open = self.open.get()?.unwrap_or_default();
        let result = if timer.tag == self.fire_tag {
            let found = open
                .iter()
                .position(|o| o.1.checked_sub(1) == Some(timer.time));
            let result = found.map(|i| {
                let (start, end, acc) = &open[i];
                (
                    Window {
                        start: *start,
                        end: *end,
                    },
                    acc.clone(),
                )
            });
            if self.spec.lateness == 0
                && let Some(i) = found
            {
                open.remove(i);
            }
            result
        } else {
            open.retain(|o| (o.1 - 1).saturating_add(self.spec.lateness) != timer.time);
            None
        };
        if open.is_empty() {
            self.open.clear()?;
        } else {
            self.open.set(&open)?;
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Harness, pending_timers, reset};
    use crate::{Context, Emitter, Operator};

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn assignment() {
        assert_eq!(tumbling(10).assign(25), vec![w(20, 30)]);
        assert_eq!(tumbling(10).assign(-1), vec![w(-10, 0)]);
        assert_eq!(sliding(10, 5).assign(12), vec![w(5, 15), w(10, 20)]);
        assert_eq!(sliding(10, 5).assign(10), vec![w(5, 15), w(10, 20)]);
        assert_eq!(session(7).assign(3), vec![w(3, 10)]);
    }

    /// Counts per window of the spec given by the context's uid; late
    /// events to `late`.
    struct Counts {
        w: WindowState<Count>,
    }

    impl Operator for Counts {
        fn outputs() -> &'static [&'static str] {
            &["late"]
        }
        fn open(ctx: &Context) -> Result<Self, Error> {
            let spec = match ctx.uid.as_str() {
                "sliding" => sliding(10, 5),
                "session" => session(5),
                "lateness" => tumbling(10).allowed_lateness(5),
                _ => tumbling(10),
            };
            Ok(Counts {
                w: WindowState::new("w", spec, Count),
            })
        }
        fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> {
            if !self.w.add(&e)? {
                out.emit_to("late", e);
            }
            Ok(())
        }
        fn on_timer(&mut self, t: Timer, out: &mut Emitter) -> Result<(), Error> {
            if let Some((w, n)) = self.w.fire(&t)? {
                out.emit(Event::keyed(t.key, format!("{},{},{n}", w.start, w.end)));
            }
            Ok(())
        }
    }

    fn run(uid: &str, steps: &[(&[(&str, i64)], i64)]) -> (Vec<String>, usize) {
        reset();
        let ctx = Context {
            uid: uid.into(),
            ..Context::default()
        };
        let mut h = Harness::<Counts>::open(ctx).unwrap();
        let mut out = Vec::new();
        for (events, wm) in steps {
            let batch = events
                .iter()
                .map(|(k, t)| Event::keyed(*k, "").with_timestamp(*t))
                .collect();
            for e in h.process(batch).unwrap() {
                out.push(format!(
                    "{}:{}",
                    String::from_utf8(e.key.unwrap()).unwrap(),
                    String::from_utf8(e.value).unwrap()
                ));
            }
            for e in h.advance_watermark(*wm).unwrap() {
                assert!(e.timestamp.is_some());
                out.push(format!(
                    "{}:{}",
                    String::from_utf8(e.key.unwrap()).unwrap(),
                    String::from_utf8(e.value).unwrap()
                ));
            }
        }
        (out, h.take_output("late").len())
    }

    #[test]
    fn tumbling_windows_fire_once_when_the_watermark_passes_them() {
        let (out, late) = run(
            "tumbling",
            &[
                (&[("a", 1), ("a", 9), ("b", 12)], 8),
                (&[("a", 3)], 20),
                (&[("a", 4)], 30),
            ],
        );
        assert_eq!(out, vec!["a:0,10,3", "b:10,20,1"]);
        assert_eq!(late, 1);
        assert_eq!(pending_timers(), 0);
    }

    #[test]
    fn sliding_windows_count_an_event_in_each_of_its_windows() {
        let (out, _) = run("sliding", &[(&[("a", 7), ("a", 12)], 100)]);
        assert_eq!(out, vec!["a:0,10,1", "a:5,15,2", "a:10,20,1"]);
    }

    #[test]
    fn sessions_merge_when_an_event_bridges_them() {
        let (out, _) = run(
            "session",
            &[(&[("a", 0), ("a", 8)], 2), (&[("a", 4), ("b", 1)], 100)],
        );
        // [0,5) and [8,13) are bridged by 4 ([4,9)): one session [0,13).
        assert_eq!(out, vec!["b:1,6,1", "a:0,13,3"]);
        assert_eq!(pending_timers(), 0);
    }

    #[test]
    fn allowed_lateness_fires_again_then_refuses() {
        let (out, late) = run(
            "lateness",
            &[(&[("a", 1)], 9), (&[("a", 2)], 14), (&[("a", 3)], 30)],
        );
        // Fired at 9; the event at 2 comes within the lateness (until 14)
        // and fires it again; at 14 it is cleaned up, so 3 is late.
        assert_eq!(out, vec!["a:0,10,1", "a:0,10,2"]);
        assert_eq!(late, 1);
        assert_eq!(pending_timers(), 0);
    }
}
