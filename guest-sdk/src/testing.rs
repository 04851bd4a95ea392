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
use crate::{Context, Error, Event, Operator, codec};
use serde::de::DeserializeOwned;

/// An operator opened natively against the in-memory host.
pub struct Harness<T: Operator> {
    op: T,
}

impl<T: Operator> Harness<T> {
    /// Opens the operator. Each thread has its own in-memory host; state
    /// written by earlier harnesses on the thread is still there, which is
    /// how a test simulates a restore. Call [`reset`] for a clean host.
    pub fn open(ctx: Context) -> Result<Harness<T>, Error> {
        Ok(Harness {
            op: runtime::open_operator::<T>(ctx)?,
        })
    }

    /// Processes one batch and returns what the operator emitted.
    pub fn process(&mut self, batch: Vec<Event>) -> Result<Vec<Event>, Error> {
        runtime::run_batch(&mut self.op, batch)
    }

    /// Closes the operator and returns its final events.
    pub fn close(&mut self) -> Result<Vec<Event>, Error> {
        runtime::close_operator(&mut self.op)
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
