//! Sinks: JSON lines to a file or stdout, or discard (for benchmarks).

use super::ExecError;
use crate::job::SinkKind;
use crate::sandbox::Event;
use std::io::Write;

/// An open sink.
pub(super) enum Sink {
    Writer(Box<dyn Write + Send>, String),
    Discard,
}

impl Sink {
    pub(super) fn open(name: &str, kind: &SinkKind) -> Result<Sink, ExecError> {
        Ok(match kind {
            SinkKind::File { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| ExecError::Sink {
                        vertex: name.to_string(),
                        detail: format!("cannot create output directory {}: {e}", dir.display()),
                    })?;
                }
                let f = std::fs::File::create(path).map_err(|e| ExecError::Sink {
                    vertex: name.to_string(),
                    detail: format!("cannot create output file {}: {e}", path.display()),
                })?;
                Sink::Writer(
                    Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
                    path.display().to_string(),
                )
            }
            SinkKind::Stdout => Sink::Writer(
                Box::new(std::io::LineWriter::new(std::io::stdout())),
                "stdout".into(),
            ),
            SinkKind::Discard => Sink::Discard,
        })
    }

    pub(super) fn write(&mut self, name: &str, batch: &[Event]) -> Result<(), ExecError> {
        let Sink::Writer(w, target) = self else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(batch.len() * 32);
        for e in batch {
            json_line(e, &mut buf);
        }
        w.write_all(&buf).map_err(|e| ExecError::Sink {
            vertex: name.to_string(),
            detail: format!("writing {target}: {e}"),
        })
    }

    pub(super) fn finish(&mut self, name: &str) -> Result<(), ExecError> {
        if let Sink::Writer(w, target) = self {
            w.flush().map_err(|e| ExecError::Sink {
                vertex: name.to_string(),
                detail: format!("writing {target}: {e}"),
            })?;
        }
        Ok(())
    }
}

/// `{"key":…,"value":…}` (plus `"timestamp"` when set). Bytes that are
/// UTF-8 become JSON strings; others become `{"hex":"…"}`.
pub fn json_line(e: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"key\":");
    match &e.key {
        Some(k) => bytes_json(k, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value\":");
    bytes_json(&e.value, out);
    if let Some(ts) = e.timestamp {
        out.extend_from_slice(format!(",\"timestamp\":{ts}").as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

fn bytes_json(b: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            // serde_json's string escaping; writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Err(_) => {
            out.extend_from_slice(b"{\"hex\":\"");
            out.extend_from_slice(hex::encode(b).as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let mut out = Vec::new();
        json_line(
            &Event {
                key: Some(b"a\"b".to_vec()),
                value: b"1".to_vec(),
                timestamp: Some(5),
            },
            &mut out,
        );
        json_line(
            &Event {
                key: None,
                value: vec![0xff],
                timestamp: None,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"key\":\"a\\\"b\",\"value\":\"1\",\"timestamp\":5}\n{\"key\":null,\"value\":{\"hex\":\"ff\"}}\n"
        );
    }
}
