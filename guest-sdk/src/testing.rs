//! Run an operator natively, against an in-memory host, in ordinary
//! `cargo test`s. The same batching and state caching run as on wasm; the
//! host's state and the number of host calls can be inspected.
//!
//! ```
//! # use wrun_guest::{*, testing::Harness};
//! # struct Echo;
//! # impl Operator for Echo {
//! #     fn open(_: &Context) -> Result<Self, Error> { Ok(Echo) }
//! #     fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> { out.emit(e); Ok(()) }
//! # }
//! let mut h = Harness::<Echo>::open(Context::default()).unwrap();
//! assert_eq!(h.process(vec![Event::unkeyed("x")]).unwrap().len(), 1);
//! ```

use crate::runtime;
use crate::{Context, Error, Event, Operator, TimeDomain, Timer, codec};
use serde::de::DeserializeOwned;

/// An operator opened natively against the in-memory host.
pub struct Harness<T: Operator> {
    op: T,
    side: Vec<(&'static str, Event)>,
}

impl<T: Operator> Harness<T> {
    /// Opens the operator. Each thread has its own in-memory host; state
    /// written by earlier harnesses on the thread is still there, which is
    /// how a test simulates a restore. Call [`reset`] for a clean host.
    pub fn open(ctx: Context) -> Result<Harness<T>, Error> {
        Ok(Harness {
            op: runtime::open_operator::<T>(ctx)?,
            side: Vec::new(),
        })
    }

    /// Processes one batch and returns what the operator emitted to its
    /// main output (named outputs' events wait in [`Harness::take_output`]).
    pub fn process(&mut self, batch: Vec<Event>) -> Result<Vec<Event>, Error> {
        let out = runtime::run_batch(&mut self.op, batch)?;
        self.keep(out)
    }

    /// Closes the operator and returns its final events.
    pub fn close(&mut self) -> Result<Vec<Event>, Error> {
        let out = runtime::close_operator(&mut self.op)?;
        self.keep(out)
    }

    fn keep(&mut self, out: crate::Emitter) -> Result<Vec<Event>, Error> {
        let (main, side) = out.split()?;
        self.side.extend(side);
        Ok(main)
    }

    /// Takes what the operator emitted to named output `name` so far.
    pub fn take_output(&mut self, name: &str) -> Vec<Event> {
        let (mine, rest) = std::mem::take(&mut self.side)
            .into_iter()
            .partition(|(n, _)| *n == name);
        self.side = rest;
        mine.into_iter().map(|(_, e)| e).collect()
    }

    /// Moves the watermark to `watermark` and fires every event-time timer
    /// it passes, in order of time, as the host does; returns what the
    /// operator emitted to its main output.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<Vec<Event>, Error> {
        crate::host::HOST.with(|h| h.borrow_mut().watermark = Some(watermark));
        self.fire(TimeDomain::EventTime, watermark)
    }

    /// Moves the processing-time clock to `now` (Unix ms) and fires every
    /// processing-time timer due by then.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<Vec<Event>, Error> {
        crate::host::HOST.with(|h| h.borrow_mut().now = now);
        self.fire(TimeDomain::ProcessingTime, now)
    }

    fn fire(&mut self, domain: TimeDomain, upto: i64) -> Result<Vec<Event>, Error> {
        let mut main = Vec::new();
        loop {
            let fired: Vec<Timer> = crate::host::HOST.with(|h| {
                let mut h = h.borrow_mut();
                let q = match domain {
                    TimeDomain::EventTime => &mut h.event_timers,
                    TimeDomain::ProcessingTime => &mut h.processing_timers,
                };
                let mut out = Vec::new();
                while out.len() < 1024 && q.first().is_some_and(|t| t.0 <= upto) {
                    let Some((time, key, tag)) = q.pop_first() else {
                        break;
                    };
                    out.push(Timer {
                        key,
                        time,
                        domain,
                        tag,
                    });
                }
                out
            });
            if fired.is_empty() {
                return Ok(main);
            }
            let out = runtime::run_timers(&mut self.op, fired)?;
            main.extend(self.keep(out)?);
        }
    }

    /// The operator's non-keyed snapshot.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(runtime::snapshot_operator(&mut self.op)?.map(|s| s.data))
    }

    /// The operator itself.
    pub fn operator(&mut self) -> &mut T {
        &mut self.op
    }
}

