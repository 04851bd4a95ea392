//! The table of asynchronous requests (checkpoint, savepoint and stop
//! triggers), bounded two ways:
//!
//! - at most [`MAX_IN_FLIGHT_PER_JOB`] requests of one job in progress at
//!   once; one more is refused with 429 (each in progress waits on a thread
//!   of the API runtime's blocking pool, so this also bounds threads);
//! - a finished request is kept [`KEEP_FINISHED`] after it finished, and
//!   only the newest [`MAX_FINISHED`] finished ones; an evicted ID answers
//!   404 "expired or unknown".
//!
//! Pure bookkeeping: the caller passes the time, so tests drive the clock.

use super::error::{ApiError, ErrorKind};
use super::types::RequestStatus;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Requests of one job that may be in progress at once.
pub const MAX_IN_FLIGHT_PER_JOB: usize = 8;
/// Finished requests kept, newest first.
pub const MAX_FINISHED: usize = 1024;
/// How long a finished request is kept.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3600);

struct Entry {
    status: RequestStatus,
    finished_at: Option<Instant>,
    /// A client has read the outcome.
    delivered: bool,
}

/// The requests of one API, by ID (`req-<n>`; in a fleet
/// `req-<node>-<n>`, unique across its nodes).
pub(super) struct RequestTable {
    /// `req-`, or `req-<node>-`.
    pub(super) prefix: String,
    entries: HashMap<String, Entry>,
    /// Finished IDs, oldest first.
    finished: VecDeque<(String, Instant)>,
    next: u64,
    max_finished: usize,
    keep: Duration,
}

impl RequestTable {
    pub(super) fn new(max_finished: usize, keep: Duration) -> RequestTable {
        RequestTable {
            prefix: "req-".into(),
            entries: HashMap::new(),
            finished: VecDeque::new(),
            next: 1,
            max_finished,
            keep,
        }
    }

    /// Checks that `job` may start one more request.
    pub(super) fn admit(&self, job: &str) -> Result<(), ApiError> {
        let in_flight = self
            .entries
            .values()
            .filter(|e| e.finished_at.is_none() && e.status.job == job)
            .count();
        if in_flight >= MAX_IN_FLIGHT_PER_JOB {
            return Err(ApiError::new(
                ErrorKind::TooManyRequests,
                format!(
                    "job '{job}' has {in_flight} requests in progress, the most it takes; wait for one to finish (GET /v1/requests/ID) and try again"
                ),
            ));
        }
        Ok(())
    }

    /// Records a new request in progress; returns its ID.
    pub(super) fn begin(&mut self, job: &str, kind: &str) -> String {
        let id = format!("{}{}", self.prefix, self.next);
        self.next += 1;
        self.entries.insert(
            id.clone(),
            Entry {
                status: RequestStatus {
                    id: id.clone(),
                    job: job.to_string(),
                    kind: kind.to_string(),
                    status: "in-progress".into(),
                    checkpoint: None,
                    savepoint: None,
                    error: None,
                },
                finished_at: None,
                delivered: false,
            },
        );
        id
    }

    /// Records the outcome of request `id`, finished at `now`.
    pub(super) fn finish(&mut self, id: &str, now: Instant, f: impl FnOnce(&mut RequestStatus)) {
        if let Some(e) = self.entries.get_mut(id)
            && e.finished_at.is_none()
        {
            f(&mut e.status);
            e.finished_at = Some(now);
            self.finished.push_back((id.to_string(), now));
        }
        self.prune(now);
    }

    /// Request `id` as of `now`; a finished one counts as delivered.
    pub(super) fn get(&mut self, id: &str, now: Instant) -> Result<RequestStatus, ApiError> {
        self.prune(now);
        match self.entries.get_mut(id) {
            Some(e) => {
                if e.finished_at.is_some() {
                    e.delivered = true;
                }
                Ok(e.status.clone())
            }
            None => Err(ApiError::not_found(format!(
                "request '{id}' expired or unknown: a finished request is kept for {} minutes, and only the last {} of them",
                self.keep.as_secs() / 60,
                self.max_finished
            ))),
        }
    }

    /// Requests whose outcome no client has read yet.
    pub(super) fn undelivered(&self) -> usize {
        self.entries.values().filter(|e| !e.delivered).count()
    }

    /// Forgets finished requests that are too old or too many.
    fn prune(&mut self, now: Instant) {
        while let Some((id, at)) = self.finished.front() {
            let old = now.saturating_duration_since(*at) >= self.keep;
            if !old && self.finished.len() <= self.max_finished {
                break;
            }
            self.entries.remove(id);
            self.finished.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(s: &mut RequestStatus) {
        s.status = "completed".into();
        s.checkpoint = Some(1);
    }

    #[test]
    fn finished_requests_expire_after_their_time() {
        let t0 = Instant::now();
        let mut t = RequestTable::new(10, Duration::from_secs(60));
        let id = t.begin("j", "checkpoint");
        assert_eq!(t.get(&id, t0).unwrap().status, "in-progress");
        // In progress, a request never expires.
        assert!(t.get(&id, t0 + Duration::from_secs(3600)).is_ok());
        t.finish(&id, t0 + Duration::from_secs(10), done);
        assert_eq!(
            t.get(&id, t0 + Duration::from_secs(69)).unwrap().status,
            "completed"
        );
        let e = t.get(&id, t0 + Duration::from_secs(70)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("expired or unknown"), "{e}");
    }

    #[test]
    fn only_the_newest_finished_requests_are_kept() {
        let now = Instant::now();
        let mut t = RequestTable::new(3, Duration::from_secs(60));
        let ids: Vec<String> = (0..5).map(|_| t.begin("j", "checkpoint")).collect();
        for id in &ids {
            t.finish(id, now, done);
        }
        assert!(t.get(&ids[0], now).is_err());
        assert!(t.get(&ids[1], now).is_err());
        for id in &ids[2..] {
            assert!(t.get(id, now).is_ok(), "{id}");
        }
        assert_eq!(t.entries.len(), 3);
    }

    #[test]
    fn a_job_has_a_bounded_number_of_requests_in_progress() {
        let now = Instant::now();
        let mut t = RequestTable::new(10, Duration::from_secs(60));
        let ids: Vec<String> = (0..MAX_IN_FLIGHT_PER_JOB)
            .map(|_| {
                t.admit("j").unwrap();
                t.begin("j", "savepoint")
            })
            .collect();
        let e = t.admit("j").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooManyRequests);
        // Another job is not held up by this one.
        t.admit("other").unwrap();
        t.finish(&ids[0], now, done);
        t.admit("j").unwrap();
    }

    #[test]
    fn undelivered_counts_until_a_finished_outcome_is_read() {
        let now = Instant::now();
        let mut t = RequestTable::new(10, Duration::from_secs(60));
        let id = t.begin("j", "stop");
        assert_eq!(t.undelivered(), 1);
        t.get(&id, now).unwrap();
        assert_eq!(t.undelivered(), 1, "read while in progress");
        t.finish(&id, now, done);
        t.get(&id, now).unwrap();
        assert_eq!(t.undelivered(), 0);
    }
}
