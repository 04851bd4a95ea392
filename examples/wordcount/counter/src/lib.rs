//! The wordcount counter: counts each word (the event key) in keyed
//! `ValueState<u64>` and emits the word's running count as decimal text.
//!
//! The state name is `count` and its format `wordcount/1`: a postcard
//! varint per word (see docs/state-format.md), which counters written in
//! other languages read and write too.

use wrun_guest::{Context, Emitter, Error, Event, Operator, StateFormat, ValueState};

/// The counter operator.
pub struct Counter {
    count: ValueState<u64>,
}

impl Operator for Counter {
    fn state_format() -> StateFormat {
        StateFormat {
            name: "wordcount".into(),
            version: 1,
        }
    }

    fn open(ctx: &Context) -> Result<Self, Error> {
        if let Some(f) = &ctx.restored_format
            && (f.name != "wordcount" || f.version != 1)
        {
            return Err(Error::new(format!(
                "cannot read state written as {}/{}: this counter reads wordcount/1",
                f.name, f.version
            )));
        }
        Ok(Counter {
            count: ValueState::new("count"),
        })
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        let n = self.count.get()?.unwrap_or(0) + 1;
        self.count.set(&n)?;
        out.emit(Event {
            key: event.key,
            value: n.to_string().into_bytes(),
            timestamp: event.timestamp,
        });
        Ok(())
    }
}

wrun_guest::export_operator!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use wrun_guest::testing::{self, Harness};

    #[test]
    fn counts_per_word_across_batches() {
        testing::reset();
        let mut h = Harness::<Counter>::open(Context::default()).unwrap();
        let out = h
            .process(vec![
                Event::keyed("a", ""),
                Event::keyed("b", ""),
                Event::keyed("a", ""),
            ])
            .unwrap();
        let values: Vec<&[u8]> = out.iter().map(|e| e.value.as_slice()).collect();
        assert_eq!(values, [b"1".as_slice(), b"1", b"2"]);
        let out = h.process(vec![Event::keyed("a", "")]).unwrap();
        assert_eq!(out[0].value, b"3");
        assert_eq!(testing::value::<u64>("count", b"a"), Some(3));
    }

    #[test]
    fn refuses_foreign_state_formats() {
        let ctx = Context {
            restored: true,
            restored_format: Some(StateFormat {
                name: "other".into(),
                version: 9,
            }),
            ..Context::default()
        };
        let err = Harness::<Counter>::open(ctx).err().unwrap();
        assert!(err.message().contains("other/9"), "{err}");
    }
}
