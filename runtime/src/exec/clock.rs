//! The clock a running job paces by: a source's rate and linger, and the
//! coordinator's checkpoint interval and timeout. [`SystemClock`] is real
//! time; [`ManualClock`] moves only when a test moves it, so tests of slow
//! sources and timeouts drive time instead of sleeping.
//!
//! Waiting is always on a channel (a source's control channel, the
//! coordinator's acks) with a real timeout the clock chooses
//! ([`Clock::real_wait`]), so a wait ends at once when a message comes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Time as a job sees it.
pub trait Clock: Send + Sync {
    /// Time since this clock's origin.
    fn now(&self) -> Duration;
    /// How long to block in real time, at most, before looking at the
    /// clock again while waiting for `deadline` (zero: it has passed).
    fn real_wait(&self, deadline: Duration) -> Duration;
    /// Processing time: milliseconds since the Unix epoch (what
    /// processing-time timers fire by).
    fn unix_ms(&self) -> i64;
}

/// Real, monotonic time.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn real_wait(&self, deadline: Duration) -> Duration {
        deadline.saturating_sub(self.now())
    }

    fn unix_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock for tests: it starts at zero and moves only by [`advance`].
///
/// [`advance`]: ManualClock::advance
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

/// How often a wait on a [`ManualClock`] looks at it again.
const MANUAL_SLICE: Duration = Duration::from_millis(1);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(n, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    /// The Unix epoch plus the time advanced: processing time starts at 0.
    fn unix_ms(&self) -> i64 {
        self.now().as_millis() as i64
    }

    fn real_wait(&self, deadline: Duration) -> Duration {
        if deadline <= self.now() {
            Duration::ZERO
        } else {
            MANUAL_SLICE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_time_moves_only_when_advanced() {
        let c = ManualClock::new();
        assert_eq!(c.now(), Duration::ZERO);
        assert_eq!(c.real_wait(Duration::from_secs(5)), MANUAL_SLICE);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), Duration::from_secs(5));
        assert_eq!(c.real_wait(Duration::from_secs(5)), Duration::ZERO);
        let s = SystemClock::new();
        assert!(s.real_wait(Duration::from_secs(3600)) > Duration::from_secs(3000));
    }
}
