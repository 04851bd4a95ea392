//! Content hashes: one blake3 newtype family, so every ID that names bytes
//! (a module's digest, a checkpoint chunk's name) is made, printed and
//! parsed the same way. This module sits below every other layer.

macro_rules! blake3_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The blake3 hash of some bytes.
            pub fn of(bytes: &[u8]) -> $name {
                $name(*blake3::hash(bytes).as_bytes())
            }

            /// Lowercase hex, 64 digits.
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly 64 lowercase hex digits (so a parsed ID is
            /// always safe in a file name).
            pub fn parse(s: &str) -> Option<$name> {
                let mut out = [0u8; 32];
                (s.len() == 64
                    && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    && hex::decode_to_slice(s, &mut out).is_ok())
                .then_some($name(out))
            }
        }
    };
}

blake3_id!(
    /// A module digest: blake3 of the component's bytes; shown as
    /// `blake3:<hex>`.
    Digest
);

blake3_id!(
    /// The blake3 hash of a checkpoint chunk's bytes; its name in the store.
    ChunkHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_only_lowercase_parses() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(&d.hex()), Some(d));
        assert_eq!(d.0, *blake3::hash(b"x").as_bytes());
        assert!(Digest::parse(&d.hex().to_uppercase()).is_none());
        assert!(ChunkHash::parse("../x").is_none());
        assert!(ChunkHash::parse(&"a".repeat(63)).is_none());
    }
}
