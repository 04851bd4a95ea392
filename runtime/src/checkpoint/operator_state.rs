//! The operator-state chunk: a guest's non-keyed state for one subtask,
//! tagged with the state format that wrote it. Layout: format name length
//! (u32 LE), format name (UTF-8), format version (u32 LE), then the guest's
//! bytes. Encoder and decoder live together so the two cannot drift.

/// A subtask's non-keyed state as stored in its chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStateChunk {
    /// The state format's name, as the guest declared it.
    pub format_name: String,
    /// The state format's version.
    pub format_version: u32,
    /// The guest's bytes.
    pub data: Vec<u8>,
}

/// The chunk bytes of `format_name`/`format_version` state `data`.
pub fn encode_operator_state(format_name: &str, format_version: u32, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + format_name.len() + 8);
    payload.extend_from_slice(&(format_name.len() as u32).to_le_bytes());
    payload.extend_from_slice(format_name.as_bytes());
    payload.extend_from_slice(&format_version.to_le_bytes());
    payload.extend_from_slice(data);
    payload
}

/// Reads an operator-state chunk back; `None` when it is malformed
/// (truncated, or a name that is not UTF-8).
pub fn decode_operator_state(bytes: &[u8]) -> Option<OperatorStateChunk> {
    let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let name_end = n.checked_add(4)?;
    let format_name = std::str::from_utf8(bytes.get(4..name_end)?)
        .ok()?
        .to_string();
    let version_end = name_end.checked_add(4)?;
    let format_version = u32::from_le_bytes(bytes.get(name_end..version_end)?.try_into().ok()?);
    Some(OperatorStateChunk {
        format_name,
        format_version,
        data: bytes.get(version_end..)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncated_chunks() {
        let bytes = encode_operator_state("counts", 3, b"\x00\x01payload");
        let back = decode_operator_state(&bytes).unwrap();
        assert_eq!(
            back,
            OperatorStateChunk {
                format_name: "counts".into(),
                format_version: 3,
                data: b"\x00\x01payload".to_vec(),
            }
        );
        for cut in 0..4 + 6 + 4 {
            assert!(
                decode_operator_state(&bytes[..cut]).is_none(),
                "cut at {cut}"
            );
        }
        // A name length past the end (or overflowing) is malformed, not a panic.
        assert!(decode_operator_state(&u32::MAX.to_le_bytes()).is_none());
    }
}
