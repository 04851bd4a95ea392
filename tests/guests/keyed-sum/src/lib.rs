//! Benchmark guest: a keyed running sum. Each event's value is a decimal
//! integer; the operator adds it to the key's `ValueState<i64>` "sum" and
//! emits the new sum as decimal text. The native baseline in
//! `runtime/benches/throughput.rs` implements exactly this logic.

use wrun_guest::{Context, Emitter, Error, Event, Operator, ValueState};

/// The keyed-sum operator.
pub struct KeyedSum {
    sum: ValueState<i64>,
}

/// Parses a decimal integer without allocating.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (neg, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

impl Operator for KeyedSum {
    fn open(_ctx: &Context) -> Result<Self, Error> {
        Ok(KeyedSum {
            sum: ValueState::new("sum"),
        })
    }

    fn process(&mut self, event: Event, out: &mut Emitter) -> Result<(), Error> {
        let v =
            parse_i64(&event.value).ok_or_else(|| Error::new("value is not a decimal integer"))?;
        let s = self.sum.get()?.unwrap_or(0).wrapping_add(v);
        self.sum.set(&s)?;
        out.emit(Event {
            key: event.key,
            value: s.to_string().into_bytes(),
            timestamp: event.timestamp,
        });
        Ok(())
    }
}

wrun_guest::export_operator!(KeyedSum);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"4x"), None);
        assert_eq!(parse_i64(b"99999999999999999999"), None);
    }

    #[test]
    fn sums_per_key() {
        wrun_guest::testing::reset();
        let mut h = wrun_guest::testing::Harness::<KeyedSum>::open(Context::default()).unwrap();
        let out = h
            .process(vec![
                Event::keyed("a", "2"),
                Event::keyed("a", "3"),
                Event::keyed("b", "1"),
            ])
            .unwrap();
        assert_eq!(out[1].value, b"5");
    }
}
