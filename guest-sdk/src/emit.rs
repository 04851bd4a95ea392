//! Events in and out: the SDK's [`Event`], the [`Emitter`] an operator
//! emits through, and the packing of both into the flat lists of
//! `wrun:operator@0.2.0` (`events` and `emitted`).

use crate::Error;
use crate::bindings::wrun::operator::types;

/// One record of a stream: an optional key, a value and an optional
/// event-time timestamp (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Event {
    /// The partitioning key; keyed state and timers are scoped to it.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub value: Vec<u8>,
    /// Event time in milliseconds since the Unix epoch, if known.
    pub timestamp: Option<i64>,
}

impl Event {
    /// An event with a key, a value and no timestamp.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Event {
        Event {
            key: Some(key.into()),
            value: value.into(),
            timestamp: None,
        }
    }

    /// An event without a key (it cannot use keyed state downstream unless
    /// an operator gives it one).
    pub fn unkeyed(value: impl Into<Vec<u8>>) -> Event {
        Event {
            key: None,
            value: value.into(),
            timestamp: None,
        }
    }

    /// The same event with a timestamp.
    pub fn with_timestamp(mut self, millis: i64) -> Event {
        self.timestamp = Some(millis);
        self
    }
}

const HAS_KEY: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;

/// The events of a packed batch, each copied out into an [`Event`].
pub(crate) fn unpack(b: &types::Events) -> Result<Vec<Event>, Error> {
    let n = b.key_ends.len();
    if b.value_ends.len() != n || b.flags.len() != n || b.timestamps.len() != n {
        return Err(Error::new(
            "the host sent a packed batch whose lists differ in length",
        ));
    }
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for i in 0..n {
        let (ke, ve) = (b.key_ends[i] as usize, b.value_ends[i] as usize);
        if ke < start || ve < ke || ve > b.data.len() {
            return Err(Error::new("the host sent a packed batch with bad offsets"));
        }
        let flags = b.flags[i];
        out.push(Event {
            key: (flags & HAS_KEY != 0).then(|| b.data[start..ke].to_vec()),
            value: b.data[ke..ve].to_vec(),
            timestamp: (flags & HAS_TIMESTAMP != 0).then_some(b.timestamps[i]),
        });
        start = ve;
    }
    Ok(out)
}

/// Events packed as the `events` record.
pub(crate) fn pack<'a>(events: impl ExactSizeIterator<Item = &'a Event>) -> types::Events {
    let n = events.len();
    let mut b = types::Events {
        data: Vec::new(),
        key_ends: Vec::with_capacity(n),
        value_ends: Vec::with_capacity(n),
        flags: Vec::with_capacity(n),
        timestamps: Vec::with_capacity(n),
    };
    for e in events {
        let mut flags = 0;
        if let Some(k) = &e.key {
            b.data.extend_from_slice(k);
            flags |= HAS_KEY;
        }
        b.key_ends.push(b.data.len() as u32);
        b.data.extend_from_slice(&e.value);
        b.value_ends.push(b.data.len() as u32);
        if e.timestamp.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        b.flags.push(flags);
        b.timestamps.push(e.timestamp.unwrap_or(0));
    }
    b
}

/// An event emitted to a named output.
pub(crate) type Named = (&'static str, Event);

/// Collects the events an operator emits: to its main output, or to one
/// of its named outputs ([`Operator::outputs`](crate::Operator::outputs)).
///
/// An event emitted without a timestamp gets the timestamp of the event
/// being processed (or, in [`Operator::on_timer`](crate::Operator::on_timer),
/// the time of an event-time timer), so event time flows through operators
/// that do not deal with it.
#[derive(Debug, Default)]
pub struct Emitter {
    pub(crate) out: Vec<Event>,
    /// Per event, its output (0: main); empty while all went to main.
    pub(crate) outputs: Vec<u8>,
    /// The operator's named outputs.
    pub(crate) names: &'static [&'static str],
    /// The timestamp an event without one gets.
    pub(crate) inherit: Option<i64>,
    /// The first emit to an undeclared output.
    pub(crate) error: Option<Error>,
}

impl Emitter {
    pub(crate) fn new(names: &'static [&'static str], capacity: usize) -> Emitter {
        Emitter {
            out: Vec::with_capacity(capacity),
            names,
            ..Emitter::default()
        }
    }

    /// Emits one event to the main output.
    pub fn emit(&mut self, mut event: Event) {
        if event.timestamp.is_none() {
            event.timestamp = self.inherit;
        }
        self.out.push(event);
        if !self.outputs.is_empty() {
            self.outputs.push(0);
        }
    }

    /// Emits one event to the named output `output` (one of
    /// [`Operator::outputs`](crate::Operator::outputs)); the job's manifest
    /// wires it with `from = "<vertex>.<output>"`. Emitting to an output
    /// the operator did not declare fails the call.
    pub fn emit_to(&mut self, output: &str, mut event: Event) {
        let Some(i) = self.names.iter().position(|n| *n == output) else {
            if self.error.is_none() {
                self.error = Some(Error::new(format!(
                    "emitted to output '{output}', which the operator does not declare in Operator::outputs() (it declares [{}])",
                    self.names.join(", ")
                )));
            }
            return;
        };
        if event.timestamp.is_none() {
            event.timestamp = self.inherit;
        }
        if self.outputs.is_empty() {
            self.outputs.resize(self.out.len(), 0);
        }
        self.out.push(event);
        self.outputs.push(i as u8 + 1);
    }

    /// How many events were emitted so far in this call.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// True when nothing was emitted so far in this call.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// What was emitted, as the `emitted` record.
    pub(crate) fn into_emitted(self) -> Result<types::Emitted, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(types::Emitted {
            events: pack(self.out.iter()),
            outputs: self.outputs,
        })
    }

    /// What was emitted: the main output's events, and each named
    /// output's (native tests).
    pub(crate) fn split(self) -> Result<(Vec<Event>, Vec<Named>), Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.outputs.is_empty() {
            return Ok((self.out, Vec::new()));
        }
        let (mut main, mut side) = (Vec::new(), Vec::new());
        for (e, o) in self.out.into_iter().zip(self.outputs) {
            match o {
                0 => main.push(e),
                o => side.push((self.names[o as usize - 1], e)),
            }
        }
        Ok((main, side))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_and_outputs_are_per_event() {
        let events = vec![
            Event::keyed("k", "v").with_timestamp(-3),
            Event::unkeyed(""),
            Event::keyed("", "x"),
        ];
        assert_eq!(unpack(&pack(events.iter())).unwrap(), events);
        let mut e = Emitter::new(&["late"], 4);
        e.inherit = Some(7);
        e.emit(Event::unkeyed("a"));
        e.emit_to("late", Event::unkeyed("b").with_timestamp(1));
        e.emit(Event::unkeyed("c"));
        let out = e.into_emitted().unwrap();
        assert_eq!(out.outputs, vec![0, 1, 0]);
        assert_eq!(out.events.timestamps, vec![7, 1, 7]);
        let mut e = Emitter::new(&[], 1);
        e.emit_to("nope", Event::unkeyed("x"));
        assert!(e.into_emitted().unwrap_err().message().contains("'nope'"));
    }
}
