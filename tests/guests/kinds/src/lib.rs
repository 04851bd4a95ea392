//! Test guest: list and map keyed state, the same logic as its Python
//! (`kinds-py`) and JavaScript (`kinds-js`) twins, so their outputs and
//! savepoints can be compared across languages.
//!
//! Per event (key: any, value: text): `recent` (a list of strings) gets the
//! value appended and is cut to its last 3; `digits` (a map from string to
//! u64) counts the value's last character, as `d<char>`. It emits
//! `<recent joined by ','> <digits entries as k=v joined by '|'>`.

use wrun_guest::{Context, Emitter, Error, Event, ListState, MapState, Operator, StateFormat};

/// The operator.
pub struct Kinds {
    recent: ListState<String>,
    digits: MapState<String, u64>,
}

impl Operator for Kinds {
    fn state_format() -> StateFormat {
        StateFormat {
            name: "kinds".into(),
            version: 1,
        }
    }

    fn open(_ctx: &Context) -> Result<Self, Error> {
        Ok(Kinds {
            recent: ListState::new("recent"),
            digits: MapState::new("digits"),
        })
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        let value = String::from_utf8_lossy(&event.value).into_owned();
        self.recent.add(value.clone())?;
        let mut recent = self.recent.get()?;
        if recent.len() > 3 {
            recent.drain(..recent.len() - 3);
            self.recent.update(recent.clone())?;
        }
        let digit = format!("d{}", value.chars().last().unwrap_or('-'));
        let n = self.digits.get(&digit)?.unwrap_or(0) + 1;
        self.digits.insert(&digit, n)?;
        let entries: Vec<String> = self
            .digits
            .entries()?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.emit(Event {
            key: event.key,
            value: format!("{} {}", recent.join(","), entries.join("|")).into_bytes(),
            timestamp: event.timestamp,
        });
        Ok(())
    }
}

wrun_guest::export_operator!(Kinds);
