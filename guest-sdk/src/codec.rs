//! The state codec: how typed state values become bytes.
//!
//! wrun uses the [postcard](https://docs.rs/postcard) wire format through
//! serde: unsigned integers are LEB128 varints, signed integers are zigzag
//! varints, strings and byte strings are a varint length then the bytes,
//! structs and tuples are their fields in order, `Option` is a 0/1 tag then
//! the value, enums a varint variant index then the fields. Floats are
//! little-endian IEEE 754. The full table is in `docs/state-format.md`; SDKs
//! for other languages implement the same bytes.

use serde::{Serialize, de::DeserializeOwned};

/// A state value could not be decoded: it was written in another format or
/// is corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    what: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot decode state value: {}", self.what)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing into a Vec cannot run out of space; the only failures are
    // types serde cannot express in postcard (e.g. maps of unknown length
    // from a custom Serialize impl), which are bugs in the operator's types.
    match postcard::to_allocvec(value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("state type cannot be encoded by the wrun state codec: {e}"),
    }
}

/// Encodes a value at the end of `out` (no allocation beyond `out`'s growth).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: Vec<u8>) -> Vec<u8> {
    match postcard::to_extend(value, out) {
        Ok(bytes) => bytes,
        Err(e) => panic!("state type cannot be encoded by the wrun state codec: {e}"),
    }
}

/// Decodes a value; trailing bytes are an error, so a value written by a
/// wider type is never silently truncated.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError {
        what: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError {
            what: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        word: String,
        count: u64,
        delta: i32,
        tags: Vec<String>,
        last: Option<i64>,
        bytes: Vec<u8>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<String>(),
            any::<u64>(),
            any::<i32>(),
            proptest::collection::vec(any::<String>(), 0..4),
            any::<Option<i64>>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(word, count, delta, tags, last, bytes)| Sample {
                word,
                count,
                delta,
                tags,
                last,
                bytes,
            })
    }

    proptest! {
        #[test]
        fn struct_round_trips(s in sample()) {
            prop_assert_eq!(decode::<Sample>(&encode(&s)).unwrap(), s);
        }

        #[test]
        fn u64_round_trips_and_is_a_varint(n in any::<u64>()) {
            let bytes = encode(&n);
            prop_assert_eq!(decode::<u64>(&bytes).unwrap(), n);
            // LEB128: 7 bits per byte.
            prop_assert_eq!(bytes.len(), std::cmp::max(1, (64 - n.leading_zeros() as usize).div_ceil(7)));
        }

        #[test]
        fn truncated_input_never_panics(s in sample(), cut in 0usize..64) {
            let bytes = encode(&s);
            let cut = cut.min(bytes.len());
            // A prefix either fails to decode or (rarely) decodes to another
            // value; it must never panic.
            let _ = decode::<Sample>(&bytes[..cut]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode::<Sample>(&bytes);
            let _ = decode::<Vec<String>>(&bytes);
        }
    }

    #[test]
    fn documented_bytes() {
        // These are the examples in docs/state-format.md.
        assert_eq!(encode(&0u64), [0x00]);
        assert_eq!(encode(&127u64), [0x7f]);
        assert_eq!(encode(&128u64), [0x80, 0x01]);
        assert_eq!(encode(&300u32), [0xac, 0x02]);
        assert_eq!(encode(&-1i64), [0x01]);
        assert_eq!(encode(&1i64), [0x02]);
        assert_eq!(encode("hi"), [0x02, b'h', b'i']);
        assert_eq!(encode(&Some(5u8)), [0x01, 0x05]);
        assert_eq!(encode(&None::<u8>), [0x00]);
        assert_eq!(encode(&(1u8, true)), [0x01, 0x01]);
        assert_eq!(encode(&1.5f64), 1.5f64.to_le_bytes());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let err = decode::<u8>(&[1, 2]).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }
}
