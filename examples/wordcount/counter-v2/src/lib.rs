//! Version 2 of the wordcount counter, the module swapped in for v1 in the
//! upgrade walkthrough of docs/savepoints.md.
//!
//! What changed: besides each word's running count, v2 counts the events it
//! has seen itself, and emits `"<count> (<n> since v2)"`. A run resumed from
//! a v1 savepoint therefore shows both that the counts continued (`count`
//! picks up where v1 stopped) and that v2 is the one counting.
//!
//! State format `wordcount/2`: a [`Stats`] per word under the state name
//! `stats`. It reads v1's state (`wordcount/1`: a `u64` under `count`) and
//! migrates each word on first use: the old value moves into `stats` and
//! the old entry is cleared. Any other format is refused, so resuming from
//! state this counter does not understand is a clear error, never corrupt
//! counts.

use serde::{Deserialize, Serialize};
use wrun_guest::{Context, Emitter, Error, Event, Operator, StateFormat, ValueState};

/// What v2 keeps per word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Occurrences of the word, v1's included.
    pub count: u64,
    /// Occurrences counted by v2.
    pub since_v2: u64,
}

/// The v2 counter.
pub struct CounterV2 {
    stats: ValueState<Stats>,
    /// v1's state, read only to migrate it.
    legacy: ValueState<u64>,
}

impl Operator for CounterV2 {
    fn state_format() -> StateFormat {
        StateFormat {
            name: "wordcount".into(),
            version: 2,
        }
    }

    fn open(ctx: &Context) -> Result<Self, Error> {
        if let Some(f) = &ctx.restored_format
            && (f.name != "wordcount" || !(1..=2).contains(&f.version))
        {
            return Err(Error::new(format!(
                "cannot read state written as {}/{}: counter v2 reads wordcount/1 (migrating it) and wordcount/2",
                f.name, f.version
            )));
        }
        Ok(CounterV2 {
            stats: ValueState::new("stats"),
            legacy: ValueState::new("count"),
        })
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        // A word not seen since the upgrade may still hold v1's count.
        // (Checkpoints after a partial migration keep both names, so this
        // also works when resuming from a wordcount/2 savepoint.)
        let mut s = match self.stats.get()? {
            Some(s) => s,
            None => {
                let old = self.legacy.get()?;
                if old.is_some() {
                    self.legacy.clear()?;
                }
                Stats {
                    count: old.unwrap_or(0),
                    since_v2: 0,
                }
            }
        };
        s.count += 1;
        s.since_v2 += 1;
        self.stats.set(&s)?;
        out.emit(Event {
            key: event.key,
            value: format!("{} ({} since v2)", s.count, s.since_v2).into_bytes(),
            timestamp: event.timestamp,
        });
        Ok(())
    }
}

wrun_guest::export_operator!(CounterV2);

#[cfg(test)]
mod tests {
    use super::*;
    use wrun_guest::testing::{self, Harness};

    #[test]
    fn migrates_v1_counts_on_first_use() {
        testing::reset();
        let ctx = Context {
            restored: true,
            restored_format: Some(StateFormat {
                name: "wordcount".into(),
                version: 1,
            }),
            ..Context::default()
        };
        let mut h = Harness::<CounterV2>::open(ctx).unwrap();
        // What v1 left behind: "a" counted 4 times.
        testing::set_value::<u64>("count", b"a", &4);
        let out = h
            .process(vec![Event::keyed("a", ""), Event::keyed("b", "")])
            .unwrap();
        assert_eq!(out[0].value, b"5 (1 since v2)");
        assert_eq!(out[1].value, b"1 (1 since v2)");
        assert_eq!(
            testing::value::<u64>("count", b"a"),
            None,
            "v1 entry cleared"
        );
        assert_eq!(
            testing::value::<Stats>("stats", b"a"),
            Some(Stats {
                count: 5,
                since_v2: 1
            })
        );
    }

    #[test]
    fn refuses_unknown_formats() {
        let ctx = Context {
            restored: true,
            restored_format: Some(StateFormat {
                name: "wordcount".into(),
                version: 3,
            }),
            ..Context::default()
        };
        let err = Harness::<CounterV2>::open(ctx).err().unwrap();
        assert!(err.message().contains("wordcount/3"), "{err}");
    }
}
