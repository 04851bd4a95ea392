//! The wordcount tokenizer: splits each event's value (a line of text) into
//! lowercase words and emits one event per word, keyed by the word, so a
//! `hash` edge sends every occurrence of a word to the same counter subtask.
//! It keeps no state.

use wrun_guest::{Context, Emitter, Error, Event, Operator};

/// The tokenizer operator.
pub struct Tokenizer;

impl Operator for Tokenizer {
    fn open(_ctx: &Context) -> Result<Self, Error> {
        Ok(Tokenizer)
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        let text = String::from_utf8_lossy(&event.value);
        for word in words(&text) {
            out.emit(Event {
                key: Some(word.into_bytes()),
                value: Vec::new(),
                timestamp: event.timestamp,
            });
        }
        Ok(())
    }
}

/// The lowercase words of a text: runs of letters, digits and apostrophes
/// inside words ("don't" is one word; "'quoted'" is "quoted").
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

wrun_guest::export_operator!(Tokenizer);

#[cfg(test)]
mod tests {
    use super::*;
    use wrun_guest::testing::Harness;

    #[test]
    fn splits_and_lowercases() {
        let got: Vec<String> = words("The cat's hat -- 'Hello', world!  42x").collect();
        assert_eq!(got, ["the", "cat's", "hat", "hello", "world", "42x"]);
    }

    #[test]
    fn one_event_per_word_keyed_by_word() {
        let mut h = Harness::<Tokenizer>::open(Context::default()).unwrap();
        let out = h
            .process(vec![Event::unkeyed("a b a"), Event::unkeyed("")])
            .unwrap();
        let keys: Vec<&[u8]> = out.iter().map(|e| e.key.as_deref().unwrap()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"a"]);
    }
}
