//! Errors as one line, for places that must carry an error as a string
//! (a log line, a job's status, an error that crosses a thread): the
//! message and every cause behind it, joined by `: `, so a cause kept as a
//! `#[source]` is never lost on the way. This module sits below every
//! other layer.

/// `e` and its causes, joined by `: `.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e).join(": ")
}

/// The message of `e`, then of each cause behind it.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_cause_is_kept() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write chunk x")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("no space left on device"));
        assert_eq!(
            super::chain(&e),
            "cannot write chunk x: no space left on device"
        );
    }
}
