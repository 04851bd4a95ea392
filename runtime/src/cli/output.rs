//! What several commands share on the terminal: UTC times in tables, the
//! progress line while a request is waited for, the summary of a taken
//! savepoint, and the check of a job name before it goes into a URL.

use crate::api::SavepointSummary;
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// A job name from the command line, checked before it goes into a URL.
pub(super) fn job_name(job: &str) -> Result<&str> {
    crate::names::check(crate::names::NameKind::Job, job)?;
    Ok(job)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub(super) fn utc(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    // RFC 3339 with a space for the `T` and no `Z`: the columns say UTC.
    humantime::format_rfc3339_millis(t)
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// Shows how long `what` has been waited for, on stderr, once it takes
/// more than half a second.
pub(super) fn progress(what: &str) -> impl FnMut(Duration) {
    let mut shown = false;
    let what = what.to_string();
    move |elapsed| {
        if elapsed > Duration::from_millis(500) {
            eprint!("\r{what}: waiting {:.1} s...", elapsed.as_secs_f64());
            shown = true;
        }
        if shown {
            let _ = std::io::stderr().flush();
        }
    }
}

/// Prints the savepoint a request took (`wrun savepoint trigger`,
/// `wrun stop --savepoint`).
pub(super) fn print_taken(v: &Value) -> Result<()> {
    let sp: SavepointSummary =
        serde_json::from_value(v["savepoint"].clone()).context("the API returned no savepoint")?;
    eprintln!();
    println!(
        "savepoint {} of job '{}' at checkpoint {} ({} bytes of state)",
        sp.id, sp.job, sp.checkpoint, sp.bytes
    );
    if sp.backend == "memory" {
        println!(
            "  backend: memory. It lives only in this running wrun and is lost when it stops; it can only resume a job inside the same running wrun."
        );
    } else {
        println!("  stored in {}", sp.location);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_is_readable() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(1_764_648_374_123), "2025-12-02 04:06:14.123");
    }
}
