//! Errors as one line, for places that must carry an error as a string
//! (a log line, a job's status, an error that crosses a thread): the
//! message and every cause behind it, joined by `: `, so a cause kept as a
//! `#[source]` is never lost on the way. This module sits below every
//! other layer.

/// `e` and its causes, joined by `: `.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e).join(": ")
}

/// The message of `e`, then of each cause behind it, each said once:
/// many libraries put their cause's text into their own message too
/// (`Connection refused (os error 111)` over the same `io::Error`), so a
/// cause that the message before it already says is left out, and so is
/// a part of a message that repeats the part just before it.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in std::iter::successors(Some(e), |e| e.source()) {
        let text = dedup_parts(&e.to_string());
        match out.last_mut() {
            Some(prev) if prev.contains(text.as_str()) => {}
            // The cause says all its message says, and more: keep the cause.
            Some(prev) if text.contains(prev.as_str()) => *prev = text,
            _ => out.push(text),
        }
    }
    out
}

/// A part of a message (between `: `) that the message says again later
/// is said only there: `a: b: a: b: c` becomes `a: b: c`, and
/// `authorization violation: nats: authorization violation` becomes
/// `nats: authorization violation`.
fn dedup_parts(s: &str) -> String {
    let parts: Vec<&str> = s.split(": ").collect();
    let kept: Vec<&str> = parts
        .iter()
        .enumerate()
        .filter(|(i, p)| !parts[i + 1..].contains(p))
        .map(|(_, p)| *p)
        .collect();
    kept.join(": ")
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

    #[test]
    fn a_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Same(#[source] std::io::Error);
        let e = Same(std::io::Error::other("Connection refused (os error 111)"));
        assert_eq!(super::chain(&e), "Connection refused (os error 111)");
        #[derive(Debug, thiserror::Error)]
        #[error("nats: authorization violation: nats: authorization violation")]
        struct Nats(#[source] std::io::Error);
        let e = Nats(std::io::Error::other("authorization violation"));
        assert_eq!(super::chain(&e), "nats: authorization violation");
        #[derive(Debug, thiserror::Error)]
        #[error("authorization violation")]
        struct Short(#[source] std::io::Error);
        let e = Short(std::io::Error::other("nats: authorization violation"));
        assert_eq!(super::chain(&e), "nats: authorization violation");
        assert_eq!(
            super::dedup_parts("authorization violation: authorization violation: x"),
            "authorization violation: x"
        );
        assert_eq!(
            super::dedup_parts("authorization violation: nats: authorization violation"),
            "nats: authorization violation"
        );
        assert_eq!(super::dedup_parts("a: b: a: b: c"), "a: b: c");
    }
}
