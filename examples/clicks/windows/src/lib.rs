//! Clicks per user per window of event time, for the clicks example
//! (`examples/clicks/job.toml`). One component, configured per vertex:
//!
//! ```toml
//! config = { window = "session", gap-ms = 30000 }            # a session per burst of clicks
//! config = { window = "tumbling", size-ms = 60000 }          # clicks per minute
//! config = { window = "sliding", size-ms = 60000, slide-ms = 15000 }
//! # and, for any of them: allowed-lateness-ms = 0 (default)
//! ```
//!
//! Each window's result is one JSON line, keyed by user:
//! `{"window":"session","start":…,"end":…,"clicks":7}` (milliseconds since
//! the Unix epoch, end excluded), with the window's last millisecond as its
//! timestamp. A click too late for its windows goes, unchanged, to the
//! named output `late`.

use wrun_guest::window::{Count, WindowSpec, WindowState, session, sliding, tumbling};
use wrun_guest::{Context, Emitter, Error, Event, Operator, Timer};

/// The operator.
pub struct Clicks {
    kind: &'static str,
    windows: WindowState<Count>,
}

fn spec(config: &serde_json::Value) -> Result<(&'static str, WindowSpec), Error> {
    let int = |name: &str| {
        config
            .get(name)
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| Error::new(format!("config: `{name}` (milliseconds) is required")))
    };
    let spec = match config.get("window").and_then(serde_json::Value::as_str) {
        Some("session") => ("session", session(int("gap-ms")?)),
        Some("tumbling") => ("tumbling", tumbling(int("size-ms")?)),
        Some("sliding") => ("sliding", sliding(int("size-ms")?, int("slide-ms")?)),
        other => {
            return Err(Error::new(format!(
                "config: `window` must be \"session\", \"tumbling\" or \"sliding\", not {other:?}"
            )));
        }
    };
    let lateness = config
        .get("allowed-lateness-ms")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    Ok((spec.0, spec.1.allowed_lateness(lateness)))
}

impl Operator for Clicks {
    fn outputs() -> &'static [&'static str] {
        &["late"]
    }

    fn open(ctx: &Context) -> Result<Self, Error> {
        let config: serde_json::Value =
            serde_json::from_slice(&ctx.config).map_err(|e| Error::new(format!("config: {e}")))?;
        let (kind, spec) = spec(&config)?;
        Ok(Clicks {
            kind,
            windows: WindowState::new("clicks", spec, Count),
        })
    }

    fn process(&mut self, click: Event, out: &mut Emitter) -> Result<(), Error> {
        if !self.windows.add(&click)? {
            out.emit_to("late", click);
        }
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Emitter) -> Result<(), Error> {
        if let Some((w, clicks)) = self.windows.fire(&timer)? {
            let line = serde_json::json!({
                "window": self.kind,
                "start": w.start,
                "end": w.end,
                "clicks": clicks,
            });
            out.emit(Event::keyed(timer.key, line.to_string()));
        }
        Ok(())
    }
}

wrun_guest::export_operator!(Clicks);

#[cfg(test)]
mod tests {
    use super::*;
    use wrun_guest::testing::{Harness, reset};

    #[test]
    fn a_session_closes_after_the_gap() {
        reset();
        let ctx = Context {
            config: br#"{"window":"session","gap-ms":30000}"#.to_vec(),
            ..Context::default()
        };
        let mut h = Harness::<Clicks>::open(ctx).unwrap();
        let at = |t: i64| Event::keyed("ann", "{}").with_timestamp(t);
        h.process(vec![at(0), at(10_000), at(35_000)]).unwrap();
        let out = h.advance_watermark(100_000).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            String::from_utf8(out[0].value.clone()).unwrap(),
            r#"{"clicks":3,"end":65000,"start":0,"window":"session"}"#
        );
        assert_eq!(out[0].timestamp, Some(64_999));
        let err = Harness::<Clicks>::open(Context::default()).err().unwrap();
        assert!(err.message().contains("`window` must be"), "{err}");
    }
}