/// Clears this thread's in-memory host.
pub fn reset() {
    crate::host::HOST.with(|h| *h.borrow_mut() = Default::default());
}

/// How many host calls this thread's in-memory host has served.
pub fn host_calls() -> u64 {
    crate::host::HOST.with(|h| h.borrow().calls)
}

/// How many timers are pending in this thread's in-memory host.
pub fn pending_timers() -> usize {
    crate::host::HOST.with(|h| {
        let h = h.borrow();
        h.event_timers.len() + h.processing_timers.len()
    })
}

/// Reads a value state straight from the in-memory host.
pub fn value<T: DeserializeOwned>(state: &str, key: &[u8]) -> Option<T> {
    crate::host::HOST.with(|h| {
        h.borrow()
            .values
            .get(&(state.to_string(), key.to_vec()))
            .map(|b| codec::decode(b).expect("state decodes"))
    })
}

/// Writes a value state straight into the in-memory host, as state
/// restored from a checkpoint or written by an older version would be.
pub fn set_value<T: serde::Serialize>(state: &str, key: &[u8], value: &T) {
    crate::host::HOST.with(|h| {
        h.borrow_mut()
            .values
            .insert((state.to_string(), key.to_vec()), codec::encode(value));
    })
}

/// Reads a list state straight from the in-memory host.
pub fn list<T: DeserializeOwned>(state: &str, key: &[u8]) -> Vec<T> {
    crate::host::HOST.with(|h| {
        h.borrow()
            .lists
            .get(&(state.to_string(), key.to_vec()))
            .map(|l| {
                l.iter()
                    .map(|b| codec::decode(b).expect("state decodes"))
                    .collect()
            })
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Emitter, ListState, MapState, ValueState};
    use proptest::prelude::*;
    use std::collections::HashMap;

    struct Counter {
        count: ValueState<u64>,
    }

    impl Operator for Counter {
        fn open(_: &Context) -> Result<Self, Error> {
            Ok(Counter {
                count: ValueState::new("count"),
            })
        }
        fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> {
            let n = self.count.get()?.unwrap_or(0) + 1;
            self.count.set(&n)?;
            out.emit(Event::keyed(e.key.unwrap_or_default(), n.to_string()));
            Ok(())
        }
    }

    fn ev(k: &str) -> Event {
        Event::keyed(k, "")
    }

    /// Counts per key with a time to live of 100 ms of processing time.
    struct Forgetful {
        count: ValueState<u64>,
    }

    impl Operator for Forgetful {
        fn open(_: &Context) -> Result<Self, Error> {
            let ttl = crate::StateTtl::processing_time(std::time::Duration::from_millis(100));
            Ok(Forgetful {
                count: ValueState::new("count").with_ttl(ttl),
            })
        }
        fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> {
            let n = self.count.get()?.unwrap_or(0) + 1;
            self.count.set(&n)?;
            out.emit(Event::keyed(e.key.unwrap_or_default(), n.to_string()));
            Ok(())
        }
    }

    #[test]
    fn state_with_a_time_to_live_is_forgotten_after_it() {
        reset();
        let mut h = Harness::<Forgetful>::open(Context::default()).unwrap();
        let at = |h: &mut Harness<Forgetful>, now: i64| {
            h.advance_processing_time(now).unwrap();
            let out = h.process(vec![ev("a")]).unwrap();
            String::from_utf8(out[0].value.clone()).unwrap()
        };
        assert_eq!(at(&mut h, 0), "1");
        assert_eq!(at(&mut h, 50), "2");
        // Refreshed by the write at 50: alive until 150.
        assert_eq!(at(&mut h, 149), "3");
        assert_eq!(at(&mut h, 249), "1", "expired at 249, counting afresh");
        assert_eq!(value::<u64>("count", b"a"), Some(1));
    }

    /// Counts events per key until 10 ms of event time after the key's
    /// first event, then emits the count (late events to "late").
    struct Windowed {
        count: ValueState<u64>,
        timers: crate::Timers,
    }

    impl Operator for Windowed {
        fn outputs() -> &'static [&'static str] {
            &["late"]
        }
        fn open(_: &Context) -> Result<Self, Error> {
            Ok(Windowed {
                count: ValueState::new("count"),
                timers: crate::Timers::new(),
            })
        }
        fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> {
            let ts = e.timestamp.unwrap_or(0);
            if self.timers.current_watermark().is_some_and(|w| ts <= w) {
                out.emit_to("late", e);
                return Ok(());
            }
            let n = self.count.get()?.unwrap_or(0);
            if n == 0 {
                self.timers.register_event_time(ts + 10, 1)?;
            }
            self.count.set(&(n + 1))
        }
        fn on_timer(&mut self, t: Timer, out: &mut Emitter) -> Result<(), Error> {
            let n = self.count.get()?.unwrap_or(0);
            self.count.clear()?;
            out.emit(Event::keyed(t.key, n.to_string()));
            Ok(())
        }
    }

    #[test]
    fn event_time_timers_fire_in_order_with_their_key_and_time() {
        reset();
        let mut h = Harness::<Windowed>::open(Context::default()).unwrap();
        let at = |k: &str, t: i64| Event::keyed(k, "").with_timestamp(t);
        let before = host_calls();
        h.process(vec![at("a", 5), at("b", 1), at("a", 7), at("b", 2)])
            .unwrap();
        assert_eq!(pending_timers(), 2);
        // One state read, one state write, one timer registration (and the
        // watermark reads of the in-memory host).
        assert!(host_calls() - before <= 7, "{}", host_calls() - before);
        assert!(h.advance_watermark(10).unwrap().is_empty());
        let out = h.advance_watermark(15).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.value.clone(), e.timestamp))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"b".to_vec(), b"2".to_vec(), Some(11)),
                (b"a".to_vec(), b"2".to_vec(), Some(15))
            ]
        );
        assert_eq!(pending_timers(), 0);
        assert_eq!(value::<u64>("count", b"a"), None);
        // Behind the watermark: to the named output, with its timestamp.
        assert!(h.process(vec![at("a", 3)]).unwrap().is_empty());
        assert_eq!(h.take_output("late"), vec![at("a", 3)]);
    }

    #[test]
    fn processing_time_timers_and_deleted_timers() {
        struct Ping {
            timers: crate::Timers,
        }
        impl Operator for Ping {
            fn open(_: &Context) -> Result<Self, Error> {
                Ok(Ping {
                    timers: crate::Timers::new(),
                })
            }
            fn process(&mut self, e: Event, _: &mut Emitter) -> Result<(), Error> {
                let now = self.timers.processing_time();
                self.timers.register_processing_time(now + 100, 0)?;
                if e.value == b"cancel" {
                    self.timers.delete_processing_time(now + 100, 0)?;
                }
                Ok(())
            }
            fn on_timer(&mut self, t: Timer, out: &mut Emitter) -> Result<(), Error> {
                assert_eq!(t.domain, TimeDomain::ProcessingTime);
                out.emit(Event::keyed(t.key, t.time.to_string()));
                Ok(())
            }
        }
        reset();
        let mut h = Harness::<Ping>::open(Context::default()).unwrap();
        h.advance_processing_time(1000).unwrap();
        h.process(vec![Event::keyed("x", ""), Event::keyed("y", "cancel")])
            .unwrap();
        assert!(h.advance_processing_time(1099).unwrap().is_empty());
        let out = h.advance_processing_time(1100).unwrap();
        assert_eq!(out, vec![Event::keyed("x", "1100")]);
        let err = h.process(vec![Event::unkeyed("no key")]).unwrap_err();
        assert!(err.message().contains("without a current key"), "{err}");
    }

    #[test]
    fn a_batch_costs_one_read_and_one_write() {
        reset();
        let mut h = Harness::<Counter>::open(Context::default()).unwrap();
        let batch: Vec<Event> = (0..1000).map(|i| ev(&format!("k{}", i % 37))).collect();
        let before = host_calls();
        h.process(batch).unwrap();
        assert_eq!(
            host_calls() - before,
            2,
            "one value-get-many and one value-put-many"
        );
        assert_eq!(value::<u64>("count", b"k0"), Some(28));
    }

    #[test]
    fn blind_writes_do_not_read() {
        struct Last {
            last: ValueState<String>,
        }
        impl Operator for Last {
            fn open(_: &Context) -> Result<Self, Error> {
                Ok(Last {
                    last: ValueState::new("last"),
                })
            }
            fn process(&mut self, e: Event, _: &mut Emitter) -> Result<(), Error> {
                self.last.set(&String::from_utf8(e.value).unwrap())
            }
        }
        reset();
        let mut h = Harness::<Last>::open(Context::default()).unwrap();
        h.process(vec![
            Event::keyed("a", "1"),
            Event::keyed("a", "2"),
            Event::keyed("b", "3"),
        ])
        .unwrap();
        assert_eq!(host_calls(), 1, "only the write");
        assert_eq!(value::<String>("last", b"a").as_deref(), Some("2"));
    }

    #[test]
    fn state_needs_a_key() {
        reset();
        let mut h = Harness::<Counter>::open(Context::default()).unwrap();
        let err = h.process(vec![Event::unkeyed("x")]).unwrap_err();
        assert!(err.message().contains("without a current key"), "{err}");
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        reset();
        crate::host::HOST.with(|h| {
            h.borrow_mut()
                .values
                .insert(("count".into(), b"a".to_vec()), vec![0xff])
        });
        let mut h = Harness::<Counter>::open(Context::default()).unwrap();
        let err = h.process(vec![ev("a")]).unwrap_err();
        assert!(err.message().contains("value state 'count'"), "{err}");
    }

    struct Lists {
        seen: ListState<u32>,
        by_value: MapState<String, u32>,
    }

    impl Operator for Lists {
        fn open(_: &Context) -> Result<Self, Error> {
            Ok(Lists {
                seen: ListState::new("seen"),
                by_value: MapState::new("by-value"),
            })
        }
        fn process(&mut self, e: Event, out: &mut Emitter) -> Result<(), Error> {
            let v: u32 = std::str::from_utf8(&e.value)?
                .parse()
                .map_err(|_| Error::new("not a number"))?;
            if v.is_multiple_of(2) {
                self.seen.add(v)?;
            } else {
                let mut all = self.seen.get()?;
                all.push(v);
                self.seen.update(all)?;
            }
            let name = format!("v{}", v % 3);
            let n = self.by_value.get(&name)?.unwrap_or(0);
            self.by_value.insert(&name, n + 1)?;
            if v.is_multiple_of(7) {
                self.by_value.remove(&name)?;
            }
            let entries = self.by_value.entries()?;
            out.emit(Event::keyed(
                e.key.unwrap_or_default(),
                format!("{}", entries.len()),
            ));
            Ok(())
        }
    }

    /// The model the cache must agree with: plain maps, no batching.
    #[derive(Default)]
    struct Model {
        seen: HashMap<String, Vec<u32>>,
        by_value: HashMap<String, std::collections::BTreeMap<String, u32>>,
    }

    impl Model {
        fn apply(&mut self, key: &str, v: u32) -> usize {
            self.seen.entry(key.into()).or_default().push(v);
            let m = self.by_value.entry(key.into()).or_default();
            let name = format!("v{}", v % 3);
            *m.entry(name.clone()).or_default() += 1;
            if v.is_multiple_of(7) {
                m.remove(&name);
            }
            m.len()
        }
    }

    proptest! {
        /// Whatever the batch boundaries, cached list and map state agree
        /// with an unbatched model, both in what is emitted and in what the
        /// host finally holds.
        #[test]
        fn cache_agrees_with_model(events in proptest::collection::vec((0u8..5, 0u32..50), 1..200), cuts in proptest::collection::vec(1usize..40, 1..20)) {
            reset();
            let mut h = Harness::<Lists>::open(Context::default()).unwrap();
            let mut model = Model::default();
            let mut expected = Vec::new();
            let mut batches = Vec::new();
            let mut rest: Vec<Event> = events.iter().map(|(k, v)| Event::keyed(format!("k{k}"), v.to_string())).collect();
            for (key, v) in &events {
                expected.push(model.apply(&format!("k{key}"), *v).to_string());
            }
            let mut c = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*c.next().unwrap()).min(rest.len());
                batches.push(rest.drain(..n).collect::<Vec<_>>());
            }
            let mut got = Vec::new();
            for b in batches {
                got.extend(h.process(b).unwrap().into_iter().map(|e| String::from_utf8(e.value).unwrap()));
            }
            prop_assert_eq!(got, expected);
            for (key, items) in &model.seen {
                prop_assert_eq!(&list::<u32>("seen", key.as_bytes()), items);
            }
        }
    }
}
