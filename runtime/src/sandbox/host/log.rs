//! `wrun:operator/log`: guest log lines into wrun's log, tagged with the
//! subtask. A guest's panic message (the Rust SDK logs it from its panic
//! hook) is kept so the trap that follows can say why.

use super::SubtaskData;

/// Longest log line kept; longer lines are cut.
const MAX_LINE: usize = 8 * 1024;

/// Implements `wrun:operator/log` of bindings module `$v` (the same in
/// every version).
macro_rules! log_host {
    ($v:ident) => {
        mod $v {
            use super::*;
            use crate::sandbox::bindings::$v::wrun::operator::log::{Host, Level};

            impl Host for SubtaskData {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let mut msg = message;
        if msg.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let who = &*self.who;
        match level {
            Level::Trace => tracing::trace!(target: "wrun::guest", operator = who, "{msg}"),
            Level::Debug => tracing::debug!(target: "wrun::guest", operator = who, "{msg}"),
            Level::Info => tracing::info!(target: "wrun::guest", operator = who, "{msg}"),
            Level::Warn => tracing::warn!(target: "wrun::guest", operator = who, "{msg}"),
            Level::Error => {
                tracing::error!(target: "wrun::guest", operator = who, "{msg}");
                if let Some(p) = msg.strip_prefix("panicked at ") {
                    self.last_panic = Some(p.to_string());
                }
            }
        }
        Ok(())
    }
}
        }
    };
}

log_host!(v1);
log_host!(v2);
