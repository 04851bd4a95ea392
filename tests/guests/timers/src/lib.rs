//! Test guest for keyed timers and named outputs, written directly against
//! timers (the SDK's windows are built the same way).
//!
//! - An event with a timestamp counts towards its key's tumbling window of
//!   `window-ms` (config, default 1000); the window's count is emitted as
//!   `key,start,end,count` when the watermark passes its last millisecond
//!   (an event-time timer at `end - 1`, Flink's window max timestamp).
//!   An event whose window has already closed goes to the named output
//!   `late`, unchanged.
//! - A value containing `ping` registers a processing-time timer 1000 ms from now;
//!   it emits `key,ping,<time>`.
//! - A value containing `extremes` registers event-time timers at `i64::MIN` (tag 2)
//!   and `i64::MAX` (tag 3); each emits `key,extreme,<tag>`.
//! - A value containing `flood` registers `flood` (config, default 1000) timers.
//! - A value containing `seen` counts the key's `seen` events in value state
//!   `seen` and emits `key,seen,<count>`; with `ttl-ms` (config) the state
//!   has that time to live in event time.

use wrun_guest::{
    Context, Emitter, Error, Event, MapState, Operator, StateTtl, TimeDomain, Timer, Timers,
    ValueState,
};

/// The operator.
pub struct Windows {
    counts: MapState<i64, u64>,
    seen: ValueState<u64>,
    timers: Timers,
    window: i64,
    flood: i64,
}

const WINDOW: u32 = 0;
const PING: u32 = 1;

impl Operator for Windows {
    fn outputs() -> &'static [&'static str] {
        &["late"]
    }

    fn open(ctx: &Context) -> Result<Self, Error> {
        let config: serde_json::Value =
            serde_json::from_slice(&ctx.config).map_err(|e| Error::new(format!("config: {e}")))?;
        let int =
            |name: &str, default: i64| config.get(name).and_then(|v| v.as_i64()).unwrap_or(default);
        let mut seen = ValueState::new("seen");
        if let Some(ms) = config.get("ttl-ms").and_then(|v| v.as_u64()) {
            seen = seen.with_ttl(StateTtl::event_time(std::time::Duration::from_millis(ms)));
        }
        Ok(Windows {
            counts: MapState::new("counts"),
            seen,
            timers: Timers::new(),
            window: int("window-ms", 1000).max(1),
            flood: int("flood", 1000),
        })
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        // A command anywhere in the value (a JSON line's value is the line).
        let has = |c: &str| event.value.windows(c.len()).any(|w| w == c.as_bytes());
        let command = ["ping", "extremes", "flood", "seen"]
            .into_iter()
            .find(|c| has(c));
        match command {
            Some("seen") => {
                let n = self.seen.get()?.unwrap_or(0) + 1;
                self.seen.set(&n)?;
                let key = String::from_utf8_lossy(event.key.as_deref().unwrap_or_default());
                let line = format!("{key},seen,{n}");
                out.emit(Event::keyed(key.as_bytes(), line));
                return Ok(());
            }
            Some("ping") => {
                let now = self.timers.processing_time();
                return self.timers.register_processing_time(now + 1000, PING);
            }
            Some("extremes") => {
                self.timers.register_event_time(i64::MIN, 2)?;
                return self.timers.register_event_time(i64::MAX, 3);
            }
            Some("flood") => {
                for i in 0..self.flood {
                    self.timers.register_event_time(i, 9)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let Some(ts) = event.timestamp else {
            return Err(Error::new("an event without a timestamp"));
        };
        let start = ts.div_euclid(self.window) * self.window;
        let end = start + self.window;
        if self
            .timers
            .current_watermark()
            .is_some_and(|w| end - 1 <= w)
        {
            out.emit_to("late", event);
            return Ok(());
        }
        let n = self.counts.get(&start)?.unwrap_or(0);
        self.counts.insert(&start, n + 1)?;
        self.timers.register_event_time(end - 1, WINDOW)
    }

    fn on_timer(&mut self, t: Timer, out: &mut Emitter) -> Result<(), Error> {
        let key = String::from_utf8_lossy(&t.key).into_owned();
        let line = match (t.domain, t.tag) {
            (TimeDomain::ProcessingTime, _) => format!("{key},ping,{}", t.time),
            (TimeDomain::EventTime, WINDOW) => {
                let start = t.time + 1 - self.window;
                let n = self.counts.get(&start)?.unwrap_or(0);
                self.counts.remove(&start)?;
                format!("{key},{start},{},{n}", t.time + 1)
            }
            (TimeDomain::EventTime, tag) => format!("{key},extreme,{tag}"),
        };
        out.emit(Event::keyed(t.key, line));
        Ok(())
    }
}

wrun_guest::export_operator!(Windows);

#[cfg(test)]
mod tests {
    use super::*;
    use wrun_guest::testing::{Harness, pending_timers, reset};

    #[test]
    fn windows_close_when_the_watermark_passes_them() {
        reset();
        let mut h = Harness::<Windows>::open(Context::default()).unwrap();
        let at = |k: &str, t: i64| Event::keyed(k, "x").with_timestamp(t);
        h.process(vec![at("a", 10), at("a", 999), at("a", 1000), at("b", 5)])
            .unwrap();
        assert_eq!(pending_timers(), 3);
        let out: Vec<String> = h
            .advance_watermark(999)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.value).unwrap())
            .collect();
        assert_eq!(out, vec!["a,0,1000,2", "b,0,1000,1"]);
        assert!(h.process(vec![at("a", 500)]).unwrap().is_empty());
        assert_eq!(h.take_output("late").len(), 1);
    }
}
