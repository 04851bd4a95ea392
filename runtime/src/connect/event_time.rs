//! Event time at the sources: an event's timestamp (milliseconds since the
//! Unix epoch) from a JSON field, and what a reader tells the runtime about
//! the event times it has read per split, from which the runtime makes the
//! source's watermarks (docs/time.md).

/// What a reader has read of one split, for its watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTime {
    /// The split's name (a partition, a subject filter).
    pub split: String,
    /// The highest event time read from it so far.
    pub max_event_time: Option<i64>,
    /// Events read from it so far (the runtime tells a quiet split by
    /// this count standing still).
    pub events: u64,
    /// The split has ended (a bounded split read to its end): it holds
    /// no watermark back.
    pub ended: bool,
}

impl SplitTime {
    /// A split nothing was read from yet.
    pub fn new(split: impl Into<String>) -> SplitTime {
        SplitTime {
            split: split.into(),
            max_event_time: None,
            events: 0,
            ended: false,
        }
    }

    /// An event with timestamp `ts` was read.
    pub fn saw(&mut self, ts: Option<i64>) {
        if let Some(ts) = ts {
            self.max_event_time = Some(self.max_event_time.map_or(ts, |m| m.max(ts)));
        }
        self.events += 1;
    }
}

/// The timestamp at JSON pointer `ptr` of `v`: a number of milliseconds
/// since the Unix epoch (a fraction is cut off), or an RFC 3339 string
/// such as "2026-12-02T10:00:00.250Z".
pub fn json_timestamp(v: &serde_json::Value, ptr: &str) -> Result<i64, String> {
    match v.pointer(ptr) {
        Some(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(ms), _) => Ok(ms),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.floor() as i64),
            _ => Err(format!("the timestamp at JSON pointer {ptr:?} ({n}) is out of range")),
        },
        Some(serde_json::Value::String(s)) => super::config::rfc3339_ms(s).ok_or_else(|| {
            format!("the timestamp at JSON pointer {ptr:?} ({s:?}) is neither ms since the Unix epoch nor an RFC 3339 time such as \"2026-12-02T10:00:00Z\"")
        }),
        None | Some(serde_json::Value::Null) => {
            Err(format!("no timestamp at JSON pointer {ptr:?}"))
        }
        Some(other) => Err(format!(
            "the timestamp at JSON pointer {ptr:?} is {other}: a number of ms since the Unix epoch or an RFC 3339 string"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_are_ms_or_rfc3339() {
        let v =
            json!({"a": 1765000000123_i64, "b": "2026-12-02T10:00:00.250Z", "c": 12.9, "d": true});
        assert_eq!(json_timestamp(&v, "/a"), Ok(1765000000123));
        assert_eq!(json_timestamp(&v, "/b"), Ok(1796205600250));
        assert_eq!(json_timestamp(&v, "/c"), Ok(12));
        assert!(json_timestamp(&v, "/d").unwrap_err().contains("is true"));
        assert!(
            json_timestamp(&v, "/e")
                .unwrap_err()
                .contains("no timestamp")
        );
        assert!(
            json_timestamp(&json!({"x": "soon"}), "/x")
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn a_split_keeps_its_highest_time() {
        let mut s = SplitTime::new("p0");
        s.saw(Some(5));
        s.saw(Some(3));
        s.saw(None);
        assert_eq!(s.max_event_time, Some(5));
        assert_eq!(s.events, 3);
    }
}
